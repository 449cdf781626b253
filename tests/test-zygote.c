/* SPDX-License-Identifier: MIT */
/*
 * Zygote=yes: a pool's workers forked from a loaded copy of the plugin. The forked workers must be
 * indistinguishable from spawned ones where it matters: apiaryd's children, replaced when killed,
 * serving tasks, gone with apiaryd (SIGTERM or SIGKILL); and the zygote itself must come back when
 * killed, be given up when the plugin cannot load, and be renewed when a reload changes the code.
 */
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

typedef TestFixture Fixture;

static const char *const zygote_pool =
        "[Pool echo]\n"
        "Plugin=@PLUGINS@/echo.so\n"
        "Workers=2\n"
        "Zygote=yes\n"
        "RestartSec=0\n"
        "StartLimitBurst=0\n";

/* /proc/PID/status's PPid, or -1. */
static pid_t parent_of(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%i/status", (int) pid), *text = NULL;
        const char *p;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return -1;
        p = strstr(text, "\nPPid:");
        return p ? (pid_t) atoi(p + 6) : -1;
}

/* The command line of PID, NULs as spaces. */
static char *cmdline_of(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%i/cmdline", (int) pid);
        char *text = NULL;
        gsize n;

        if (!g_file_get_contents(path, &text, &n, NULL))
                return g_strdup("");
        for (gsize i = 0; i + 1 < n; i++)
                if (text[i] == '\0')
                        text[i] = ' ';
        return text;
}

static pid_t zygote_pid(TestDaemon *d) {
        g_autofree char *pool = test_pool_path("echo");

        return (pid_t) test_get_u32(d, pool, POOL_IFACE, "ZygotePID");
}

static bool zygote_ready(TestDaemon *d, const void *userdata) {
        pid_t z = zygote_pid(d), not_this = *(const pid_t *) userdata;

        return z > 0 && z != not_this;
}

/* Waits for a zygote other than NOT_THIS to be ready (Pool.ZygotePID), and checks what it is. */
static pid_t wait_zygote(TestDaemon *d, pid_t not_this) {
        g_autofree char *cmd = NULL;
        pid_t z;

        test_wait_until(d, zygote_ready, &not_this, 3 * TEST_TIMEOUT_USEC, "the pool's zygote to be ready");
        z = zygote_pid(d);
        assert_int_equal(parent_of(z), d->pid);
        cmd = cmdline_of(z);
        assert_non_null(strstr(cmd, "apiary-worker --pool=echo --zygote"));
        return z;
}

/* Kills worker echo/SLOT and waits for its replacement, which must come from the zygote: a child
 * of apiaryd (CLONE_PARENT) with the zygote's command line, in a session of its own. */
static pid_t kill_and_expect_forked(TestDaemon *d, unsigned slot) {
        pid_t old = test_worker_pid(d, "echo", slot), pid;
        g_autofree char *cmd = NULL;

        assert_true(old > 0);
        assert_int_equal(kill(old, SIGKILL), 0);
        pid = test_wait_worker_replaced(d, "echo", slot, old);
        assert_int_equal(parent_of(pid), d->pid);
        cmd = cmdline_of(pid);
        assert_non_null(strstr(cmd, "--zygote"));
        assert_int_equal(getsid(pid), pid);     /* the leader of a session, and so of its group */
        return pid;
}

static void run_echo(TestDaemon *d, const char *text) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *result = NULL;
        size_t size;

        assert_int_equal(test_run(d, "echo", text, strlen(text), 0, (void **) &result, &size, &error), 0);
        assert_int_equal(size, strlen(text));
        assert_memory_equal(result, text, size);
}

static void test_forked_workers_replace_killed_ones(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *w0 = test_worker_path("echo", 0), *last = NULL;

        test_daemon_start(d, &f->bus, zygote_pool, true);
        (void) wait_zygote(d, 0);

        /* The start waited for the zygote: the first workers are forked too. */
        for (unsigned slot = 0; slot < 2; slot++) {
                pid_t pid = test_worker_pid(d, "echo", slot);
                g_autofree char *cmd = cmdline_of(pid);

                assert_int_equal(parent_of(pid), d->pid);
                assert_non_null(strstr(cmd, "--zygote"));
        }

        for (unsigned i = 1; i <= 5; i++) {
                (void) kill_and_expect_forked(d, 0);
                assert_int_equal(test_get_u32(d, w0, WORKER_IFACE, "Restarts"), i);
        }
        last = test_get_string(d, w0, WORKER_IFACE, "LastExit");
        assert_string_equal(last, "killed by SIGKILL");

        /* Forked workers serve tasks, in both slots. */
        (void) kill_and_expect_forked(d, 1);
        for (unsigned i = 0; i < 10; i++)
                run_echo(d, "from a forked worker");
}

static void test_sigterm_leaves_nothing(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        pid_t zygote, forked, spawned;

        test_daemon_start(d, &f->bus, zygote_pool, true);
        zygote = wait_zygote(d, 0);
        spawned = test_worker_pid(d, "echo", 1);
        forked = kill_and_expect_forked(d, 0);

        assert_int_equal(test_daemon_kill_and_wait(d, SIGTERM), 0);
        assert_false(test_pid_alive(forked));
        assert_false(test_pid_alive(spawned));
        assert_false(test_pid_alive(zygote));
}

static void test_sigkill_of_supervisor_takes_all(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        pid_t zygote, forked;

        test_daemon_start(d, &f->bus, zygote_pool, true);
        zygote = wait_zygote(d, 0);
        forked = kill_and_expect_forked(d, 0);

        assert_int_equal(test_daemon_kill_and_wait(d, SIGKILL), 128 + SIGKILL);
        if (!test_wait_pid_gone(forked, TEST_TIMEOUT_USEC))
                fail_msg("forked worker %i outlived its SIGKILLed supervisor", (int) forked);
        if (!test_wait_pid_gone(zygote, TEST_TIMEOUT_USEC))
                fail_msg("zygote %i outlived its SIGKILLed supervisor", (int) zygote);
}

/* A zygote that dies is not the pool's failure: workers are spawned meanwhile, and it comes back. */
static void test_killed_zygote_comes_back(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *pool = test_pool_path("echo"), *st = NULL;
        pid_t zygote, again, old;

        test_daemon_start(d, &f->bus, zygote_pool, true);
        zygote = wait_zygote(d, 0);
        assert_int_equal(kill(zygote, SIGKILL), 0);
        assert_true(test_wait_pid_gone(zygote, TEST_TIMEOUT_USEC));

        /* Meanwhile (the zygote returns after 1 s): a killed worker is spawned again. */
        old = test_worker_pid(d, "echo", 0);
        assert_int_equal(kill(old, SIGKILL), 0);
        (void) test_wait_worker_replaced(d, "echo", 0, old);
        run_echo(d, "meanwhile");

        again = wait_zygote(d, zygote);
        assert_true(again != zygote);
        (void) kill_and_expect_forked(d, 0);
        st = test_get_string(d, pool, POOL_IFACE, "State");
        assert_string_equal(st, "running");
}

/* A plugin that does not load fails its pool as without a zygote, with the same reason. */
static void test_unloadable_plugin(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *reason = NULL, *pool = test_pool_path("missing");

        test_daemon_start(d, &f->bus,
                          "[Pool missing]\nPlugin=@TEST_PLUGINS@/does-not-exist.so\nWorkers=2\nZygote=yes\n"
                          "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n",
                          true);
        test_wait_pool_state(d, "missing", "failed");
        reason = test_get_string(d, pool, POOL_IFACE, "FailureReason");
        assert_non_null(strstr(reason, "does-not-exist.so"));
        run_echo(d, "other pools serve");
}

static bool all_ready(TestDaemon *d, const void *userdata) {
        g_autofree char *pool = test_pool_path("echo");

        return test_get_u32(d, pool, POOL_IFACE, "WorkersReady") == *(const unsigned *) userdata;
}

/* More workers than Fork() calls in flight at once (ZYGOTE_FORKS_IN_FLIGHT): the others wait their
 * turn in apiaryd, and every one of them is forked, none spawned for want of an answer. */
static void test_many_forks_wait_their_turn(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        unsigned n = 24;

        test_daemon_start(d, &f->bus, "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=24\nZygote=yes\n", true);
        test_wait_until(d, all_ready, &n, TEST_TIMEOUT_USEC, "24 workers ready");
        (void) wait_zygote(d, 0);
        for (unsigned slot = 0; slot < n; slot++) {
                pid_t pid = test_worker_pid(d, "echo", slot);
                g_autofree char *cmd = cmdline_of(pid);

                if (!strstr(cmd, "--zygote"))
                        fail_msg("worker %u (PID %i) was not forked by the zygote: %s", slot, (int) pid, cmd);
                assert_int_equal(parent_of(pid), d->pid);
        }
        run_echo(d, "all forked");
}

/* Zygote=auto, the default: a plugin that declares APIARY_PLUGIN_FORK_SAFE (echo, as every shipped
 * plugin) gets a zygote, and its workers are forked; one that does not (the test plugin control)
 * gets none, is said why, and its workers are spawned, and serve all the same. */
static void test_auto_forks_only_fork_safe_plugins(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *control = test_pool_path("control"), *line = NULL, *cmd = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *result = NULL;
        size_t size;
        pid_t pid;

        test_daemon_start_logged(d, &f->bus,
                                 "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=2\nRestartSec=0\n"
                                 "[Pool control]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nRestartSec=0\n",
                                 true);
        (void) wait_zygote(d, 0);
        (void) kill_and_expect_forked(d, 0);
        run_echo(d, "forked");

        line = test_daemon_wait_log(d, "control: The plugin does not declare APIARY_PLUGIN_FORK_SAFE", TEST_TIMEOUT_USEC);
        assert_non_null(line);
        assert_int_equal(test_get_u32(d, control, POOL_IFACE, "ZygotePID"), 0);
        pid = test_worker_pid(d, "control", 0);
        cmd = cmdline_of(pid);
        assert_non_null(strstr(cmd, "--slot=0"));
        assert_null(strstr(cmd, "--zygote"));
        assert_int_equal(test_run(d, "control", "spawned", 7, 0, (void **) &result, &size, &error), 0);
        assert_memory_equal(result, "spawned", 7);
}

static bool manager_running(TestDaemon *d, const void *userdata) {
        g_autofree char *s = test_get_string(d, "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager", "State");

        return strcmp(s, "running") == 0;
}

/* New plugin settings: a new zygote, and the workers rolled over come from it. */
static void test_reload_renews_the_zygote(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *config = g_strdup_printf("%s[Pool echo Plugin]\nSomething=new\n", zygote_pool);
        pid_t zygote, again;

        test_daemon_start(d, &f->bus, zygote_pool, true);
        zygote = wait_zygote(d, 0);

        test_daemon_write_config(d, config);
        assert_int_equal(kill(d->pid, SIGHUP), 0);
        again = wait_zygote(d, zygote);
        assert_true(test_wait_pid_gone(zygote, TEST_TIMEOUT_USEC));
        assert_true(again > 0);
        /* The roll-over is under way: slot 0 may be between its old worker and the new one's
         * Fork() answer (PID 0). Once the reload has ended, both slots are forked. */
        test_wait_until(d, manager_running, NULL, TEST_TIMEOUT_USEC, "the reload to end");
        (void) kill_and_expect_forked(d, 0);
        run_echo(d, "after the reload");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_forked_workers_replace_killed_ones, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_sigterm_leaves_nothing, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_sigkill_of_supervisor_takes_all, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_killed_zygote_comes_back, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_unloadable_plugin, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_auto_forks_only_fork_safe_plugins, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_many_forks_wait_their_turn, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_reload_renews_the_zygote, test_fixture_setup,
                                                test_fixture_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
