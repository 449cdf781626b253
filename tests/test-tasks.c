/* SPDX-License-Identifier: MIT */
/*
 * Tasks end to end: a private dbus-daemon, the real apiaryd and real plugins; clients on sd-bus
 * and on libdbus (the reference implementation, for error names and a second opinion).
 */
#include <dbus/dbus.h>
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
#include <unistd.h>
#include <cmocka.h>

#include "tests/harness.h"

#define POOL_IFACE "org.apiary.Apiary1.Pool"
#define WORKER_IFACE "org.apiary.Apiary1.Worker"

typedef TestFixture Fixture;

static const char *const pools =
        "[Apiary]\n"
        "PluginDirectory=@PLUGINS@\n"
        "[Pool echo]\n"
        "Plugin=echo.so\n"
        "Workers=2\n"
        "SubmitFrom=control\n"
        "[Pool control]\n"
        "Plugin=@TEST_PLUGINS@/control.so\n"
        "Workers=1\n"
        "RestartSec=1ms\n"
        "StartLimitBurst=0\n"
        "QueueLimit=5\n"
        "[Pool sleep]\n"
        "Plugin=sleep.so\n"
        "Kind=io\n"
        "Workers=1\n"
        "Concurrency=1000\n"
        "[Pool primes]\n"
        "Plugin=primes.so\n"
        "Workers=2\n"
        "SubmitFrom=*\n";

/* Checks that the counters add up: submitted = queued + running + done + failed. */
static void assert_counters_add_up(TestDaemon *d, uint64_t done, uint64_t failed) {
        uint64_t submitted = test_get_manager_u64(d, "TasksSubmitted");
        uint64_t queued = test_get_manager_u64(d, "TasksQueued");
        uint64_t running = test_get_manager_u64(d, "TasksRunning");

        assert_int_equal(submitted, queued + running + test_get_manager_u64(d, "TasksDone") +
                                            test_get_manager_u64(d, "TasksFailed"));
        assert_int_equal(test_get_manager_u64(d, "TasksDone"), done);
        assert_int_equal(test_get_manager_u64(d, "TasksFailed"), failed);
}

static void test_run_echo_and_primes(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *result = NULL, *big = NULL, *back = NULL;
        size_t size = 0;

        test_daemon_start(d, &f->bus, pools, true);

        assert_int_equal(test_run(d, "echo", "hello", 5, 0, (void **) &result, &size, &error), 0);
        assert_int_equal(size, 5);
        assert_memory_equal(result, "hello", 5);
        g_clear_pointer(&result, g_free);

        /* Empty and large (4 MiB) payloads come back byte for byte. */
        assert_int_equal(test_run(d, "echo", "", 0, 0, (void **) &result, &size, &error), 0);
        assert_int_equal(size, 0);
        g_clear_pointer(&result, g_free);

        big = g_malloc(4 << 20);
        for (size_t i = 0; i < (4u << 20); i++)
                big[i] = (char) (i * 7 + (i >> 13));
        assert_int_equal(test_run(d, "echo", big, 4 << 20, 0, (void **) &back, &size, &error), 0);
        assert_int_equal(size, 4 << 20);
        assert_memory_equal(back, big, 4 << 20);

        /* The CPU-bound plugin really computes: 25 primes below 100, 1229 below 10000. */
        assert_int_equal(test_run(d, "primes", "100", 3, 0, (void **) &result, &size, &error), 0);
        assert_string_equal(result, "25");
        g_clear_pointer(&result, g_free);
        assert_int_equal(test_run(d, "primes", "10000", 5, 0, (void **) &result, &size, &error), 0);
        assert_string_equal(result, "1229");
        g_clear_pointer(&result, g_free);

        assert_counters_add_up(d, 5, 0);
}

static void test_10000_echo_tasks_in_batches(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { BATCHES = 100, PER_BATCH = 100, N = BATCHES * PER_BATCH };
        uint64_t *ids = g_new(uint64_t, N);
        char **payloads = g_new0(char *, N);
        g_autofree char *echo = test_pool_path("echo");

        test_daemon_start(d, &f->bus, pools, true);
        test_collect_results(d);

        for (size_t i = 0; i < N; i++)
                payloads[i] = g_strdup_printf("task %zu of %d", i, N);
        for (size_t b = 0; b < BATCHES; b++)
                test_submit_batch(d, "echo", payloads + b * PER_BATCH, PER_BATCH, ids + b * PER_BATCH);
        test_wait_results(d, N);

        for (size_t i = 0; i < N; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_non_null(r);
                assert_true(r->ok);
                assert_int_equal(r->count, 1);
                assert_string_equal(r->data, payloads[i]);
        }
        assert_int_equal(d->n_finished, N);
        assert_counters_add_up(d, N, 0);
        assert_int_equal(test_get_u64(d, echo, POOL_IFACE, "TasksDone"), N);

        for (size_t i = 0; i < N; i++)
                g_free(payloads[i]);
        g_free(payloads);
        g_free(ids);
}

static void test_10000_echo_tasks_one_at_a_time(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 10000 };
        uint64_t *ids = g_new(uint64_t, N);

        test_daemon_start(d, &f->bus, pools, true);
        test_collect_results(d);

        for (size_t i = 0; i < N; i++) {
                char buf[32];
                int k = snprintf(buf, sizeof(buf), "single %zu", i);

                ids[i] = test_submit(d, "echo", buf, (size_t) k);
        }
        test_wait_results(d, N);
        for (size_t i = 0; i < N; i++) {
                const TestResult *r = test_result(d, ids[i]);
                char buf[32];

                snprintf(buf, sizeof(buf), "single %zu", i);
                assert_non_null(r);
                assert_true(r->ok);
                assert_int_equal(r->count, 1);
                assert_string_equal(r->data, buf);
        }
        assert_counters_add_up(d, N, 0);
        g_free(ids);
}

/* ---- libdbus: Run one at a time, and the error names clients match on ---- */

/* Calls Run (or Submit) with libdbus; returns the reply, or NULL with *error set. */
static DBusMessage *libdbus_call(DBusConnection *c, const char *member, const char *pool, const void *data, int size,
                                 const char *option, DBusError *error) {
        DBusMessage *call, *reply;
        DBusMessageIter iter, array, dict, entry, variant;

        call = dbus_message_new_method_call("org.apiary.Apiary1", "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager",
                                            member);
        assert_non_null(call);
        dbus_message_iter_init_append(call, &iter);
        assert_true(dbus_message_iter_append_basic(&iter, DBUS_TYPE_STRING, &pool));
        assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "y", &array));
        assert_true(dbus_message_iter_append_fixed_array(&array, DBUS_TYPE_BYTE, &data, size));
        assert_true(dbus_message_iter_close_container(&iter, &array));
        assert_true(dbus_message_iter_open_container(&iter, DBUS_TYPE_ARRAY, "{sv}", &dict));
        if (option) {
                dbus_uint32_t v = 1;

                /* An option with a value of the wrong type for any known option. */
                assert_true(dbus_message_iter_open_container(&dict, DBUS_TYPE_DICT_ENTRY, NULL, &entry));
                assert_true(dbus_message_iter_append_basic(&entry, DBUS_TYPE_STRING, &option));
                assert_true(dbus_message_iter_open_container(&entry, DBUS_TYPE_VARIANT, "u", &variant));
                assert_true(dbus_message_iter_append_basic(&variant, DBUS_TYPE_UINT32, &v));
                assert_true(dbus_message_iter_close_container(&entry, &variant));
                assert_true(dbus_message_iter_close_container(&dict, &entry));
        }
        assert_true(dbus_message_iter_close_container(&iter, &dict));

        reply = dbus_connection_send_with_reply_and_block(c, call, 30000, error);
        dbus_message_unref(call);
        return reply;
}

static void assert_libdbus_error(DBusConnection *c, const char *member, const char *pool, const char *payload,
                                 const char *option, const char *error_name) {
        DBusError error;
        DBusMessage *reply;

        dbus_error_init(&error);
        reply = libdbus_call(c, member, pool, payload, (int) strlen(payload), option, &error);
        if (reply)
                fail_msg("%s(%s, \"%s\") succeeded, expected %s", member, pool, payload, error_name);
        if (strcmp(error.name, error_name) != 0)
                fail_msg("%s(%s, \"%s\"): got %s (%s), expected %s", member, pool, payload, error.name,
                         error.message, error_name);
        print_message("%s(%s, \"%s\") → %s: %s\n", member, pool, payload, error.name, error.message);
        dbus_error_free(&error);
}

static void test_libdbus_runs_and_error_names(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        DBusConnection *c;
        DBusMessage *call, *reply;
        DBusError error;

        test_daemon_start(d, &f->bus,
                          "[Apiary]\nPluginDirectory=@PLUGINS@\n"
                          "[Pool echo]\nPlugin=echo.so\nWorkers=2\n"
                          "[Pool control]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\n"
                          "[Pool broken]\nPlugin=@TEST_PLUGINS@/bad-abi.so\nWorkers=1\nFailedRetrySec=infinity\n",
                          true);
        test_wait_pool_state(d, "broken", "failed");
        c = test_libdbus_connect(f->bus.address);

        /* 2000 Run round trips, one at a time, each checked. */
        for (unsigned i = 0; i < 2000; i++) {
                char buf[32];
                const unsigned char *bytes;
                int k = snprintf(buf, sizeof(buf), "run %u", i), n;
                DBusMessageIter iter, array;

                dbus_error_init(&error);
                reply = libdbus_call(c, "Run", "echo", buf, k, NULL, &error);
                if (!reply)
                        fail_msg("Run %u: %s: %s", i, error.name, error.message);
                assert_true(dbus_message_iter_init(reply, &iter));
                assert_int_equal(dbus_message_iter_get_arg_type(&iter), DBUS_TYPE_ARRAY);
                dbus_message_iter_recurse(&iter, &array);
                dbus_message_iter_get_fixed_array(&array, &bytes, &n);
                assert_int_equal(n, k);
                assert_memory_equal(bytes, buf, (size_t) k);
                dbus_message_unref(reply);
        }

        assert_libdbus_error(c, "Run", "nope", "x", NULL, "org.apiary.Apiary1.Error.NoSuchPool");
        assert_libdbus_error(c, "Submit", "nope", "x", NULL, "org.apiary.Apiary1.Error.NoSuchPool");
        assert_libdbus_error(c, "Run", "broken", "x", NULL, "org.apiary.Apiary1.Error.PoolFailed");
        assert_libdbus_error(c, "Run", "echo", "x", "bogus", "org.apiary.Apiary1.Error.InvalidOption");
        assert_libdbus_error(c, "Run", "echo", "x", "timeout", "org.apiary.Apiary1.Error.InvalidOption");
        assert_libdbus_error(c, "Run", "echo", "x", "batch-results", "org.apiary.Apiary1.Error.InvalidOption");
        assert_libdbus_error(c, "Submit", "echo", "x", "batch-results", "org.apiary.Apiary1.Error.InvalidOption");
        assert_libdbus_error(c, "Run", "control", "fail it broke", NULL, "org.apiary.Apiary1.Error.TaskFailed");
        assert_libdbus_error(c, "Run", "control", "return-nothing", NULL, "org.apiary.Apiary1.Error.TaskFailed");

        /* A wrong signature is the standard InvalidArgs. */
        call = dbus_message_new_method_call("org.apiary.Apiary1", "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager",
                                            "Submit");
        {
                const char *pool = "echo";
                assert_true(dbus_message_append_args(call, DBUS_TYPE_STRING, &pool, DBUS_TYPE_STRING, &pool,
                                                     DBUS_TYPE_INVALID));
        }
        dbus_error_init(&error);
        reply = dbus_connection_send_with_reply_and_block(c, call, 10000, &error);
        assert_null(reply);
        assert_string_equal(error.name, "org.freedesktop.DBus.Error.InvalidArgs");
        dbus_error_free(&error);
        dbus_message_unref(call);

        /* Cancel of a task that does not exist. */
        call = dbus_message_new_method_call("org.apiary.Apiary1", "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager",
                                            "Cancel");
        {
                dbus_uint64_t id = 987654321;
                assert_true(dbus_message_append_args(call, DBUS_TYPE_UINT64, &id, DBUS_TYPE_INVALID));
        }
        dbus_error_init(&error);
        reply = dbus_connection_send_with_reply_and_block(c, call, 10000, &error);
        assert_null(reply);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.NoSuchTask");
        dbus_error_free(&error);
        dbus_message_unref(call);

        test_libdbus_disconnect(c);
}

/* ---- failures, timeouts, limits ---- */

static void test_task_failure_reaches_signal_and_run(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        const TestResult *r;
        uint64_t id;

        test_daemon_start(d, &f->bus, pools, true);
        test_collect_results(d);

        id = test_submit(d, "control", "fail disk on fire", 17);
        test_wait_results(d, 1);
        r = test_result(d, id);
        assert_false(r->ok);
        assert_string_equal(r->data, "disk on fire");

        assert_int_equal(test_run(d, "control", "fail no luck", 12, 0, NULL, NULL, &error), -EIO);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.TaskFailed");
        assert_string_equal(error.message, "no luck");
        sd_bus_error_free(&error);

        assert_counters_add_up(d, 0, 2);
}

static void test_timeout_kills_worker(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *pid_before = NULL, *pid_after = NULL;
        int r;

        test_daemon_start(d, &f->bus, pools, true);
        assert_int_equal(test_run(d, "control", "pid", 3, 0, (void **) &pid_before, NULL, &error), 0);

        r = test_run(d, "control", "hang", 4, 200 * USEC_PER_MSEC, NULL, NULL, &error);
        assert_true(r < 0);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.TaskFailed");
        assert_non_null(strstr(error.message, "timeout"));
        sd_bus_error_free(&error);

        /* The hung worker was killed and replaced; the pool serves again. */
        assert_int_equal(test_run(d, "control", "pid", 3, 0, (void **) &pid_after, NULL, &error), 0);
        assert_string_not_equal(pid_before, pid_after);
        assert_false(test_pid_alive(atoi(pid_before)));
        assert_counters_add_up(d, 2, 1);
}

static void test_pool_task_timeout(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus_error error = SD_BUS_ERROR_NULL;

        test_daemon_start(d, &f->bus,
                          "[Pool slow]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nTaskTimeoutSec=150ms\n", true);
        assert_true(test_run(d, "slow", "hang", 4, 0, NULL, NULL, &error) < 0);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.TaskFailed");
        assert_non_null(strstr(error.message, "timeout: no result within 150ms"));
        sd_bus_error_free(&error);
}

static bool control_busy_again(TestDaemon *d, const void *userdata) {
        const pid_t *old = userdata;
        pid_t pid = test_worker_pid(d, "control", 0);
        g_autofree char *state = test_worker_state(d, "control", 0);

        /* PID read before and after State, so that both describe the same process. */
        return pid > 0 && pid != *old && strcmp(state, "busy") == 0 && test_worker_pid(d, "control", 0) == pid;
}

static void test_queue_full_and_cancel(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        char *batch[2] = { (char *) "a", (char *) "b" };
        uint64_t hang, ids[5];
        const TestResult *r;
        int cancelled = -1;

        test_daemon_start(d, &f->bus, pools, true);
        test_collect_results(d);

        /* The one worker hangs on the first task; QueueLimit=5 more wait behind it. */
        hang = test_submit(d, "control", "hang", 4);
        for (unsigned i = 0; i < 5; i++)
                ids[i] = test_submit(d, "control", "queued", 6);

        assert_true(sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                       "org.apiary.Apiary1.Manager", "Submit", &error, NULL, "saya{sv}", "control", 1,
                                       'x', 0) < 0);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.QueueFull");
        sd_bus_error_free(&error);
        assert_int_equal(test_get_u64(d, "/org/apiary/Apiary1/pool/control", POOL_IFACE, "TasksQueued"), 5);

        /* Cancel a queued task: it ends as "cancelled", and makes room. */
        assert_true(sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                       "org.apiary.Apiary1.Manager", "Cancel", &error, &reply, "t", ids[2]) >= 0);
        assert_true(sd_bus_message_read(reply, "b", &cancelled) > 0);
        assert_true(cancelled);
        reply = sd_bus_message_unref(reply);
        test_wait_results(d, 1);
        r = test_result(d, ids[2]);
        assert_non_null(r);
        assert_false(r->ok);
        assert_string_equal(r->data, "cancelled");

        /* A running task is not cancelled (like concurrent.futures). */
        assert_true(sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                       "org.apiary.Apiary1.Manager", "Cancel", &error, &reply, "t", hang) >= 0);
        assert_true(sd_bus_message_read(reply, "b", &cancelled) > 0);
        assert_false(cancelled);
        reply = sd_bus_message_unref(reply);

        /* A batch of 2 does not fit in the 1 free place: refused whole. */
        assert_true(sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                       "org.apiary.Apiary1.Manager", "SubmitBatch", &error, NULL, "saaya{sv}",
                                       "control", 2, 1, batch[0][0], 1, batch[1][0], 0) < 0);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.QueueFull");
        sd_bus_error_free(&error);
        assert_int_equal(test_get_u64(d, "/org/apiary/Apiary1/pool/control", POOL_IFACE, "TasksQueued"), 4);

        /* Free the worker: kill it; the hung task is retried and hangs again, so time it out via
         * its retries: TaskRetries=2 means the third death fails it. */
        for (unsigned i = 0; i < 3; i++) {
                pid_t pid = test_worker_pid(d, "control", 0);

                assert_true(pid > 0);
                kill(pid, SIGKILL);
                test_wait_pid_gone(pid, TEST_TIMEOUT_USEC);
                if (i < 2)
                        /* Wait for the retry to be running on the replacement. */
                        test_wait_until(d, control_busy_again, &pid, TEST_TIMEOUT_USEC, "the hung task's retry");
        }
        test_wait_results(d, 6);
        r = test_result(d, hang);
        assert_false(r->ok);
        assert_non_null(strstr(r->data, "worker crashed 3 times running this task; last: killed by SIGKILL"));
        for (unsigned i = 0; i < 5; i++)
                if (i != 2) {
                        r = test_result(d, ids[i]);
                        assert_true(r->ok);
                        assert_string_equal(r->data, "queued");
                }
        assert_counters_add_up(d, 4, 2);
}

static void test_kills_during_load_lose_nothing(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 3000, BATCH = 100 };
        uint64_t *ids = g_new(uint64_t, N);
        char **payloads = g_new0(char *, N);
        unsigned kills = 0;

        test_daemon_start(d, &f->bus,
                          "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=3\nTaskRetries=100\n"
                          "RestartSec=1ms\nRestartMaxSec=5ms\nStartLimitBurst=0\n",
                          true);
        test_collect_results(d);
        for (size_t i = 0; i < N; i++)
                payloads[i] = g_strdup_printf("load %zu", i);

        for (size_t b = 0; b < N / BATCH; b++) {
                test_submit_batch(d, "echo", payloads + b * BATCH, BATCH, ids + b * BATCH);
                if (b % 3 == 0) {
                        pid_t pid = test_worker_pid(d, "echo", b % 3);

                        if (pid > 0 && kill(pid, SIGKILL) == 0)
                                kills++;
                }
        }
        test_wait_results(d, N);
        print_message("%u workers killed while %d tasks ran\n", kills, N);
        assert_true(kills > 0);

        for (size_t i = 0; i < N; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_non_null(r);
                if (!r->ok)
                        fail_msg("task %zu failed: %s", i, (char *) r->data);
                assert_int_equal(r->count, 1);
                assert_string_equal(r->data, payloads[i]);
        }
        assert_counters_add_up(d, N, 0);

        for (size_t i = 0; i < N; i++)
                g_free(payloads[i]);
        g_free(payloads);
        g_free(ids);
}

static void test_no_retries_fails_in_flight_task(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus_error error = SD_BUS_ERROR_NULL;

        test_daemon_start(d, &f->bus,
                          "[Pool fragile]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nTaskRetries=0\n", true);
        assert_true(test_run(d, "fragile", "crash", 5, 0, NULL, NULL, &error) < 0);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.TaskFailed");
        /* "(core dumped)" may follow, as the machine's core_pattern has it. */
        assert_non_null(strstr(error.message, "worker crashed 1 time running this task; last: killed by SIGABRT"));
        sd_bus_error_free(&error);
}

static void test_async_sleep_tasks_overlap(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 1000 };
        char **payloads = g_new0(char *, N);
        uint64_t *ids = g_new(uint64_t, N);
        usec_t t0, t1;

        test_daemon_start(d, &f->bus, pools, true);
        test_collect_results(d);
        for (size_t i = 0; i < N; i++)
                payloads[i] = g_strdup("100");

        t0 = now_usec(CLOCK_MONOTONIC);
        test_submit_batch(d, "sleep", payloads, N, ids);
        test_wait_results(d, N);
        t1 = now_usec(CLOCK_MONOTONIC);
        print_message("%d sleep(100ms) tasks on one worker with Concurrency=1000: %.1f ms (serial: %d ms)\n", N,
                      (double) (t1 - t0) / USEC_PER_MSEC, N * 100);

        for (size_t i = 0; i < N; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_true(r->ok);
                assert_string_equal(r->data, "100");
                g_free(payloads[i]);
        }
        assert_counters_add_up(d, N, 0);
        g_free(payloads);
        g_free(ids);
}

static void test_plugin_submits_to_another_pool(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *result = NULL;

        test_daemon_start(d, &f->bus, pools, true);
        assert_int_equal(test_run(d, "control", "relay echo round trip", 21, 0, (void **) &result, NULL, &error), 0);
        assert_string_equal(result, "relayed:round trip");
        g_clear_pointer(&result, g_free);

        /* Through two pools of different kinds, and errors come back as such. */
        assert_int_equal(test_run(d, "control", "relay primes 1000", 17, 0, (void **) &result, NULL, &error), 0);
        assert_string_equal(result, "relayed:168");
        assert_true(test_run(d, "control", "relay nope x", 12, 0, NULL, NULL, &error) < 0);
        assert_non_null(strstr(error.message, "relay failed: No pool named \"nope\""));
        sd_bus_error_free(&error);
}

static void test_max_tasks_per_worker_recycles(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 50 };
        char **payloads = g_new0(char *, N);
        uint64_t *ids = g_new(uint64_t, N);
        g_autofree char *w0 = test_worker_path("recycled", 0);
        GHashTable *pids = g_hash_table_new(g_direct_hash, g_direct_equal);

        test_daemon_start(d, &f->bus,
                          "[Pool recycled]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nMaxTasksPerWorker=10\n", true);
        test_collect_results(d);
        for (size_t i = 0; i < N; i++)
                payloads[i] = g_strdup("pid");
        test_submit_batch(d, "recycled", payloads, N, ids);
        test_wait_results(d, N);

        for (size_t i = 0; i < N; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_true(r->ok);
                g_hash_table_add(pids, GINT_TO_POINTER(atoi(r->data)));
                g_free(payloads[i]);
        }
        /* Ten tasks per process: five processes, none of their tasks failed. */
        assert_int_equal(g_hash_table_size(pids), 5);
        /* Recycled as planned: counted apart from the restarts nobody asked for. */
        assert_true(test_get_u32(d, w0, WORKER_IFACE, "PlannedRestarts") >= 4);
        assert_int_equal(test_get_u32(d, w0, WORKER_IFACE, "Restarts"), 0);
        assert_counters_add_up(d, N, 0);
        g_hash_table_destroy(pids);
        g_free(payloads);
        g_free(ids);
}

static void test_shutdown_fails_queued_tasks(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        uint64_t hang, queued;
        const TestResult *r;

        test_daemon_start(d, &f->bus,
                          "[Pool control]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nStopTimeoutSec=100ms\n", true);
        test_collect_results(d);
        hang = test_submit(d, "control", "hang", 4);
        queued = test_submit(d, "control", "later", 5);

        /* Everything accepted is reported on the way down: no task is lost silently. */
        assert_int_equal(kill(d->pid, SIGTERM), 0);
        test_wait_results(d, 2);
        r = test_result(d, queued);
        assert_false(r->ok);
        assert_string_equal(r->data, "apiaryd is stopping");
        r = test_result(d, hang);
        assert_false(r->ok);
        assert_string_equal(r->data, "apiaryd is stopping");
        assert_int_equal(test_daemon_kill_and_wait(d, 0), 0);
}

/* RunBatch(POOL, PAYLOADS) → a(bay): checks each result against EXPECT_OK/EXPECT. */
static void run_batch(TestDaemon *d, const char *pool, char **payloads, size_t n, const bool *expect_ok,
                      char **expect) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL, *reply = NULL;
        size_t k = 0;
        int r, ok;

        assert_true(sd_bus_message_new_method_call(d->bus, &m, "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                                   "org.apiary.Apiary1.Manager", "RunBatch") >= 0);
        assert_true(sd_bus_message_append(m, "s", pool) >= 0);
        assert_true(sd_bus_message_open_container(m, 'a', "ay") >= 0);
        for (size_t i = 0; i < n; i++)
                assert_true(sd_bus_message_append_array(m, 'y', payloads[i], strlen(payloads[i])) >= 0);
        assert_true(sd_bus_message_close_container(m) >= 0);
        assert_true(sd_bus_message_append(m, "a{sv}", 0) >= 0);
        r = sd_bus_call(d->bus, m, 60 * USEC_PER_SEC, &error, &reply);
        if (r < 0)
                fail_msg("RunBatch: %s: %s", error.name, error.message);
        assert_true(sd_bus_message_enter_container(reply, 'a', "(bay)") > 0);
        while ((r = sd_bus_message_enter_container(reply, 'r', "bay")) > 0) {
                const void *p;
                size_t size;

                assert_true(k < n);
                assert_true(sd_bus_message_read(reply, "b", &ok) > 0);
                assert_true(sd_bus_message_read_array(reply, 'y', &p, &size) >= 0);
                assert_int_equal(!!ok, expect_ok[k]);
                assert_int_equal(size, strlen(expect[k]));
                assert_memory_equal(p, expect[k], size);
                assert_true(sd_bus_message_exit_container(reply) >= 0);
                k++;
        }
        assert_true(r >= 0);
        assert_int_equal(k, n);
        sd_bus_message_unref(m);
        sd_bus_message_unref(reply);
}

static void test_run_batch(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 5000 };
        char **payloads = g_new0(char *, N);
        bool *oks = g_new(bool, N);
        char *mixed[] = { (char *) "first", (char *) "fail second broke", (char *) "third" };
        char *mixed_expect[] = { (char *) "first", (char *) "second broke", (char *) "third" };
        const bool mixed_ok[] = { true, false, true };

        test_daemon_start(d, &f->bus, pools, true);
        test_collect_results(d);

        for (size_t i = 0; i < N; i++) {
                payloads[i] = g_strdup_printf("batched %zu", i);
                oks[i] = true;
        }
        run_batch(d, "echo", payloads, N, oks, payloads);
        run_batch(d, "control", mixed, 3, mixed_ok, mixed_expect);
        run_batch(d, "echo", NULL, 0, NULL, NULL);

        /* One reply carried them all: no TaskFinished went out. */
        assert_int_equal(d->n_finished, 0);
        assert_counters_add_up(d, N + 2, 1);
        for (size_t i = 0; i < N; i++)
                g_free(payloads[i]);
        g_free(payloads);
        g_free(oks);
}

static int count_signal(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        (*(unsigned *) userdata)++;
        return 0;
}

static void test_task_finished_goes_to_submitter_only(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        sd_bus *other = NULL;
        unsigned seen = 0;
        uint64_t id;

        test_daemon_start(d, &f->bus, pools, true);
        test_collect_results(d);

        assert_true(sd_bus_new(&other) >= 0);
        assert_true(sd_bus_set_address(other, f->bus.address) >= 0);
        assert_true(sd_bus_set_bus_client(other, true) >= 0);
        assert_true(sd_bus_start(other) >= 0);
        assert_true(sd_bus_match_signal(other, NULL, NULL, "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager",
                                        "TaskFinished", count_signal, &seen) >= 0);

        id = test_submit(d, "echo", "private", 7);
        test_wait_results(d, 1);
        assert_true(test_result(d, id)->ok);

        /* apiaryd emitted the signal before it answers this Ping, and the bus keeps its order:
         * had the signal been for everyone, OTHER would have it queued by now. */
        assert_true(sd_bus_call_method(other, "org.apiary.Apiary1", "/org/apiary/Apiary1", "org.freedesktop.DBus.Peer",
                                       "Ping", NULL, NULL, NULL) >= 0);
        while (sd_bus_process(other, NULL) > 0)
                ;
        assert_int_equal(seen, 0);
        sd_bus_flush_close_unref(other);
}

/* With "batch-results", ends come many to a TasksFinished signal, each exactly once, a failure
 * with its reason; tasks without the option keep their own TaskFinished. */
static void test_batch_results(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        enum { N = 2000 };
        char **payloads = g_new0(char *, N + 1);
        char *control[] = { "fail broken", "x", NULL };
        uint64_t *ids = g_new(uint64_t, N), control_ids[2], plain;

        test_daemon_start(d, &f->bus, pools, true);
        test_collect_results(d);
        for (size_t i = 0; i < N; i++)
                payloads[i] = g_strdup_printf("task %zu", i);

        test_submit_batch_results(d, "echo", payloads, N, ids);
        test_submit_batch_results(d, "control", control, 2, control_ids);
        plain = test_submit(d, "echo", "plain", 5);
        test_wait_results(d, N + 3);

        for (size_t i = 0; i < N; i++) {
                const TestResult *r = test_result(d, ids[i]);

                assert_true(r->ok);
                assert_int_equal(r->count, 1);
                assert_string_equal(r->data, payloads[i]);
        }
        assert_false(test_result(d, control_ids[0])->ok);
        assert_string_equal(test_result(d, control_ids[0])->data, "broken");
        assert_true(test_result(d, control_ids[1])->ok);
        assert_true(test_result(d, plain)->ok);

        /* One TaskFinished: the plain Submit's. The others came many to a signal. */
        assert_int_equal(d->n_finished, 1);
        print_message("%d results in %" PRIu64 " TasksFinished signals\n", N + 2, d->n_batches);
        assert_true(d->n_batches < N / 2);
        assert_counters_add_up(d, N + 2, 1);
        g_strfreev(payloads);
        g_free(ids);
}

static void test_authorization(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL;

        test_daemon_start(d, &f->bus,
                          "[Apiary]\nSubmitUsers=daemon\nSubmitGroups=bin\n"
                          "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n"
                          "[Pool stuck]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nStopTimeoutSec=200ms\n", true);

        /* root may; a stranger may not, on a private bus too, and reading stays open to all. */
        assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "run", "echo", "as root", NULL }), 0);
        assert_string_equal(out, "as root");
        g_clear_pointer(&out, g_free);

        assert_int_equal(test_client(&f->bus, 65534, &out, (const char *[]) { "run", "echo", "x", NULL }), 1);
        assert_string_equal(out, "org.freedesktop.DBus.Error.AccessDenied: User 65534 may not call Run(): not root and "
                                 "not in SubmitUsers= or SubmitGroups=.");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 65534, &out, (const char *[]) { "submit", "echo", "x", NULL }), 1);
        assert_non_null(strstr(out, "org.freedesktop.DBus.Error.AccessDenied"));
        g_clear_pointer(&out, g_free);

        /* A user listed in SubmitUsers= may (daemon, UID 1), and so may a member of a group in
         * SubmitGroups= (bin, GID 2; the client runs with --regid=2). */
        assert_int_equal(test_client(&f->bus, 1, &out, (const char *[]) { "run", "echo", "listed", NULL }), 0);
        assert_string_equal(out, "listed");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, 2, &out, (const char *[]) { "run", "echo", "by group", NULL }), 0);
        assert_string_equal(out, "by group");
        g_clear_pointer(&out, g_free);
        assert_counters_add_up(d, 3, 0);

        /* A task is cancelled by its owner or by those with control rights, not by another
         * submitter. */
        {
                uint64_t hang = test_submit(d, "stuck", "hang", 4), queued = test_submit(d, "stuck", "later", 5);
                g_autofree char *id = g_strdup_printf("%" PRIu64, queued);

                (void) hang;
                assert_int_equal(test_client(&f->bus, 2, &out, (const char *[]) { "cancel", id, NULL }), 1);
                assert_string_equal(out, "org.freedesktop.DBus.Error.AccessDenied: User 2 may not cancel a task of "
                                         "user 0: not root and not in ControlUsers= or ControlGroups=.");
                g_clear_pointer(&out, g_free);
                assert_int_equal(test_client(&f->bus, 0, &out, (const char *[]) { "cancel", id, NULL }), 0);
                assert_string_equal(out, "True");
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_run_echo_and_primes, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_10000_echo_tasks_in_batches, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_10000_echo_tasks_one_at_a_time, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_libdbus_runs_and_error_names, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_task_failure_reaches_signal_and_run, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_timeout_kills_worker, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_pool_task_timeout, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_queue_full_and_cancel, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_kills_during_load_lose_nothing, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_no_retries_fails_in_flight_task, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_async_sleep_tasks_overlap, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_plugin_submits_to_another_pool, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_max_tasks_per_worker_recycles, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_shutdown_fails_queued_tasks, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_authorization, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_run_batch, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_batch_results, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_task_finished_goes_to_submitter_only, test_fixture_setup, test_fixture_teardown),
        };

        if (getenv("TEST_FILTER"))
                cmocka_set_test_filter(getenv("TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
