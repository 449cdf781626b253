/* SPDX-License-Identifier: MIT */
/*
 * bench-client: drives apiaryd through its public D-Bus API (org.apiary.Apiary1.Manager) with
 * sd-bus, and checks every result.
 *
 *   bench-client --address=ADDR --pool=POOL --mode=MODE --tasks=N [OPTIONS]
 *
 *   --mode=batch      SubmitBatch() of --batch= payloads each, keeping up to --inflight= tasks
 *                     submitted and not yet finished; results come as TaskFinished signals
 *   --mode=submit     Submit() pipelined: up to --inflight= tasks submitted and not yet finished
 *   --mode=run        Run(), one call at a time: prints the latency percentiles
 *   --mode=runbatch   RunBatch() of --batch= payloads each, up to --inflight= tasks in flight:
 *                     the results come in the replies, no signal per task
 *   --batch-results   with batch or submit: the option "batch-results", results come many to a
 *                     TasksFinished signal instead
 *   --private         ADDRESS is apiaryd's private socket (PrivateSocket=): connect as a peer,
 *                     not as a bus client
 *   --size=BYTES      payload size (default 64); every payload is different, and each result
 *                     must be exactly its payload (the echo plugin)
 *   --text=TEXT --expect=RESULT
 *                     send TEXT as every payload instead, and expect RESULT for each (primes)
 *   --timeout=SEC     give up after SEC seconds (default 120)
 *
 * Prints one line of KEY=VALUE pairs: tasks, ok, bad, failed, seconds, rate, the client's own CPU
 * time, and for --mode=run the latency percentiles in µs. Exits 0 only if every task ended with
 * the expected result, exactly once.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <systemd/sd-bus.h>

#define DEST "org.apiary.Apiary1"
#define PATH "/org/apiary/Apiary1"
#define IFACE "org.apiary.Apiary1.Manager"

#define _cleanup_(f) __attribute__((cleanup(f)))

typedef enum { MODE_BATCH, MODE_SUBMIT, MODE_RUN, MODE_RUNBATCH } Mode;

typedef struct Slot {
        uint64_t id;            /* 0: empty */
        uint32_t index;
        bool finished;
} Slot;

typedef struct Context {
        sd_bus *bus;
        Mode mode;
        const char *pool;
        unsigned long n_tasks, batch, inflight;
        bool batch_results;
        size_t size;
        const char *text, *expect;

        unsigned long next;             /* index of the next task to submit */
        unsigned long outstanding;      /* submitted and not yet finished */
        unsigned long finished, ok, bad, failed, unknown;
        int error;                      /* a call failed: give up */
        char error_text[512];

        Slot *slots;                    /* open addressing, id → task index */
        size_t n_slots;
} Context;

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* The payload of task I: different for every task, so that a result given to the wrong task shows. */
static size_t make_payload(const Context *c, unsigned long i, char *buf) {
        if (c->text) {
                size_t l = strlen(c->text);
                memcpy(buf, c->text, l);
                return l;
        }
        int k = snprintf(buf, c->size + 1, "%010lu:", i);
        for (size_t j = (size_t) k; j < c->size; j++)
                buf[j] = (char) ('A' + (i * 7 + j) % 26);
        return c->size;
}

static bool result_is_right(const Context *c, unsigned long i, const void *data, size_t size) {
        char buf[4096];
        size_t l;

        if (c->expect)
                return size == strlen(c->expect) && memcmp(data, c->expect, size) == 0;
        l = make_payload(c, i, buf);
        return size == l && memcmp(data, buf, l) == 0;
}

static Slot *slot_find(Context *c, uint64_t id) {
        size_t mask = c->n_slots - 1;

        for (size_t h = (size_t) (id * 0x9E3779B97F4A7C15ull) & mask;; h = (h + 1) & mask)
                if (c->slots[h].id == id || c->slots[h].id == 0)
                        return &c->slots[h];
}

static void fail_with(Context *c, int error, const char *what, const sd_bus_error *e) {
        if (c->error)
                return;
        c->error = error < 0 ? error : -EIO;
        snprintf(c->error_text, sizeof(c->error_text), "%s: %s%s%s", what,
                 e && e->name ? e->name : strerror(-c->error), e && e->message ? ": " : "",
                 e && e->message ? e->message : "");
}

static void record_result(Context *c, unsigned long index, int ok, const void *data, size_t size) {
        if (!ok) {
                c->failed++;
                if (c->failed <= 3)
                        fprintf(stderr, "bench-client: task %lu failed: %.*s\n", index, (int) size, (const char *) data);
        } else if (result_is_right(c, index, data, size))
                c->ok++;
        else {
                c->bad++;
                if (c->bad <= 3)
                        fprintf(stderr, "bench-client: task %lu: wrong result (%zu bytes)\n", index, size);
        }
}

static int submit_more(Context *c);

static void note_finished(Context *c, uint64_t id, int ok, const void *data, size_t size) {
        Slot *s = slot_find(c, id);

        if (s->id != id) {
                c->unknown++;   /* not ours: its reply always comes first (docs/tasks.md) */
                return;
        }
        if (s->finished) {
                c->bad++;       /* finished twice */
                return;
        }
        s->finished = true;
        c->finished++;
        c->outstanding--;
        record_result(c, s->index, ok, data, size);
}

/* One end, (t id, s pool, b ok, ay result): a TaskFinished, or an element of TasksFinished. */
static int read_end(sd_bus_message *m, uint64_t *ret_id, int *ret_ok, const void **ret_data, size_t *ret_size) {
        const char *pool;
        int r;

        r = sd_bus_message_read(m, "tsb", ret_id, &pool, ret_ok);
        if (r >= 0)
                r = sd_bus_message_read_array(m, 'y', ret_data, ret_size);
        return r;
}

static int on_finished(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Context *c = userdata;
        const void *data;
        size_t size;
        uint64_t id;
        int ok, r;

        r = read_end(m, &id, &ok, &data, &size);
        if (r < 0) {
                fail_with(c, r, "reading TaskFinished", NULL);
                return 0;
        }
        note_finished(c, id, ok, data, size);
        return submit_more(c);
}

/* TasksFinished(a(tsbay)): many ends in one signal. */
static int on_finished_batch(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Context *c = userdata;
        const void *data;
        size_t size;
        uint64_t id;
        int ok, r;

        r = sd_bus_message_enter_container(m, 'a', "(tsbay)");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'r', "tsbay")) > 0) {
                r = read_end(m, &id, &ok, &data, &size);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r >= 0)
                        note_finished(c, id, ok, data, size);
        }
        if (r < 0) {
                fail_with(c, r, "reading TasksFinished", NULL);
                return 0;
        }
        return submit_more(c);
}

typedef struct Call {
        Context *c;
        unsigned long first, count;
} Call;

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Call *call = userdata;
        Context *c = call->c;
        const uint64_t *ids;
        uint64_t id;
        size_t size;
        int r;

        if (sd_bus_message_is_method_error(m, NULL)) {
                fail_with(c, -EIO, c->mode == MODE_BATCH ? "SubmitBatch" : c->mode == MODE_RUNBATCH ? "RunBatch" : "Submit",
                          sd_bus_message_get_error(m));
                goto finish;
        }
        if (c->mode == MODE_RUNBATCH) {
                unsigned long k = 0;
                const void *data;
                int ok;

                r = sd_bus_message_enter_container(m, 'a', "(bay)");
                while (r >= 0 && (r = sd_bus_message_enter_container(m, 'r', "bay")) > 0) {
                        r = sd_bus_message_read(m, "b", &ok);
                        if (r >= 0)
                                r = sd_bus_message_read_array(m, 'y', &data, &size);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        if (r < 0 || k >= call->count)
                                break;
                        record_result(c, call->first + k, ok, data, size);
                        k++;
                }
                if (r < 0 || k != call->count) {
                        fail_with(c, r < 0 ? r : -EBADMSG, "reading the reply of RunBatch", NULL);
                        goto finish;
                }
                c->finished += k;
                c->outstanding -= k;
                free(call);
                return submit_more(c);
        }
        if (c->mode == MODE_BATCH) {
                r = sd_bus_message_read_array(m, 't', (const void **) &ids, &size);
                if (r < 0 || size != call->count * sizeof(uint64_t)) {
                        fail_with(c, r < 0 ? r : -EBADMSG, "reading the reply of SubmitBatch", NULL);
                        goto finish;
                }
        } else {
                r = sd_bus_message_read(m, "t", &id);
                if (r < 0) {
                        fail_with(c, r, "reading the reply of Submit", NULL);
                        goto finish;
                }
                ids = &id;
        }
        for (unsigned long k = 0; k < call->count; k++) {
                Slot *s = slot_find(c, ids[k]);
                if (s->id == ids[k]) {
                        fail_with(c, -EEXIST, "apiaryd gave the same id twice", NULL);
                        goto finish;
                }
                *s = (Slot) { .id = ids[k], .index = (uint32_t) (call->first + k) };
        }
finish:
        free(call);
        return 0;
}

static int append_options(Context *c, sd_bus_message *m) {
        if (c->batch_results)
                return sd_bus_message_append(m, "a{sv}", 1, "batch-results", "b", 1);
        return sd_bus_message_append(m, "a{sv}", 0);
}

static int submit_one_call(Context *c, unsigned long count) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        char buf[4096];
        Call *call;
        int r;

        bool batch = c->mode == MODE_BATCH || c->mode == MODE_RUNBATCH;

        r = sd_bus_message_new_method_call(c->bus, &m, DEST, PATH, IFACE,
                                           c->mode == MODE_BATCH ? "SubmitBatch" :
                                           c->mode == MODE_RUNBATCH ? "RunBatch" : "Submit");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", c->pool);
        if (r < 0)
                return r;
        if (batch) {
                r = sd_bus_message_open_container(m, 'a', "ay");
                if (r < 0)
                        return r;
        }
        for (unsigned long k = 0; k < count; k++) {
                size_t l = make_payload(c, c->next + k, buf);
                r = sd_bus_message_append_array(m, 'y', buf, l);
                if (r < 0)
                        return r;
        }
        if (batch) {
                r = sd_bus_message_close_container(m);
                if (r < 0)
                        return r;
        }
        r = append_options(c, m);
        if (r < 0)
                return r;

        call = malloc(sizeof(*call));
        if (!call)
                return -ENOMEM;
        *call = (Call) { .c = c, .first = c->next, .count = count };
        r = sd_bus_call_async(c->bus, NULL, m, on_reply, call, 120 * 1000000ull);
        if (r < 0) {
                free(call);
                return r;
        }
        c->next += count;
        c->outstanding += count;
        return 0;
}

static int submit_more(Context *c) {
        unsigned long per_call = c->mode == MODE_BATCH || c->mode == MODE_RUNBATCH ? c->batch : 1;

        while (!c->error && c->next < c->n_tasks) {
                unsigned long count = per_call;
                int r;

                if (count > c->n_tasks - c->next)
                        count = c->n_tasks - c->next;
                if (c->outstanding + count > c->inflight)
                        break;
                r = submit_one_call(c, count);
                if (r < 0) {
                        fail_with(c, r, "sending a call", NULL);
                        break;
                }
        }
        return 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static double percentile(const uint64_t *sorted, size_t n, double p) {
        size_t i = (size_t) (p / 100.0 * (double) (n - 1) + 0.5);
        return (double) sorted[i < n ? i : n - 1];
}

static int run_sequential(Context *c, uint64_t *latencies) {
        char buf[4096];

        for (unsigned long i = 0; i < c->n_tasks; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                const void *data;
                size_t size, l;
                uint64_t t0;
                int r;

                r = sd_bus_message_new_method_call(c->bus, &m, DEST, PATH, IFACE, "Run");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", c->pool);
                l = make_payload(c, i, buf);
                if (r >= 0)
                        r = sd_bus_message_append_array(m, 'y', buf, l);
                if (r >= 0)
                        r = append_options(c, m);
                if (r < 0) {
                        fail_with(c, r, "building a Run call", NULL);
                        return r;
                }

                t0 = now_ns();
                r = sd_bus_call(c->bus, m, 120 * 1000000ull, &error, &reply);
                latencies[i] = now_ns() - t0;
                c->finished++;
                if (r < 0) {
                        if (sd_bus_error_has_name(&error, "org.apiary.Apiary1.Error.TaskFailed")) {
                                record_result(c, i, 0, error.message, strlen(error.message));
                                continue;
                        }
                        fail_with(c, r, "Run", &error);
                        return r;
                }
                r = sd_bus_message_read_array(reply, 'y', &data, &size);
                if (r < 0) {
                        fail_with(c, r, "reading the reply of Run", NULL);
                        return r;
                }
                record_result(c, i, 1, data, size);
        }
        return 0;
}

int main(int argc, char *argv[]) {
        enum { ARG_ADDRESS = 0x100, ARG_POOL, ARG_MODE, ARG_TASKS, ARG_SIZE, ARG_BATCH, ARG_INFLIGHT, ARG_TEXT,
               ARG_EXPECT, ARG_TIMEOUT, ARG_PRIVATE, ARG_BATCH_RESULTS };
        static const struct option options[] = {
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "pool", required_argument, NULL, ARG_POOL },
                { "mode", required_argument, NULL, ARG_MODE },
                { "tasks", required_argument, NULL, ARG_TASKS },
                { "size", required_argument, NULL, ARG_SIZE },
                { "batch", required_argument, NULL, ARG_BATCH },
                { "inflight", required_argument, NULL, ARG_INFLIGHT },
                { "text", required_argument, NULL, ARG_TEXT },
                { "expect", required_argument, NULL, ARG_EXPECT },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "private", no_argument, NULL, ARG_PRIVATE },
                { "batch-results", no_argument, NULL, ARG_BATCH_RESULTS },
                {}
        };
        Context c = { .size = 64, .batch = 500, .inflight = 1000, .n_tasks = 1000 };
        const char *address = NULL;
        unsigned long timeout_sec = 120;
        bool private = false;
        struct rusage ru0, ru1;
        uint64_t start, elapsed, deadline, *latencies = NULL;
        int opt, r;

        while ((opt = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (opt) {
                case ARG_ADDRESS: address = optarg; break;
                case ARG_POOL: c.pool = optarg; break;
                case ARG_MODE:
                        if (strcmp(optarg, "batch") == 0)
                                c.mode = MODE_BATCH;
                        else if (strcmp(optarg, "submit") == 0)
                                c.mode = MODE_SUBMIT;
                        else if (strcmp(optarg, "run") == 0)
                                c.mode = MODE_RUN;
                        else if (strcmp(optarg, "runbatch") == 0)
                                c.mode = MODE_RUNBATCH;
                        else {
                                fprintf(stderr, "bench-client: unknown mode %s\n", optarg);
                                return 2;
                        }
                        break;
                case ARG_TASKS: c.n_tasks = strtoul(optarg, NULL, 10); break;
                case ARG_SIZE: c.size = strtoul(optarg, NULL, 10); break;
                case ARG_BATCH: c.batch = strtoul(optarg, NULL, 10); break;
                case ARG_INFLIGHT: c.inflight = strtoul(optarg, NULL, 10); break;
                case ARG_TEXT: c.text = optarg; break;
                case ARG_EXPECT: c.expect = optarg; break;
                case ARG_TIMEOUT: timeout_sec = strtoul(optarg, NULL, 10); break;
                case ARG_PRIVATE: private = true; break;
                case ARG_BATCH_RESULTS: c.batch_results = true; break;
                default: return 2;
                }
        }
        if (!address || !c.pool || c.n_tasks == 0 || c.n_tasks > UINT32_MAX || c.batch == 0 || c.inflight == 0 ||
            c.size < 12 || c.size > 4096 || (c.text && (!c.expect || strlen(c.text) > 4096))) {
                fprintf(stderr, "bench-client: bad arguments (see the comment at the top of bench/client.c)\n");
                return 2;
        }
        if (c.inflight < c.batch)
                c.inflight = c.batch;

        r = sd_bus_new(&c.bus);
        if (r >= 0)
                r = sd_bus_set_address(c.bus, address);
        if (r >= 0 && !private)
                r = sd_bus_set_bus_client(c.bus, true);
        if (r >= 0)
                r = sd_bus_start(c.bus);
        if (r < 0) {
                fprintf(stderr, "bench-client: cannot connect to %s: %s\n", address, strerror(-r));
                return 1;
        }

        if (c.mode == MODE_RUN) {
                latencies = calloc(c.n_tasks, sizeof(uint64_t));
                if (!latencies)
                        return 1;
        } else {
                for (c.n_slots = 16; c.n_slots < 2 * c.n_tasks; c.n_slots *= 2)
                        ;
                c.slots = calloc(c.n_slots, sizeof(Slot));
                if (!c.slots)
                        return 1;
                /* Synchronous: the rule is in place before the first task is submitted. */
                r = sd_bus_match_signal(c.bus, NULL, NULL, PATH, IFACE, "TaskFinished", on_finished, &c);
                if (r >= 0)
                        r = sd_bus_match_signal(c.bus, NULL, NULL, PATH, IFACE, "TasksFinished", on_finished_batch,
                                                &c);
                if (r < 0) {
                        fprintf(stderr, "bench-client: AddMatch: %s\n", strerror(-r));
                        return 1;
                }
        }

        getrusage(RUSAGE_SELF, &ru0);
        start = now_ns();
        deadline = start + timeout_sec * 1000000000ull;
        if (c.mode == MODE_RUN)
                (void) run_sequential(&c, latencies);
        else {
                submit_more(&c);
                while (!c.error && c.finished < c.n_tasks) {
                        uint64_t now;

                        r = sd_bus_process(c.bus, NULL);
                        if (r < 0) {
                                fail_with(&c, r, "processing the bus", NULL);
                                break;
                        }
                        if (r > 0)
                                continue;
                        now = now_ns();
                        if (now >= deadline) {
                                fail_with(&c, -ETIMEDOUT, "waiting for TaskFinished", NULL);
                                break;
                        }
                        r = sd_bus_wait(c.bus, (deadline - now) / 1000);
                        if (r < 0) {
                                fail_with(&c, r, "waiting on the bus", NULL);
                                break;
                        }
                }
        }
        elapsed = now_ns() - start;
        getrusage(RUSAGE_SELF, &ru1);

        printf("tasks=%lu finished=%lu ok=%lu bad=%lu failed=%lu unknown=%lu seconds=%.6f rate=%.1f "
               "client_cpu_s=%.6f",
               c.n_tasks, c.finished, c.ok, c.bad, c.failed, c.unknown, elapsed / 1e9,
               elapsed ? (double) c.finished * 1e9 / (double) elapsed : 0.0,
               (double) (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                       (double) (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
                                 ru0.ru_stime.tv_usec) / 1e6);
        if (c.mode == MODE_RUN && c.finished > 0) {
                double sum = 0;
                for (unsigned long i = 0; i < c.finished; i++)
                        sum += (double) latencies[i];
                qsort(latencies, c.finished, sizeof(uint64_t), cmp_u64);
                printf(" p50_us=%.1f p99_us=%.1f mean_us=%.1f max_us=%.1f", percentile(latencies, c.finished, 50) / 1e3,
                       percentile(latencies, c.finished, 99) / 1e3, sum / (double) c.finished / 1e3,
                       (double) latencies[c.finished - 1] / 1e3);
        }
        printf("\n");
        if (c.error)
                fprintf(stderr, "bench-client: %s\n", c.error_text);

        free(latencies);
        free(c.slots);
        sd_bus_flush_close_unref(c.bus);
        return !c.error && c.ok == c.n_tasks && c.bad == 0 && c.failed == 0 ? 0 : 1;
}
