/* SPDX-License-Identifier: MIT */
/*
 * apiaryd under sustained abuse, end to end: a steady load of tasks while random workers are
 * SIGKILLed every few milliseconds, and a long run of echo tasks through one pool. Afterwards
 * every task has ended exactly once, the counters add up, and apiaryd has no zombie, no leaked
 * descriptor and no memory growth to show for it.
 *
 * Knobs (environment), for longer runs by hand:
 *   APIARY_CHAOS_SECONDS   how long the chaos lasts (default 10; 3 under APIARY_TEST_WRAPPER)
 *   APIARY_CHAOS_KILL_MS   a worker is SIGKILLed every this many ms (default 5; 20 under the wrapper)
 *   APIARY_CHAOS_SEED      the random seed (default: from the clock; printed)
 *   APIARY_VOLUME_TASKS    echo tasks in the volume test (default 1,000,000; 200,000 under
 *                          ASan, 20,000 under the wrapper)
 *
 * The bounds on memory are generous on purpose, and skipped where they mean nothing (valgrind's
 * and ASan's own heaps). Nothing here measures time: durations only shape the load.
 */
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/harness.h"

#define POOL_IFACE "org.apiary.Apiary1.Pool"

typedef TestFixture Fixture;

static uint64_t manager_u64(TestDaemon *d, const char *property) {
        return test_get_manager_u64(d, property);
}

static uint64_t pool_u64(TestDaemon *d, const char *pool, const char *property) {
        g_autofree char *path = test_pool_path(pool);

        return test_get_u64(d, path, POOL_IFACE, property);
}

typedef struct {
        const char *pool;
        unsigned workers;
} AllReady;

static bool pool_all_ready(TestDaemon *d, const void *userdata) {
        const AllReady *w = userdata;
        g_autofree char *path = test_pool_path(w->pool), *s = test_pool_state(d, w->pool);

        return strcmp(s, "running") == 0 && test_get_u32(d, path, POOL_IFACE, "WorkersReady") == w->workers;
}

typedef struct Children {
        const char *pool;
        unsigned workers;
} Children;

/* apiaryd's children are exactly the workers the bus shows and the pool's zygote, if it is ready
 * (Zygote=auto: a zygote on its way up, or killed and not yet reaped, is a child the bus does not
 * show yet), none of them a zombie. */
static bool children_are_workers(TestDaemon *d, const void *userdata) {
        const Children *c = userdata;
        g_autofree char *path = test_pool_path(c->pool);
        g_autofree pid_t *children = NULL;
        pid_t zygote = (pid_t) test_get_u32(d, path, POOL_IFACE, "ZygotePID");
        size_t n;

        children = test_proc_children(d->pid, &n);
        if (n != c->workers + (zygote > 0))
                return false;
        for (size_t i = 0; i < n; i++) {
                bool known = children[i] == zygote;

                if (test_proc_state(children[i]) == 'Z')
                        return false;
                for (unsigned slot = 0; slot < c->workers; slot++)
                        if (test_worker_pid(d, c->pool, slot) == children[i])
                                known = true;
                if (!known)
                        return false;
        }
        return true;
}

static void assert_children_are_workers(TestDaemon *d, const char *pool, unsigned workers) {
        Children c = { pool, workers };

        test_wait_until(d, children_are_workers, &c, TEST_TIMEOUT_USEC,
                        "apiaryd's children to be its workers and its zygote, none a zombie");
}

static bool memory_bounds_apply(void) {
        return !test_under_wrapper() && !test_under_asan();
}

/* ---- chaos ---- */

typedef struct Chaos {
        GHashTable *payload_of;         /* task id → sequence number of its payload */
        uint64_t submitted;
} Chaos;

static void chaos_submit(TestDaemon *d, Chaos *c, unsigned n) {
        char **payloads = g_new0(char *, n + 1);
        uint64_t *ids = g_new(uint64_t, n);

        for (unsigned i = 0; i < n; i++)
                payloads[i] = g_strdup_printf("chaos %" PRIu64, c->submitted + i);
        test_submit_batch(d, "echo", payloads, n, ids);
        for (unsigned i = 0; i < n; i++)
                g_hash_table_insert(c->payload_of, g_memdup2(&ids[i], sizeof(uint64_t)),
                                    GSIZE_TO_POINTER(c->submitted + i));
        c->submitted += n;
        g_strfreev(payloads);
        g_free(ids);
}

/* Processes what the bus has, then sleeps until it has more or UNTIL (CLOCK_MONOTONIC) comes. */
static void pump(TestDaemon *d, usec_t until) {
        struct pollfd p[2] = {
                { .fd = sd_bus_get_fd(d->bus) },
                { .fd = d->notify_fd, .events = POLLIN },
        };
        uint64_t bus_until;
        usec_t now;
        int r;

        while ((r = sd_bus_process(d->bus, NULL)) > 0)
                ;
        assert_true(r >= 0);
        /* Asked after processing: a big call may wait in the queue for POLLOUT. */
        p[0].events = (short) sd_bus_get_events(d->bus);
        if (sd_bus_get_timeout(d->bus, &bus_until) > 0 && bus_until < until)
                until = bus_until;
        now = now_usec(CLOCK_MONOTONIC);
        if (until > now && poll(p, 2, (int) ((until - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC)) > 0 &&
            (p[1].revents & POLLIN))
                (void) test_daemon_find_notify(d, "\n");        /* drains the notify socket */
        while ((r = sd_bus_process(d->bus, NULL)) > 0)
                ;
        assert_true(r >= 0);
}

static void test_chaos(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { WORKERS = 4, WARMUP = 5000, BATCH = 200, OUTSTANDING = 2000 };
        /* The 30 s; less where every process is several times slower. */
        uint64_t seconds = test_env_u64("APIARY_CHAOS_SECONDS",
                                        test_under_wrapper() ? 3 : test_under_asan() ? 10 : 30);
        uint64_t kill_ms = test_env_u64("APIARY_CHAOS_KILL_MS", test_under_wrapper() ? 20 : 5);
        uint64_t seed = test_env_u64("APIARY_CHAOS_SEED", now_usec(CLOCK_REALTIME) % 1000000007);
        Chaos c = { .payload_of = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL) };
        AllReady all = { "echo", WORKERS };
        unsigned fds_before, fds_after, kills = 0, missed = 0;
        uint64_t rss_before, rss_after, done = 0, failed = 0;
        GHashTable *reasons = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        GRand *rand;
        usec_t end, next_kill;

        print_message("chaos: %" PRIu64 " s, a worker SIGKILLed every %" PRIu64 " ms, seed %" PRIu64
                      " (APIARY_CHAOS_SEED=%" PRIu64 " to repeat)\n", seconds, kill_ms, seed, seed);
        rand = g_rand_new_with_seed((guint32) seed);

        test_daemon_start(d, &f->bus,
                          "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=4\nRestartSec=1ms\nRestartMaxSec=10ms\n"
                          "StartLimitBurst=0\nTaskRetries=1\nQueueLimit=100000\n",
                          true);
        test_collect_results(d);

        /* Warm up: the heap and the bus reach their working size before the "before" figures. */
        chaos_submit(d, &c, WARMUP);
        test_wait_results(d, WARMUP);
        test_wait_until(d, pool_all_ready, &all, TEST_TIMEOUT_USEC, "the pool to be ready");
        assert_children_are_workers(d, "echo", WORKERS);
        fds_before = test_proc_count_fds(d->pid);
        rss_before = test_proc_rss_kib(d->pid);

        end = now_usec(CLOCK_MONOTONIC) + seconds * USEC_PER_SEC;
        next_kill = now_usec(CLOCK_MONOTONIC);
        for (;;) {
                usec_t now = now_usec(CLOCK_MONOTONIC);

                if (now >= end)
                        break;
                if (c.submitted - g_hash_table_size(d->results) < OUTSTANDING)
                        chaos_submit(d, &c, BATCH);
                if (now >= next_kill) {
                        g_autofree pid_t *children = NULL;
                        size_t n;

                        children = test_proc_children(d->pid, &n);
                        if (n > 0 && kill(children[g_rand_int_range(rand, 0, (gint32) n)], SIGKILL) == 0)
                                kills++;
                        else
                                missed++;       /* every worker between exit and respawn */
                        next_kill = now + kill_ms * USEC_PER_MSEC;
                }
                pump(d, MIN(next_kill, end));
        }

        /* The chaos is over: everything accepted ends, and the pool comes back whole. */
        test_wait_results(d, c.submitted);
        test_wait_until(d, pool_all_ready, &all, TEST_TIMEOUT_USEC, "the pool to be ready again");

        assert_int_equal(g_hash_table_size(d->results), c.submitted);
        assert_int_equal(d->n_finished, c.submitted);   /* no task ended twice */
        {
                GHashTableIter i;
                gpointer key, value;

                g_hash_table_iter_init(&i, c.payload_of);
                while (g_hash_table_iter_next(&i, &key, &value)) {
                        const TestResult *r = test_result(d, *(uint64_t *) key);
                        g_autofree char *payload = g_strdup_printf("chaos %" PRIu64, (uint64_t) GPOINTER_TO_SIZE(value));

                        assert_non_null(r);
                        assert_int_equal(r->count, 1);
                        if (r->ok) {
                                assert_string_equal(r->data, payload);
                                done++;
                                continue;
                        }
                        /* A failure says why, and the only reason here is the chaos itself: two
                         * workers (TaskRetries=1) killed under the task. */
                        if (strcmp(r->data, "worker crashed 2 times running this task; last: killed by SIGKILL") != 0)
                                fail_msg("task %" PRIu64 " failed: \"%s\"", *(uint64_t *) key, (char *) r->data);
                        failed++;
                        g_hash_table_replace(reasons, g_strdup(r->data), NULL);
                }
        }
        print_message("chaos: %" PRIu64 " tasks submitted, %" PRIu64 " done, %" PRIu64 " failed (%u reasons), "
                      "%u workers SIGKILLed (%u times none was there), %" PRIu64 " restarts\n",
                      c.submitted, done, failed, g_hash_table_size(reasons), kills, missed,
                      pool_u64(d, "echo", "Restarts"));
        assert_true(kills > 0);

        /* The counters add up, on the manager and on the pool. */
        assert_int_equal(manager_u64(d, "TasksSubmitted"), c.submitted);
        assert_int_equal(manager_u64(d, "TasksQueued"), 0);
        assert_int_equal(manager_u64(d, "TasksRunning"), 0);
        assert_int_equal(manager_u64(d, "TasksDone"), done);
        assert_int_equal(manager_u64(d, "TasksFailed"), failed);
        assert_int_equal(pool_u64(d, "echo", "TasksSubmitted"), c.submitted);
        assert_int_equal(pool_u64(d, "echo", "TasksDone") + pool_u64(d, "echo", "TasksFailed"), c.submitted);

        /* No zombie, no stray child, no leaked descriptor, no memory kept. */
        assert_children_are_workers(d, "echo", WORKERS);
        fds_after = test_proc_count_fds(d->pid);
        rss_after = test_proc_rss_kib(d->pid);
        print_message("apiaryd: %u fds before, %u after; RSS %" PRIu64 " KiB before, %" PRIu64 " KiB after\n",
                      fds_before, fds_after, rss_before, rss_after);
        /* Not more: fewer when the chaos left the zygote dead, waiting to be started again (its link
         * and its pidfd). */
        if (fds_after > fds_before)
                fail_msg("apiaryd holds %u fds, %u before the chaos", fds_after, fds_before);
        if (memory_bounds_apply() && rss_after > rss_before + MAX(rss_before / 2, 16 * 1024))
                fail_msg("apiaryd's RSS grew from %" PRIu64 " to %" PRIu64 " KiB", rss_before, rss_after);

        g_hash_table_destroy(reasons);
        g_hash_table_destroy(c.payload_of);
        g_rand_free(rand);
}

/* ---- volume ---- */

typedef struct Volume {
        size_t n, batch;
        size_t sent, finished;          /* tasks */
        unsigned in_flight;             /* RunBatch calls */
        uint64_t failures;
} Volume;

typedef struct VolumeBatch {
        Volume *v;
        size_t first, n;
} VolumeBatch;

#define VOLUME_PAYLOAD_FORMAT "%010zu echo"

static int on_run_batch_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        VolumeBatch *b = userdata;
        Volume *v = b->v;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        size_t k = 0;
        int r, ok;

        if (e)
                fail_msg("RunBatch of tasks %zu…: %s: %s", b->first, e->name, e->message);
        assert_true(sd_bus_message_enter_container(reply, 'a', "(bay)") > 0);
        while ((r = sd_bus_message_enter_container(reply, 'r', "bay")) > 0) {
                char expect[32];
                const void *p;
                size_t size;
                int len = snprintf(expect, sizeof(expect), VOLUME_PAYLOAD_FORMAT, b->first + k);

                assert_true(sd_bus_message_read(reply, "b", &ok) > 0);
                assert_true(sd_bus_message_read_array(reply, 'y', &p, &size) >= 0);
                if (!ok)
                        v->failures++;
                else if (size != (size_t) len || memcmp(p, expect, size) != 0)
                        fail_msg("task %zu: result \"%.*s\", expected \"%s\"", b->first + k, (int) size,
                                 (const char *) p, expect);
                assert_true(sd_bus_message_exit_container(reply) >= 0);
                k++;
        }
        assert_true(r >= 0);
        assert_int_equal(k, b->n);
        v->finished += b->n;
        v->in_flight--;
        g_free(b);
        return 0;
}

static void volume_send(TestDaemon *d, Volume *v) {
        sd_bus_message *m = NULL;
        VolumeBatch *b = g_new0(VolumeBatch, 1);

        b->v = v;
        b->first = v->sent;
        b->n = MIN(v->batch, v->n - v->sent);
        assert_true(sd_bus_message_new_method_call(d->bus, &m, "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                                   "org.apiary.Apiary1.Manager", "RunBatch") >= 0);
        assert_true(sd_bus_message_append(m, "s", "echo") >= 0);
        assert_true(sd_bus_message_open_container(m, 'a', "ay") >= 0);
        for (size_t i = 0; i < b->n; i++) {
                char payload[32];
                int len = snprintf(payload, sizeof(payload), VOLUME_PAYLOAD_FORMAT, b->first + i);

                assert_true(sd_bus_message_append_array(m, 'y', payload, (size_t) len) >= 0);
        }
        assert_true(sd_bus_message_close_container(m) >= 0);
        assert_true(sd_bus_message_append(m, "a{sv}", 0) >= 0);
        assert_true(sd_bus_call_async(d->bus, NULL, m, on_run_batch_reply, b, 10 * USEC_PER_MINUTE) >= 0);
        sd_bus_message_unref(m);
        v->sent += b->n;
        v->in_flight++;
}

/* Runs tasks [v->finished, UNTIL) to their end, with up to 4 RunBatch calls in flight. */
static void volume_run(TestDaemon *d, Volume *v, size_t until) {
        while (v->finished < until) {
                while (v->in_flight < 4 && v->sent < until)
                        volume_send(d, v);
                pump(d, now_usec(CLOCK_MONOTONIC) + TEST_TIMEOUT_USEC);
        }
}

static void test_volume_echo(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        uint64_t n = test_env_u64("APIARY_VOLUME_TASKS",
                                  test_under_wrapper() ? 20000 : test_under_asan() ? 200000 : 1000000);
        Volume v = { .n = n, .batch = 10000 };
        uint64_t rss_warm, rss_end;
        unsigned fds_warm, fds_end;
        usec_t t0, t1;

        test_daemon_start(d, &f->bus,
                          /* Two RunBatch calls of 10,000 in flight: past the default share of one caller. */
                          "[Apiary]\nMaxTasksPerCaller=0\n"
                          "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=2\nConcurrency=16\n", true);

        /* A tenth of them warms up (at least one batch), then the rest. */
        t0 = now_usec(CLOCK_MONOTONIC);
        volume_run(d, &v, MAX(n / 10, MIN(n, v.batch)));
        rss_warm = test_proc_rss_kib(d->pid);
        fds_warm = test_proc_count_fds(d->pid);
        volume_run(d, &v, n);
        t1 = now_usec(CLOCK_MONOTONIC);
        rss_end = test_proc_rss_kib(d->pid);
        fds_end = test_proc_count_fds(d->pid);

        /* Informational only: the figure shapes the default count, it is not checked. */
        print_message("%" PRIu64 " echo tasks in RunBatch(%zu) calls, 4 in flight: %.1f s, %.0f tasks/s\n", n,
                      v.batch, (double) (t1 - t0) / USEC_PER_SEC, (double) n * USEC_PER_SEC / (double) (t1 - t0));
        print_message("apiaryd RSS: %" PRIu64 " KiB after the warm-up, %" PRIu64 " KiB at the end; fds %u, %u\n",
                      rss_warm, rss_end, fds_warm, fds_end);

        assert_int_equal(v.failures, 0);
        assert_int_equal(v.finished, n);
        assert_int_equal(manager_u64(d, "TasksSubmitted"), n);
        assert_int_equal(manager_u64(d, "TasksDone"), n);
        assert_int_equal(manager_u64(d, "TasksFailed"), 0);
        assert_int_equal(manager_u64(d, "TasksQueued") + manager_u64(d, "TasksRunning"), 0);
        assert_int_equal(fds_end, fds_warm);
        if (memory_bounds_apply() && rss_end > rss_warm + MAX(rss_warm / 4, 8 * 1024))
                fail_msg("apiaryd's RSS grew from %" PRIu64 " KiB after the warm-up to %" PRIu64 " KiB", rss_warm,
                         rss_end);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_chaos, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_volume_echo, test_fixture_setup, test_fixture_teardown),
        };

        if (getenv("TEST_FILTER"))
                cmocka_set_test_filter(getenv("TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
