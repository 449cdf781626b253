/* SPDX-License-Identifier: MIT */
/*
 * Worker windows (docs/tasks.md, "Windows"): a pool whose tasks are short hands each worker a few
 * more than Concurrency=, which it starts one after another. What that must not cost: a short task
 * held behind a long one while another worker is free, a timeout that counts time spent waiting,
 * or an innocent task charged for the crash of another in the same window. The real apiaryd on a
 * private bus, with the sleep plugin (asynchronous) and the control plugin (synchronous).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include <cmocka.h>

#include "tests/harness.h"

typedef TestFixture Fixture;

#define NAP_POOL "[Apiary]\nPluginDirectory=@PLUGINS@\n[Pool nap]\nPlugin=sleep.so\n"

/* Submits N copies of TEXT in one SubmitBatch; their ids go to IDS. */
static void submit_copies(TestDaemon *d, const char *pool, const char *text, size_t n, uint64_t *ids) {
        char **payloads = g_new0(char *, n + 1);

        for (size_t i = 0; i < n; i++)
                payloads[i] = g_strdup(text);
        test_submit_batch(d, pool, payloads, n, ids);
        g_strfreev(payloads);
}

/* Submits HEAD, then N copies of TEXT, in one SubmitBatch: the head's id is IDS[0]. */
static void submit_behind(TestDaemon *d, const char *pool, const char *head, const char *text, size_t n,
                          uint64_t *ids) {
        char **payloads = g_new0(char *, n + 2);

        payloads[0] = g_strdup(head);
        for (size_t i = 1; i <= n; i++)
                payloads[i] = g_strdup(text);
        test_submit_batch(d, pool, payloads, n + 1, ids);
        g_strfreev(payloads);
}

/* Every task of IDS[1..N] ended, and before IDS[0]. */
static void assert_all_before_head(TestDaemon *d, const uint64_t *ids, size_t n) {
        const TestResult *head = test_result(d, ids[0]);

        assert_non_null(head);
        assert_true(head->ok);
        for (size_t i = 1; i <= n; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_non_null(r);
                assert_true(r->ok);
                assert_int_equal(r->count, 1);
                if (r->order > head->order)
                        fail_msg("task %zu of %zu ended after the long task at the head", i, n);
        }
}

/* The case: 2 workers, one 2 s task, then 200 tasks of 1 ms: none waits for the long one. */
static void test_short_tasks_do_not_wait_behind_a_long_one(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 200 };
        uint64_t ids[N + 1];

        test_daemon_start(d, &f->bus, NAP_POOL "Workers=2\n", true);
        test_collect_results(d);
        submit_behind(d, "nap", "2000", "1", N, ids);
        test_wait_results(d, N + 1);
        assert_all_before_head(d, ids, N);
}

/* The same once the pool's tasks are known to be short, so that each worker holds a window: the
 * tasks in the window behind the long one are taken back, and run on the other worker. A window
 * needs the pool's estimate of its task time below 0.5 ms, and one warm task that a loaded machine
 * kept from its worker for a millisecond raises it at once: then there is no window that time, and
 * the order still holds. So it tries a few times, and wants a take-back in one of them. */
static void test_window_behind_a_long_task_is_taken_back(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { WARM = 400, N = 200, TRIES = 5 };
        uint64_t warm[WARM], ids[N + 1];
        size_t n_results = 0;
        g_autofree char *line = NULL;

        test_daemon_start_logged(d, &f->bus, NAP_POOL "Workers=2\n", true);
        test_collect_results(d);
        for (int i = 1; !line; i++) {
                submit_copies(d, "nap", "0", WARM, warm);
                n_results += WARM;
                test_wait_results(d, n_results);

                submit_behind(d, "nap", "2000", "0", N, ids);
                n_results += N + 1;
                test_wait_results(d, n_results);
                assert_all_before_head(d, ids, N);
                /* The line is logged before the tasks taken back run: by now it is in the log, or
                 * on its way through the pipe to it. */
                line = test_daemon_find_log(d, "waiting behind one that runs long",
                                            i < TRIES ? USEC_PER_SEC : TEST_TIMEOUT_USEC);
                if (!line && i == TRIES)
                        fail_msg("no window was taken back in %d tries", TRIES);
                if (!line)
                        fprintf(stderr, "try %d: no window was taken back (no window, or none held back); again\n", i);
        }
}

/* A timeout counts from the moment the worker starts the task, not from when it was sent: five
 * tasks of 200 ms in one worker's window, each well within its 400 ms, all succeed, though the
 * last ends a second after it was sent. */
static void test_timeout_counts_from_start(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { WARM = 200, N = 5 };
        uint64_t warm[WARM], ids[N];

        test_daemon_start(d, &f->bus, NAP_POOL "Workers=1\nTaskTimeoutSec=400ms\n", true);
        test_collect_results(d);
        submit_copies(d, "nap", "0", WARM, warm);
        test_wait_results(d, WARM);

        submit_copies(d, "nap", "200", N, ids);
        test_wait_results(d, WARM + N);
        for (size_t i = 0; i < N; i++) {
                const TestResult *r = test_result(d, ids[i]);

                if (!r->ok)
                        fail_msg("task %zu of %d failed: %s", i, N, (const char *) r->data);
        }
}

static const char *const control_pool =
        "[Pool ctl]\n"
        "Plugin=@TEST_PLUGINS@/control.so\n"
        "Workers=2\n"
        "RestartSec=1ms\n"
        "StartLimitBurst=0\n"
        "TaskTimeoutSec=300ms\n";

/* One task that crashes (or hangs) among trivial ones that share its window: the innocent ones
 * all succeed, whatever task was running when the worker died; the culprit runs alone until the
 * blame is certain, and fails with its own reason after TaskRetries=. */
static void run_poison_among_innocents(TestDaemon *d, const char *poison, const char *reason) {
        enum { WARM = 200, N = 60 };
        uint64_t warm[WARM], ids[N + 1];
        char **payloads = g_new0(char *, N + 2);
        size_t bad = N / 2;

        test_collect_results(d);
        submit_copies(d, "ctl", "x", WARM, warm);
        test_wait_results(d, WARM);

        for (size_t i = 0; i <= N; i++)
                payloads[i] = g_strdup(i == bad ? poison : "x");
        test_submit_batch(d, "ctl", payloads, N + 1, ids);
        g_strfreev(payloads);
        test_wait_results(d, WARM + N + 1);

        for (size_t i = 0; i <= N; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_int_equal(r->count, 1);
                if (i == bad) {
                        assert_false(r->ok);
                        if (!strstr(r->data, reason))
                                fail_msg("the culprit failed with \"%s\", not \"%s\"", (const char *) r->data, reason);
                } else if (!r->ok)
                        fail_msg("innocent task %zu failed: %s", i, (const char *) r->data);
        }
        assert_int_equal(test_get_manager_u64(d, "TasksFailed"), 1);
}

static void test_crash_in_a_window_blames_only_the_culprit(void **state) {
        Fixture *f = *state;

        test_daemon_start(&f->daemon, &f->bus, control_pool, true);
        run_poison_among_innocents(&f->daemon, "crash", "worker crashed 3 times running this task");
}

static void test_hang_in_a_window_blames_only_the_culprit(void **state) {
        Fixture *f = *state;

        test_daemon_start(&f->daemon, &f->bus, control_pool, true);
        run_poison_among_innocents(&f->daemon, "hang", "timeout: no result within 300ms");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_short_tasks_do_not_wait_behind_a_long_one, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_window_behind_a_long_task_is_taken_back, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_timeout_counts_from_start, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_crash_in_a_window_blames_only_the_culprit, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_hang_in_a_window_blames_only_the_culprit, test_fixture_setup,
                                                test_fixture_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
