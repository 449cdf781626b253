/* SPDX-License-Identifier: MIT */
/*
 * Bad input from outside, end to end: D-Bus calls with wrong signatures, arrays past the queue's
 * room, payloads near the bus's limit, unknown pools and object paths, and clients that hang up
 * with calls pending, through libdbus and python3-dbus (the reference implementation, so the
 * error *names* that clients match on are checked); then configurations apiaryd must refuse
 * with a line that names the file. apiaryd must answer each with the right error, lose no task,
 * and stop cleanly (the teardown checks exit status 0).
 */
#include <dbus/dbus.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "apiary/plugin.h"
#include "tests/harness.h"
#include "util/macro.h"

#define MANAGER_PATH "/org/apiary/Apiary1"
#define MANAGER_IFACE "org.apiary.Apiary1.Manager"
#define POOL_IFACE "org.apiary.Apiary1.Pool"

typedef TestFixture Fixture;

static const char *const config =
        "[Apiary]\nPluginDirectory=@PLUGINS@\n"
        "[Pool echo]\nPlugin=echo.so\nWorkers=2\n"
        "[Pool small]\nPlugin=echo.so\nWorkers=1\nQueueLimit=1000\n"
        "[Pool slow]\nPlugin=sleep.so\nKind=io\nWorkers=1\nConcurrency=4\n";

/* Sends CALL (taken) and expects the error ERROR_NAME; returns its message. */
static char *call_expect_error(DBusConnection *c, DBusMessage *call, const char *error_name) {
        DBusError error;
        DBusMessage *reply;
        char *message;

        dbus_error_init(&error);
        reply = dbus_connection_send_with_reply_and_block(c, call, 60000, &error);
        if (reply)
                fail_msg("%s.%s on %s succeeded, expected %s", dbus_message_get_interface(call),
                         dbus_message_get_member(call), dbus_message_get_path(call), error_name);
        if (strcmp(error.name, error_name) != 0)
                fail_msg("%s.%s on %s: got %s (%s), expected %s", dbus_message_get_interface(call),
                         dbus_message_get_member(call), dbus_message_get_path(call), error.name, error.message,
                         error_name);
        print_message("%s.%s(%s) on %s → %s: %s\n", dbus_message_get_interface(call), dbus_message_get_member(call),
                      dbus_message_get_signature(call), dbus_message_get_path(call), error.name, error.message);
        message = g_strdup(error.message);
        dbus_error_free(&error);
        dbus_message_unref(call);
        return message;
}

static DBusMessage *new_call(const char *path, const char *interface, const char *member) {
        DBusMessage *m = dbus_message_new_method_call("org.apiary.Apiary1", path, interface, member);

        assert_non_null(m);
        return m;
}

/* Appends "aay" of N payloads, each the SIZE bytes at DATA. */
static void append_payloads(DBusMessageIter *iter, size_t n, const void *data, size_t size) {
        DBusMessageIter array, inner;
        unsigned char *bytes = g_malloc(size + 1);

        if (size > 0)
                memcpy(bytes, data, size);
        assert_true(dbus_message_iter_open_container(iter, DBUS_TYPE_ARRAY, "ay", &array));
        for (size_t i = 0; i < n; i++) {
                const unsigned char *p = bytes;

                assert_true(dbus_message_iter_open_container(&array, DBUS_TYPE_ARRAY, "y", &inner));
                assert_true(dbus_message_iter_append_fixed_array(&inner, DBUS_TYPE_BYTE, &p, (int) size));
                assert_true(dbus_message_iter_close_container(&array, &inner));
        }
        assert_true(dbus_message_iter_close_container(iter, &array));
        g_free(bytes);
}

static void append_empty_options(DBusMessageIter *iter) {
        DBusMessageIter dict;

        assert_true(dbus_message_iter_open_container(iter, DBUS_TYPE_ARRAY, "{sv}", &dict));
        assert_true(dbus_message_iter_close_container(iter, &dict));
}

/* A task call (s pool, PAYLOADS, a{sv}) of MEMBER, with N payloads of SIZE bytes for the batch
 * methods, or one payload of SIZE bytes for Submit and Run. */
static DBusMessage *task_call(const char *member, const char *pool, size_t n, size_t size) {
        DBusMessage *m = new_call(MANAGER_PATH, MANAGER_IFACE, member);
        DBusMessageIter iter;

        dbus_message_iter_init_append(m, &iter);
        assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &pool));
        if (g_str_has_suffix(member, "Batch")) {
                unsigned char *bytes = g_malloc(size + 1);

                memset(bytes, 'x', size);
                append_payloads(&iter, n, bytes, size);
                g_free(bytes);
        } else {
                DBusMessageIter inner;
                unsigned char *bytes = g_malloc0(size + 1);
                const unsigned char *p = bytes;

                assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "y", &inner));
                assert_true(dbus_message_iter_append_fixed_array(&inner, DBUS_TYPE_BYTE, &p, (int) size));
                assert_true(dbus_message_iter_close_container(&iter, &inner));
                g_free(bytes);
        }
        append_empty_options(&iter);
        return m;
}

static void assert_counters_add_up(TestDaemon *d) {
        uint64_t submitted = test_get_manager_u64(d, "TasksSubmitted");

        assert_int_equal(submitted, test_get_manager_u64(d, "TasksQueued") + test_get_manager_u64(d, "TasksRunning") +
                                            test_get_manager_u64(d, "TasksDone") +
                                            test_get_manager_u64(d, "TasksFailed"));
}

/* ---- signatures ---- */

static void test_wrong_signatures(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        static const char *const members[] = { "Submit", "Run", "SubmitBatch", "RunBatch", "Cancel" };
        const char *s = "echo";
        dbus_uint32_t u = 7;
        dbus_uint64_t t = 1;
        DBusConnection *c;
        DBusMessage *m;
        DBusMessageIter iter, dict;

        test_daemon_start(d, &f->bus, config, true);
        c = test_libdbus_connect(f->bus.address);

        for (size_t i = 0; i < G_N_ELEMENTS(members); i++) {
                /* No arguments at all. */
                g_free(call_expect_error(c, new_call(MANAGER_PATH, MANAGER_IFACE, members[i]),
                                         "org.freedesktop.DBus.Error.InvalidArgs"));
                /* Two strings. */
                m = new_call(MANAGER_PATH, MANAGER_IFACE, members[i]);
                assert_true(dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID));
                g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.InvalidArgs"));
                /* A number where the pool's name goes. */
                m = new_call(MANAGER_PATH, MANAGER_IFACE, members[i]);
                assert_true(dbus_message_append_args(m, DBUS_TYPE_UINT32, &u, DBUS_TYPE_INVALID));
                g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.InvalidArgs"));
        }

        /* Right arguments, then one too many. */
        m = task_call("Submit", "echo", 1, 3);
        assert_true(dbus_message_append_args(m, DBUS_TYPE_UINT64, &t, DBUS_TYPE_INVALID));
        g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.InvalidArgs"));
        /* Options of the wrong type: a{ss} for a{sv}. */
        m = new_call(MANAGER_PATH, MANAGER_IFACE, "Run");
        dbus_message_iter_init_append(m, &iter);
        assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &s));
        {
                DBusMessageIter bytes;
                const unsigned char *p = (const unsigned char *) "x";

                assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "y", &bytes));
                assert_true(dbus_message_iter_append_fixed_array(&bytes, DBUS_TYPE_BYTE, &p, 1));
                assert_true(dbus_message_iter_close_container(&iter, &bytes));
        }
        assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "{ss}", &dict));
        assert_true(dbus_message_iter_close_container(&iter, &dict));
        g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.InvalidArgs"));
        /* The payloads of a batch as one ay. */
        m = task_call("Run", "echo", 1, 4);
        dbus_message_set_member(m, "SubmitBatch");
        g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.InvalidArgs"));

        /* Control methods: Scale(s), Kill(s), Reload(u). */
        m = new_call("/org/apiary/Apiary1/pool/echo", POOL_IFACE, "Scale");
        assert_true(dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID));
        g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.InvalidArgs"));
        m = new_call("/org/apiary/Apiary1/pool/echo/0", "org.apiary.Apiary1.Worker", "Kill");
        assert_true(dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID));
        g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.InvalidArgs"));
        m = new_call(MANAGER_PATH, MANAGER_IFACE, "Reload");
        assert_true(dbus_message_append_args(m, DBUS_TYPE_UINT32, &u, DBUS_TYPE_INVALID));
        g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.InvalidArgs"));

        /* Members and interfaces that do not exist; properties that are read-only or unknown. */
        g_free(call_expect_error(c, new_call(MANAGER_PATH, MANAGER_IFACE, "Explode"),
                                 "org.freedesktop.DBus.Error.UnknownMethod"));
        g_free(call_expect_error(c, new_call(MANAGER_PATH, "org.apiary.Apiary1.Nope", "Run"),
                                 "org.freedesktop.DBus.Error.UnknownMethod"));
        {
                const char *iface = MANAGER_IFACE, *prop = "TasksDone", *bogus = "Nope";
                DBusMessageIter variant;

                m = new_call(MANAGER_PATH, "org.freedesktop.DBus.Properties", "Set");
                dbus_message_iter_init_append(m, &iter);
                assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &iface));
                assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &prop));
                assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_VARIANT, "t", &variant));
                assert_true(dbus_message_iter_append_basic(&variant, DBUS_TYPE_UINT64, &t));
                assert_true(dbus_message_iter_close_container(&iter, &variant));
                g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.PropertyReadOnly"));

                m = new_call(MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get");
                assert_true(dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &bogus,
                                                     DBUS_TYPE_INVALID));
                g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.UnknownProperty"));
        }

        /* None of it created a task, and apiaryd still serves. */
        assert_int_equal(test_get_manager_u64(d, "TasksSubmitted"), 0);
        {
                sd_bus_error error = SD_BUS_ERROR_NULL;
                g_autofree char *out = NULL;

                assert_int_equal(test_run(d, "echo", "fine", 4, 0, (void **) &out, NULL, &error), 0);
                assert_string_equal(out, "fine");
        }
        test_libdbus_disconnect(c);
}

/* ---- sizes ---- */

static void test_huge_arrays_and_payloads(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        /* dbus-daemon's default max_message_size is 32 MiB; under valgrind, a quarter of it. */
        size_t big = test_under_wrapper() ? 8u << 20 : 30u << 20;
        g_autofree char *msg = NULL;
        DBusConnection *c;

        test_daemon_start(d, &f->bus, config, true);
        c = test_libdbus_connect(f->bus.address);

        /* More tasks than QueueLimit=: refused whole, with QueueFull, and nothing is queued. */
        msg = call_expect_error(c, task_call("SubmitBatch", "small", 1001, 0), "org.apiary.Apiary1.Error.QueueFull");
        assert_string_equal(msg, "Pool \"small\" has room for 1000 more tasks (QueueLimit=1000), 1001 asked.");
        g_clear_pointer(&msg, g_free);
        g_free(call_expect_error(c, task_call("RunBatch", "small", 5000, 1), "org.apiary.Apiary1.Error.QueueFull"));
        /* 200,000 empty payloads against the default QueueLimit=65536. */
        g_free(call_expect_error(c, task_call("SubmitBatch", "echo", 200000, 0), "org.apiary.Apiary1.Error.QueueFull"));
        assert_int_equal(test_get_manager_u64(d, "TasksSubmitted"), 0);

        /* A payload near the bus's limit goes there and back, byte for byte. */
        {
                sd_bus_error error = SD_BUS_ERROR_NULL;
                g_autofree unsigned char *payload = g_malloc(big);
                g_autofree void *result = NULL;
                size_t size = 0;

                for (size_t i = 0; i < big; i++)
                        payload[i] = (unsigned char) (i * 131 + (i >> 17));
                if (test_run(d, "echo", payload, big, 0, &result, &size, &error) < 0)
                        fail_msg("Run of %zu bytes: %s: %s", big, error.name, error.message);
                assert_int_equal(size, big);
                assert_memory_equal(result, payload, big);
                print_message("Run of a %zu MiB payload: echoed back whole\n", big >> 20);
        }
        /* And a batch whose payloads add up to as much. */
        {
                DBusMessage *m = task_call("RunBatch", "echo", 1000, big / 1000 - 64), *reply;
                DBusError error;
                DBusMessageIter iter, array;

                dbus_error_init(&error);
                reply = dbus_connection_send_with_reply_and_block(c, m, 120000, &error);
                if (!reply)
                        fail_msg("RunBatch of 1000 × %zu bytes: %s: %s", big / 1000 - 64, error.name, error.message);
                assert_true(dbus_message_iter_init(reply, &iter));
                dbus_message_iter_recurse(&iter, &array);
                assert_int_equal(dbus_message_iter_get_element_count(&iter), 1000);
                dbus_message_unref(reply);
                dbus_message_unref(m);
        }

        /* Unknown pools: the same named error from every task method. */
        {
                static const char *const members[] = { "Submit", "Run", "SubmitBatch", "RunBatch" };
                static const char *const names[] = { "nope", "", "../echo", "echo/0", "ECHO" };

                for (size_t i = 0; i < G_N_ELEMENTS(members); i++)
                        for (size_t j = 0; j < G_N_ELEMENTS(names); j++) {
                                g_autofree char *expected = g_strdup_printf("No pool named \"%s\".", names[j]);

                                msg = call_expect_error(c, task_call(members[i], names[j], 1, 1),
                                                        "org.apiary.Apiary1.Error.NoSuchPool");
                                assert_string_equal(msg, expected);
                                g_clear_pointer(&msg, g_free);
                        }
        }
        /* A hundred thousand options: the first unknown one is refused. */
        {
                DBusMessage *m = new_call(MANAGER_PATH, MANAGER_IFACE, "Submit");
                DBusMessageIter iter, bytes, dict, entry, variant;
                const char *pool = "echo";
                const unsigned char *p = (const unsigned char *) "x";
                dbus_uint64_t t = 5000000;

                dbus_message_iter_init_append(m, &iter);
                assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &pool));
                assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "y", &bytes));
                assert_true(dbus_message_iter_append_fixed_array(&bytes, DBUS_TYPE_BYTE, &p, 1));
                assert_true(dbus_message_iter_close_container(&iter, &bytes));
                assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "{sv}", &dict));
                for (unsigned i = 0; i < 100000; i++) {
                        g_autofree char *key = i < 99999 ? g_strdup("timeout") : g_strdup_printf("bogus%u", i);
                        const char *k = key;

                        assert_true(dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &entry));
                        assert_true(dbus_message_iter_append_basic(&entry, DBUS_TYPE_STRING, &k));
                        assert_true(dbus_message_iter_open_container(&entry, DBUS_TYPE_VARIANT, "t", &variant));
                        assert_true(dbus_message_iter_append_basic(&variant, DBUS_TYPE_UINT64, &t));
                        assert_true(dbus_message_iter_close_container(&entry, &variant));
                        assert_true(dbus_message_iter_close_container(&dict, &entry));
                }
                assert_true(dbus_message_iter_close_container(&iter, &dict));
                msg = call_expect_error(c, m, "org.apiary.Apiary1.Error.InvalidOption");
                assert_string_equal(msg, "Unknown option \"bogus99999\"; known options: timeout, priority, batch-results.");
                g_clear_pointer(&msg, g_free);
        }

        assert_int_equal(test_get_manager_u64(d, "TasksSubmitted"), 1001);
        assert_int_equal(test_get_manager_u64(d, "TasksDone"), 1001);
        assert_counters_add_up(d);
        test_libdbus_disconnect(c);
}

/* ---- object paths ---- */

static void test_unknown_objects(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        static const char *const paths[] = {
                "/org/apiary/Apiary1/pool/nonexistent",
                "/org/apiary/Apiary1/pool/echo/2",              /* one past the last slot */
                "/org/apiary/Apiary1/pool/echo/4294967296",
                "/org/apiary/Apiary1/pool/echo/x",
                "/org/apiary/Apiary1/pool/echo/0/0",
                "/org/apiary/Apiary1/pool/echo_2dio",           /* the escape of a pool that does not exist */
                "/org/apiary/Apiary2",
                "/nonexistent",
        };
        const char *iface = POOL_IFACE, *prop = "State";
        g_autofree char *out = NULL;
        DBusConnection *c;

        test_daemon_start(d, &f->bus, config, true);
        c = test_libdbus_connect(f->bus.address);

        for (size_t i = 0; i < G_N_ELEMENTS(paths); i++) {
                DBusMessage *m;
                g_autofree char *msg = NULL, *expected = g_strdup_printf("Unknown object '%s'.", paths[i]);

                msg = call_expect_error(c, new_call(paths[i], "org.freedesktop.DBus.Introspectable", "Introspect"),
                                        "org.freedesktop.DBus.Error.UnknownObject");
                assert_string_equal(msg, expected);
                m = new_call(paths[i], "org.freedesktop.DBus.Properties", "Get");
                assert_true(dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
                                                     DBUS_TYPE_INVALID));
                g_free(call_expect_error(c, m, "org.freedesktop.DBus.Error.UnknownObject"));
                g_free(call_expect_error(c, new_call(paths[i], POOL_IFACE, "Start"),
                                         "org.freedesktop.DBus.Error.UnknownObject"));
        }
        test_libdbus_disconnect(c);

        /* The same through python3-dbus, and the control methods' own errors. */
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-pool", "nonexistent", "Start", NULL }), 1);
        assert_string_equal(out, "org.freedesktop.DBus.Error.UnknownObject: Unknown object "
                                 "'/org/apiary/Apiary1/pool/nonexistent'.");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-worker", "echo", "7", "Restart", NULL }), 1);
        assert_string_equal(out, "org.freedesktop.DBus.Error.UnknownObject: Unknown object '/org/apiary/Apiary1/pool/echo/7'.");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-worker", "echo", "0", "Kill", "99", NULL }), 1);
        assert_true(g_str_has_prefix(out, "org.freedesktop.DBus.Error.InvalidArgs: Invalid signal number 99: expected 1 to "));
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-worker", "echo", "0", "Kill", "0", NULL }), 1);
        assert_true(g_str_has_prefix(out, "org.freedesktop.DBus.Error.InvalidArgs: "));
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "call-pool", "echo", "Scale", "0", NULL }), 1);
        assert_true(g_str_has_prefix(out, "org.freedesktop.DBus.Error.InvalidArgs: "));
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "run", "nope", "x", NULL }), 1);
        assert_string_equal(out, "org.apiary.Apiary1.Error.NoSuchPool: No pool named \"nope\".");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "cancel", "0", NULL }), 1);
        assert_string_equal(out, "org.apiary.Apiary1.Error.NoSuchTask: No task 0 (it never existed or has finished).");
        g_clear_pointer(&out, g_free);

        /* Both echo workers are the ones it started with: nothing above touched them. */
        assert_int_equal(test_get_u64(d, "/org/apiary/Apiary1/pool/echo", POOL_IFACE, "Restarts"), 0);
}

/* ---- clients that hang up ---- */

typedef struct {
        uint64_t submitted;
} Settled;

/* Everything accepted has ended, and the slow pool's worker is idle again. */
static bool tasks_settled(TestDaemon *d, const void *userdata) {
        const Settled *w = userdata;
        g_autofree char *s = test_worker_state(d, "slow", 0);

        return test_get_manager_u64(d, "TasksSubmitted") == w->submitted &&
                test_get_manager_u64(d, "TasksQueued") == 0 && test_get_manager_u64(d, "TasksRunning") == 0 &&
                strcmp(s, "ready") == 0;
}

static void test_client_hangs_up_with_calls_pending(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { RUNS = 40, BATCH = 20 };
        Settled w = { RUNS + 3 * BATCH };
        g_autofree char *out = NULL;
        DBusConnection *c;

        test_daemon_start(d, &f->bus, config, true);

        /* 40 Run calls, a RunBatch and a SubmitBatch of 20 each, all 50 ms sleeps on one worker
         * that runs 4 at a time; then the client is gone before the first answer. */
        c = test_libdbus_connect(f->bus.address);
        for (unsigned i = 0; i < RUNS; i++) {
                DBusMessage *m = new_call(MANAGER_PATH, MANAGER_IFACE, "Run");
                DBusMessageIter iter, bytes;
                const char *pool = "slow";
                const unsigned char *p = (const unsigned char *) "50";

                dbus_message_iter_init_append(m, &iter);
                assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &pool));
                assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "y", &bytes));
                assert_true(dbus_message_iter_append_fixed_array(&bytes, DBUS_TYPE_BYTE, &p, 2));
                assert_true(dbus_message_iter_close_container(&iter, &bytes));
                append_empty_options(&iter);
                assert_true(dbus_connection_send(c, m, NULL));
                dbus_message_unref(m);
        }
        for (unsigned k = 0; k < 2; k++) {
                DBusMessage *m = new_call(MANAGER_PATH, MANAGER_IFACE, k == 0 ? "RunBatch" : "SubmitBatch");
                DBusMessageIter iter, array, inner;
                const char *pool = "slow";

                dbus_message_iter_init_append(m, &iter);
                assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &pool));
                assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "ay", &array));
                for (unsigned i = 0; i < BATCH; i++) {
                        const unsigned char *p = (const unsigned char *) "50";

                        assert_true(dbus_message_iter_open_container(&array, DBUS_TYPE_ARRAY, "y", &inner));
                        assert_true(dbus_message_iter_append_fixed_array(&inner, DBUS_TYPE_BYTE, &p, 2));
                        assert_true(dbus_message_iter_close_container(&array, &inner));
                }
                assert_true(dbus_message_iter_close_container(&iter, &array));
                append_empty_options(&iter);
                assert_true(dbus_connection_send(c, m, NULL));
                dbus_message_unref(m);
        }
        /* And a SubmitBatch whose reply it waits for, so that its TaskFinished signals are owed. */
        {
                DBusMessage *m = new_call(MANAGER_PATH, MANAGER_IFACE, "SubmitBatch"), *reply;
                DBusMessageIter iter;
                const char *pool = "slow";
                DBusError error;

                dbus_message_iter_init_append(m, &iter);
                assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &pool));
                append_payloads(&iter, BATCH, "50", 2);
                append_empty_options(&iter);
                dbus_error_init(&error);
                reply = dbus_connection_send_with_reply_and_block(c, m, 60000, &error);
                if (!reply)
                        fail_msg("SubmitBatch: %s: %s", error.name, error.message);
                dbus_message_unref(reply);
                dbus_message_unref(m);
        }
        test_libdbus_disconnect(c);

        /* apiaryd runs them all to their end, answers no one, and counts them right. */
        test_wait_until(d, tasks_settled, &w, 3 * TEST_TIMEOUT_USEC, "the hung-up client's tasks to end");
        assert_int_equal(test_get_manager_u64(d, "TasksDone") + test_get_manager_u64(d, "TasksFailed"), w.submitted);
        assert_counters_add_up(d);
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "run", "slow", "1", NULL }), 0);
        assert_string_equal(out, "1");
}

/* A RunBatch of COUNT tasks with the payloads TEXT, through libdbus; returns the reply (a(bay)). */
static DBusMessage *run_batch_texts(DBusConnection *c, const char *pool, const char *text, unsigned count) {
        DBusMessage *m = new_call(MANAGER_PATH, MANAGER_IFACE, "RunBatch"), *reply;
        DBusMessageIter iter, outer, inner, dict;
        DBusError error;
        size_t len = strlen(text);

        dbus_message_iter_init_append(m, &iter);
        assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &pool));
        assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "ay", &outer));
        for (unsigned i = 0; i < count; i++) {
                assert_true(dbus_message_iter_open_container(&outer, DBUS_TYPE_ARRAY, "y", &inner));
                assert_true(dbus_message_iter_append_fixed_array(&inner, DBUS_TYPE_BYTE, &text, (int) len));
                assert_true(dbus_message_iter_close_container(&outer, &inner));
        }
        assert_true(dbus_message_iter_close_container(&iter, &outer));
        assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "{sv}", &dict));
        assert_true(dbus_message_iter_close_container(&iter, &dict));
        dbus_error_init(&error);
        reply = dbus_connection_send_with_reply_and_block(c, m, 120000, &error);
        if (!reply)
                fail_msg("RunBatch of %u × \"%s\": %s: %s", count, text, error.name, error.message);
        dbus_message_unref(m);
        return reply;
}

/*
 * Results at the bus's limit. A result of APIARY_RESULT_SIZE_MAX (the plugin header's promise)
 * reaches the caller whole; one byte more fails the task in the worker, with the limit in the
 * reason. A RunBatch whose results add up to more than one message on the bus holds (which would
 * make dbus-daemon drop apiaryd, and all of its pools with it) gets those that fit, and the rest
 * as failures that say why. apiaryd is up and counts them all.
 */
static void test_results_at_the_bus_limit(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        /* Three results, of which BUDGET / (SIZE + 16) fit in one reply. */
        size_t size = test_under_wrapper() || test_under_asan() ? 12u << 20 : 16u << 20;
        size_t budget = (size_t) APIARY_RESULT_SIZE_MAX + 4096, fit = budget / (size + 16);
        g_autofree char *at_max = g_strdup_printf("big %u", APIARY_RESULT_SIZE_MAX);
        g_autofree char *above = g_strdup_printf("big %u", APIARY_RESULT_SIZE_MAX + 1);
        g_autofree char *expected = g_strdup_printf("result too large: %u bytes (at most %u)",
                                                    APIARY_RESULT_SIZE_MAX + 1, APIARY_RESULT_SIZE_MAX);
        g_autofree char *each = g_strdup_printf("big %zu", size);
        unsigned n_ok = 0, n_failed = 0;
        DBusConnection *c;
        DBusMessage *reply;
        DBusMessageIter iter, array, item;

        test_daemon_start(d, &f->bus,
                          "[Apiary]\nPluginDirectory=@PLUGINS@\n"
                          "[Pool big]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=2\n", true);
        c = test_libdbus_connect(f->bus.address);
        /* Under ASan, 32 MiB through the bus and back takes most of a minute: the same code as
         * the RunBatch below, which stays. */
        if (!test_under_asan()) {
                sd_bus_error error = SD_BUS_ERROR_NULL;
                g_autofree void *result = NULL;
                size_t n = 0;

                if (test_run(d, "big", at_max, strlen(at_max), 0, &result, &n, &error) < 0)
                        fail_msg("Run of a result of %u bytes: %s: %s", APIARY_RESULT_SIZE_MAX, error.name,
                                 error.message);
                assert_int_equal(n, APIARY_RESULT_SIZE_MAX);
        }
        {
                DBusMessage *m = new_call(MANAGER_PATH, MANAGER_IFACE, "Run");
                const char *pool = "big", *text = above;
                DBusMessageIter it, payload, dict;
                g_autofree char *msg = NULL;

                dbus_message_iter_init_append(m, &it);
                assert_true(dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &pool));
                assert_true(dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "y", &payload));
                assert_true(dbus_message_iter_append_fixed_array(&payload, DBUS_TYPE_BYTE, &text, (int) strlen(text)));
                assert_true(dbus_message_iter_close_container(&it, &payload));
                assert_true(dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &dict));
                assert_true(dbus_message_iter_close_container(&it, &dict));
                msg = call_expect_error(c, m, "org.apiary.Apiary1.Error.TaskFailed");
                assert_string_equal(msg, expected);
        }

        reply = run_batch_texts(c, "big", each, 3);
        assert_true(dbus_message_iter_init(reply, &iter));
        dbus_message_iter_recurse(&iter, &array);
        while (dbus_message_iter_get_arg_type(&array) == DBUS_TYPE_STRUCT) {
                dbus_bool_t ok;
                DBusMessageIter bytes;
                const char *data;
                int len;

                dbus_message_iter_recurse(&array, &item);
                dbus_message_iter_get_basic(&item, &ok);
                dbus_message_iter_next(&item);
                dbus_message_iter_recurse(&item, &bytes);
                dbus_message_iter_get_fixed_array(&bytes, &data, &len);
                if (ok) {
                        assert_int_equal(len, size);
                        n_ok++;
                } else {
                        g_autofree char *text = g_strndup(data, (gsize) len);

                        if (!streq(text, "result not sent: the RunBatch reply is full"))
                                fail_msg("unexpected failure: %s", text);
                        n_failed++;
                }
                dbus_message_iter_next(&array);
        }
        dbus_message_unref(reply);
        assert_int_equal(n_ok, fit);
        assert_int_equal(n_failed, 3 - fit);

        /* Still there, and counting what its callers saw. */
        assert_int_equal(test_get_manager_u64(d, "TasksDone"), (test_under_asan() ? 0 : 1) + fit);
        assert_int_equal(test_get_manager_u64(d, "TasksFailed"), 1 + 3 - fit);
        test_libdbus_disconnect(c);
}

/* ---- configurations ---- */

typedef struct {
        int status;
        char *err;
} Outcome;

/* Runs apiaryd ARGS... (as UID if not 0); returns its exit status and stderr. */
static Outcome run_apiaryd(unsigned uid, const char *const *args) {
        GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *out = NULL;
        Outcome o = {};
        int status;

        if (uid != 0) {
                g_ptr_array_add(argv, g_strdup("setpriv"));
                g_ptr_array_add(argv, g_strdup_printf("--reuid=%u", uid));
                g_ptr_array_add(argv, g_strdup_printf("--regid=%u", uid));
                g_ptr_array_add(argv, g_strdup("--clear-groups"));
        }
        g_ptr_array_add(argv, g_strdup(getenv("APIARYD")));
        for (size_t i = 0; args[i]; i++)
                g_ptr_array_add(argv, g_strdup(args[i]));
        g_ptr_array_add(argv, NULL);
        assert_true(g_spawn_sync(NULL, (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &o.err,
                                 &status, NULL));
        g_ptr_array_free(argv, true);
        o.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        return o;
}

/* apiaryd --check-config and a real start on CONF must both fail, with a line holding EXPECT. */
static void assert_config_refused(const TestBus *b, unsigned uid, const char *conf, const char *expect) {
        g_autofree char *arg_config = g_strdup_printf("--config=%s", conf);
        g_autofree char *arg_bus = g_strdup_printf("--bus=%s", b->address);
        Outcome o;

        o = run_apiaryd(uid, (const char *[]) { "--check-config", arg_config, NULL });
        if (o.status != 1 || !strstr(o.err, expect))
                fail_msg("apiaryd --check-config %s: exit %i, stderr \"%s\"; expected 1 and \"%s\"", conf, o.status,
                         o.err, expect);
        print_message("--check-config: %s", o.err);
        g_free(o.err);

        o = run_apiaryd(uid, (const char *[]) { arg_config, arg_bus, NULL });
        if (o.status != 1 || !strstr(o.err, "Invalid configuration: ") || !strstr(o.err, expect))
                fail_msg("apiaryd %s: exit %i, stderr \"%s\"; expected 1 and \"Invalid configuration: …%s\"", conf,
                         o.status, o.err, expect);
        g_free(o.err);
}

static void test_bad_configurations(void **state) {
        Fixture *f = *state;
        g_autofree char *dir = g_strdup("/tmp/apiary-test-badconf-XXXXXX"), *conf = NULL, *dropins = NULL,
                        *loop = NULL, *expect = NULL, *cmd = NULL;

        assert_non_null(g_mkdtemp(dir));
        assert_int_equal(chmod(dir, 0755), 0);
        conf = g_strdup_printf("%s/apiary.conf", dir);
        dropins = g_strdup_printf("%s/apiary.conf.d", dir);
        assert_true(g_file_set_contents(conf, "[Pool echo]\nPlugin=/bin/true\n", -1, NULL));

        /* A drop-in directory with a symlink loop: the error names the file in the loop. */
        assert_int_equal(mkdir(dropins, 0755), 0);
        loop = g_strdup_printf("%s/50-loop.conf", dropins);
        assert_int_equal(symlink("50-loop.conf", loop), 0);
        expect = g_strdup_printf("%s: cannot read: Too many levels of symbolic links", loop);
        assert_config_refused(&f->bus, 0, conf, expect);
        assert_int_equal(unlink(loop), 0);
        g_clear_pointer(&expect, g_free);

        /* The drop-in directory itself a symlink loop. */
        assert_int_equal(rmdir(dropins), 0);
        assert_int_equal(symlink("apiary.conf.d", dropins), 0);
        expect = g_strdup_printf("%s: cannot open drop-in directory: Too many levels of symbolic links", dropins);
        assert_config_refused(&f->bus, 0, conf, expect);
        assert_int_equal(unlink(dropins), 0);
        g_clear_pointer(&expect, g_free);

        /* A file that apiaryd's user cannot read. */
        assert_int_equal(chmod(conf, 0600), 0);
        expect = g_strdup_printf("%s: cannot read: Permission denied", conf);
        assert_config_refused(&f->bus, 65534, conf, expect);
        assert_int_equal(chmod(conf, 0644), 0);
        g_clear_pointer(&expect, g_free);

        /* A group twice in one file; a key of the wrong type; a value out of range. */
        assert_true(g_file_set_contents(conf, "[Pool echo]\nPlugin=/bin/true\n[Pool echo]\nWorkers=2\n", -1, NULL));
        expect = g_strdup_printf("%s:3: [Pool echo]: group appears more than once in this file (first on line 1)", conf);
        assert_config_refused(&f->bus, 0, conf, expect);
        g_clear_pointer(&expect, g_free);
        assert_true(g_file_set_contents(conf, "[Pool echo]\nPlugin=/bin/true\nLimitDATA=lots\n", -1, NULL));
        expect = g_strdup_printf("%s:3: [Pool echo] LimitDATA=lots: expected a positive size", conf);
        assert_config_refused(&f->bus, 0, conf, expect);
        g_clear_pointer(&expect, g_free);
        assert_true(g_file_set_contents(conf, "[Pool echo]\nPlugin=/bin/true\nWorkers=4097\n", -1, NULL));
        expect = g_strdup_printf("%s:3: [Pool echo] Workers=4097: expected a number from 1 to 4096", conf);
        assert_config_refused(&f->bus, 0, conf, expect);

        cmd = g_strdup_printf("rm -rf '%s'", dir);
        (void) system(cmd);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_wrong_signatures, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_huge_arrays_and_payloads, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_results_at_the_bus_limit, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_unknown_objects, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_client_hangs_up_with_calls_pending, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_bad_configurations, test_fixture_setup, test_fixture_teardown),
        };

        if (getenv("TEST_FILTER"))
                cmocka_set_test_filter(getenv("TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
