/* SPDX-License-Identifier: MIT */
/*
 * The exec plugin end to end: real commands run by real apiary-worker processes under the real
 * apiaryd, driven through Manager.Run on a private bus. After every task the worker must have no
 * child left, not even a zombie.
 */
#include <dirent.h>
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
#define TASK_FAILED "org.apiary.Apiary1.Error.TaskFailed"
#define RUN_TIMEOUT_USEC (30 * USEC_PER_SEC)

typedef TestFixture Fixture;

/* [Apiary] plus one pool NAME of the exec plugin, with the plugin group PLUGIN_KEYS. */
static char *exec_config(const char *name, const char *pool_keys, const char *plugin_keys) {
        return g_strdup_printf("[Apiary]\n"
                               "PluginDirectory=@PLUGINS@\n"
                               "[Pool %s]\n"
                               "Plugin=@PLUGINS@/exec.so\n"
                               "%s"
                               "[Pool %s Plugin]\n"
                               "%s",
                               name, pool_keys ?: "Workers=1\n", name, plugin_keys);
}

static void start_exec(Fixture *f, const char *plugin_keys) {
        g_autofree char *config = exec_config("x", NULL, plugin_keys);

        test_daemon_start(&f->daemon, &f->bus, config, true);
        test_wait_pool_state(&f->daemon, "x", "running");
}

static sd_bus_message *new_run_call(TestDaemon *d, const char *pool, const void *data, size_t size) {
        sd_bus_message *m = NULL;

        assert_true(sd_bus_message_new_method_call(d->bus, &m, "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                                   "org.apiary.Apiary1.Manager", "Run") >= 0);
        assert_true(sd_bus_message_append(m, "s", pool) >= 0);
        assert_true(sd_bus_message_append_array(m, 'y', data, size) >= 0);
        assert_true(sd_bus_message_append(m, "a{sv}", 0) >= 0);
        return m;
}

typedef struct RunResult {
        bool ok;
        GBytes *result;         /* when ok */
        char *error_name;       /* otherwise */
        char *error_message;
} RunResult;

static void run_result_clear(RunResult *r) {
        g_clear_pointer(&r->result, g_bytes_unref);
        g_clear_pointer(&r->error_name, g_free);
        g_clear_pointer(&r->error_message, g_free);
}

static void run_result_from_reply(RunResult *ret, sd_bus_message *reply, const sd_bus_error *error) {
        const void *data = NULL;
        size_t size = 0;

        *ret = (RunResult) {};
        if (error && sd_bus_error_is_set(error)) {
                ret->error_name = g_strdup(error->name);
                ret->error_message = g_strdup(error->message ?: "");
                return;
        }
        assert_true(sd_bus_message_read_array(reply, 'y', &data, &size) >= 0);
        ret->ok = true;
        ret->result = g_bytes_new(data, size);
}

/* Manager.Run, synchronously. */
static void run_task(TestDaemon *d, const char *pool, const void *data, size_t size, RunResult *ret) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = new_run_call(d, pool, data, size), *reply = NULL;
        int r;

        r = sd_bus_call(d->bus, m, RUN_TIMEOUT_USEC, &error, &reply);
        if (r < 0 && !sd_bus_error_is_set(&error))
                fail_msg("Run on %s: %s", pool, strerror(-r));
        run_result_from_reply(ret, reply, &error);
        sd_bus_message_unref(reply);
        sd_bus_message_unref(m);
        sd_bus_error_free(&error);
}

static void assert_result(const RunResult *r, const void *data, size_t size) {
        if (!r->ok)
                fail_msg("task failed: %s: %s", r->error_name, r->error_message);
        assert_int_equal(g_bytes_get_size(r->result), size);
        assert_memory_equal(g_bytes_get_data(r->result, NULL), data, size);
}

static void assert_task_failed(const RunResult *r, const char *needle) {
        if (r->ok)
                fail_msg("task succeeded with %zu bytes, expected it to fail with \"%s\"",
                         g_bytes_get_size(r->result), needle);
        assert_string_equal(r->error_name, TASK_FAILED);
        if (!strstr(r->error_message, needle))
                fail_msg("task failed with \"%s\", expected \"%s\" in it", r->error_message, needle);
}

/* The PIDs of PID's children, zombies included, from every thread's children list. */
static GArray *children_of(pid_t pid) {
        g_autofree char *dir_path = g_strdup_printf("/proc/%i/task", (int) pid);
        GArray *a = g_array_new(false, false, sizeof(pid_t));
        DIR *dir = opendir(dir_path);
        struct dirent *de;

        if (!dir)
                fail_msg("cannot open %s: %s", dir_path, strerror(errno));
        while ((de = readdir(dir))) {
                g_autofree char *path = NULL, *text = NULL;
                g_auto(GStrv) words = NULL;

                if (de->d_name[0] == '.')
                        continue;
                path = g_strdup_printf("%s/%s/children", dir_path, de->d_name);
                if (!g_file_get_contents(path, &text, NULL, NULL))
                        continue;       /* the thread went */
                words = g_strsplit_set(g_strstrip(text), " ", -1);
                for (char **w = words; *w; w++)
                        if (**w) {
                                pid_t child = (pid_t) atoi(*w);
                                g_array_append_val(a, child);
                        }
        }
        closedir(dir);
        return a;
}

/* A child that failed a task is reaped once its SIGKILL lands: give that a moment. */
static void assert_no_children(pid_t pid) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;

        for (;;) {
                GArray *a = children_of(pid);
                guint n = a->len;
                pid_t first = n > 0 ? g_array_index(a, pid_t, 0) : 0;

                g_array_unref(a);
                if (n == 0)
                        return;
                if (now_usec(CLOCK_MONOTONIC) >= deadline)
                        fail_msg("worker %i still has %u child%s (first: %i)", (int) pid, n, n == 1 ? "" : "ren",
                                 (int) first);
                g_usleep(10 * G_USEC_PER_SEC / 1000);
        }
}

static void assert_worker_clean(TestDaemon *d, const char *pool) {
        pid_t pid = test_worker_pid(d, pool, 0);

        assert_true(pid > 0);
        assert_no_children(pid);
}

/* Starts pool x with PLUGIN_KEYS, runs PAYLOAD, and checks the worker is clean afterwards. */
static void run_one(Fixture *f, const char *plugin_keys, const void *payload, size_t size, RunResult *ret) {
        start_exec(f, plugin_keys);
        run_task(&f->daemon, "x", payload, size, ret);
        assert_worker_clean(&f->daemon, "x");
}

static void test_uppercase(void **state) {
        Fixture *f = *state;
        RunResult r;

        run_one(f, "Command=/usr/bin/tr a-z A-Z\n", "hello, world", 12, &r);
        assert_result(&r, "HELLO, WORLD", 12);
        run_result_clear(&r);

        /* The same worker again, with no input at all. */
        run_task(&f->daemon, "x", NULL, 0, &r);
        assert_result(&r, "", 0);
        run_result_clear(&r);
        assert_worker_clean(&f->daemon, "x");
}

static void test_big_roundtrip(void **state) {
        Fixture *f = *state;
        size_t size = 3 * 1024 * 1024;
        g_autofree uint8_t *payload = g_malloc(size);
        RunResult r;

        /* Not periodic in any pipe-sized unit, so a lost or doubled chunk shows. */
        for (size_t i = 0; i < size; i++)
                payload[i] = (uint8_t) ((i * 2654435761u) >> 13);

        run_one(f, "Command=/bin/cat\nMaxOutput=4M\n", payload, size, &r);
        assert_result(&r, payload, size);
        run_result_clear(&r);
}

static void test_exit_status(void **state) {
        Fixture *f = *state;
        RunResult r;

        run_one(f, "Command=/bin/sh -c \"exit 3\"\n", "x", 1, &r);
        assert_task_failed(&r, "exited with status 3");
        assert_string_equal(r.error_message, "command exited with status 3");
        run_result_clear(&r);
}

static void test_stderr_in_message(void **state) {
        Fixture *f = *state;
        RunResult r;

        run_one(f, "Command=/bin/sh -c \"echo boom >&2; exit 1\"\n", NULL, 0, &r);
        assert_task_failed(&r, "boom");
        assert_string_equal(r.error_message, "command exited with status 1: boom");
        run_result_clear(&r);
}

static void test_stderr_tail_and_sanitized(void **state) {
        Fixture *f = *state;
        RunResult r;

        /* The last 10 bytes of "0123456789abcdef\377\n": marked as cut, trimmed, and with the
         * byte that is not UTF-8 replaced, so that the message is a valid D-Bus string. */
        run_one(f,
                "MaxStderr=10\n"
                "Command=/bin/sh -c \"printf '0123456789abcdef\\\\377\\\\n' >&2; exit 2\"\n",
                NULL, 0, &r);
        assert_task_failed(&r, "exited with status 2");
        assert_string_equal(r.error_message, "command exited with status 2: ...89abcdef\xEF\xBF\xBD");
        run_result_clear(&r);
}

static void test_no_shell(void **state) {
        Fixture *f = *state;
        RunResult r;

        /* A shell would expand $HOME, run id twice and split a\ b; the plugin only splits words.
         * The file says a\\ b, which its own escapes turn into a\ b: a backslash quoting a blank. */
        run_one(f, "Command=/bin/echo \"$HOME;id\" '`id`' a\\\\ b\n", NULL, 0, &r);
        assert_result(&r, "$HOME;id `id` a b\n", 18);
        run_result_clear(&r);
}

static void test_max_output(void **state) {
        Fixture *f = *state;
        char zeros[1024] = {};
        RunResult r;

        run_one(f, "Command=/usr/bin/yes\nMaxOutput=1K\n", NULL, 0, &r);
        assert_task_failed(&r, "exceeded MaxOutput");
        assert_string_equal(r.error_message, "output exceeded MaxOutput=1024 bytes");
        run_result_clear(&r);

        assert_int_equal(test_daemon_stop(&f->daemon), 0);

        /* Exactly MaxOutput= bytes is fine. */
        run_one(f, "Command=/usr/bin/head -c 1024 /dev/zero\nMaxOutput=1K\n", NULL, 0, &r);
        assert_result(&r, zeros, sizeof(zeros));
        run_result_clear(&r);
}

static void test_timeout(void **state) {
        Fixture *f = *state;
        usec_t t0, t1;
        RunResult r;

        start_exec(f, "Command=/bin/sleep 10\nTimeoutSec=200ms\n");
        t0 = now_usec(CLOCK_MONOTONIC);
        run_task(&f->daemon, "x", NULL, 0, &r);
        t1 = now_usec(CLOCK_MONOTONIC);
        assert_task_failed(&r, "timed out");
        assert_non_null(strstr(r.error_message, "after 200ms"));
        run_result_clear(&r);
        /* Not a timing test: only "well before the 10 s sleep would have ended". */
        assert_true(t1 - t0 < 8 * USEC_PER_SEC);
        assert_worker_clean(&f->daemon, "x");
}

/* Whether one of our children (orphans come to us, the harness being the subreaper) is named
 * COMM; zombies count only if ZOMBIES. */
static bool our_child_named(const char *comm, bool zombies) {
        GArray *a = children_of(getpid());
        bool found = false;

        for (guint i = 0; i < a->len && !found; i++) {
                g_autofree char *path = g_strdup_printf("/proc/%i/stat", (int) g_array_index(a, pid_t, i));
                g_autofree char *text = NULL;
                const char *open, *close;

                if (!g_file_get_contents(path, &text, NULL, NULL))
                        continue;
                open = strchr(text, '(');
                close = strrchr(text, ')');
                if (!open || !close || close[1] != ' ')
                        continue;
                if ((size_t) (close - open - 1) == strlen(comm) && strncmp(open + 1, comm, strlen(comm)) == 0 &&
                    (zombies || close[2] != 'Z'))
                        found = true;
        }
        g_array_unref(a);
        return found;
}

static void wait_no_child_named(const char *comm, bool zombies, const char *what) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;

        while (our_child_named(comm, zombies)) {
                if (now_usec(CLOCK_MONOTONIC) >= deadline)
                        fail_msg("%s", what);
                g_usleep(10 * 1000);
        }
}

static void test_timeout_kills_process_group(void **state) {
        Fixture *f = *state;
        RunResult r;

        /* sh forks sleep (it is not the last command) and is killed first; the sleep, holding
         * stdout, must go too, or the task would wait for it. Orphans come to us, the
         * harness being the subreaper, so we can look for it. */
        run_one(f, "Command=/bin/sh -c \"/bin/sleep 30; echo never\"\nTimeoutSec=300ms\n", NULL, 0, &r);
        assert_task_failed(&r, "timed out");
        run_result_clear(&r);

        wait_no_child_named("sleep", false, "the command's sleep outlived its time limit");
}

static void test_killed_by_signal(void **state) {
        Fixture *f = *state;
        RunResult r;

        run_one(f, "Command=/bin/sh -c \"kill -TERM $$\"\n", NULL, 0, &r);
        assert_task_failed(&r, "command killed by SIGTERM");
        run_result_clear(&r);
}

static void test_missing_binary(void **state) {
        Fixture *f = *state;
        RunResult r;

        run_one(f, "Command=/nonexistent/x\n", "x", 1, &r);
        assert_task_failed(&r, "No such file");
        assert_non_null(strstr(r.error_message, "/nonexistent/x"));
        run_result_clear(&r);
}

static void test_input_not_read(void **state) {
        Fixture *f = *state;
        size_t size = 1024 * 1024;
        g_autofree char *payload = g_malloc0(size);
        pid_t worker;
        RunResult r;

        /* true exits without reading: our write gets EPIPE, and SIGPIPE must not kill the worker. */
        run_one(f, "Command=/bin/true\n", payload, size, &r);
        assert_result(&r, "", 0);
        run_result_clear(&r);

        worker = test_worker_pid(&f->daemon, "x", 0);
        for (unsigned i = 0; i < 5; i++) {
                run_task(&f->daemon, "x", payload, size, &r);
                assert_result(&r, "", 0);
                run_result_clear(&r);
        }
        assert_int_equal(test_worker_pid(&f->daemon, "x", 0), worker);
        assert_worker_clean(&f->daemon, "x");
}

static void test_child_environment(void **state) {
        Fixture *f = *state;
        RunResult r;

        /* Only stdin, stdout and stderr: not the worker's link to apiaryd (fd 3). */
        run_one(f, "Command=/bin/sh -c \"ls /proc/$$/fd\"\n", NULL, 0, &r);
        assert_result(&r, "0\n1\n2\n", 6);
        run_result_clear(&r);
        assert_int_equal(test_daemon_stop(&f->daemon), 0);

        /* Nothing blocked and nothing ignored, though the worker blocks some and ignores SIGPIPE. */
        run_one(f, "Command=/bin/grep -E \"^(SigBlk|SigIgn)\" /proc/self/status\n", NULL, 0, &r);
        assert_result(&r, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n", 50);
        run_result_clear(&r);
}

typedef struct {
        const char *name;
        const char *plugin_keys;
        const char *reason;
} BadConfig;

static const BadConfig bad_configs[] = {
        { "relative", "Command=ls\n", "Command=ls: \"ls\" is not an absolute path" },
        { "missing", "TimeoutSec=1\n", "Command= is not set" },
        { "blank", "Command=\\s\\s\n", "Command= is empty" },
        { "quote", "Command=/bin/echo \"abc\n", "Command=/bin/echo \"abc has an unbalanced double quote" },
        { "squote", "Command=/bin/echo 'abc\n", "has an unbalanced single quote" },
        { "size", "Command=/bin/cat\nMaxOutput=lots\n", "MaxOutput=lots: expected a size" },
        { "huge", "Command=/bin/cat\nMaxOutput=65M\n", "MaxOutput=65M" },
        { "timeout", "Command=/bin/cat\nTimeoutSec=0\n", "TimeoutSec=0: expected a positive" },
        { "unit", "Command=/bin/cat\nTimeoutSec=5h\n", "TimeoutSec=5h" },
        { "typo", "Command=/bin/cat\nTimeOutSec=5\n", "unknown key TimeOutSec=" },
};

static void test_bad_config_fails_pool(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        GString *config = g_string_new("[Apiary]\nPluginDirectory=@PLUGINS@\n");

        for (size_t i = 0; i < G_N_ELEMENTS(bad_configs); i++)
                g_string_append_printf(config,
                                       "[Pool %s]\nPlugin=exec.so\nWorkers=1\nRestartSec=1ms\nStartLimitBurst=1\n"
                                       "FailedRetrySec=infinity\n[Pool %s Plugin]\n%s",
                                       bad_configs[i].name, bad_configs[i].name, bad_configs[i].plugin_keys);
        test_daemon_start(d, &f->bus, config->str, true);
        g_string_free(config, true);

        for (size_t i = 0; i < G_N_ELEMENTS(bad_configs); i++) {
                g_autofree char *path = test_pool_path(bad_configs[i].name), *reason = NULL;

                test_wait_pool_state(d, bad_configs[i].name, "failed");
                reason = test_get_string(d, path, POOL_IFACE, "FailureReason");
                if (!strstr(reason, bad_configs[i].reason))
                        fail_msg("pool %s: FailureReason \"%s\" lacks \"%s\"", bad_configs[i].name, reason,
                                 bad_configs[i].reason);
        }
}

typedef struct {
        RunResult result;
        bool done;
        unsigned *n_done;
} Pending;

static int on_run_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Pending *p = userdata;

        run_result_from_reply(&p->result, reply, sd_bus_message_get_error(reply));
        p->done = true;
        (*p->n_done)++;
        return 0;
}

/* Sends N Runs at once on one connection, then processes the bus until all are answered. */
static void run_many(TestDaemon *d, const char *pool, GBytes **payloads, Pending *pending, unsigned n) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + RUN_TIMEOUT_USEC;
        unsigned n_done = 0;

        for (unsigned i = 0; i < n; i++) {
                size_t size;
                const void *data = g_bytes_get_data(payloads[i], &size);
                sd_bus_message *m = new_run_call(d, pool, data, size);

                pending[i] = (Pending) { .n_done = &n_done };
                assert_true(sd_bus_call_async(d->bus, NULL, m, on_run_reply, &pending[i], RUN_TIMEOUT_USEC) >= 0);
                sd_bus_message_unref(m);
        }

        while (n_done < n) {
                int r = sd_bus_process(d->bus, NULL);

                assert_true(r >= 0);
                if (r > 0)
                        continue;
                if (now_usec(CLOCK_MONOTONIC) >= deadline)
                        fail_msg("only %u of %u Runs were answered", n_done, n);
                assert_true(sd_bus_wait(d->bus, 100 * USEC_PER_MSEC) >= 0);
        }
}

static void test_concurrent_tasks(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        GBytes *payloads[50];
        Pending pending[50];
        g_autofree char *config = exec_config("x", "Kind=io\nWorkers=1\n", "Command=/bin/cat\n");
        pid_t worker;

        test_daemon_start(d, &f->bus, config, true);
        test_wait_pool_state(d, "x", "running");
        worker = test_worker_pid(d, "x", 0);

        /* Each bigger than a pipe's buffer, so that every task needs several rounds of the loop
         * in both directions, interleaved with the others. */
        for (unsigned i = 0; i < G_N_ELEMENTS(payloads); i++) {
                size_t size = 100000 + i * 997;
                uint8_t *data = g_malloc(size);

                for (size_t k = 0; k < size; k++)
                        data[k] = (uint8_t) (i * 31 + k * 7 + (k >> 10));
                payloads[i] = g_bytes_new_take(data, size);
        }

        run_many(d, "x", payloads, pending, G_N_ELEMENTS(payloads));
        for (unsigned i = 0; i < G_N_ELEMENTS(payloads); i++) {
                size_t size;
                const void *data = g_bytes_get_data(payloads[i], &size);

                assert_result(&pending[i].result, data, size);
                run_result_clear(&pending[i].result);
                g_bytes_unref(payloads[i]);
        }

        /* One worker did all of it, and left nothing behind. */
        assert_int_equal(test_worker_pid(d, "x", 0), worker);
        assert_no_children(worker);
}

static void test_tasks_overlap(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        GBytes *payloads[20];
        Pending pending[20];
        g_autofree char *config = exec_config("x", "Kind=io\nWorkers=1\n",
                                              "Command=/bin/sh -c \"/bin/sleep 1; exec /bin/cat\"\n");
        usec_t t0, t1;

        test_daemon_start(d, &f->bus, config, true);
        test_wait_pool_state(d, "x", "running");
        for (unsigned i = 0; i < G_N_ELEMENTS(payloads); i++) {
                char *text = g_strdup_printf("task %u", i);

                payloads[i] = g_bytes_new_take(text, strlen(text));
        }

        /* 20 one-second commands on one worker: run one after another, they would take 20 s. The
         * bound is loose on purpose; it only tells "in parallel" from "in series". */
        t0 = now_usec(CLOCK_MONOTONIC);
        run_many(d, "x", payloads, pending, G_N_ELEMENTS(payloads));
        t1 = now_usec(CLOCK_MONOTONIC);
        for (unsigned i = 0; i < G_N_ELEMENTS(payloads); i++) {
                size_t size;
                const void *data = g_bytes_get_data(payloads[i], &size);

                assert_result(&pending[i].result, data, size);
                run_result_clear(&pending[i].result);
                g_bytes_unref(payloads[i]);
        }
        print_message("20 tasks of 1 s each on one worker took %.3f s\n", (double) (t1 - t0) / USEC_PER_SEC);
        assert_true(t1 - t0 < 10 * USEC_PER_SEC);
        assert_worker_clean(d, "x");
}

/* Sends N_SEND Runs that the test does not wait for, and waits until a worker other than
 * NOT_THIS_WORKER runs N commands. */
static pid_t start_sleeps(TestDaemon *d, pid_t not_this_worker, unsigned n_send, unsigned n) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + TEST_TIMEOUT_USEC;
        pid_t worker;

        for (unsigned i = 0; i < n_send; i++) {
                sd_bus_message *m = new_run_call(d, "x", NULL, 0);

                assert_true(sd_bus_call_async(d->bus, NULL, m, NULL, NULL, RUN_TIMEOUT_USEC) >= 0);
                sd_bus_message_unref(m);
        }
        assert_true(sd_bus_flush(d->bus) >= 0);

        for (;;) {
                GArray *a;
                guint k = 0;
                g_autofree char *s = test_worker_state(d, "x", 0);

                worker = test_worker_pid(d, "x", 0);
                if (worker > 0 && worker != not_this_worker && strcmp(s, "busy") == 0) {
                        a = children_of(worker);
                        k = a->len;
                        g_array_unref(a);
                        if (k == n)
                                return worker;
                }
                if (now_usec(CLOCK_MONOTONIC) >= deadline)
                        fail_msg("the worker did not start %u commands", n);
                g_usleep(10 * 1000);
        }
}

static void test_worker_exit_kills_children(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        /* StopTimeoutSec=: the teardown finds three commands running, which apiaryd waits for. */
        g_autofree char *config = exec_config("x",
                                              "Kind=io\nWorkers=1\nRestartSec=1ms\nTaskRetries=5\n"
                                              "StopTimeoutSec=300ms\n",
                                              "Command=/bin/sleep 30\n");
        pid_t worker;

        test_daemon_start(d, &f->bus, config, true);
        test_wait_pool_state(d, "x", "running");

        /* SIGTERM: the worker leaves its loop and fini() kills and reaps the commands. Any it
         * left, alive or zombie, would have come to us. */
        worker = start_sleeps(d, 0, 3, 3);
        assert_int_equal(kill(worker, SIGTERM), 0);
        assert_true(test_wait_pid_gone(worker, TEST_TIMEOUT_USEC));
        assert_false(our_child_named("sleep", true));

        /* SIGKILL: no fini(), but PR_SET_PDEATHSIG takes the commands with the worker. apiaryd
         * runs the three lost tasks again on the new worker. */
        worker = start_sleeps(d, worker, 0, 3);
        assert_int_equal(kill(worker, SIGKILL), 0);
        assert_true(test_wait_pid_gone(worker, TEST_TIMEOUT_USEC));
        wait_no_child_named("sleep", false, "the commands outlived their SIGKILLed worker");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_uppercase, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_big_roundtrip, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_exit_status, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_stderr_in_message, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_stderr_tail_and_sanitized, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_no_shell, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_max_output, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_timeout, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_timeout_kills_process_group, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_killed_by_signal, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_missing_binary, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_input_not_read, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_child_environment, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_bad_config_fails_pool, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_concurrent_tasks, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_tasks_overlap, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_worker_exit_kills_children, test_fixture_setup, test_fixture_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
