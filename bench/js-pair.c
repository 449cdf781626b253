/* SPDX-License-Identifier: MIT */
/*
 * bench-js-pair: the engine's floor for shared pools: a bare libnats JetStream producer and W
 * worker processes, no Apiary. The producer publishes N tasks (64-byte payloads, each with its own
 * Nats-Msg-Id) to a work-queue stream, asynchronously; each worker pulls them in batches, acks
 * each one after publishing its result to a result stream; the producer pulls the results and
 * checks each is its task's payload. What Apiary adds on top (the D-Bus API, the supervisor,
 * the helper, exactly the free places pulled) is the difference to its figure.
 *
 *   bench-js-pair SERVERS WORKERS TASKS REPLICAS [SIZE]
 *
 * Prints one line of KEY=VALUE pairs, like bench-client: tasks, ok, bad, failed, seconds, rate.
 */
#include <inttypes.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void die(const char *what, natsStatus s) {
        fprintf(stderr, "bench-js-pair: %s: %s (%s)\n", what, natsStatus_GetText(s), nats_GetLastError(NULL));
        exit(1);
}

static void make_payload(char *buf, size_t size, unsigned long i) {
        int n = snprintf(buf, size, "%010lu:", i);

        for (size_t j = (size_t) n; j < size; j++)
                buf[j] = (char) ('A' + (i * 7 + j) % 26);
}

static natsConnection *connect_to(const char *servers) {
        natsConnection *nc = NULL;
        natsOptions *o = NULL;
        char *copy = strdup(servers), *list[16], *save = NULL;
        int n = 0;
        natsStatus s;

        for (char *t = strtok_r(copy, ",", &save); t && n < 16; t = strtok_r(NULL, ",", &save))
                list[n++] = t;
        s = natsOptions_Create(&o);
        if (s == NATS_OK)
                s = natsOptions_SetServers(o, (const char **) list, n);
        if (s == NATS_OK)
                s = natsConnection_Connect(&nc, o);
        if (s != NATS_OK)
                die("connect", s);
        natsOptions_Destroy(o);
        free(copy);
        return nc;
}

static void setup_stream(jsCtx *js, const char *name, const char *subject, int replicas) {
        const char *subjects[] = { subject };
        jsStreamConfig sc;
        jsErrCode jerr = 0;
        natsStatus s;

        (void) js_DeleteStream(js, name, NULL, &jerr);
        jsStreamConfig_Init(&sc);
        sc.Name = name;
        sc.Subjects = subjects;
        sc.SubjectsLen = 1;
        sc.Retention = js_WorkQueuePolicy;
        sc.Storage = js_FileStorage;
        sc.Replicas = replicas;
        s = js_AddStream(NULL, js, &sc, NULL, &jerr);
        if (s != NATS_OK)
                die("add stream", s);
}

static natsSubscription *pull(jsCtx *js, const char *subject, const char *durable) {
        natsSubscription *sub = NULL;
        jsSubOptions so;
        jsErrCode jerr = 0;
        natsStatus s;

        jsSubOptions_Init(&so);
        so.Config.AckPolicy = js_AckExplicit;
        so.Config.MaxAckPending = -1;
        s = js_PullSubscribe(&sub, js, subject, durable, NULL, &so, &jerr);
        if (s != NATS_OK)
                die("pull subscribe", s);
        return sub;
}

/* A worker: pulls tasks in batches of up to 64, publishes their results asynchronously, and acks
 * the batch once every result is stored, until it is killed. */
static void worker(const char *servers) {
        natsConnection *nc;
        jsOptions jo;
        jsCtx *js = NULL;
        natsSubscription *sub;
        natsStatus s;

        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        nc = connect_to(servers);
        jsOptions_Init(&jo);
        jo.PublishAsync.MaxPending = 4096;
        s = natsConnection_JetStream(&js, nc, &jo);
        if (s != NATS_OK)
                die("jetstream", s);
        sub = pull(js, "bench.t", "workers");
        for (;;) {
                natsMsgList list = {};

                s = natsSubscription_Fetch(&list, sub, 64, 1000, NULL);
                if (s == NATS_TIMEOUT)
                        continue;
                if (s != NATS_OK)
                        die("fetch", s);
                for (int i = 0; i < list.Count; i++) {
                        natsMsg *m = list.Msgs[i], *r = NULL;
                        const char *id = NULL;

                        (void) natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
                        s = natsMsg_Create(&r, "bench.r", NULL, natsMsg_GetData(m), natsMsg_GetDataLength(m));
                        if (s == NATS_OK && id)
                                s = natsMsgHeader_Set(r, "Nats-Msg-Id", id);
                        if (s == NATS_OK)
                                s = js_PublishMsgAsync(js, &r, NULL);
                        if (s != NATS_OK)
                                die("publish result", s);
                }
                s = js_PublishAsyncComplete(js, NULL);          /* stored, then ... */
                if (s != NATS_OK)
                        die("publish results", s);
                for (int i = 0; i < list.Count; i++)
                        (void) natsMsg_Ack(list.Msgs[i], NULL); /* ... acked */
                natsMsgList_Destroy(&list);
        }
}

int main(int argc, char *argv[]) {
        const char *servers;
        unsigned long n, ok = 0, bad = 0;
        unsigned workers, replicas;
        size_t size = 64;
        natsConnection *nc;
        natsSubscription *results;
        jsOptions jo;
        jsCtx *js = NULL;
        pid_t *pids;
        char *seen;
        double t0, t1;
        natsStatus s;
        int status;

        if (argc < 5) {
                fprintf(stderr, "usage: bench-js-pair SERVERS WORKERS TASKS REPLICAS [SIZE]\n");
                return 2;
        }
        servers = argv[1];
        workers = (unsigned) strtoul(argv[2], NULL, 10);
        n = strtoul(argv[3], NULL, 10);
        replicas = (unsigned) strtoul(argv[4], NULL, 10);
        if (argc > 5)
                size = strtoul(argv[5], NULL, 10);
        if (size < 16)
                size = 16;

        /* The streams first, from a process of their own: libnats' threads do not survive a
         * fork, so the workers are forked before this process connects for good. */
        pids = calloc(workers + 1, sizeof(pid_t));
        pids[workers] = fork();
        if (pids[workers] == 0) {
                nc = connect_to(servers);
                s = natsConnection_JetStream(&js, nc, NULL);
                if (s != NATS_OK)
                        die("jetstream", s);
                setup_stream(js, "BENCH_T", "bench.t", (int) replicas);
                setup_stream(js, "BENCH_R", "bench.r", (int) replicas);
                _exit(0);
        }
        if (waitpid(pids[workers], &status, 0) != pids[workers] || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return 1;
        for (unsigned w = 0; w < workers; w++) {
                pids[w] = fork();
                if (pids[w] == 0) {
                        worker(servers);
                        _exit(0);
                }
        }

        nc = connect_to(servers);
        jsOptions_Init(&jo);
        jo.PublishAsync.MaxPending = 4096;
        s = natsConnection_JetStream(&js, nc, &jo);
        if (s != NATS_OK)
                die("jetstream", s);
        results = pull(js, "bench.r", "producer");

        seen = calloc(n, 1);
        t0 = now();
        for (unsigned long i = 0; i < n; i++) {
                char payload[size], id[32];
                natsMsg *m = NULL;

                make_payload(payload, size, i);
                snprintf(id, sizeof(id), "t%lu", i);
                s = natsMsg_Create(&m, "bench.t", NULL, payload, (int) size);
                if (s == NATS_OK)
                        s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
                if (s == NATS_OK)
                        s = js_PublishMsgAsync(js, &m, NULL);
                if (s != NATS_OK)
                        die("publish task", s);
        }
        s = js_PublishAsyncComplete(js, NULL);
        if (s != NATS_OK)
                die("publish complete", s);

        while (ok + bad < n) {
                natsMsgList list = {};

                s = natsSubscription_Fetch(&list, results, 256, 10000, NULL);
                if (s != NATS_OK)
                        die("fetch results", s);
                for (int i = 0; i < list.Count; i++) {
                        const char *d = natsMsg_GetData(list.Msgs[i]);
                        unsigned long k = strtoul(d, NULL, 10);
                        char expect[size];

                        make_payload(expect, size, k);
                        if (k < n && !seen[k] && (size_t) natsMsg_GetDataLength(list.Msgs[i]) == size &&
                            memcmp(d, expect, size) == 0) {
                                seen[k] = 1;
                                ok++;
                        } else
                                bad++;
                        (void) natsMsg_Ack(list.Msgs[i], NULL);
                }
                natsMsgList_Destroy(&list);
        }
        t1 = now();

        for (unsigned w = 0; w < workers; w++) {
                kill(pids[w], SIGKILL);
                waitpid(pids[w], NULL, 0);
        }
        printf("tasks=%lu finished=%lu ok=%lu bad=%lu failed=0 unknown=0 seconds=%f rate=%.1f\n", n, ok + bad, ok, bad,
               t1 - t0, (double) n / (t1 - t0));
        return bad == 0 && ok == n ? 0 : 1;
}
