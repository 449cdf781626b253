/* SPDX-License-Identifier: MIT */
/*
 * The pools' histograms on the bus (docs/dbus-api.md, "Metrics"): how long tasks ran and how long
 * they waited, in Prometheus' cumulative buckets. The real apiaryd on a private bus, with the
 * sleep plugin, whose tasks run for as long as they are told.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include <cmocka.h>

#include "tests/harness.h"
#include "util/macro.h"

typedef TestFixture Fixture;

#define BUCKETS 17

typedef struct Bucket {
        uint64_t le_usec;       /* upper bound; UINT64_MAX for +Inf */
        uint64_t count;         /* cumulative */
} Bucket;

static void get_buckets(TestDaemon *d, const char *pool, const char *property, Bucket ret[BUCKETS]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *path = test_pool_path(pool);
        size_t n = 0;
        uint64_t le, count;
        int r;

        r = sd_bus_get_property(d->bus, "org.apiary.Apiary1", path, "org.apiary.Apiary1.Pool", property, &error,
                                &reply, "a(tt)");
        if (r < 0)
                fail_msg("Get %s: %s", property, error.message ?: strerror(-r));
        assert_true(sd_bus_message_enter_container(reply, 'a', "(tt)") >= 0);
        while ((r = sd_bus_message_read(reply, "(tt)", &le, &count)) > 0) {
                assert_true(n < BUCKETS);
                ret[n++] = (Bucket) { le, count };
        }
        assert_true(r >= 0);
        assert_int_equal(n, BUCKETS);
}

static uint64_t get_sum(TestDaemon *d, const char *pool, const char *property) {
        g_autofree char *path = test_pool_path(pool);

        return test_get_u64(d, path, "org.apiary.Apiary1.Pool", property);
}

/* The cumulative count of the bucket whose bound is LE_USEC. */
static uint64_t count_le(const Bucket b[BUCKETS], uint64_t le_usec) {
        for (size_t i = 0; i < BUCKETS; i++)
                if (b[i].le_usec == le_usec)
                        return b[i].count;
        fail_msg("no bucket with the bound %" PRIu64 " µs", le_usec);
        return 0;
}

/* Three tasks of 0 ms, two of 30 ms, one of 300 ms, one after another: the buckets say so, each
 * count at most the next, the last (+Inf) all six, and the sum at least the 360 ms slept. */
static void test_run_time_buckets(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        static const char *const naps[] = { "0", "0", "0", "30", "30", "300" };
        Bucket run[BUCKETS], wait[BUCKETS];

        test_daemon_start(d, &f->bus, "[Apiary]\nPluginDirectory=@PLUGINS@\n[Pool nap]\nPlugin=sleep.so\nWorkers=1\n",
                          true);
        get_buckets(d, "nap", "TaskRunTimeBuckets", run);
        assert_int_equal(run[BUCKETS - 1].count, 0);
        assert_int_equal(run[BUCKETS - 1].le_usec, UINT64_MAX);

        for (size_t i = 0; i < G_N_ELEMENTS(naps); i++) {
                g_autofree char *result = test_run_text(d, "nap", naps[i], 0);

                assert_non_null(result);
        }

        get_buckets(d, "nap", "TaskRunTimeBuckets", run);
        for (size_t i = 1; i < BUCKETS; i++) {
                assert_true(run[i - 1].le_usec < run[i].le_usec);
                assert_true(run[i - 1].count <= run[i].count);
        }
        /* 30 ms is past 25 ms whatever the machine; 0 ms stays below it unless it is very slow. */
        assert_int_equal(count_le(run, 25 * 1000), 3);
        assert_int_equal(count_le(run, 250 * 1000), 5);
        assert_int_equal(count_le(run, UINT64_MAX), 6);
        assert_true(get_sum(d, "nap", "TaskRunTimeSumUSec") >= 360 * 1000);

        /* Each waited for nothing but its dispatch: six waits, all counted. */
        get_buckets(d, "nap", "QueueWaitBuckets", wait);
        assert_int_equal(count_le(wait, UINT64_MAX), 6);
}

/* Queue wait: two tasks of 200 ms submitted at once to one worker: the second waits for the
 * first, so one wait is past 100 ms; a run time counts from its start, not its submission. */
static void test_queue_wait(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        char *payloads[] = { (char *) "200", (char *) "200", NULL };
        uint64_t ids[2];
        Bucket run[BUCKETS], wait[BUCKETS];

        test_daemon_start(d, &f->bus, "[Apiary]\nPluginDirectory=@PLUGINS@\n[Pool nap]\nPlugin=sleep.so\nWorkers=1\n",
                          true);
        test_collect_results(d);
        test_submit_batch(d, "nap", payloads, 2, ids);
        test_wait_results(d, 2);

        get_buckets(d, "nap", "QueueWaitBuckets", wait);
        assert_int_equal(count_le(wait, UINT64_MAX), 2);
        assert_int_equal(count_le(wait, 100 * 1000), 1);
        assert_true(get_sum(d, "nap", "QueueWaitSumUSec") >= 150 * 1000);
        get_buckets(d, "nap", "TaskRunTimeBuckets", run);
        assert_int_equal(count_le(run, 100 * 1000), 0);
        assert_int_equal(count_le(run, 250 * 1000), 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_run_time_buckets, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_queue_wait, test_fixture_setup, test_fixture_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
