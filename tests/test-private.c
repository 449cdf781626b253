/* SPDX-License-Identifier: MIT */
/*
 * The private socket (PrivateSocket=): the public API served peer-to-peer, without the bus
 * daemon, to sd-bus and to libdbus (python3-dbus) clients, with the same authorization as on the
 * bus, TaskFinished only to the peer that submitted, and nothing lost when a peer goes away.
 */
#include <errno.h>
#include <inttypes.h>
#include <glib.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/harness.h"
#include "util/macro.h"

#define MANAGER_IFACE "org.apiary.Apiary1.Manager"
#define POOL_IFACE "org.apiary.Apiary1.Pool"

typedef TestFixture Fixture;

static char *socket_path(Fixture *f) {
        return g_strdup_printf("%s/apiary-private", f->bus.dir);
}

/* Starts apiaryd with an echo and a sleep pool, serving privately on socket_path(). */
static char *start(Fixture *f) {
        g_autofree char *config = NULL;
        char *path = socket_path(f);

        config = g_strdup_printf("[Apiary]\n"
                                 "PluginDirectory=@PLUGINS@\n"
                                 "PrivateSocket=%s\n"
                                 "SubmitUsers=daemon\n"
                                 "ControlUsers=bin\n"
                                 "[Pool echo]\n"
                                 "Plugin=echo.so\n"
                                 "Workers=2\n"
                                 "[Pool sleep]\n"
                                 "Plugin=sleep.so\n"
                                 "Kind=io\n"
                                 "Workers=1\n",
                                 path);
        test_daemon_start(&f->daemon, &f->bus, config, true);
        return path;
}

static void assert_counters_add_up(TestDaemon *d) {
        assert_int_equal(test_get_manager_u64(d, "TasksSubmitted"),
                         test_get_manager_u64(d, "TasksQueued") + test_get_manager_u64(d, "TasksRunning") +
                                 test_get_manager_u64(d, "TasksDone") + test_get_manager_u64(d, "TasksFailed"));
}

static void test_private_serves_the_api(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = start(f), *state_s = NULL, *result = NULL, *xml = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        char *payloads[50];
        uint64_t ids[50];
        const char *text;
        struct stat st;
        size_t size;

        /* Anyone may connect; the calls are what is authorized. */
        assert_int_equal(stat(path, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0666);

        test_daemon_connect_private(d, path);
        state_s = test_get_string(d, "/org/apiary/Apiary1", MANAGER_IFACE, "State");
        assert_string_equal(state_s, "running");

        assert_int_equal(test_run(d, "echo", "hello", 5, 0, (void **) &result, &size, &error), 0);
        assert_int_equal(size, 5);
        assert_memory_equal(result, "hello", 5);

        /* Submit, with TaskFinished on this connection. */
        test_collect_results(d);
        for (size_t i = 0; i < G_N_ELEMENTS(payloads); i++)
                payloads[i] = g_strdup_printf("task %zu", i);
        test_submit_batch(d, "echo", payloads, G_N_ELEMENTS(payloads), ids);
        test_wait_results(d, G_N_ELEMENTS(payloads));
        for (size_t i = 0; i < G_N_ELEMENTS(payloads); i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_non_null(r);
                assert_true(r->ok);
                assert_int_equal(r->count, 1);
                assert_string_equal(r->data, payloads[i]);
                g_free(payloads[i]);
        }

        /* The same objects as on the bus: introspection, the pools below, a control method. */
        assert_true(sd_bus_call_method(d->bus, NULL, "/org/apiary/Apiary1", "org.freedesktop.DBus.Introspectable",
                                       "Introspect", &error, &reply, NULL) >= 0);
        assert_true(sd_bus_message_read(reply, "s", &text) > 0);
        assert_non_null(strstr(text, MANAGER_IFACE));
        assert_non_null(strstr(text, "<node name=\"pool\"/>"));
        reply = sd_bus_message_unref(reply);

        g_autofree char *pool = test_pool_path("echo");
        assert_true(sd_bus_call_method(d->bus, NULL, pool, POOL_IFACE, "Pause", &error, NULL, NULL) >= 0);
        assert_true(sd_bus_call_method(d->bus, NULL, pool, POOL_IFACE, "Resume", &error, NULL, NULL) >= 0);
        assert_counters_add_up(d);
        assert_int_equal(test_get_manager_u64(d, "TasksDone"), 1 + G_N_ELEMENTS(payloads));
}

/* A second implementation (libdbus), and the same authorization as on the bus: only root,
 * apiaryd's user and the configured users submit or control, each only what it is listed for.
 * Anyone else is not served here at all: turned away before it can send a call (it reads the
 * state on the bus), so that nothing it sends is buffered. */
static void test_private_authorizes_each_call(void **state) {
        Fixture *f = *state;
        g_autofree char *path = start(f), *address = g_strdup_printf("peer:unix:path=%s", path);
        g_autofree char *out = NULL;

        assert_int_equal(test_client_at(address, 0, &out, (const char *[]) { "run", "echo", "as root", NULL }), 0);
        assert_string_equal(out, "as root");
        g_clear_pointer(&out, g_free);

        /* daemon (1) submits, and reads, but does not control. */
        assert_int_equal(test_client_at(address, 1, &out, (const char *[]) { "run", "echo", "daemon", NULL }), 0);
        assert_string_equal(out, "daemon");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client_at(address, 1, &out, (const char *[]) { "get", "State", NULL }), 0);
        assert_string_equal(out, "running");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client_at(address, 1, &out, (const char *[]) { "call-pool", "echo", "Pause", NULL }), 1);
        assert_true(g_str_has_prefix(out, "org.freedesktop.DBus.Error.AccessDenied: User 1 may not call Pause()"));
        g_clear_pointer(&out, g_free);

        /* bin (2) controls, and does not submit. */
        assert_int_equal(test_client_at(address, 2, &out, (const char *[]) { "call-pool", "echo", "Pause", NULL }), 0);
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client_at(address, 2, &out, (const char *[]) { "call-pool", "echo", "Resume", NULL }), 0);
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client_at(address, 2, &out, (const char *[]) { "run", "echo", "bin", NULL }), 1);
        assert_true(g_str_has_prefix(out, "org.freedesktop.DBus.Error.AccessDenied: User 2 may not call Run()"));
        g_clear_pointer(&out, g_free);

        /* nobody may do neither: not even a property read gets through here; on the bus it does. */
        assert_int_equal(test_client_at(address, 65534, &out, (const char *[]) { "get", "State", NULL }), 1);
        assert_null(strstr(out, "running"));
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 65534, &out, (const char *[]) { "get", "State", NULL }), 0);
        assert_string_equal(out, "running");
        g_clear_pointer(&out, g_free);

        /* Error names travel peer-to-peer too. */
        assert_int_equal(test_client_at(address, 0, &out, (const char *[]) { "run", "nosuchpool", "x", NULL }), 1);
        assert_true(g_str_has_prefix(out, "org.apiary.Apiary1.Error.NoSuchPool:"));
}

static int count_finished(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        (*(unsigned *) userdata)++;
        return 0;
}

/* TaskFinished is the submitter's business: another peer does not see it. */
static void test_private_task_finished_only_to_submitter(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = start(f), *address = g_strdup_printf("unix:path=%s", path);
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *other = NULL;
        unsigned seen = 0;
        uint64_t id;
        int r;

        assert_int_equal(sd_bus_new(&other), 0);
        assert_true(sd_bus_set_address(other, address) >= 0);
        assert_true(sd_bus_start(other) >= 0);
        assert_true(sd_bus_call_method(other, NULL, "/org/apiary/Apiary1", MANAGER_IFACE, "Subscribe", NULL, NULL,
                                       NULL) >= 0);
        assert_true(sd_bus_match_signal(other, NULL, NULL, "/org/apiary/Apiary1", MANAGER_IFACE, "TaskFinished",
                                        count_finished, &seen) >= 0);

        test_daemon_connect_private(d, path);
        test_collect_results(d);
        id = test_submit(d, "echo", "mine", 4);
        test_wait_results(d, 1);
        assert_true(test_result(d, id)->ok);

        /* The other peer, subscribed to signals, got no TaskFinished. A call after the task
         * ended is answered after anything apiaryd sent it before. */
        g_autofree char *s = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        assert_true(sd_bus_get_property_string(other, NULL, "/org/apiary/Apiary1", MANAGER_IFACE, "State", &error, &s) >=
                    0);
        do
                r = sd_bus_process(other, NULL);
        while (r > 0);
        assert_true(r >= 0);
        assert_int_equal(seen, 0);
}

static int ignore_reply(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return 0;
}

/* A peer that goes away with Run calls pending loses its replies, nothing else: the tasks end
 * and are counted, and apiaryd serves the next peer. */
static void test_private_peer_leaves_with_runs_pending(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = start(f), *address = g_strdup_printf("unix:path=%s", path);
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *result = NULL;
        sd_bus *gone;
        size_t size;

        assert_int_equal(sd_bus_new(&gone), 0);
        assert_true(sd_bus_set_address(gone, address) >= 0);
        assert_true(sd_bus_start(gone) >= 0);
        for (int i = 0; i < 5; i++)
                assert_true(sd_bus_call_method_async(gone, NULL, NULL, "/org/apiary/Apiary1", MANAGER_IFACE, "Run",
                                                     ignore_reply, NULL, "saya{sv}", "sleep", 3, '2', '0', '0',
                                                     0) >= 0);
        assert_true(sd_bus_flush(gone) >= 0);
        sd_bus_flush_close_unref(gone);

        /* The same worker's timers: a longer nap that starts later ends after the 5 others. */
        test_daemon_connect_private(d, path);
        assert_int_equal(test_run(d, "sleep", "300", 3, 0, (void **) &result, &size, &error), 0);
        assert_int_equal(test_get_manager_u64(d, "TasksDone"), 6);
        assert_int_equal(test_get_manager_u64(d, "TasksFailed"), 0);
        g_clear_pointer(&result, free);
        assert_counters_add_up(d);
        assert_int_equal(test_run(d, "echo", "next", 4, 0, (void **) &result, &size, &error), 0);
        assert_memory_equal(result, "next", 4);
}

/* The socket goes with apiaryd; a stale one from a dead apiaryd is replaced. */
static void test_private_socket_lifetime(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = socket_path(f);
        struct stat st;

        /* A regular file in the way, as a crash could leave a socket. */
        assert_true(g_file_set_contents(path, "stale", -1, NULL));
        g_free(start(f));
        assert_int_equal(stat(path, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));

        assert_int_equal(test_daemon_kill_and_wait(d, SIGTERM), 0);
        assert_int_equal(stat(path, &st), -1);
        assert_int_equal(errno, ENOENT);
}

#define NOBODY 65534

/* MaxTasksPerCaller=: a UID at its limit is refused with TooManyTasks on every connection, on the
 * bus and on the private socket, while other users still get their tasks in. */
static void test_caller_limit(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = socket_path(f), *config = NULL, *out = NULL;
        g_autofree char *peer = g_strdup_printf("peer:unix:path=%s", path);
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        char *payloads[4] = { (char *) "5000", (char *) "5000", (char *) "5000", (char *) "5000" };
        uint64_t ids[4];
        size_t size;
        void *result = NULL;

        config = g_strdup_printf("[Apiary]\nPluginDirectory=@PLUGINS@\nPrivateSocket=%s\nMaxTasksPerCaller=4\n"
                                 "SubmitUsers=nobody\n"
                                 "[Pool sleep]\nPlugin=sleep.so\nKind=io\nWorkers=1\nConcurrency=1\nStopTimeoutSec=200ms\n"
                                 "[Pool echo]\nPlugin=echo.so\nWorkers=1\n", path);
        test_daemon_start(d, &f->bus, config, true);

        /* Our connection (root) takes its 4: the 5th is refused, whatever the pool. */
        test_submit_batch(d, "sleep", payloads, 4, ids);
        assert_true(test_run(d, "echo", "x", 1, 0, &result, &size, &error) < 0);
        assert_true(sd_bus_error_has_name(&error, "org.apiary.Apiary1.Error.TooManyTasks"));
        assert_string_equal(error.message, "UID 0 has 4 unfinished tasks and asked for 1 more; MaxTasksPerCaller=4.");

        /* The share is the UID's: another root connection, a libdbus client on the bus or one
         * on the private socket, does not get a 5th either. */
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "submit", "sleep", "5000", NULL }), 1);
        assert_string_equal(out, "org.apiary.Apiary1.Error.TooManyTasks: UID 0 has 4 unfinished tasks and asked "
                                 "for 1 more; MaxTasksPerCaller=4.");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client_at(peer, 0, &out, (const char *[]) { "submit", "sleep", "5000", NULL }), 1);
        assert_true(g_str_has_prefix(out, "org.apiary.Apiary1.Error.TooManyTasks: UID 0 has 4 "));
        g_clear_pointer(&out, g_free);

        /* Another user is not starved: nobody gets its own 4, over two connections (the bus, then
         * the private socket), and not a 5th. */
        assert_int_equal(test_client(&f->bus, NOBODY, &out, (const char *[]) { "submit-many", "sleep", "3", "5000",
                                                                               NULL }), 0);
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client_at(peer, NOBODY, &out, (const char *[]) { "submit-many", "sleep", "2", "5000",
                                                                               NULL }), 1);
        assert_string_equal(out, "org.apiary.Apiary1.Error.TooManyTasks: UID 65534 has 4 unfinished tasks and "
                                 "asked for 1 more; MaxTasksPerCaller=4.");
        assert_int_equal(test_get_manager_u64(d, "TasksSubmitted"), 4 + 4);

        /* The share frees with the tasks: root's three queued ones cancelled, it may submit again. */
        for (size_t i = 1; i < 4; i++) {
                int cancelled = 0;

                sd_bus_error_free(&error);
                assert_true(sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                               "org.apiary.Apiary1.Manager", "Cancel", &error, &reply, "t", ids[i]) >= 0);
                assert_true(sd_bus_message_read(reply, "b", &cancelled) >= 0);
                assert_true(cancelled);
                reply = sd_bus_message_unref(reply);
        }
        assert_true(test_submit(d, "echo", "y", 1) > 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_private_serves_the_api, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_private_authorizes_each_call, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_private_task_finished_only_to_submitter, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_private_peer_leaves_with_runs_pending, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_private_socket_lifetime, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_caller_limit, test_fixture_setup, test_fixture_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
