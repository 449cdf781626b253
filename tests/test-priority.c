/* SPDX-License-Identifier: MIT */
/*
 * Task priorities (docs/tasks.md, "Priorities"): the "priority" option, 0 to 9, dispatched highest
 * first, FIFO within one priority, counted per priority in QueuedByPriority; a low task is not
 * starved: with PriorityAgingSec=, no task submitted (9 - p) × PriorityAgingSec after it overtakes
 * it. The real apiaryd on a private bus with the sleep plugin, one worker, which a first task keeps
 * busy while the others queue.
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

/* The stream of priority-9 tasks of run_stream(): one every 10 ms. */
#define STREAM 150

#define NAP_POOL "[Apiary]\nPluginDirectory=@PLUGINS@\n[Pool nap]\nPlugin=sleep.so\nWorkers=1\n"

/* Submits N tasks of MS milliseconds each at PRIORITY (< 0: without the option). */
static void submit_naps(TestDaemon *d, unsigned ms, size_t n, int priority, uint64_t *ids) {
        char **payloads = g_new0(char *, n + 1);

        for (size_t i = 0; i < n; i++)
                payloads[i] = g_strdup_printf("%u", ms);
        if (priority < 0)
                test_submit_batch(d, "nap", payloads, n, ids);
        else
                test_submit_batch_priority(d, "nap", payloads, n, (unsigned) priority, ids);
        g_strfreev(payloads);
}

static unsigned end_order(TestDaemon *d, uint64_t id) {
        const TestResult *r = test_result(d, id);

        assert_non_null(r);
        assert_true(r->ok);
        assert_int_equal(r->count, 1);
        return r->order;
}

/* QueuedByPriority, at. */
static void get_queued_by_priority(TestDaemon *d, uint64_t ret[10]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *path = test_pool_path("nap");
        const uint64_t *v;
        size_t size;

        assert_true(sd_bus_get_property(d->bus, "org.apiary.Apiary1", path, "org.apiary.Apiary1.Pool",
                                        "QueuedByPriority", &error, &reply, "at") >= 0);
        assert_true(sd_bus_message_read_array(reply, 't', (const void **) &v, &size) >= 0);
        assert_int_equal(size, 10 * sizeof(uint64_t));
        memcpy(ret, v, size);
}

/* 20 tasks each at priorities 0 (no option), 5 and 9, queued in that order behind a busy worker:
 * they are counted per priority, and run 9s first, then 5s, then 0s, each in the order submitted. */
static void test_highest_first_fifo_within(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 20 };
        uint64_t blocker, low[N], mid[N], high[N], queued[10];

        test_daemon_start(d, &f->bus, NAP_POOL "PriorityAgingSec=infinity\n", true);
        test_collect_results(d);
        submit_naps(d, 1500, 1, -1, &blocker);
        submit_naps(d, 1, N, -1, low);
        submit_naps(d, 1, N, 5, mid);
        submit_naps(d, 1, N, 9, high);

        get_queued_by_priority(d, queued);
        for (unsigned i = 0; i < 10; i++)
                assert_int_equal(queued[i], i == 0 || i == 5 || i == 9 ? N : 0);
        {
                g_autofree char *path = test_pool_path("nap");

                assert_int_equal(test_get_u64(d, path, "org.apiary.Apiary1.Pool", "TasksQueued"), 3 * N);
        }
        {
                g_autofree char *cmd = g_strdup_printf("%s --bus=%s --no-color status nap", getenv("APIARYCTL"),
                                                       f->bus.address);
                g_autofree char *out = NULL;
                int status;

                assert_true(g_spawn_command_line_sync(cmd, &out, NULL, &status, NULL));
                assert_int_equal(status, 0);
                if (!strstr(out, "    Queued: 20 at priority 9, 20 at 5, 20 at 0\n"))
                        fail_msg("no per-priority line in apiaryctl status:\n%s", out);
        }

        test_wait_results(d, 3 * N + 1);
        for (unsigned i = 0; i < N; i++) {
                assert_int_equal(end_order(d, high[i]), 1 + i);
                assert_int_equal(end_order(d, mid[i]), 1 + N + i);
                assert_int_equal(end_order(d, low[i]), 1 + 2 * N + i);
        }
        get_queued_by_priority(d, queued);
        for (unsigned i = 0; i < 10; i++)
                assert_int_equal(queued[i], 0);
}

/*
 * One task at priority 0 behind a busy worker, then a stream of priority-9 tasks, one every 10 ms
 * for 1.5 s, of 20 ms each: the queue never empties. Returns the low task's end order, and each
 * high task's id and when it was submitted, relative to the low one.
 */
static unsigned run_stream(Fixture *f, const char *aging, GArray *high_ids, GArray *high_after) {
        TestDaemon *d = &f->daemon;
        g_autofree char *config = g_strdup_printf(NAP_POOL "PriorityAgingSec=%s\n", aging);
        uint64_t blocker, low, id;
        usec_t t0;
        unsigned order;

        test_daemon_start(d, &f->bus, config, true);
        test_collect_results(d);
        submit_naps(d, 200, 1, 0, &blocker);
        submit_naps(d, 1, 1, 0, &low);
        t0 = now_usec(CLOCK_MONOTONIC);
        for (unsigned i = 0; i < STREAM; i++) {
                usec_t after;

                (void) usleep(10 * 1000);
                submit_naps(d, 20, 1, 9, &id);
                after = now_usec(CLOCK_MONOTONIC) - t0;
                g_array_append_val(high_ids, id);
                g_array_append_val(high_after, after);
        }
        test_wait_results(d, STREAM + 2);
        order = end_order(d, low);
        return order;
}

static void test_aging_bounds_the_wait(void **state) {
        Fixture *f = *state;
        g_autoptr(GArray) ids = g_array_new(false, false, sizeof(uint64_t));
        g_autoptr(GArray) after = g_array_new(false, false, sizeof(usec_t));
        unsigned low, overtaken = 0;

        low = run_stream(f, "100ms", ids, after);
        for (guint i = 0; i < ids->len; i++) {
                unsigned order = end_order(&f->daemon, g_array_index(ids, uint64_t, i));

                if (order < low)
                        overtaken++;
                if (order < low && g_array_index(after, usec_t, i) >= 1200 * USEC_PER_MSEC)
                        fail_msg("a priority-9 task submitted %.0f ms after the priority-0 one ran before it",
                                 (double) g_array_index(after, usec_t, i) / USEC_PER_MSEC);
        }
        /* It did wait: the first ones of the stream went before it. */
        assert_true(overtaken > 0);
}

static void test_strict_priorities_starve(void **state) {
        Fixture *f = *state;
        g_autoptr(GArray) ids = g_array_new(false, false, sizeof(uint64_t));
        g_autoptr(GArray) after = g_array_new(false, false, sizeof(usec_t));

        /* The blocker ends first; the low task last, after all of the stream. */
        assert_int_equal(run_stream(f, "infinity", ids, after), STREAM + 1);
}

/* Through libdbus (python3-dbus), whose ints are int32: accepted; 10, -1 and a string are refused
 * with InvalidOption, and the error says the range. */
static void test_priority_option_checked(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL;

        test_daemon_start(d, &f->bus, NAP_POOL, true);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "submit-with", "nap", "1", "priority=7", NULL }),
                         0);
        g_free(out);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "submit-with", "nap", "1", "priority=10", NULL }),
                         1);
        assert_non_null(strstr(out, "org.apiary.Apiary1.Error.InvalidOption"));
        assert_non_null(strstr(out, "0 (the lowest, the default) to 9 (the highest)"));
        g_free(out);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "submit-with", "nap", "1", "priority=-1", NULL }),
                         1);
        assert_non_null(strstr(out, "org.apiary.Apiary1.Error.InvalidOption"));
        g_free(out);
        assert_int_equal(test_client(&f->bus, 0, &out,
                                     (const char *[]) { "submit-with", "nap", "1", "priority='high'", NULL }), 1);
        assert_non_null(strstr(out, "org.apiary.Apiary1.Error.InvalidOption"));
        assert_non_null(strstr(out, "takes an integer"));
        g_free(out);
        out = NULL;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_highest_first_fifo_within, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_aging_bounds_the_wait, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_strict_priorities_starve, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_priority_option_checked, test_fixture_setup,
                                                test_fixture_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
