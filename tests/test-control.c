/* SPDX-License-Identifier: MIT */
/* Steering a running apiaryd: Scale, Restart, Stop/Start, Pause/Resume, Worker.Restart/Kill, and
 * who may do it. */
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

#define POOL_IFACE "org.apiary.Apiary1.Pool"
#define WORKER_IFACE "org.apiary.Apiary1.Worker"

typedef TestFixture Fixture;

static const char *const config =
        "[Apiary]\nControlUsers=daemon\nSubmitUsers=bin\n"
        "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=2\n"
        "[Pool control]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\n";

/* Calls METHOD (no arguments, or one u/i in ARG if TYPE is set) on a pool or worker object. */
static int call(TestDaemon *d, const char *path, const char *iface, const char *method, char type, uint32_t arg,
                sd_bus_error *error) {
        if (type == 'u')
                return sd_bus_call_method(d->bus, "org.apiary.Apiary1", path, iface, method, error, NULL, "u", arg);
        if (type == 'i')
                return sd_bus_call_method(d->bus, "org.apiary.Apiary1", path, iface, method, error, NULL, "i",
                                          (int32_t) arg);
        return sd_bus_call_method(d->bus, "org.apiary.Apiary1", path, iface, method, error, NULL, NULL);
}

static void call_ok(TestDaemon *d, const char *path, const char *iface, const char *method, char type, uint32_t arg) {
        sd_bus_error error = SD_BUS_ERROR_NULL;

        if (call(d, path, iface, method, type, arg, &error) < 0)
                fail_msg("%s on %s: %s: %s", method, path, error.name, error.message);
}

static void call_fails(TestDaemon *d, const char *path, const char *iface, const char *method, char type,
                       uint32_t arg, const char *error_name) {
        sd_bus_error error = SD_BUS_ERROR_NULL;

        if (call(d, path, iface, method, type, arg, &error) >= 0)
                fail_msg("%s on %s succeeded, expected %s", method, path, error_name);
        if (strcmp(error.name, error_name) != 0)
                fail_msg("%s on %s: %s (%s), expected %s", method, path, error.name, error.message, error_name);
        sd_bus_error_free(&error);
}

typedef struct {
        const char *pool;
        unsigned ready;
        unsigned workers;
} PoolShape;

static bool pool_shape_is(TestDaemon *d, const void *userdata) {
        const PoolShape *s = userdata;
        g_autofree char *path = test_pool_path(s->pool);
        g_auto(GStrv) workers = test_get_object_paths(d, path, POOL_IFACE, "Workers");

        return test_get_u32(d, path, POOL_IFACE, "WorkersReady") == s->ready && g_strv_length(workers) == s->workers;
}

static void wait_pool_shape(TestDaemon *d, const char *pool, unsigned ready, unsigned workers) {
        PoolShape s = { pool, ready, workers };

        test_wait_until(d, pool_shape_is, &s, TEST_TIMEOUT_USEC, "the pool to have the asked number of workers");
}

static void test_scale(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *echo = test_pool_path("echo"), *result = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        pid_t p2, p3;

        test_daemon_start(d, &f->bus, config, true);

        call_ok(d, echo, POOL_IFACE, "Scale", 'u', 4);
        wait_pool_shape(d, "echo", 4, 4);
        test_wait_pool_state(d, "echo", "running");
        assert_int_equal(test_get_u32(d, echo, POOL_IFACE, "WorkersWanted"), 4);
        p2 = test_worker_pid(d, "echo", 2);
        p3 = test_worker_pid(d, "echo", 3);
        assert_true(p2 > 0 && p3 > 0);

        call_ok(d, echo, POOL_IFACE, "Scale", 'u', 2);
        wait_pool_shape(d, "echo", 2, 2);
        assert_true(test_wait_pid_gone(p2, TEST_TIMEOUT_USEC));
        assert_true(test_wait_pid_gone(p3, TEST_TIMEOUT_USEC));
        assert_int_equal(test_run(d, "echo", "still here", 10, 0, (void **) &result, NULL, &error), 0);
        assert_string_equal(result, "still here");

        call_fails(d, echo, POOL_IFACE, "Scale", 'u', 0, "org.freedesktop.DBus.Error.InvalidArgs");
        call_fails(d, echo, POOL_IFACE, "Scale", 'u', 100000, "org.freedesktop.DBus.Error.InvalidArgs");
}

static bool all_pids_changed(TestDaemon *d, const void *userdata) {
        const pid_t *old = userdata;
        g_autofree char *echo = test_pool_path("echo");

        for (unsigned i = 0; i < 2; i++) {
                pid_t pid = test_worker_pid(d, "echo", i);
                if (pid <= 0 || pid == old[i])
                        return false;
        }
        return test_get_u32(d, echo, POOL_IFACE, "WorkersReady") == 2;
}

static void test_rolling_restart_loses_nothing(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *echo = test_pool_path("echo");
        enum { N = 400 };
        char **payloads = g_new0(char *, N);
        uint64_t *ids = g_new(uint64_t, N);
        pid_t old[2];

        test_daemon_start(d, &f->bus, config, true);
        test_collect_results(d);
        old[0] = test_worker_pid(d, "echo", 0);
        old[1] = test_worker_pid(d, "echo", 1);
        for (size_t i = 0; i < N; i++)
                payloads[i] = g_strdup_printf("roll %zu", i);

        /* Tasks keep coming while the pool rolls over: none fails. */
        test_submit_batch(d, "echo", payloads, N / 2, ids);
        call_ok(d, echo, POOL_IFACE, "Restart", 0, 0);
        test_submit_batch(d, "echo", payloads + N / 2, N / 2, ids + N / 2);
        test_wait_until(d, all_pids_changed, old, TEST_TIMEOUT_USEC, "every worker to be replaced");
        test_wait_results(d, N);
        for (size_t i = 0; i < N; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_true(r->ok);
                assert_string_equal(r->data, payloads[i]);
                g_free(payloads[i]);
        }
        assert_false(test_pid_alive(old[0]));
        assert_false(test_pid_alive(old[1]));
        g_free(payloads);
        g_free(ids);
}

static void test_stop_start_pause_resume(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *echo = test_pool_path("echo");
        sd_bus_error error = SD_BUS_ERROR_NULL;
        pid_t p0;
        uint64_t id;

        test_daemon_start(d, &f->bus, config, true);
        test_collect_results(d);
        p0 = test_worker_pid(d, "echo", 0);

        call_ok(d, echo, POOL_IFACE, "Stop", 0, 0);
        test_wait_pool_state(d, "echo", "stopped");
        assert_true(test_wait_pid_gone(p0, TEST_TIMEOUT_USEC));
        assert_int_equal(test_worker_pid(d, "echo", 0), 0);
        assert_true(test_run(d, "echo", "x", 1, 0, NULL, NULL, &error) < 0);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.PoolStopped");
        sd_bus_error_free(&error);
        call_fails(d, echo, POOL_IFACE, "Restart", 0, 0, "org.apiary.Apiary1.Error.PoolStopped");

        call_ok(d, echo, POOL_IFACE, "Start", 0, 0);
        test_wait_pool_state(d, "echo", "running");
        assert_int_equal(test_get_u32(d, echo, POOL_IFACE, "WorkersReady"), 2);

        /* Paused: tasks queue and wait; resumed: they run. */
        call_ok(d, echo, POOL_IFACE, "Pause", 0, 0);
        id = test_submit(d, "echo", "held", 4);
        assert_int_equal(test_get_u64(d, echo, POOL_IFACE, "TasksQueued"), 1);
        assert_null(test_result(d, id));
        call_ok(d, echo, POOL_IFACE, "Resume", 0, 0);
        test_wait_results(d, 1);
        assert_string_equal(test_result(d, id)->data, "held");
}

static void test_stop_fails_what_cannot_finish(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = test_pool_path("slow");
        uint64_t hang, queued;

        test_daemon_start(d, &f->bus,
                          "[Pool slow]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nStopTimeoutSec=100ms\n", true);
        test_collect_results(d);
        hang = test_submit(d, "slow", "hang", 4);
        queued = test_submit(d, "slow", "later", 5);

        /* The queued task fails at once; the hung one when StopTimeoutSec= kills its worker. Neither
         * waits in a stopped pool for a Start() that may never come. */
        call_ok(d, path, POOL_IFACE, "Stop", 0, 0);
        test_wait_results(d, 2);
        assert_string_equal(test_result(d, queued)->data, "pool stopped");
        assert_string_equal(test_result(d, hang)->data, "pool stopped");
        test_wait_pool_state(d, "slow", "stopped");
        assert_int_equal(test_get_u64(d, path, POOL_IFACE, "TasksQueued"), 0);
}

static bool worker_pid_changed_echo0(TestDaemon *d, const void *userdata) {
        const pid_t *old = userdata;
        pid_t pid = test_worker_pid(d, "echo", 0);
        g_autofree char *state = test_worker_state(d, "echo", 0);

        return pid > 0 && pid != *old && strcmp(state, "ready") == 0;
}

static bool slow_busy(TestDaemon *d, const void *userdata) {
        g_autofree char *state = test_worker_state(d, "slow", 0);

        return strcmp(state, "busy") == 0;
}

static bool worker_replaced(TestDaemon *d, const void *userdata) {
        const pid_t *old = userdata;
        pid_t pid = test_worker_pid(d, "control", 0);
        g_autofree char *state = test_worker_state(d, "control", 0);

        return pid > 0 && pid != *old && strcmp(state, "ready") == 0 && test_worker_pid(d, "control", 0) == pid;
}

static void test_worker_restart_and_kill(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *w0 = test_worker_path("control", 0), *last = NULL;
        pid_t pid;

        test_daemon_start(d, &f->bus, config, true);

        pid = test_worker_pid(d, "control", 0);
        call_ok(d, w0, WORKER_IFACE, "Restart", 0, 0);
        test_wait_until(d, worker_replaced, &pid, TEST_TIMEOUT_USEC, "control/0 to be restarted");
        last = test_get_string(d, w0, WORKER_IFACE, "LastExit");
        assert_string_equal(last, "exited with status 0");
        g_clear_pointer(&last, g_free);

        pid = test_worker_pid(d, "control", 0);
        /* SIGQUIT, not SIGSEGV: AddressSanitizer would catch that one in its own handler. */
        call_ok(d, w0, WORKER_IFACE, "Kill", 'i', SIGQUIT);
        test_wait_until(d, worker_replaced, &pid, TEST_TIMEOUT_USEC, "control/0 to be replaced after SIGQUIT");
        last = test_get_string(d, w0, WORKER_IFACE, "LastExit");
        assert_non_null(strstr(last, "killed by SIGQUIT"));

        call_fails(d, w0, WORKER_IFACE, "Kill", 'i', 0, "org.freedesktop.DBus.Error.InvalidArgs");
        call_fails(d, w0, WORKER_IFACE, "Kill", 'i', 1000, "org.freedesktop.DBus.Error.InvalidArgs");
}

/* Every State a pool shows, in order, from its PropertiesChanged signals. */
static int on_pool_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        GPtrArray *states = userdata;
        const char *iface, *name, *value;

        if (sd_bus_message_read(m, "s", &iface) < 0 || sd_bus_message_enter_container(m, 'a', "{sv}") < 0)
                return 0;
        while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                if (sd_bus_message_read(m, "s", &name) < 0)
                        return 0;
                if (strcmp(name, "State") == 0 && sd_bus_message_read(m, "v", "s", &value) >= 0)
                        g_ptr_array_add(states, g_strdup(value));
                else
                        (void) sd_bus_message_skip(m, "v");
                (void) sd_bus_message_exit_container(m);
        }
        return 0;
}

static bool states_contain(GPtrArray *states, const char *state) {
        for (guint i = 0; i < states->len; i++)
                if (strcmp(states->pdata[i], state) == 0)
                        return true;
        return false;
}

static bool all_pids_changed_4(TestDaemon *d, const void *userdata) {
        const pid_t *old = userdata;
        g_autofree char *path = test_pool_path("echo");

        for (unsigned i = 0; i < 4; i++) {
                pid_t pid = test_worker_pid(d, "echo", i);

                if (pid <= 0 || pid == old[i])
                        return false;
        }
        return test_get_u32(d, path, POOL_IFACE, "WorkersReady") == 4;
}

/* A scale-up and a rolling restart are planned: the pool stays running, and they count apart from
 * the restarts nobody asked for. A crash degrades it, a stop shows "stopping", a slot stopped on
 * purpose "stopped", and a real-time signal has its name. */
static void test_states_tell_the_truth(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *echo = test_pool_path("echo"), *slow = test_pool_path("slow");
        g_autofree char *w0 = test_worker_path("echo", 0), *slow0 = test_worker_path("slow", 0);
        g_autoptr(GPtrArray) states = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *s = NULL, *last = NULL;
        pid_t old[4];

        test_daemon_start(d, &f->bus, "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=2\n"
                                     "[Pool slow]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nStopTimeoutSec=1s\n",
                          true);
        assert_true(sd_bus_match_signal(d->bus, NULL, "org.apiary.Apiary1", echo, "org.freedesktop.DBus.Properties",
                                        "PropertiesChanged", on_pool_changed, states) >= 0);

        call_ok(d, echo, POOL_IFACE, "Scale", 'u', 4);
        wait_pool_shape(d, "echo", 4, 4);
        for (unsigned i = 0; i < 4; i++)
                old[i] = test_worker_pid(d, "echo", i);
        call_ok(d, echo, POOL_IFACE, "Restart", 0, 0);
        test_wait_until(d, all_pids_changed_4, old, TEST_TIMEOUT_USEC, "every worker to be replaced");
        assert_false(states_contain(states, "degraded"));
        assert_int_equal(test_get_u64(d, echo, POOL_IFACE, "Restarts"), 0);
        assert_int_equal(test_get_u64(d, echo, POOL_IFACE, "PlannedRestarts"), 4);
        assert_int_equal(test_get_u32(d, w0, WORKER_IFACE, "PlannedRestarts"), 1);

        /* SIGRTMIN+3 ends a worker (its default action): nobody asked, so it degrades the pool. */
        old[0] = test_worker_pid(d, "echo", 0);
        call_ok(d, w0, WORKER_IFACE, "Kill", 'i', (uint32_t) (SIGRTMIN + 3));
        test_wait_until(d, worker_pid_changed_echo0, &old[0], TEST_TIMEOUT_USEC, "echo/0 to be replaced");
        last = test_get_string(d, w0, WORKER_IFACE, "LastExit");
        assert_string_equal(last, "killed by SIGRTMIN+3");
        assert_true(states_contain(states, "degraded"));
        assert_int_equal(test_get_u64(d, echo, POOL_IFACE, "Restarts"), 1);

        /* A stop with a task in flight: stopping while it drains, then stopped, its slot too. */
        (void) test_submit(d, "slow", "hang", 4);
        test_wait_until(d, slow_busy, NULL, TEST_TIMEOUT_USEC, "slow/0 to be busy");
        call_ok(d, slow, POOL_IFACE, "Stop", 0, 0);
        s = test_pool_state(d, "slow");
        assert_string_equal(s, "stopping");
        test_wait_pool_state(d, "slow", "stopped");
        g_free(s);
        s = test_worker_state(d, "slow", 0);
        assert_string_equal(s, "stopped");
}

static void test_control_authorization(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL;

        test_daemon_start(d, &f->bus, config, true);

        /* nobody: neither; bin: may submit but not control; daemon: may control. */
        assert_int_equal(test_client(&f->bus, 65534, &out, (const char *[]) { "call-pool", "echo", "Pause", NULL }), 1);
        assert_string_equal(out, "org.freedesktop.DBus.Error.AccessDenied: User 65534 may not call Pause(): not root "
                                 "and not in ControlUsers= or ControlGroups=.");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 2, &out, (const char *[]) { "call-pool", "echo", "Stop", NULL }), 1);
        assert_non_null(strstr(out, "org.freedesktop.DBus.Error.AccessDenied"));
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 2, &out, (const char *[]) { "run", "echo", "bin submits", NULL }), 0);
        assert_string_equal(out, "bin submits");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 65534, &out,
                                     (const char *[]) { "call-worker", "echo", "0", "Kill", "9", NULL }), 1);
        assert_non_null(strstr(out, "org.freedesktop.DBus.Error.AccessDenied"));
        g_clear_pointer(&out, g_free);

        assert_int_equal(test_client(&f->bus, 1, &out, (const char *[]) { "call-pool", "echo", "Scale", "3", NULL }), 0);
        g_clear_pointer(&out, g_free);
        wait_pool_shape(d, "echo", 3, 3);
        /* and daemon may not submit: the two rights are separate. */
        assert_int_equal(test_client(&f->bus, 1, &out, (const char *[]) { "run", "echo", "x", NULL }), 1);
        assert_non_null(strstr(out, "org.freedesktop.DBus.Error.AccessDenied"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_scale, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_rolling_restart_loses_nothing, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_stop_start_pause_resume, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_worker_restart_and_kill, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_stop_fails_what_cannot_finish, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_states_tell_the_truth, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_control_authorization, test_fixture_setup, test_fixture_teardown),
        };

        if (getenv("TEST_FILTER"))
                cmocka_set_test_filter(getenv("TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
