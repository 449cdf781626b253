/* SPDX-License-Identifier: MIT */
/* Reload: unchanged pools untouched, new ones started, removed ones drained away, changed ones
 * rolled over with no task lost, and a bad configuration changes nothing. */
#include <errno.h>
#include <glib.h>
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
#include "util/macro.h"

#define POOL_IFACE "org.apiary.Apiary1.Pool"
#define MANAGER_IFACE "org.apiary.Apiary1.Manager"

typedef TestFixture Fixture;

static const char *const before =
        "[Pool keep]\nPlugin=@PLUGINS@/echo.so\nWorkers=2\n"
        "[Pool change]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=2\n[Pool change Plugin]\nVersion=1\n"
        "[Pool grow]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n"
        "[Pool drop]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n";

static const char *const after =
        "[Pool keep]\nPlugin=@PLUGINS@/echo.so\nWorkers=2\n"
        "[Pool change]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=2\n[Pool change Plugin]\nVersion=2\n"
        "[Pool grow]\nPlugin=@PLUGINS@/echo.so\nWorkers=3\n"
        "[Pool new]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n";

static void reload_ok(TestDaemon *d) {
        sd_bus_error error = SD_BUS_ERROR_NULL;

        if (sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1", MANAGER_IFACE, "Reload", &error,
                               NULL, NULL) < 0)
                fail_msg("Reload: %s: %s", error.name, error.message);
}

typedef struct {
        pid_t change[2];
} Old;

static bool reload_applied(TestDaemon *d, const void *userdata) {
        const Old *old = userdata;
        g_auto(GStrv) pools = test_get_object_paths(d, "/org/apiary/Apiary1", MANAGER_IFACE, "Pools");
        g_autofree char *grow = test_pool_path("grow"), *newp = test_pool_path("new");

        if (g_strv_length(pools) != 4)
                return false;   /* "drop" still draining */
        for (unsigned i = 0; i < 2; i++) {
                pid_t pid = test_worker_pid(d, "change", i);
                if (pid <= 0 || pid == old->change[i])
                        return false;
        }
        return test_get_u32(d, grow, POOL_IFACE, "WorkersReady") == 3 &&
                test_get_u32(d, newp, POOL_IFACE, "WorkersReady") == 1;
}

static void test_reload_applies_changes(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 300 };
        char **payloads = g_new0(char *, N);
        uint64_t *ids = g_new(uint64_t, N);
        pid_t keep0, keep1, drop0;
        Old old;
        g_autofree char *drop = test_pool_path("drop");

        test_daemon_start(d, &f->bus, before, true);
        test_collect_results(d);
        keep0 = test_worker_pid(d, "keep", 0);
        keep1 = test_worker_pid(d, "keep", 1);
        old.change[0] = test_worker_pid(d, "change", 0);
        old.change[1] = test_worker_pid(d, "change", 1);
        drop0 = test_worker_pid(d, "drop", 0);
        for (size_t i = 0; i < N; i++)
                payloads[i] = g_strdup_printf("across reload %zu", i);

        /* Tasks in the pool whose plugin settings change, before and after the reload. */
        test_submit_batch(d, "change", payloads, N / 2, ids);
        test_daemon_write_config(d, after);
        reload_ok(d);
        test_submit_batch(d, "change", payloads + N / 2, N / 2, ids + N / 2);

        test_wait_until(d, reload_applied, &old, TEST_TIMEOUT_USEC, "the reload to be applied");
        test_wait_results(d, N);
        for (size_t i = 0; i < N; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_true(r->ok);
                assert_string_equal(r->data, payloads[i]);
                g_free(payloads[i]);
        }

        /* Unchanged: the very same processes. Removed: gone, processes and object. */
        assert_int_equal(test_worker_pid(d, "keep", 0), keep0);
        assert_int_equal(test_worker_pid(d, "keep", 1), keep1);
        assert_true(test_wait_pid_gone(drop0, TEST_TIMEOUT_USEC));
        {
                sd_bus_error error = SD_BUS_ERROR_NULL;
                char *s = NULL;

                assert_true(sd_bus_get_property_string(d->bus, "org.apiary.Apiary1", drop, POOL_IFACE, "State", &error,
                                                       &s) < 0);
                sd_bus_error_free(&error);
        }
        assert_non_null(test_daemon_wait_notify(d, "RELOADING=1", TEST_TIMEOUT_USEC));
        assert_non_null(strstr(test_daemon_find_notify(d, "RELOADING=1"), "MONOTONIC_USEC="));
        g_free(payloads);
        g_free(ids);
}

static void test_bad_config_changes_nothing(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        g_auto(GStrv) pools = NULL;
        pid_t keep0;

        test_daemon_start(d, &f->bus, before, true);
        keep0 = test_worker_pid(d, "keep", 0);

        test_daemon_write_config(d, "[Pool keep]\nPlugin=@PLUGINS@/echo.so\nWorkers=many\n");
        assert_true(sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1", MANAGER_IFACE, "Reload",
                                       &error, NULL, NULL) < 0);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.InvalidConfig");
        assert_non_null(strstr(error.message, d->config_path));
        assert_non_null(strstr(error.message, "[Pool keep] Workers=many: expected"));
        sd_bus_error_free(&error);

        /* SIGHUP with the same bad file: logged, and still nothing changes. */
        assert_int_equal(kill(d->pid, SIGHUP), 0);

        pools = test_get_object_paths(d, "/org/apiary/Apiary1", MANAGER_IFACE, "Pools");
        assert_int_equal(g_strv_length(pools), 4);
        assert_int_equal(test_worker_pid(d, "keep", 0), keep0);
}

static bool new_pool_running(TestDaemon *d, const void *userdata) {
        g_auto(GStrv) pools = test_get_object_paths(d, "/org/apiary/Apiary1", MANAGER_IFACE, "Pools");
        g_autofree char *path = test_pool_path("added");

        for (size_t i = 0; pools[i]; i++)
                if (strcmp(pools[i], path) == 0) {
                        g_autofree char *s = test_pool_state(d, "added");
                        return strcmp(s, "running") == 0;
                }
        return false;
}

static void test_sighup_reloads(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;

        test_daemon_start(d, &f->bus, "[Pool keep]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n", true);
        test_daemon_write_config(d, "[Pool keep]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n"
                                    "[Pool added]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n");
        assert_int_equal(kill(d->pid, SIGHUP), 0);
        test_wait_until(d, new_pool_running, NULL, TEST_TIMEOUT_USEC, "the added pool to run");
}

/* Everything --check-config checks is checked by Reload() too: a plugin file that is not there. */
static void test_reload_checks_plugin_files(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL;
        pid_t pid0, pid1;

        test_daemon_start(d, &f->bus, "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=2\n", true);
        pid0 = test_worker_pid(d, "echo", 0);
        pid1 = test_worker_pid(d, "echo", 1);

        test_daemon_write_dropin(d, "50-typo.conf", "[Pool echo]\nPlugin=nosuch.so\n");
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-manager", "Reload", NULL }), 1);
        assert_non_null(strstr(out, "org.apiary.Apiary1.Error.InvalidConfig: "));
        assert_non_null(strstr(out, "apiary.conf.d/50-typo.conf:2: [Pool echo] Plugin=nosuch.so: "));
        assert_non_null(strstr(out, "nosuch.so: No such file"));
        g_free(out);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-manager", "PlanReload", NULL }), 1);
        assert_non_null(strstr(out, "org.apiary.Apiary1.Error.InvalidConfig: "));

        /* Nothing was touched. */
        assert_int_equal(test_worker_pid(d, "echo", 0), pid0);
        assert_int_equal(test_worker_pid(d, "echo", 1), pid1);
        g_autofree char *state_ = test_pool_state(d, "echo");
        assert_string_equal(state_, "running");
}

/* New settings that cannot bring up a worker, each way they can fail. */
typedef struct BadSettings {
        const char *dropin;
        const char *reason;     /* in the error and in FailureReason */
} BadSettings;

static const BadSettings bad_settings[] = {
        /* the plugin cannot be loaded */
        { "[Pool echo]\nPlugin=@TEST_PLUGINS@/no-symbol.so\n", "worker 0 exited with status 3" },
        /* the plugin's init() refuses its settings */
        { "[Pool echo Plugin]\nInitMode=fail\n", "worker 0 exited with status 4 (plugin control: init failed: told to fail by InitMode=fail)" },
        /* init() never returns */
        { "[Pool echo]\nStartTimeoutSec=300ms\n[Pool echo Plugin]\nInitMode=hang\n",
          "worker 0 start timed out, killed by SIGKILL" },
        /* it crashes before it is ready */
        { "[Pool echo Plugin]\nInitMode=crash\n", "worker 0 killed by SIG" },
};

static const char *const serving = "[Pool echo]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=2\n";

static void test_failed_settings_roll_back(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 40 };

        test_daemon_start(d, &f->bus, serving, true);
        test_collect_results(d);

        for (size_t k = 0; k < ELEMENTSOF(bad_settings); k++) {
                g_autofree char *out = NULL, *reason = NULL, *plugin = NULL, *pool_state = NULL, *again = NULL;
                g_autofree char *path = test_pool_path("echo");
                char *payloads[N];
                uint64_t ids[N];
                pid_t pid1 = test_worker_pid(d, "echo", 1);

                /* Tasks keep coming across it: none is lost or failed. */
                for (size_t i = 0; i < N; i++)
                        payloads[i] = g_strdup_printf("case %zu task %zu", k, i);
                test_submit_batch(d, "echo", payloads, N / 2, ids);

                test_daemon_write_dropin(d, "50-new.conf", bad_settings[k].dropin);
                assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-manager", "Reload", NULL }), 1);
                if (!strstr(out, "org.apiary.Apiary1.Error.RolledBack: Pool \"echo\" rolled back to its previous settings: ") ||
                    !strstr(out, bad_settings[k].reason))
                        fail_msg("case %zu: %s", k, out);
                test_submit_batch(d, "echo", payloads + N / 2, N / 2, ids + N / 2);

                /* Once Reload() has answered, the old settings run in every slot; the slot not yet
                 * replaced was never touched. The pool serves, degraded, and says why. */
                assert_int_equal(test_get_u32(d, path, POOL_IFACE, "WorkersReady"), 2);
                assert_int_equal(test_worker_pid(d, "echo", 1), pid1);
                pool_state = test_pool_state(d, "echo");
                assert_string_equal(pool_state, "degraded");
                reason = test_get_string(d, path, POOL_IFACE, "FailureReason");
                assert_non_null(strstr(reason, bad_settings[k].reason));
                plugin = test_get_string(d, path, POOL_IFACE, "Plugin");
                assert_non_null(strstr(plugin, "/control.so"));

                test_wait_results(d, (k + 1) * N);
                for (size_t i = 0; i < N; i++) {
                        const TestResult *r = test_result(d, ids[i]);

                        assert_true(r->ok);
                        assert_string_equal(r->data, payloads[i]);
                        g_free(payloads[i]);
                }

                /* The configuration as it runs again: a reload says it is fine, and it is running. */
                test_daemon_write_dropin(d, "50-new.conf", NULL);
                assert_int_equal(test_client(&f->bus, 0, &again, (const char *[]) { "call-manager", "Reload", NULL }), 0);
                test_wait_pool_state(d, "echo", "running");
                g_free(reason);
                reason = test_get_string(d, path, POOL_IFACE, "FailureReason");
                assert_string_equal(reason, "");
        }
}

/* The exec plugin refuses a key it does not know: a typo rolls back, and the pool serves on. */
static void test_exec_typo_rolls_back(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL, *result = NULL, *pool_state = NULL;

        test_daemon_start(d, &f->bus, "[Pool cat]\nPlugin=@PLUGINS@/exec.so\nWorkers=2\n"
                                     "[Pool cat Plugin]\nCommand=/bin/cat\n", true);
        test_daemon_write_dropin(d, "50-typo.conf", "[Pool cat Plugin]\nComand=/bin/cat -n\n");
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-manager", "Reload", NULL }), 1);
        assert_non_null(strstr(out, "org.apiary.Apiary1.Error.RolledBack: Pool \"cat\" rolled back to its previous "
                                    "settings: worker 0 exited with status 4 ("));
        assert_non_null(strstr(out, "unknown key Comand="));
        result = test_run_text(d, "cat", "still serving", 0);
        assert_string_equal(result, "still serving");
        pool_state = test_pool_state(d, "cat");
        assert_string_equal(pool_state, "degraded");
}

/* A pool rolled back by one reload and removed by the next: the second went well, whatever the
 * draining pool once went through. */
static void test_removed_pool_rollback_is_not_this_reloads(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL, *again = NULL;

        test_daemon_start(d, &f->bus, "[Pool old]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nStopTimeoutSec=1s\n",
                          true);
        test_daemon_write_dropin(d, "50-new.conf", "[Pool old Plugin]\nInitMode=fail\n");
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-manager", "Reload", NULL }), 1);
        assert_non_null(strstr(out, "org.apiary.Apiary1.Error.RolledBack"));

        /* A task that never ends keeps the removed pool draining while the next reload ends. */
        (void) test_submit(d, "old", "hang", 4);
        test_daemon_write_dropin(d, "50-new.conf", NULL);
        test_daemon_write_config(d, "[Pool other]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n");
        assert_int_equal(test_client(&f->bus, 0, &again, (const char *[]) { "call-manager", "Reload", NULL }), 0);
}

static int reload_replied(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        int *replied = userdata;

        *replied = sd_bus_message_is_method_error(m, NULL) ? -1 : 1;
        return 0;
}

static bool is_set(TestDaemon *d, const void *userdata) {
        return *(const int *) userdata != 0;
}

/* One reload at a time: another Reload() meanwhile is Busy, and the first one ends well. */
static void test_reload_during_reload_is_busy(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL;
        int replied = 0;

        test_daemon_start(d, &f->bus, serving, true);
        test_daemon_write_dropin(d, "50-slow.conf", "[Pool echo Plugin]\nInitDelayMs=300\n");
        assert_true(sd_bus_call_method_async(d->bus, NULL, "org.apiary.Apiary1", "/org/apiary/Apiary1", MANAGER_IFACE,
                                             "Reload", reload_replied, &replied, NULL) >= 0);
        assert_true(sd_bus_flush(d->bus) >= 0);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-manager", "Reload", NULL }), 1);
        assert_string_equal(out, "org.apiary.Apiary1.Error.Busy: A reload is under way; try again once it has ended.");
        test_wait_until(d, is_set, &replied, TEST_TIMEOUT_USEC, "the first Reload() to be answered");
        assert_int_equal(replied, 1);
}

/* A reload that works still answers only once the new settings run everywhere. */
static void test_reload_answers_when_applied(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL, *path = test_pool_path("echo");
        pid_t old0, old1;

        test_daemon_start(d, &f->bus, serving, true);
        old0 = test_worker_pid(d, "echo", 0);
        old1 = test_worker_pid(d, "echo", 1);
        test_daemon_write_dropin(d, "50-new.conf", "[Pool echo]\nWorkers=3\n[Pool echo Plugin]\nInitDelayMs=100\n");
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-manager", "Reload", NULL }), 0);
        assert_int_equal(test_get_u32(d, path, POOL_IFACE, "WorkersReady"), 3);
        for (unsigned i = 0; i < 3; i++) {
                pid_t pid = test_worker_pid(d, "echo", i);

                assert_true(pid > 0 && pid != old0 && pid != old1);
        }
        g_autofree char *pool_state = test_pool_state(d, "echo");
        assert_string_equal(pool_state, "running");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_reload_applies_changes, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_bad_config_changes_nothing, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_sighup_reloads, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_reload_checks_plugin_files, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_failed_settings_roll_back, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_reload_answers_when_applied, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_exec_typo_rolls_back, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_removed_pool_rollback_is_not_this_reloads, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_reload_during_reload_is_busy, test_fixture_setup,
                                                test_fixture_teardown),
        };

        if (getenv("TEST_FILTER"))
                cmocka_set_test_filter(getenv("TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
