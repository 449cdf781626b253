/* SPDX-License-Identifier: MIT */
/*
 * Recycling by memory and by age (docs/tasks.md, "Recycling workers"): MaxMemoryPerWorker= replaces
 * a worker that grew past it after a task, with no task failed or retried; a worker that starts
 * above it is reported, not recycled in a loop (Celery #4125); MaxWorkerAgeSec= replaces workers
 * one slot at a time. The real apiaryd on a private bus, with the control plugin's "leak N" (keeps
 * N MiB) and InitLeakMiB=.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <cmocka.h>

#include "tests/harness.h"
#include "util/macro.h"

typedef TestFixture Fixture;

#define CONTROL_POOL "[Apiary]\nPluginDirectory=@PLUGINS@\n[Pool leaky]\nPlugin=@TEST_PLUGINS@/control.so\n"
#define POOL_IFACE "org.apiary.Apiary1.Pool"
#define WORKER_IFACE "org.apiary.Apiary1.Worker"

static uint64_t pool_u64(TestDaemon *d, const char *property) {
        g_autofree char *path = test_pool_path("leaky");

        return test_get_u64(d, path, POOL_IFACE, property);
}

/* What a fresh worker of the pool uses, as its MemoryRSS says: a build with sanitizers starts
 * bigger, so the limits below are set from it. */
static uint64_t fresh_worker_rss(Fixture *f) {
        TestDaemon *d = &f->daemon;
        g_autofree char *path = test_worker_path("leaky", 0);
        uint64_t rss;

        test_daemon_start(d, &f->bus, CONTROL_POOL "Workers=1\n", true);
        test_wait_pool_state(d, "leaky", "running");
        rss = test_get_u64(d, path, WORKER_IFACE, "MemoryRSS");
        assert_int_equal(test_daemon_stop(d), 0);
        return rss;
}

static bool three_planned(TestDaemon *d, const void *userdata) {
        return pool_u64(d, "PlannedRestarts") >= 3;
}

/* A worker that keeps 30 MiB per task, limited to its size at start plus 50 MiB: recycled after
 * every second task, once it ended. Six tasks: three recycles, all six done, nothing retried. */
static void test_memory_recycles_after_the_task(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        uint64_t start = fresh_worker_rss(f), ids[6];
        char *payloads[6];
        g_autofree char *config = g_strdup_printf(CONTROL_POOL "Workers=1\nMaxMemoryPerWorker=%" PRIu64 "\n",
                                                  start + 50 * 1024 * 1024);
        g_autofree char *line = NULL;
        pid_t first;

        test_daemon_start_logged(d, &f->bus, config, true);
        test_wait_pool_state(d, "leaky", "running");
        first = test_worker_pid(d, "leaky", 0);
        test_collect_results(d);
        for (unsigned i = 0; i < 6; i++)
                payloads[i] = g_strdup("leak 30");
        test_submit_batch(d, "leaky", payloads, 6, ids);
        test_wait_results(d, 6);
        for (unsigned i = 0; i < 6; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_non_null(r);
                if (!r->ok)
                        fail_msg("task %u failed: %s", i, (char *) r->data);
                assert_string_equal(r->data, "leaked 30 MiB");
                assert_int_equal(r->count, 1);
                g_free(payloads[i]);
        }
        line = test_daemon_wait_log(d, "above MaxMemoryPerWorker=", TEST_TIMEOUT_USEC);
        assert_non_null(strstr(line, "recycling it once its tasks end"));
        /* The third worker retired with the last results: its replacement may still start. */
        test_wait_until(d, three_planned, NULL, TEST_TIMEOUT_USEC, "the third recycle");
        test_wait_pool_state(d, "leaky", "running");
        assert_int_equal(pool_u64(d, "MemoryRecycles"), 3);
        assert_int_equal(pool_u64(d, "PlannedRestarts"), 3);
        assert_int_equal(pool_u64(d, "Restarts"), 0);
        assert_int_equal(pool_u64(d, "TasksFailed"), 0);
        assert_true(test_worker_pid(d, "leaky", 0) != first);
        {
                g_autofree char *path = test_pool_path("leaky");
                g_autofree char *warning = test_get_string(d, path, POOL_IFACE, "MemoryWarning");

                assert_string_equal(warning, "");
        }
}

/* A plugin whose init() alone goes past the limit: a new worker would be as big. It keeps
 * serving, is not recycled, and the pool says why, on the bus, in the log and in apiaryctl. */
static void test_memory_no_recycle_loop(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *warning = NULL, *cmd = NULL, *out = NULL, *path = NULL;
        pid_t pid;
        int status;

        test_daemon_start_logged(d, &f->bus,
                                 CONTROL_POOL "Workers=1\nMaxMemoryPerWorker=64M\n"
                                              "[Pool leaky Plugin]\nInitLeakMiB=100\n", true);
        test_wait_pool_state(d, "leaky", "running");
        pid = test_worker_pid(d, "leaky", 0);
        for (unsigned i = 0; i < 5; i++) {
                g_autofree char *r = test_run_text(d, "leaky", "leak 1", 0);

                assert_string_equal(r, "leaked 1 MiB");
        }
        assert_int_equal(test_worker_pid(d, "leaky", 0), pid);
        assert_int_equal(pool_u64(d, "MemoryRecycles"), 0);
        assert_int_equal(pool_u64(d, "PlannedRestarts"), 0);
        g_free(test_daemon_wait_log(d, "right after it started, above MaxMemoryPerWorker=64M", TEST_TIMEOUT_USEC));

        path = test_pool_path("leaky");
        warning = test_get_string(d, path, POOL_IFACE, "MemoryWarning");
        assert_true(g_str_has_prefix(warning, "worker 0 uses "));
        assert_non_null(strstr(warning, "right after it starts, above MaxMemoryPerWorker=64M"));

        cmd = g_strdup_printf("%s --bus=%s --no-color status leaky", getenv("APIARYCTL"), f->bus.address);
        assert_true(g_spawn_command_line_sync(cmd, &out, NULL, &status, NULL));
        assert_int_equal(status, 0);
        if (!strstr(out, "   Warning: worker 0 uses "))
                fail_msg("no warning in apiaryctl status:\n%s", out);
}

/* Three workers started together with MaxWorkerAgeSec=1s and no jitter, so that all three are due
 * at once: over 5 s each is replaced (its PID sampled every 5 ms), and never two slots at once:
 * in the log, which apiaryd writes in the order things happen, between a slot's "recycling it" and
 * its new worker's "ready" there is no other slot's "recycling it". (Sampling the slots' states
 * one by one over the bus could see two of them down that never were at the same moment.) */
static void test_age_one_slot_at_a_time(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 3 };
        pid_t last[N];
        unsigned replaced[N] = {};
        usec_t end;
        g_autofree char *log = NULL;
        g_auto(GStrv) lines = NULL;
        int recycling = -1;

        test_daemon_start_logged(d, &f->bus,
                                 CONTROL_POOL "Workers=3\nMaxWorkerAgeSec=1s\nMaxWorkerAgeJitterSec=0\n", true);
        test_wait_pool_state(d, "leaky", "running");
        for (unsigned i = 0; i < N; i++)
                last[i] = test_worker_pid(d, "leaky", i);

        end = now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;
        while (now_usec(CLOCK_MONOTONIC) < end) {
                for (unsigned i = 0; i < N; i++) {
                        pid_t pid = test_worker_pid(d, "leaky", i);

                        if (pid > 0 && pid != last[i]) {
                                replaced[i]++;
                                last[i] = pid;
                        }
                }
                (void) usleep(5 * 1000);
        }
        for (unsigned i = 0; i < N; i++)
                if (replaced[i] < 2)
                        fail_msg("worker %u was replaced %u times in 5 s at MaxWorkerAgeSec=1s", i, replaced[i]);
        assert_true(pool_u64(d, "AgeRecycles") >= 2 * N);
        assert_int_equal(pool_u64(d, "Restarts"), 0);

        log = test_daemon_log(d);
        lines = g_strsplit(log, "\n", -1);
        for (char **l = lines; *l; l++) {
                const char *slot = strstr(*l, "leaky/");
                int n;

                if (!slot)
                        continue;
                n = atoi(slot + strlen("leaky/"));
                if (strstr(*l, "(MaxWorkerAgeSec=), recycling it")) {
                        if (recycling >= 0)
                                fail_msg("slot %d recycled for its age while slot %d was:\n%s", n, recycling, *l);
                        recycling = n;
                } else if (strstr(*l, "Worker ready") && n == recycling)
                        recycling = -1;
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_memory_recycles_after_the_task, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_memory_no_recycle_loop, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_age_one_slot_at_a_time, test_fixture_setup, test_fixture_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
