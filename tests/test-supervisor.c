/* SPDX-License-Identifier: MIT */
/*
 * The supervisor end to end: a private dbus-daemon, the real apiaryd, real apiary-worker
 * processes and real plugins, watched over the bus (sd-bus, and libdbus for a second opinion).
 */
#include <dbus/dbus.h>
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
#define WORKER_IFACE "org.apiary.Apiary1.Worker"
#define MANAGER_IFACE "org.apiary.Apiary1.Manager"

typedef TestFixture Fixture;

static const char *const two_pools =
        "[Apiary]\n"
        "PluginDirectory=@PLUGINS@\n"
        "\n"
        "[Pool echo]\n"
        "Plugin=echo.so\n"
        "Workers=2\n"
        "\n"
        "[Pool control]\n"
        "Plugin=@TEST_PLUGINS@/control.so\n"
        "Workers=1\n"
        "Kind=io\n"
        "RestartSec=10ms\n"
        "\n"
        "[Pool control Plugin]\n"
        "InitMode=ok\n";

/* Reads Manager.State through libdbus, the reference implementation, not sd-bus. */
static char *libdbus_get_manager_state(const char *address) {
        DBusError error;
        DBusConnection *c;
        DBusMessage *call, *reply;
        DBusMessageIter iter, variant;
        const char *iface = MANAGER_IFACE, *prop = "State", *value;
        char *result;

        dbus_error_init(&error);
        c = dbus_connection_open_private(address, &error);
        if (!c)
                fail_msg("libdbus: %s", error.message);
        assert_true(dbus_bus_register(c, &error));

        call = dbus_message_new_method_call("org.apiary.Apiary1", "/org/apiary/Apiary1",
                                            "org.freedesktop.DBus.Properties", "Get");
        assert_non_null(call);
        assert_true(dbus_message_append_args(call, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
                                             DBUS_TYPE_INVALID));
        reply = dbus_connection_send_with_reply_and_block(c, call, 10000, &error);
        if (!reply)
                fail_msg("libdbus Get: %s: %s", error.name, error.message);
        assert_true(dbus_message_iter_init(reply, &iter));
        assert_int_equal(dbus_message_iter_get_arg_type(&iter), DBUS_TYPE_VARIANT);
        dbus_message_iter_recurse(&iter, &variant);
        assert_int_equal(dbus_message_iter_get_arg_type(&variant), DBUS_TYPE_STRING);
        dbus_message_iter_get_basic(&variant, &value);
        result = g_strdup(value);

        dbus_message_unref(reply);
        dbus_message_unref(call);
        dbus_connection_close(c);
        dbus_connection_unref(c);
        return result;
}

static void test_ready_status_and_objects(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_auto(GStrv) pools = NULL, workers = NULL;
        g_autofree char *s = NULL, *echo = test_pool_path("echo"), *w0 = test_worker_path("echo", 0);
        const char *status;

        test_daemon_start(d, &f->bus, two_pools, true);

        status = test_daemon_find_notify(d, "STATUS=");
        assert_non_null(status);
        assert_non_null(strstr(status, "STATUS=2 pools, 3/3 workers ready"));

        s = test_get_string(d, "/org/apiary/Apiary1", MANAGER_IFACE, "State");
        assert_string_equal(s, "running");
        g_clear_pointer(&s, g_free);
        s = libdbus_get_manager_state(f->bus.address);
        assert_string_equal(s, "running");
        g_clear_pointer(&s, g_free);
        s = test_get_string(d, "/org/apiary/Apiary1", MANAGER_IFACE, "Version");
        assert_true(strlen(s) > 0);
        g_clear_pointer(&s, g_free);

        pools = test_get_object_paths(d, "/org/apiary/Apiary1", MANAGER_IFACE, "Pools");
        assert_int_equal(g_strv_length(pools), 2);
        assert_string_equal(pools[0], echo);

        s = test_get_string(d, echo, POOL_IFACE, "State");
        assert_string_equal(s, "running");
        g_clear_pointer(&s, g_free);
        s = test_get_string(d, echo, POOL_IFACE, "Kind");
        assert_string_equal(s, "cpu");
        g_clear_pointer(&s, g_free);
        s = test_get_string(d, echo, POOL_IFACE, "Name");
        assert_string_equal(s, "echo");
        g_clear_pointer(&s, g_free);
        s = test_get_string(d, echo, POOL_IFACE, "Plugin");
        assert_true(g_str_has_suffix(s, "/echo.so"));
        g_clear_pointer(&s, g_free);
        assert_int_equal(test_get_u32(d, echo, POOL_IFACE, "WorkersWanted"), 2);
        assert_int_equal(test_get_u32(d, echo, POOL_IFACE, "WorkersReady"), 2);
        assert_int_equal(test_get_u64(d, echo, POOL_IFACE, "Restarts"), 0);

        workers = test_get_object_paths(d, echo, POOL_IFACE, "Workers");
        assert_int_equal(g_strv_length(workers), 2);
        assert_string_equal(workers[0], w0);

        assert_true(test_worker_pid(d, "echo", 0) > 0);
        assert_true(test_worker_pid(d, "echo", 1) > 0);
        assert_int_not_equal(test_worker_pid(d, "echo", 0), test_worker_pid(d, "echo", 1));
        s = test_worker_state(d, "echo", 1);
        assert_string_equal(s, "ready");
        g_clear_pointer(&s, g_free);
        assert_int_equal(test_get_u32(d, w0, WORKER_IFACE, "Slot"), 0);
        assert_true(test_get_u64(d, w0, WORKER_IFACE, "StartedAt") > 0);
        s = test_get_string(d, w0, WORKER_IFACE, "Pool");
        assert_string_equal(s, echo);
        g_clear_pointer(&s, g_free);

        /* The worker really is apiary-worker, for the right pool and slot. */
        {
                g_autofree char *cmdline_path = g_strdup_printf("/proc/%i/cmdline", test_worker_pid(d, "control", 0));
                g_autofree char *cmdline = NULL;
                gsize len;

                assert_true(g_file_get_contents(cmdline_path, &cmdline, &len, NULL));
                for (gsize i = 0; i + 1 < len; i++)
                        if (cmdline[i] == '\0')
                                cmdline[i] = ' ';
                assert_non_null(strstr(cmdline, "apiary-worker --pool=control --slot=0"));
        }
}

static void test_killed_worker_is_replaced(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *w1 = test_worker_path("echo", 1), *echo = test_pool_path("echo"), *s = NULL;
        pid_t other = 0, old;

        test_daemon_start(d, &f->bus, two_pools, true);
        other = test_worker_pid(d, "echo", 0);

        for (unsigned i = 1; i <= 3; i++) {
                usec_t t0, t1;

                old = test_worker_pid(d, "echo", 1);
                assert_true(old > 0);
                t0 = now_usec(CLOCK_MONOTONIC);
                assert_int_equal(kill(old, SIGKILL), 0);
                (void) test_wait_worker_replaced(d, "echo", 1, old);
                t1 = now_usec(CLOCK_MONOTONIC);
                /* Informational only: tests do not time. bench/ measures this properly. */
                print_message("kill %u: echo/1 replaced and ready after %.3f ms (seen over the bus)\n", i,
                              (double) (t1 - t0) / USEC_PER_MSEC);

                assert_int_equal(test_get_u32(d, w1, WORKER_IFACE, "Restarts"), i);
                s = test_get_string(d, w1, WORKER_IFACE, "LastExit");
                assert_string_equal(s, "killed by SIGKILL");
                g_clear_pointer(&s, g_free);
        }

        /* The other slot was not touched. */
        assert_int_equal(test_worker_pid(d, "echo", 0), other);
        assert_int_equal(test_get_u64(d, echo, POOL_IFACE, "Restarts"), 3);
        test_wait_pool_state(d, "echo", "running");
}

/* What PropertiesChanged said of pool echo and its slot 1: "echo/1 starting", "echo degraded", … */
static int on_echo_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GPtrArray *seen = userdata;
        const char *path = sd_bus_message_get_path(m), *iface, *name, *value = NULL;
        g_autoptr(GString) names = g_string_new(NULL);
        const char *who;

        if (streq(path, "/org/apiary/Apiary1/pool/echo"))
                who = "echo";
        else if (streq(path, "/org/apiary/Apiary1/pool/echo/1"))
                who = "echo/1";
        else
                return 0;
        assert_true(sd_bus_message_read(m, "s", &iface) > 0);
        assert_true(sd_bus_message_enter_container(m, 'a', "{sv}") > 0);
        while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                assert_true(sd_bus_message_read(m, "s", &name) > 0);
                g_string_append_printf(names, "%s%s", names->len ? "," : "", name);
                if (streq(name, "State"))
                        assert_true(sd_bus_message_read(m, "v", "s", &value) > 0);
                else
                        assert_true(sd_bus_message_skip(m, "v") >= 0);
                assert_true(sd_bus_message_exit_container(m) >= 0);
        }
        /* Each signal carries its interface's whole group (docs/dbus-api.md). */
        assert_string_equal(names->str, streq(who, "echo") ? "State,FailureReason,WorkersReady,Restarts,PlannedRestarts"
                                                           : "PID,State,Restarts,PlannedRestarts,StartedAt,LastExit");
        assert_non_null(value);
        g_ptr_array_add(seen, g_strdup_printf("%s %s", who, value));
        return 0;
}

/* A crash and its replacement as the bus tells it: each change once, the slot before its pool,
 * in the order they happened (docs/dbus-api.md, "busctl monitor"). */
static void test_crash_signals(void **state) {
        static const char *const expected[] = { "echo/1 starting", "echo degraded", "echo/1 ready", "echo running" };
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(g_free);
        usec_t deadline;
        pid_t old;

        test_daemon_start(d, &f->bus, two_pools, true);
        test_wait_pool_state(d, "echo", "running");
        assert_true(sd_bus_match_signal(d->bus, NULL, "org.apiary.Apiary1", NULL, "org.freedesktop.DBus.Properties",
                                        "PropertiesChanged", on_echo_changed, seen) >= 0);
        while (sd_bus_process(d->bus, NULL) > 0)
                ;
        g_ptr_array_set_size(seen, 0);

        old = test_worker_pid(d, "echo", 1);
        assert_int_equal(kill(old, SIGSEGV), 0);
        deadline = now_usec(CLOCK_MONOTONIC) + TEST_TIMEOUT_USEC;
        while (seen->len < ELEMENTSOF(expected) && now_usec(CLOCK_MONOTONIC) < deadline)
                if (sd_bus_process(d->bus, NULL) == 0)
                        (void) sd_bus_wait(d->bus, 100 * USEC_PER_MSEC);
        /* Anything more that was to come has come by now. */
        (void) sd_bus_wait(d->bus, 200 * USEC_PER_MSEC);
        while (sd_bus_process(d->bus, NULL) > 0)
                ;

        for (unsigned i = 0; i < seen->len; i++)
                print_message("signal %u: %s\n", i, (const char *) seen->pdata[i]);
        assert_int_equal(seen->len, ELEMENTSOF(expected));
        for (unsigned i = 0; i < ELEMENTSOF(expected); i++)
                assert_string_equal(seen->pdata[i], expected[i]);
}

static bool loop_workers_dead(TestDaemon *d, const void *userdata) {
        g_autofree char *s0 = test_worker_state(d, "loop", 0), *s1 = test_worker_state(d, "loop", 1);

        /* The slot that hit the limit is dead; the other one, stopped by the pool, is stopped. */
        return (strcmp(s0, "dead") == 0 && strcmp(s1, "stopped") == 0) ||
               (strcmp(s0, "stopped") == 0 && strcmp(s1, "dead") == 0) ||
               (strcmp(s0, "dead") == 0 && strcmp(s1, "dead") == 0);
}

static void test_crash_loop_fails_only_its_pool(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *loop = test_pool_path("loop"), *reason = NULL, *s = NULL;
        pid_t echo0;

        test_daemon_start(d, &f->bus,
                          "[Apiary]\n"
                          "PluginDirectory=@PLUGINS@\n"
                          "[Pool echo]\n"
                          "Plugin=echo.so\n"
                          "Workers=1\n"
                          "[Pool loop]\n"
                          "Plugin=@TEST_PLUGINS@/control.so\n"
                          "Workers=2\n"
                          "RestartSec=1ms\n"
                          "RestartMaxSec=20ms\n"
                          "StartLimitBurst=3\n"
                          "StartLimitIntervalSec=1min\n"
                          "FailedRetrySec=infinity\n"
                          "[Pool loop Plugin]\n"
                          "CrashAfterMs=1\n",
                          true);
        echo0 = test_worker_pid(d, "echo", 0);

        test_wait_pool_state(d, "loop", "failed");
        reason = test_get_string(d, loop, POOL_IFACE, "FailureReason");
        assert_non_null(strstr(reason, "start limit hit"));
        assert_non_null(strstr(reason, "killed by SIGALRM"));
        assert_true(test_get_u64(d, loop, POOL_IFACE, "Restarts") >= 3);
        assert_int_equal(test_get_u32(d, loop, POOL_IFACE, "WorkersReady"), 0);

        /* No worker of the failed pool is left (the other slot may take a moment to stop), and
         * the other pool never noticed. */
        test_wait_until(d, loop_workers_dead, NULL, TEST_TIMEOUT_USEC, "the failed pool's workers to be dead");
        assert_int_equal(test_worker_pid(d, "loop", 0), 0);
        assert_int_equal(test_worker_pid(d, "loop", 1), 0);
        s = test_pool_state(d, "echo");
        assert_string_equal(s, "running");
        g_clear_pointer(&s, g_free);
        assert_int_equal(test_worker_pid(d, "echo", 0), echo0);

        assert_non_null(test_daemon_find_notify(d, "READY=1"));
        assert_int_equal(test_daemon_kill_and_wait(d, SIGTERM), 0);
}

static void test_failed_pool_retries_by_itself(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = test_pool_path("flaky");

        /* Slot 0 crashes right after init; with FailedRetrySec the pool comes back and fails again. */
        test_daemon_start(d, &f->bus,
                          "[Pool flaky]\n"
                          "Plugin=@TEST_PLUGINS@/control.so\n"
                          "Workers=1\n"
                          "RestartSec=1ms\n"
                          "StartLimitBurst=1\n"
                          "FailedRetrySec=50ms\n"
                          "[Pool flaky Plugin]\n"
                          "CrashAfterMs=1\n",
                          true);
        test_wait_pool_state(d, "flaky", "failed");
        test_wait_pool_state(d, "flaky", "starting");
        test_wait_pool_state(d, "flaky", "failed");
}

typedef struct {
        const char *name;
        const char *plugin;
        const char *plugin_group;
        const char *reason;
} BadPlugin;

static const BadPlugin bad_plugins[] = {
        { "missing", "@TEST_PLUGINS@/does-not-exist.so", "", "cannot load" },
        { "nosymbol", "@TEST_PLUGINS@/no-symbol.so", "", "does not export \"apiary_plugin\"" },
        { "badabi", "@TEST_PLUGINS@/bad-abi.so", "", "built for plugin ABI version 999, but this apiary-worker speaks version 1" },
        { "initfail", "@TEST_PLUGINS@/control.so", "InitMode=fail\n", "init failed: told to fail by InitMode=fail" },
        { "initcrash", "@TEST_PLUGINS@/control.so", "InitMode=crash\n", "killed by SIGABRT" },
        { "initexit", "@TEST_PLUGINS@/control.so", "InitMode=exit\nExitCode=9\n", "exited with status 9" },
        { "inithang", "@TEST_PLUGINS@/control.so", "InitMode=hang\n", "start timed out" },
};

static void test_bad_plugins_fail_cleanly(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        GString *config = g_string_new("[Apiary]\nPluginDirectory=@PLUGINS@\n[Pool echo]\nPlugin=echo.so\nWorkers=1\n");
        g_autofree char *s = NULL;

        for (size_t i = 0; i < G_N_ELEMENTS(bad_plugins); i++) {
                /* An AddressSanitizer worker takes its time to exit (the leak check), and apiaryd under
                 * valgrind to see it: a load failure must not become a start timeout on a busy
                 * machine. */
                g_string_append_printf(config,
                                       "[Pool %s]\nPlugin=%s\nWorkers=1\nRestartSec=1ms\nStartLimitBurst=1\n"
                                       "StartTimeoutSec=%s\nFailedRetrySec=infinity\n",
                                       bad_plugins[i].name, bad_plugins[i].plugin,
                                       test_under_asan() || test_under_wrapper() ? "3s" : "300ms");
                if (bad_plugins[i].plugin_group[0])
                        g_string_append_printf(config, "[Pool %s Plugin]\n%s", bad_plugins[i].name,
                                               bad_plugins[i].plugin_group);
        }

        test_daemon_start(d, &f->bus, config->str, true);
        g_string_free(config, true);

        for (size_t i = 0; i < G_N_ELEMENTS(bad_plugins); i++) {
                g_autofree char *path = test_pool_path(bad_plugins[i].name), *reason = NULL;

                test_wait_pool_state(d, bad_plugins[i].name, "failed");
                reason = test_get_string(d, path, POOL_IFACE, "FailureReason");
                if (!strstr(reason, bad_plugins[i].reason))
                        fail_msg("pool %s: FailureReason \"%s\" lacks \"%s\"", bad_plugins[i].name, reason,
                                 bad_plugins[i].reason);
        }

        s = test_pool_state(d, "echo");
        assert_string_equal(s, "running");
        assert_non_null(strstr(test_daemon_find_notify(d, "STATUS="), "failed"));
}

static void test_sigterm_stops_everything(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        pid_t pids[3];

        test_daemon_start(d, &f->bus, two_pools, true);
        pids[0] = test_worker_pid(d, "echo", 0);
        pids[1] = test_worker_pid(d, "echo", 1);
        pids[2] = test_worker_pid(d, "control", 0);

        assert_int_equal(test_daemon_kill_and_wait(d, SIGTERM), 0);
        assert_non_null(test_daemon_find_notify(d, "STOPPING=1"));
        /* apiaryd reaped them itself before exiting: nothing is left, not even a zombie. */
        for (size_t i = 0; i < G_N_ELEMENTS(pids); i++)
                assert_false(test_pid_alive(pids[i]));
}

/* The bus daemon goes away: apiaryd stops its workers and exits with status 1, so that systemd's
 * Restart=on-failure brings it back once the bus is there again (docs/apiaryd.md). Nothing is
 * left behind: no worker, no zygote, no private socket. */
static void test_bus_loss_stops_cleanly(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *config = NULL, *sock = g_strdup_printf("%s/private", f->bus.dir), *z = NULL;
        pid_t pids[4];

        config = g_strdup_printf("[Apiary]\nPluginDirectory=@PLUGINS@\nPrivateSocket=%s\n"
                                 "[Pool echo]\nPlugin=echo.so\nWorkers=2\n"
                                 "[Pool forked]\nPlugin=echo.so\nWorkers=1\nZygote=yes\n", sock);
        test_daemon_start(d, &f->bus, config, true);
        pids[0] = test_worker_pid(d, "echo", 0);
        pids[1] = test_worker_pid(d, "echo", 1);
        pids[2] = test_worker_pid(d, "forked", 0);
        z = test_pool_path("forked");
        pids[3] = (pid_t) test_get_u32(d, z, POOL_IFACE, "ZygotePID");
        assert_true(pids[3] > 0);
        assert_int_equal(access(sock, F_OK), 0);

        /* Only the daemon: the bus directory (with the socket) stays for the checks below. */
        assert_int_equal(kill(f->bus.pid, SIGKILL), 0);
        assert_int_equal(waitpid(f->bus.pid, NULL, 0), f->bus.pid);
        f->bus.pid = 0;

        assert_int_equal(test_daemon_wait(d), 1);
        for (size_t i = 0; i < G_N_ELEMENTS(pids); i++)
                assert_false(test_pid_alive(pids[i]));
        assert_int_equal(access(sock, F_OK), -1);
}

static void test_sigkill_of_supervisor_kills_workers(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        pid_t pids[3];

        test_daemon_start(d, &f->bus, two_pools, true);
        pids[0] = test_worker_pid(d, "echo", 0);
        pids[1] = test_worker_pid(d, "echo", 1);
        pids[2] = test_worker_pid(d, "control", 0);

        assert_int_equal(test_daemon_kill_and_wait(d, SIGKILL), 128 + SIGKILL);
        for (size_t i = 0; i < G_N_ELEMENTS(pids); i++)
                if (!test_wait_pid_gone(pids[i], TEST_TIMEOUT_USEC))
                        fail_msg("worker %i outlived its SIGKILLed supervisor", pids[i]);
}

static bool worker_is_starting(TestDaemon *d, const void *userdata) {
        g_autofree char *s = test_worker_state(d, "stuck", 0);

        return strcmp(s, "starting") == 0 && test_worker_pid(d, "stuck", 0) > 0;
}

static void test_stop_escalates_to_sigkill(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        pid_t pid;

        /* A worker stuck in init() has SIGTERM blocked: only StopTimeoutSec's SIGKILL ends it. */
        test_daemon_start(d, &f->bus,
                          "[Pool stuck]\n"
                          "Plugin=@TEST_PLUGINS@/control.so\n"
                          "Workers=1\n"
                          "StartTimeoutSec=infinity\n"
                          "StopTimeoutSec=200ms\n"
                          "[Pool stuck Plugin]\n"
                          "InitMode=hang\n",
                          false);
        test_wait_until(d, worker_is_starting, NULL, TEST_TIMEOUT_USEC, "worker stuck/0 to be starting");
        pid = test_worker_pid(d, "stuck", 0);
        /* Still starting: apiaryd must not claim readiness for a pool that never started. */
        assert_null(test_daemon_find_notify(d, "READY=1"));

        assert_int_equal(test_daemon_kill_and_wait(d, SIGTERM), 0);
        assert_false(test_pid_alive(pid));
}

static void test_check_config(void **state) {
        g_autofree char *dir = g_strdup("/tmp/apiary-test-check-XXXXXX"), *good = NULL, *bad = NULL, *cmd = NULL,
                        *out = NULL, *err = NULL;
        const char *apiaryd = getenv("APIARYD");
        int status;

        assert_non_null(apiaryd);
        assert_non_null(g_mkdtemp(dir));
        good = g_strdup_printf("%s/good.conf", dir);
        bad = g_strdup_printf("%s/bad.conf", dir);
        assert_true(g_file_set_contents(good, "[Pool a]\nPlugin=/bin/true\n", -1, NULL));
        assert_true(g_file_set_contents(bad, "[Pool a]\nPlugin=/bin/true\nWorkers=lots\n", -1, NULL));

        cmd = g_strdup_printf("%s --check-config --config=%s", apiaryd, good);
        assert_true(g_spawn_command_line_sync(cmd, &out, &err, &status, NULL));
        assert_true(g_spawn_check_wait_status(status, NULL));
        assert_string_equal(out, "");
        assert_string_equal(err, "");
        g_free(cmd);
        g_free(out);
        g_free(err);

        cmd = g_strdup_printf("%s --check-config --config=%s", apiaryd, bad);
        assert_true(g_spawn_command_line_sync(cmd, &out, &err, &status, NULL));
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
        assert_non_null(strstr(err, bad));
        assert_non_null(strstr(err, "[Pool a]"));
        assert_non_null(strstr(err, "Workers"));

        g_free(cmd);
        cmd = g_strdup_printf("rm -rf %s", dir);
        (void) system(cmd);
}

/* Without journald, what a plugin writes to stdout and stderr reaches apiaryd's stderr with its
 * pool, slot and PID in front of each line, as journalctl shows a worker's identifier. Both for
 * a spawned worker and a zygote's child. */
static void test_plugin_output_is_prefixed(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        const char *zygotes[] = { "no", "yes" };

        for (size_t i = 0; i < G_N_ELEMENTS(zygotes); i++) {
                g_autofree char *config = g_strdup_printf("[Pool talk]\nPlugin=@TEST_PLUGINS@/control.so\n"
                                                          "Workers=1\nZygote=%s\n", zygotes[i]);
                g_autofree char *result = NULL, *out = NULL, *err = NULL, *line = NULL;
                pid_t pid;

                test_daemon_start_logged(d, &f->bus, config, true);
                pid = test_worker_pid(d, "talk", 0);
                result = test_run_text(d, "talk", "print two words", 0);
                assert_string_equal(result, "printed");
                out = g_strdup_printf("\ntalk/0[%i]: stdout: two words\n", (int) pid);
                err = g_strdup_printf("\ntalk/0[%i]: stderr: two words\n", (int) pid);
                line = test_daemon_wait_log(d, "stderr: two words", TEST_TIMEOUT_USEC);
                /* stdout is line-buffered: its line is out when the newline is. */
                line = (g_free(line), test_daemon_wait_log(d, "stdout: two words", TEST_TIMEOUT_USEC));
                {
                        g_autofree char *log = test_daemon_log(d);

                        if (!strstr(log, out) || !strstr(log, err))
                                fail_msg("Zygote=%s: the plugin's lines are not prefixed with talk/0[%i]:\n%s",
                                         zygotes[i], (int) pid, log);
                }
                assert_int_equal(test_daemon_stop(d), 0);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_ready_status_and_objects, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_killed_worker_is_replaced, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_crash_signals, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_crash_loop_fails_only_its_pool, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_failed_pool_retries_by_itself, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_bad_plugins_fail_cleanly, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_sigterm_stops_everything, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_sigkill_of_supervisor_kills_workers, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_bus_loss_stops_cleanly, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_stop_escalates_to_sigkill, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test(test_check_config),
                cmocka_unit_test_setup_teardown(test_plugin_output_is_prefixed, test_fixture_setup,
                                                test_fixture_teardown),
        };

        if (getenv("TEST_FILTER"))
                cmocka_set_test_filter(getenv("TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
