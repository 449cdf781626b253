/* SPDX-License-Identifier: MIT */
/*
 * Autoscaling, Workers=MIN..MAX (docs/tasks.md, "Autoscaling"): a pool grows while tasks wait and
 * every worker is busy, shrinks after ScaleDownIdleSec= of idleness, stays within its bounds, and
 * does not flap under a steady load: the test drives load up and down and counts the scale events.
 * The real apiaryd on a private bus with the sleep plugin (each task sleeps its payload, in ms).
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

typedef TestFixture Fixture;

#define NAP_POOL "[Apiary]\nPluginDirectory=@PLUGINS@\n[Pool nap]\nPlugin=sleep.so\n"
#define POOL_IFACE "org.apiary.Apiary1.Pool"

static uint64_t pool_u64(TestDaemon *d, const char *property) {
        g_autofree char *path = test_pool_path("nap");

        return test_get_u64(d, path, POOL_IFACE, property);
}

static uint32_t pool_u32(TestDaemon *d, const char *property) {
        g_autofree char *path = test_pool_path("nap");

        return test_get_u32(d, path, POOL_IFACE, property);
}

static void submit_naps(TestDaemon *d, unsigned ms, size_t n) {
        char **payloads = g_new0(char *, n + 1);
        uint64_t *ids = g_new(uint64_t, n);

        for (size_t i = 0; i < n; i++)
                payloads[i] = g_strdup_printf("%u", ms);
        test_submit_batch(d, "nap", payloads, n, ids);
        g_strfreev(payloads);
        g_free(ids);
}

static bool wanted_is(TestDaemon *d, const void *userdata) {
        return pool_u32(d, "WorkersWanted") == *(const unsigned *) userdata;
}

static void wait_wanted(TestDaemon *d, unsigned n, usec_t timeout) {
        test_wait_until(d, wanted_is, &n, timeout, "the pool's WorkersWanted");
}

/* Up under a burst, to MAX and no further; back down to MIN once idle; the bounds and the counts
 * on the bus; the bounds in apiaryctl status. */
static void test_up_and_down(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *cmd = NULL, *out = NULL;
        int status;

        test_daemon_start_logged(d, &f->bus, NAP_POOL "Workers=1..4\nScaleDownIdleSec=1s\n", true);
        test_wait_pool_state(d, "nap", "running");
        assert_int_equal(pool_u32(d, "WorkersMin"), 1);
        assert_int_equal(pool_u32(d, "WorkersMax"), 4);
        assert_int_equal(pool_u32(d, "WorkersWanted"), 1);

        test_collect_results(d);
        submit_naps(d, 100, 60);                /* 6 s of work for one worker */
        wait_wanted(d, 4, 5 * USEC_PER_SEC);
        g_free(test_daemon_wait_log(d, "Scaling up to 4 workers", TEST_TIMEOUT_USEC));
        assert_int_equal(pool_u64(d, "ScaleUps"), 3);

        cmd = g_strdup_printf("%s --bus=%s --no-color status nap", getenv("APIARYCTL"), f->bus.address);
        assert_true(g_spawn_command_line_sync(cmd, &out, NULL, &status, NULL));
        assert_int_equal(status, 0);
        if (!strstr(out, "     Scale: 1..4 workers, 3 up, 0 down"))
                fail_msg("no Scale line in apiaryctl status:\n%s", out);

        test_wait_results(d, 60);
        assert_int_equal(pool_u32(d, "WorkersWanted"), 4);     /* never above MAX */
        wait_wanted(d, 1, 10 * USEC_PER_SEC);
        g_free(test_daemon_wait_log(d, "Scaling down to 1 worker:", TEST_TIMEOUT_USEC));
        assert_int_equal(pool_u64(d, "ScaleUps"), 3);
        /* All three went once idle for 1 s: one event, or a few if they went idle apart. */
        assert_true(pool_u64(d, "ScaleDowns") >= 1 && pool_u64(d, "ScaleDowns") <= 3);
        assert_int_equal(pool_u64(d, "TasksFailed"), 0);
        test_wait_pool_state(d, "nap", "running");
}

/*
 * No flapping: a steady load that needs about 1.5 workers (a 60 ms task every 40 ms) for 4 s grows
 * the pool to 2, and then nothing moves: no worker is idle for ScaleDownIdleSec=1s, and no task
 * waits with two workers. Then the load stops, and the pool goes back to 1 once, after 1 s.
 */
static void test_steady_load_does_not_flap(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        uint64_t ups_after_warmup;
        usec_t end;

        test_daemon_start_logged(d, &f->bus, NAP_POOL "Workers=1..6\nScaleDownIdleSec=1s\n", true);
        test_wait_pool_state(d, "nap", "running");
        test_collect_results(d);

        /* Warm-up: the first 1 s settles at what the load needs. */
        end = now_usec(CLOCK_MONOTONIC) + USEC_PER_SEC;
        while (now_usec(CLOCK_MONOTONIC) < end) {
                submit_naps(d, 60, 1);
                (void) usleep(40 * 1000);
        }
        ups_after_warmup = pool_u64(d, "ScaleUps");
        assert_true(ups_after_warmup >= 1);

        end = now_usec(CLOCK_MONOTONIC) + 3 * USEC_PER_SEC;
        while (now_usec(CLOCK_MONOTONIC) < end) {
                submit_naps(d, 60, 1);
                (void) usleep(40 * 1000);
        }
        /* At most one more step up (a loaded machine may need it), and none down. */
        assert_true(pool_u64(d, "ScaleUps") <= ups_after_warmup + 1);
        assert_int_equal(pool_u64(d, "ScaleDowns"), 0);
        assert_true(pool_u32(d, "WorkersWanted") >= 2);

        wait_wanted(d, 1, 10 * USEC_PER_SEC);
        assert_int_equal(pool_u64(d, "TasksFailed"), 0);
}

/* Scale() works within the bounds, and is refused outside them with InvalidArgs (libdbus). */
static void test_scale_within_bounds(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL;

        test_daemon_start(d, &f->bus, NAP_POOL "Workers=2..4\n", true);
        test_wait_pool_state(d, "nap", "running");
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-pool", "nap", "Scale", "3", NULL }), 0);
        g_free(out);
        assert_int_equal(pool_u32(d, "WorkersWanted"), 3);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-pool", "nap", "Scale", "5", NULL }), 1);
        assert_non_null(strstr(out, "org.freedesktop.DBus.Error.InvalidArgs"));
        assert_non_null(strstr(out, "scales itself between 2 and 4 workers (Workers=2..4)"));
        g_free(out);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-pool", "nap", "Scale", "1", NULL }), 1);
        assert_non_null(strstr(out, "org.freedesktop.DBus.Error.InvalidArgs"));
        g_free(out);
        out = NULL;
        assert_int_equal(pool_u32(d, "WorkersWanted"), 3);
}

/* A reload keeps the count within the new bounds: one that lowers MAX below it scales down to MAX
 * at once, one that raises MIN above it scales up to MIN, a range that becomes a number scales to
 * that number; the bounds on the bus follow. */
static void test_reload_moves_the_bounds(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *out = NULL;

        test_daemon_start(d, &f->bus, NAP_POOL "Workers=1..4\n", true);
        test_wait_pool_state(d, "nap", "running");
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-pool", "nap", "Scale", "4", NULL }), 0);
        wait_wanted(d, 4, TEST_TIMEOUT_USEC);

        test_daemon_write_config(d, NAP_POOL "Workers=1..2\n");
        if (sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager",
                               "Reload", &error, NULL, NULL) < 0)
                fail_msg("Reload: %s: %s", error.name, error.message);
        wait_wanted(d, 2, TEST_TIMEOUT_USEC);
        assert_int_equal(pool_u32(d, "WorkersMax"), 2);

        test_daemon_write_config(d, NAP_POOL "Workers=3..6\n");
        if (sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager",
                               "Reload", &error, NULL, NULL) < 0)
                fail_msg("Reload: %s: %s", error.name, error.message);
        wait_wanted(d, 3, TEST_TIMEOUT_USEC);
        assert_int_equal(pool_u32(d, "WorkersMin"), 3);
        assert_int_equal(pool_u32(d, "WorkersMax"), 6);
        test_wait_pool_state(d, "nap", "running");

        /* A range that becomes a number: that number. */
        test_daemon_write_config(d, NAP_POOL "Workers=2\n");
        if (sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager",
                               "Reload", &error, NULL, NULL) < 0)
                fail_msg("Reload: %s: %s", error.name, error.message);
        wait_wanted(d, 2, TEST_TIMEOUT_USEC);
        assert_int_equal(pool_u32(d, "WorkersMax"), 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_up_and_down, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_steady_load_does_not_flap, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_scale_within_bounds, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_reload_moves_the_bounds, test_fixture_setup, test_fixture_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
