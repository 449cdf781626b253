/* SPDX-License-Identifier: MIT */
/* apiaryctl against a real apiaryd: every verb, its output and its exit status. The binary comes
 * from $APIARYCTL and reaches the test bus with --address=. */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/harness.h"

#define POOL_IFACE "org.apiary.Apiary1.Pool"
#define WORKER_IFACE "org.apiary.Apiary1.Worker"

typedef TestFixture Fixture;

static const char *const config =
        "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=2\n"
        "[Pool control]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\n";

/* ---- running apiaryctl ---- */

typedef struct Ctl {
        int status;             /* exit status, or 128 + signal */
        char *out;              /* stdout, NUL-terminated after out_size bytes */
        size_t out_size;
        char *err;              /* stderr, NUL-terminated */
} Ctl;

static void ctl_clear(Ctl *c) {
        g_free(c->out);
        g_free(c->err);
        *c = (Ctl) {};
}

/* apiaryctl --address=… ARGS, as UID (through setpriv) if it is not 0. */
static GPtrArray *ctl_argv(const Fixture *f, unsigned uid, const char *const *args) {
        const char *binary = getenv("APIARYCTL");
        GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);

        if (!binary)
                fail_msg("$APIARYCTL is not set: run the tests through meson test");
        if (uid != 0) {
                g_ptr_array_add(argv, g_strdup("setpriv"));
                g_ptr_array_add(argv, g_strdup_printf("--reuid=%u", uid));
                g_ptr_array_add(argv, g_strdup_printf("--regid=%u", uid));
                g_ptr_array_add(argv, g_strdup("--clear-groups"));
        }
        g_ptr_array_add(argv, g_strdup(binary));
        g_ptr_array_add(argv, g_strdup_printf("--bus=%s", f->bus.address));
        for (size_t i = 0; args[i]; i++)
                g_ptr_array_add(argv, g_strdup(args[i]));
        g_ptr_array_add(argv, NULL);
        return argv;
}

/* A test that fails half-way leaves no apiaryctl behind (unless setpriv's credential change
 * cleared this; then the end of the test bus ends it). */
static void child_setup(gpointer userdata) {
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static int memfd_with(const void *data, size_t size) {
        int fd = memfd_create("apiaryctl-test", MFD_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, data ?: "", size), (ssize_t) size);
        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        return fd;
}

static char *memfd_read(int fd, size_t *ret_size) {
        GByteArray *b = g_byte_array_new();
        uint8_t buf[4096];
        ssize_t k;

        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        while ((k = read(fd, buf, sizeof(buf))) > 0)
                g_byte_array_append(b, buf, (guint) k);
        assert_true(k == 0);
        if (ret_size)
                *ret_size = b->len;
        g_byte_array_append(b, (const guint8 *) "", 1);
        return (char *) g_byte_array_free(b, false);
}

static int wait_child(pid_t pid) {
        return test_wait_child(pid, TEST_TIMEOUT_USEC);
}

/* Runs apiaryctl ARGS as UID with INPUT on stdin, and waits for it. */
static void ctl_run_as(const Fixture *f, unsigned uid, const void *input, size_t input_size, Ctl *ret,
                       const char *const *args) {
        g_autoptr(GPtrArray) argv = ctl_argv(f, uid, args);
        g_autoptr(GError) error = NULL;
        g_autofree char *cmdline = NULL;
        int in = memfd_with(input, input_size), out = memfd_with(NULL, 0), err = memfd_with(NULL, 0);
        GPid pid;

        if (!g_spawn_async_with_fds(NULL, (char **) argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH,
                                    child_setup, NULL, &pid, in, out, err, &error))
                fail_msg("cannot run apiaryctl: %s", error->message);
        ret->status = wait_child(pid);
        ret->out = memfd_read(out, &ret->out_size);
        ret->err = memfd_read(err, NULL);
        close(in);
        close(out);
        close(err);
        /* For the log: what apiaryctl said, when it said anything. */
        if (ret->err[0]) {
                cmdline = g_strjoinv(" ", (char **) args);
                fprintf(stderr, "apiaryctl %s: exit status %i: %s", cmdline, ret->status, ret->err);
        }
}

static void ctl_run(const Fixture *f, const void *input, size_t input_size, Ctl *ret, const char *const *args) {
        ctl_run_as(f, 0, input, input_size, ret, args);
}

#define CTL(f, c, ...) ctl_run((f), NULL, 0, (c), (const char *const[]) { __VA_ARGS__, NULL })
#define CTL_AS(f, uid, c, ...) ctl_run_as((f), (uid), NULL, 0, (c), (const char *const[]) { __VA_ARGS__, NULL })

/* apiaryctl in the background, with its stdout and stderr as pipes. */
typedef struct CtlProcess {
        pid_t pid;
        int out_fd;
        int err_fd;
        GString *out;
        GString *err;
} CtlProcess;

static void ctl_spawn_as(const Fixture *f, unsigned uid, CtlProcess *p, const char *const *args) {
        g_autoptr(GPtrArray) argv = ctl_argv(f, uid, args);
        g_autoptr(GError) error = NULL;

        /* stdin is /dev/null. */
        if (!g_spawn_async_with_pipes(NULL, (char **) argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH,
                                      child_setup, NULL, &p->pid, NULL, &p->out_fd, &p->err_fd, &error))
                fail_msg("cannot run apiaryctl: %s", error->message);
        p->out = g_string_new(NULL);
        p->err = g_string_new(NULL);
}

static void ctl_spawn(const Fixture *f, CtlProcess *p, const char *const *args) {
        ctl_spawn_as(f, 0, p, args);
}

/* Reads FD into BUF until BUF contains NEEDLE; false at EOF or after the test timeout. */
static bool read_until(int fd, GString *buf, const char *needle) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + TEST_TIMEOUT_USEC;

        while (!strstr(buf->str, needle)) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                usec_t now = now_usec(CLOCK_MONOTONIC);
                char chunk[4096];
                ssize_t k;

                if (now >= deadline)
                        return false;
                if (poll(&p, 1, (int) ((deadline - now) / USEC_PER_MSEC) + 1) <= 0)
                        continue;
                k = read(fd, chunk, sizeof(chunk));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return false;
                g_string_append_len(buf, chunk, k);
        }
        return true;
}

/* Waits for the process to exit and reads the rest of its output; returns its exit status. */
static int ctl_finish(CtlProcess *p) {
        int status = wait_child(p->pid);

        (void) read_until(p->out_fd, p->out, "\x01never");
        (void) read_until(p->err_fd, p->err, "\x01never");
        close(p->out_fd);
        close(p->err_fd);
        return status;
}

static void ctl_process_free(CtlProcess *p) {
        g_string_free(p->out, true);
        g_string_free(p->err, true);
}

/* ---- predicates ---- */

static bool pool_has_workers(TestDaemon *d, const void *userdata) {
        const unsigned *n = userdata;
        g_autofree char *path = test_pool_path("echo");
        g_auto(GStrv) workers = test_get_object_paths(d, path, POOL_IFACE, "Workers");

        return test_get_u32(d, path, POOL_IFACE, "WorkersReady") == *n && g_strv_length(workers) == *n;
}

typedef struct Slot {
        const char *pool;
        unsigned slot;
        pid_t old_pid;
} Slot;

static bool worker_replaced(TestDaemon *d, const void *userdata) {
        const Slot *s = userdata;
        pid_t pid = test_worker_pid(d, s->pool, s->slot);
        g_autofree char *state = test_worker_state(d, s->pool, s->slot);

        return pid > 0 && pid != s->old_pid && strcmp(state, "ready") == 0;
}

static bool pool_paused(TestDaemon *d, const char *pool) {
        g_autofree char *path = test_pool_path(pool);
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int paused = -1;

        if (sd_bus_get_property_trivial(d->bus, "org.apiary.Apiary1", path, POOL_IFACE, "Paused", &error, 'b',
                                        &paused) < 0)
                fail_msg("Paused of %s: %s", pool, error.message);
        return paused;
}

/* The lines of S, without the empty last one. */
static char **lines(const char *s) {
        g_auto(GStrv) l = g_strsplit(s, "\n", -1);
        guint n = g_strv_length(l);

        if (n > 0 && l[n - 1][0] == '\0') {
                g_free(l[n - 1]);
                l[n - 1] = NULL;
        }
        return g_steal_pointer(&l);
}

/* ---- the tests ---- */

static void test_run_and_submit(void **state) {
        Fixture *f = *state;
        uint8_t all[256];
        Ctl c = {};
        uint64_t id;
        char *end;

        test_daemon_start(&f->daemon, &f->bus, config, true);

        /* The result exactly: no newline added. */
        CTL(f, &c, "run", "echo", "hello");
        assert_int_equal(c.status, 0);
        assert_int_equal(c.out_size, 5);
        assert_memory_equal(c.out, "hello", 5);
        ctl_clear(&c);

        /* Binary-safe both ways, through stdin: with "-" and without DATA. */
        for (size_t i = 0; i < sizeof(all); i++)
                all[i] = (uint8_t) i;
        ctl_run(f, all, sizeof(all), &c, (const char *const[]) { "run", "echo", "-", NULL });
        assert_int_equal(c.status, 0);
        assert_int_equal(c.out_size, sizeof(all));
        assert_memory_equal(c.out, all, sizeof(all));
        ctl_clear(&c);
        ctl_run(f, all, sizeof(all), &c, (const char *const[]) { "run", "echo", NULL });
        assert_int_equal(c.status, 0);
        assert_int_equal(c.out_size, sizeof(all));
        assert_memory_equal(c.out, all, sizeof(all));
        ctl_clear(&c);

        /* A failed task: the reason on stderr, exit status 1. */
        CTL(f, &c, "run", "control", "fail boom");
        assert_int_equal(c.status, 1);
        assert_int_equal(c.out_size, 0);
        assert_non_null(strstr(c.err, "boom"));
        ctl_clear(&c);

        /* --timeout reaches apiaryd as the "timeout" option. */
        CTL(f, &c, "--timeout=300ms", "run", "control", "hang");
        assert_int_equal(c.status, 1);
        assert_non_null(strstr(c.err, "timeout"));
        ctl_clear(&c);
        CTL(f, &c, "--timeout=soon", "run", "echo", "x");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);

        /* submit prints the id; several DATA make a batch, one id a line. */
        CTL(f, &c, "submit", "echo", "queued");
        assert_int_equal(c.status, 0);
        id = strtoull(c.out, &end, 10);
        assert_true(id > 0);
        assert_string_equal(end, "\n");
        ctl_clear(&c);
        CTL(f, &c, "--timeout=1min", "submit", "echo", "a", "b", "c");
        assert_int_equal(c.status, 0);
        {
                g_auto(GStrv) l = lines(c.out);

                assert_int_equal(g_strv_length(l), 3);
                assert_true(strtoull(l[0], NULL, 10) > id);
        }
        ctl_clear(&c);

        /* Unknown pool: 4; unknown task: 4 with apiaryd's message (and its name after -v). */
        CTL(f, &c, "run", "nosuch", "x");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "No pool named \"nosuch\""));
        ctl_clear(&c);
        CTL(f, &c, "-v", "cancel", "999999");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "No task 999999"));
        assert_non_null(strstr(c.err, "org.apiary.Apiary1.Error.NoSuchTask"));
        ctl_clear(&c);
}

static void test_wait(void **state) {
        Fixture *f = *state;
        CtlProcess p = {};
        Ctl c = {};
        g_autofree char *id = NULL, *ids = NULL;

        test_daemon_start(&f->daemon, &f->bus, config, true);

        /* Paused, the task stays queued until wait has subscribed ("Waiting" after -v). */
        CTL(f, &c, "pause", "echo");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        CTL(f, &c, "submit", "echo", "waited for");
        assert_int_equal(c.status, 0);
        id = g_strchomp(g_strdup(c.out));
        ctl_clear(&c);

        ctl_spawn(f, &p, (const char *const[]) { "-v", "wait", id, NULL });
        assert_true(read_until(p.err_fd, p.err, "Waiting"));
        CTL(f, &c, "resume", "echo");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        assert_int_equal(ctl_finish(&p), 0);
        assert_string_equal(p.out->str, "waited for");
        ctl_process_free(&p);

        /* Several ids: a line each, and status 1 if one failed. */
        CTL(f, &c, "pause", "control");
        ctl_clear(&c);
        CTL(f, &c, "submit", "control", "fine", "fail bad");
        assert_int_equal(c.status, 0);
        ids = g_strdup(c.out);
        ctl_clear(&c);
        {
                g_auto(GStrv) l = lines(ids);

                assert_int_equal(g_strv_length(l), 2);
                ctl_spawn(f, &p, (const char *const[]) { "-v", "wait", l[0], l[1], NULL });
                assert_true(read_until(p.err_fd, p.err, "Waiting"));
                CTL(f, &c, "resume", "control");
                ctl_clear(&c);
                assert_int_equal(ctl_finish(&p), 1);
                g_autofree char *ok = g_strdup_printf("%s control done \"fine\"\n", l[0]);
                g_autofree char *bad = g_strdup_printf("%s control failed \"bad\"\n", l[1]);
                assert_non_null(strstr(p.out->str, ok));
                assert_non_null(strstr(p.out->str, bad));
                ctl_process_free(&p);
        }

        /* submit --wait follows its own tasks on its own connection: no monitoring needed. */
        CTL(f, &c, "submit", "--wait", "echo", "own");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out, "own");
        ctl_clear(&c);
        CTL(f, &c, "submit", "--wait", "control", "one", "fail two");
        assert_int_equal(c.status, 1);
        assert_non_null(strstr(c.out, " control done \"one\"\n"));
        assert_non_null(strstr(c.out, " control failed \"two\"\n"));
        ctl_clear(&c);
        CTL(f, &c, "submit", "--wait", "control", "fail alone");
        assert_int_equal(c.status, 1);
        assert_int_equal(c.out_size, 0);
        assert_non_null(strstr(c.err, "failed: alone"));
        ctl_clear(&c);
        CTL(f, &c, "--wait", "run", "echo", "x");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);

        /* A task that never was (or finished already) is waited for until --timeout. */
        CTL(f, &c, "--timeout=200ms", "wait", "999999");
        assert_int_equal(c.status, 1);
        assert_non_null(strstr(c.err, "Timed out"));
        ctl_clear(&c);
        CTL(f, &c, "wait", "0");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
}

static void test_status_pools_workers(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        Ctl c = {};

        /* Nobody on the bus yet. */
        CTL(f, &c, "status");
        assert_int_equal(c.status, 5);
        assert_non_null(strstr(c.err, "not running"));
        ctl_clear(&c);

        /* A newcomer on the system bus, with apiaryd elsewhere: which bus was tried, and how to
         * point at tools/run's. The same once connected to a bus where it does not run. */
        g_setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/apiary-test-bus", true);
        CTL(f, &c, "--system", "status");
        g_unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
        assert_int_equal(c.status, 5);
        assert_non_null(strstr(c.err, "Failed to connect to the system bus (unix:path=/nonexistent/apiary-test-bus): "
                                      "No such file or directory\n"));
        assert_non_null(strstr(c.err, "--address=unix:path=BUILD/run/bus, or set $APIARY_BUS_ADDRESS"));
        ctl_clear(&c);
        g_setenv("DBUS_SYSTEM_BUS_ADDRESS", f->bus.address, true);
        CTL(f, &c, "--system", "status");
        g_unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
        assert_int_equal(c.status, 5);
        assert_non_null(strstr(c.err, "apiaryd is not running on this bus"));
        assert_non_null(strstr(c.err, "$APIARY_BUS_ADDRESS"));
        ctl_clear(&c);

        test_daemon_start(d, &f->bus, config, true);

        CTL(f, &c, "status");
        assert_int_equal(c.status, 0);
        assert_non_null(strstr(c.out, "apiaryd "));
        assert_non_null(strstr(c.out, "echo: running, 2/2 workers ready"));
        assert_non_null(strstr(c.out, "control: running, 1/1 workers ready"));
        ctl_clear(&c);
        /* No verb is status. */
        ctl_run(f, NULL, 0, &c, (const char *const[]) { NULL });
        assert_int_equal(c.status, 0);
        assert_non_null(strstr(c.out, "echo: running"));
        ctl_clear(&c);
        CTL(f, &c, "status", "control");
        assert_int_equal(c.status, 0);
        assert_null(strstr(c.out, "echo:"));
        ctl_clear(&c);
        CTL(f, &c, "status", "nosuch");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "No pool named \"nosuch\""));
        ctl_clear(&c);

        CTL(f, &c, "pools");
        assert_int_equal(c.status, 0);
        assert_true(g_str_has_prefix(c.out, "POOL "));
        assert_non_null(strstr(c.out, "2 pools listed."));
        ctl_clear(&c);
        CTL(f, &c, "--no-legend", "pools");
        assert_int_equal(c.status, 0);
        {
                g_auto(GStrv) l = lines(c.out);

                assert_int_equal(g_strv_length(l), 2);
                assert_true(g_str_has_prefix(l[0], "echo "));
                assert_non_null(strstr(l[0], " running 2/2 cpu no "));
                assert_true(g_str_has_prefix(l[1], "control "));
        }
        ctl_clear(&c);

        CTL(f, &c, "--no-legend", "workers", "echo");
        assert_int_equal(c.status, 0);
        {
                g_auto(GStrv) l = lines(c.out);

                assert_int_equal(g_strv_length(l), 2);
                for (unsigned i = 0; i < 2; i++) {
                        g_auto(GStrv) fields = g_strsplit_set(l[i], " ", -1);
                        g_autofree char *slot = g_strdup_printf("%u", i);
                        g_autofree char *pid = g_strdup_printf("%i", (int) test_worker_pid(d, "echo", i));
                        const char *cols[16] = {};
                        guint n = 0;

                        /* POOL SLOT PID STATE …, columns padded with spaces (so some fields are
                         * empty, depending on the widths of the PIDs) */
                        for (guint k = 0; fields[k] && n < G_N_ELEMENTS(cols); k++)
                                if (fields[k][0])
                                        cols[n++] = fields[k];
                        assert_true(n >= 4);
                        assert_string_equal(cols[0], "echo");
                        assert_string_equal(cols[1], slot);
                        assert_string_equal(cols[2], pid);
                        assert_string_equal(cols[3], "ready");
                }
        }
        ctl_clear(&c);

        CTL(f, &c, "--json", "pools");
        assert_int_equal(c.status, 0);
        assert_true(g_str_has_prefix(c.out, "[{\"Path\":\"/org/apiary/Apiary1/pool/echo\",\"Name\":\"echo\","));
        assert_non_null(strstr(c.out, "\"PoolName\":\"control\",\"Slot\":0,"));
        ctl_clear(&c);
        CTL(f, &c, "--json=pretty", "status");
        assert_int_equal(c.status, 0);
        assert_true(g_str_has_prefix(c.out, "{\n  \"Version\": "));
        ctl_clear(&c);
        CTL(f, &c, "--json", "scale", "echo", "2");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
}

/* show, is-active and is-failed, as systemctl's: NAME=VALUE lines, -p, --value, and the exit
 * statuses scripts test. */
static void test_show_and_is_active(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *want_pid = NULL, *want_config = NULL, *want_worker_pid = NULL;
        Ctl c = {};

        /* No apiaryd: nothing is active, nothing failed, and show has nothing to show. */
        CTL(f, &c, "is-active", "echo");
        assert_int_equal(c.status, 3);
        assert_string_equal(c.out, "unknown\n");
        ctl_clear(&c);
        CTL(f, &c, "is-failed", "echo");
        assert_int_equal(c.status, 1);
        ctl_clear(&c);
        CTL(f, &c, "show");
        assert_int_equal(c.status, 5);
        ctl_clear(&c);

        test_daemon_start(d, &f->bus,
                          "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=2\n"
                          "[Pool bad]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\n"
                          "StartLimitBurst=0\nRestart=no\nFailedRetrySec=infinity\n"
                          "[Pool bad Plugin]\nInitMode=exit\nExitCode=3\n", true);
        test_wait_pool_state(d, "bad", "failed");

        want_pid = g_strdup_printf("\nPID=%i\n", (int) d->pid);
        want_config = g_strdup_printf("\nConfigPath=%s\n", d->config_path);
        CTL(f, &c, "show");
        assert_int_equal(c.status, 0);
        assert_true(g_str_has_prefix(c.out, "Version="));
        assert_non_null(strstr(c.out, "\nState=running\n"));
        assert_non_null(strstr(c.out, want_pid));
        assert_non_null(strstr(c.out, want_config));
        assert_non_null(strstr(c.out, "\nPools=/org/apiary/Apiary1/pool/echo /org/apiary/Apiary1/pool/bad\n"));
        ctl_clear(&c);

        CTL(f, &c, "show", "echo", "-p", "State", "--value");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out, "running\n");
        ctl_clear(&c);
        CTL(f, &c, "show", "echo", "-p", "Paused,WorkersWanted", "-p", "Name");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out, "Name=echo\nWorkersWanted=2\nPaused=no\n");
        ctl_clear(&c);

        /* A worker's process, as /proc has it. */
        want_worker_pid = g_strdup_printf("PID=%i", (int) test_worker_pid(d, "echo", 1));
        CTL(f, &c, "show", "echo/1", "-p", "PID,MemoryRSS,CPUUsageNSec");
        assert_int_equal(c.status, 0);
        {
                g_auto(GStrv) l = lines(c.out);
                uint64_t rss;

                assert_int_equal(g_strv_length(l), 3);
                assert_string_equal(l[0], want_worker_pid);
                assert_true(g_str_has_prefix(l[1], "CPUUsageNSec="));
                assert_true(g_str_has_prefix(l[2], "MemoryRSS="));
                rss = g_ascii_strtoull(l[2] + strlen("MemoryRSS="), NULL, 10);
                assert_true(rss > 0 && rss < UINT64_MAX);
                assert_true(rss / 1024 <= test_proc_rss_kib(test_worker_pid(d, "echo", 1)) * 2);
        }
        ctl_clear(&c);

        CTL(f, &c, "show", "-p", "Nope");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "no property \"Nope\""));
        ctl_clear(&c);
        CTL(f, &c, "show", "nosuch");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "No pool named \"nosuch\""));
        ctl_clear(&c);
        CTL(f, &c, "show", "echo/7");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "Pool \"echo\" has no slot 7"));
        ctl_clear(&c);
        CTL(f, &c, "status", "-p", "State");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);

        CTL(f, &c, "is-active", "echo");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out, "running\n");
        ctl_clear(&c);
        CTL(f, &c, "is-active", "bad", "nosuch");
        assert_int_equal(c.status, 3);
        assert_string_equal(c.out, "failed\nunknown\n");
        ctl_clear(&c);
        CTL(f, &c, "is-active", "--quiet", "bad", "echo");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out, "");
        ctl_clear(&c);
        CTL(f, &c, "is-failed", "echo");
        assert_int_equal(c.status, 1);
        ctl_clear(&c);
        CTL(f, &c, "is-failed", "-q", "echo", "bad");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out, "");
        ctl_clear(&c);
        CTL(f, &c, "is-active", "echo/0");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);

        /* status as systemctl's: the main PID, the file, the bus; each worker's uptime, CPU, RSS. */
        CTL(f, &c, "--no-pager", "status", "echo");
        assert_int_equal(c.status, 0);
        {
                g_autofree char *main_pid = g_strdup_printf("  Main PID: %i\n", (int) d->pid);
                g_autofree char *config_line = g_strdup_printf("    Config: %s\n", d->config_path);

                assert_non_null(strstr(c.out, main_pid));
                assert_non_null(strstr(c.out, config_line));
                assert_non_null(strstr(c.out, "     State: running since "));
                assert_non_null(strstr(c.out, " UPTIME "));
                assert_non_null(strstr(c.out, " CPU "));
                assert_non_null(strstr(c.out, " RSS "));
        }
        ctl_clear(&c);
}

static int compare_strings(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* What bash completes for LINE (a command line as typed, a trailing space starting a new word,
 * @BUS@ standing for the test bus's address),
 * with shell-completion/bash/apiaryctl and this build's apiaryctl first on PATH; sorted. */
static char **complete_bash(const Fixture *f, const char *line) {
        static const char script[] =
                "source \"$APIARY_SOURCE_ROOT/shell-completion/bash/apiaryctl\"\n"
                "read -ra COMP_WORDS <<<\"$1\"\n"
                "[[ $1 == *\" \" ]] && COMP_WORDS+=(\"\")\n"
                "COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
                "_apiaryctl\n"
                "printf '%s\\n' \"${COMPREPLY[@]}\"\n";
        g_autofree char *dir = g_path_get_dirname(g_getenv("APIARYCTL"));
        g_autofree char *path = g_strdup_printf("%s:%s", dir, g_getenv("PATH"));
        g_autofree char *with_bus = NULL, *out = NULL, *err = NULL;
        g_auto(GStrv) env = g_environ_setenv(g_get_environ(), "PATH", path, true);
        g_autoptr(GError) error = NULL;
        char **words;
        int status;

        {
                g_auto(GStrv) parts = g_strsplit(line, "@BUS@", -1);

                with_bus = g_strjoinv(f->bus.address, parts);
        }
        assert_true(g_spawn_sync(NULL, (char *[]) { (char *) "bash", (char *) "-c", (char *) script,
                                                    (char *) "bash", with_bus, NULL },
                                 env, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error));
        if (!g_spawn_check_wait_status(status, NULL))
                fail_msg("bash completion of \"%s\" failed: %s", with_bus, err);
        words = g_strsplit(g_strstrip(out), "\n", -1);
        qsort(words, g_strv_length(words), sizeof(char *), compare_strings);
        return words;
}

static void assert_completes(const Fixture *f, const char *line, const char *expected) {
        g_auto(GStrv) words = complete_bash(f, line);
        g_autofree char *got = g_strjoinv(" ", words);

        if (strcmp(got, expected) != 0)
                fail_msg("completing \"%s\": got \"%s\", expected \"%s\"", line, got, expected);
}

/* bash completion: the verbs and options of --help, and the pools and slots of the apiaryd that
 * the command line's bus options name. */
static void test_completion(void **state) {
        Fixture *f = *state;
        g_auto(GStrv) verbs = NULL;

        test_daemon_start(&f->daemon, &f->bus, config, true);

        verbs = complete_bash(f, "apiaryctl ");
        assert_int_equal(g_strv_length(verbs), 21);
        assert_true(g_strv_contains((const char *const *) verbs, "is-active"));
        assert_completes(f, "apiaryctl --address=@BUS@ re", "reload restart resume");
        assert_completes(f, "apiaryctl --no-", "--no-block --no-color --no-legend --no-pager");
        assert_completes(f, "apiaryctl --json=p", "--json=pretty");
        assert_completes(f, "apiaryctl --address=@BUS@ restart ", "control control/0 echo echo/0 echo/1");
        assert_completes(f, "apiaryctl --address=@BUS@ kill echo/", "echo/0 echo/1");
        assert_completes(f, "apiaryctl --address=@BUS@ kill echo/1 T", "TERM");
        assert_completes(f, "apiaryctl --address=@BUS@ --no-legend is-active c", "control");
        assert_completes(f, "apiaryctl --address=@BUS@ run ", "control echo");
        assert_completes(f, "apiaryctl --address=@BUS@ run echo ", "");
        /* Another bus, where no apiaryd runs: nothing to offer, and no error. */
        assert_completes(f, "apiaryctl --address=unix:path=/nonexistent/bus stop ", "");
}

static void test_control(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *w0 = test_worker_path("control", 0), *last = NULL;
        unsigned three = 3;
        Slot s;
        Ctl c = {};

        test_daemon_start(d, &f->bus, config, true);

        /* Each waits for its effect: no waiting in the test after it. */
        CTL(f, &c, "scale", "echo", "3");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        assert_true(pool_has_workers(d, &three));
        CTL(f, &c, "--no-legend", "workers", "echo");
        {
                g_auto(GStrv) l = lines(c.out);

                assert_int_equal(g_strv_length(l), 3);
                assert_true(g_str_has_prefix(l[2], "echo 2 "));
        }
        ctl_clear(&c);

        CTL(f, &c, "stop", "echo");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        {
                g_autofree char *st = test_pool_state(d, "echo");
                assert_string_equal(st, "stopped");
        }
        /* A stopped pool does not restart: the hint names the command that starts it. */
        CTL(f, &c, "restart", "echo");
        assert_int_equal(c.status, 1);
        assert_non_null(strstr(c.err, "Failed to restart pool \"echo\": Pool \"echo\" is stopped; it must be started first.\n"
                                      "To start it: apiaryctl start echo\n"));
        ctl_clear(&c);
        CTL(f, &c, "start", "echo");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        {
                g_autofree char *st = test_pool_state(d, "echo");
                assert_string_equal(st, "running");
        }

        CTL(f, &c, "pause", "echo", "control");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        assert_true(pool_paused(d, "echo"));
        assert_true(pool_paused(d, "control"));
        CTL(f, &c, "status", "echo");
        assert_non_null(strstr(c.out, "workers ready, paused\n"));
        ctl_clear(&c);
        CTL(f, &c, "resume", "echo", "control");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        assert_false(pool_paused(d, "echo"));
        assert_false(pool_paused(d, "control"));

        s = (Slot) { "control", 0, test_worker_pid(d, "control", 0) };
        CTL(f, &c, "kill", "control/0", "KILL");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        test_wait_until(d, worker_replaced, &s, TEST_TIMEOUT_USEC, "control/0 to be replaced after SIGKILL");
        last = test_get_string(d, w0, WORKER_IFACE, "LastExit");
        assert_non_null(strstr(last, "killed by SIGKILL"));

        s = (Slot) { "echo", 1, test_worker_pid(d, "echo", 1) };
        CTL(f, &c, "restart", "echo/1");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        assert_true(worker_replaced(d, &s));

        {
                Slot all[3];

                for (unsigned i = 0; i < 3; i++)
                        all[i] = (Slot) { "echo", i, test_worker_pid(d, "echo", i) };
                CTL(f, &c, "restart", "echo");
                assert_int_equal(c.status, 0);
                ctl_clear(&c);
                /* Rolled: every slot has its new worker, ready, when restart returns. */
                for (unsigned i = 0; i < 3; i++)
                        assert_true(worker_replaced(d, &all[i]));
        }

        /* --no-block returns at once; the effect comes all the same. */
        CTL(f, &c, "--no-block", "scale", "echo", "2");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        {
                unsigned two = 2;
                test_wait_until(d, pool_has_workers, &two, TEST_TIMEOUT_USEC, "echo to have 2 workers");
        }

        /* Reload is newer than the rest: an apiaryd without it answers UnknownMethod. */
        CTL(f, &c, "-v", "reload");
        if (c.status != 0) {
                assert_int_equal(c.status, 1);
                assert_non_null(strstr(c.err, "org.freedesktop.DBus.Error.UnknownMethod"));
        }
        ctl_clear(&c);

        /* What does not exist: 4. */
        CTL(f, &c, "stop", "nosuch");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "No pool named \"nosuch\""));
        ctl_clear(&c);
        CTL(f, &c, "kill", "echo/9");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "Pool \"echo\" has no slot 9"));
        ctl_clear(&c);
        CTL(f, &c, "restart", "nosuch/0");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "No pool named \"nosuch\""));
        ctl_clear(&c);

        /* Bad usage: 2, and nothing happens. */
        CTL(f, &c, "scale", "echo");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
        CTL(f, &c, "scale", "echo", "many");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
        CTL(f, &c, "kill", "echo");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
        CTL(f, &c, "kill", "echo/0", "SIGNOPE");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
        CTL(f, &c, "stop", "echo/0");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
        CTL(f, &c, "frobnicate");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
        CTL(f, &c, "--frobnicate", "status");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
        CTL(f, &c, "pause", "echo", "nosuch/");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
        assert_false(pool_paused(d, "echo"));
        /* Every target exists, or nothing is done. */
        CTL(f, &c, "pause", "echo", "nope");
        assert_int_equal(c.status, 4);
        assert_string_equal(c.err, "Failed to pause pool \"nope\": No pool named \"nope\". Nothing was done.\n");
        ctl_clear(&c);
        assert_false(pool_paused(d, "echo"));
        CTL(f, &c, "restart", "echo/0", "echo/7");
        assert_int_equal(c.status, 4);
        assert_non_null(strstr(c.err, "Pool \"echo\" has no slot 7. Nothing was done."));
        ctl_clear(&c);
        CTL(f, &c, "--no-block", "pause", "echo");
        assert_int_equal(c.status, 2);
        ctl_clear(&c);
        /* Arguments apiaryd refuses as invalid: 2 as well. */
        CTL(f, &c, "scale", "echo", "0");
        assert_int_equal(c.status, 2);
        assert_non_null(strstr(c.err, "Cannot scale to 0 workers"));
        ctl_clear(&c);
}

/* reload prints what it changes, --dry-run changes nothing, a Scale() is kept or says it is not,
 * and a typo is refused or rolled back with the reason. */
static void test_reload(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *echo = test_pool_path("echo");
        pid_t echo0, control0;
        unsigned three = 3;
        Ctl c = {};

        test_daemon_start_logged(d, &f->bus, config, true);

        /* Workers= and what only a restart applies, said as such; nothing changes. */
        test_daemon_write_dropin(d, "40-other.conf", "[Apiary]\nBus=session\n[Pool echo]\nWorkers=3\n");
        CTL(f, &c, "reload", "--dry-run");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out, "[Apiary]: Bus=(unset) → session, which takes effect when apiaryd restarts\n"
                                   "echo: Workers=2 → 3\n"
                                   "echo: scales from 2 to 3 workers\n");
        ctl_clear(&c);
        test_daemon_write_dropin(d, "40-other.conf", NULL);

        CTL(f, &c, "scale", "echo", "3");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        test_wait_until(d, pool_has_workers, &three, TEST_TIMEOUT_USEC, "echo to have 3 workers");
        echo0 = test_worker_pid(d, "echo", 0);
        control0 = test_worker_pid(d, "control", 0);

        test_daemon_write_dropin(d, "50-new.conf",
                                 "[Apiary]\nLogLevel=debug\n"
                                 "[Pool echo]\nRestartSec=200ms\n"
                                 "[Pool control Plugin]\nVersion=2\n"
                                 "[Pool added]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n");
        CTL(f, &c, "reload", "--dry-run");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out,
                            "[Apiary]: LogLevel=(unset) → debug\n"
                            "echo: RestartSec=(unset) → 200ms\n"
                            "echo: keeps the 3 workers of its scale (Workers=2 did not change)\n"
                            "control: [Plugin] Version=(unset) → 2\n"
                            "control: new code: its workers roll over one by one, and back if the new ones cannot start\n"
                            "added: added, starts\n");
        ctl_clear(&c);
        assert_int_equal(test_worker_pid(d, "control", 0), control0);
        {
                g_auto(GStrv) pools = test_get_object_paths(d, "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager",
                                                            "Pools");
                assert_int_equal(g_strv_length(pools), 2);
        }

        /* Applied, and waited for: the new worker is there when it returns. */
        CTL(f, &c, "reload");
        assert_int_equal(c.status, 0);
        assert_true(g_str_has_suffix(c.out, "added: added, starts\nReloaded.\n"));
        ctl_clear(&c);
        assert_int_not_equal(test_worker_pid(d, "control", 0), control0);
        assert_int_equal(test_worker_pid(d, "echo", 0), echo0);
        assert_int_equal(test_get_u32(d, echo, POOL_IFACE, "WorkersWanted"), 3);
        g_autofree char *added = test_pool_state(d, "added");
        assert_string_equal(added, "running");

        /* Workers= itself changes: the scale gives way, and it says so. */
        test_daemon_write_dropin(d, "50-new.conf", "[Pool echo]\nWorkers=1\n");
        CTL(f, &c, "reload");
        assert_int_equal(c.status, 0);
        assert_non_null(strstr(c.out, "echo: Workers=2 → 1\n"));
        assert_non_null(strstr(c.out, "echo: RestartSec=200ms → (unset)\n"));
        assert_non_null(strstr(c.out, "echo: does not keep the 3 workers of its scale: Workers= changed, scales to 1\n"));
        assert_non_null(strstr(c.out, "added: removed: drains, then goes\n"));
        ctl_clear(&c);
        assert_int_equal(test_get_u32(d, echo, POOL_IFACE, "WorkersWanted"), 1);

        /* A plugin file that is not there: refused whole, and the file, group and key named. */
        test_daemon_write_dropin(d, "50-new.conf", "[Pool echo]\nWorkers=1\nPlugin=nosuch.so\n");
        CTL(f, &c, "-v", "reload");
        assert_int_equal(c.status, 1);
        assert_non_null(strstr(c.err, "Failed to reload apiaryd: "));
        assert_non_null(strstr(c.err, "50-new.conf:3: [Pool echo] Plugin=nosuch.so: "));
        assert_non_null(strstr(c.err, "(org.apiary.Apiary1.Error.InvalidConfig)"));
        ctl_clear(&c);

        /* A plugin that refuses its settings: rolled back, and the reason told. */
        test_daemon_write_dropin(d, "50-new.conf", "[Pool echo]\nWorkers=1\n[Pool control Plugin]\nInitMode=fail\n");
        CTL(f, &c, "-v", "reload");
        assert_int_equal(c.status, 1);
        assert_non_null(strstr(c.out, "control: [Plugin] InitMode=(unset) → fail\n"));
        assert_non_null(strstr(c.err, "Failed to reload apiaryd: Pool \"control\" rolled back to its previous "
                                      "settings: worker 0 exited with status 4 (plugin control: init failed: told to "
                                      "fail by InitMode=fail). (org.apiary.Apiary1.Error.RolledBack)"));
        ctl_clear(&c);
        g_autofree char *control = test_pool_state(d, "control");
        assert_string_equal(control, "degraded");

        /* The log says which keys changed; status says why the pool is degraded, and counts the
         * replacements apart. */
        g_free(test_daemon_wait_log(d, "control: Settings changed ([Plugin] InitMode=(unset) → fail), rolling the "
                                       "workers over to the new code.", TEST_TIMEOUT_USEC));
        CTL(f, &c, "status", "control");
        assert_non_null(strstr(c.out, "    Reason: worker 0 exited with status 4 (plugin control: init failed: "));
        /* Three reloads gave it new code (Version=2, then none, then InitMode=fail): three planned
         * replacements; the failed worker of the last is counted nowhere. */
        if (!strstr(c.out, "  Restarts: 0 after failures, 3 planned\n"))
                fail_msg("%s", c.out);
        ctl_clear(&c);
}

/* Every control call is in the log: who (UID, PID, command name), what, on which target, with
 * which arguments, and whether it was refused. */
static void test_audit_log(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *out = NULL, *line = NULL;
        Ctl c = {};

        test_daemon_start_logged(d, &f->bus, config, true);
        CTL(f, &c, "scale", "echo", "3");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        line = test_daemon_wait_log(d, "Scale(3) on pool echo called by :", TEST_TIMEOUT_USEC);
        assert_non_null(strstr(line, " (UID 0, PID "));
        assert_true(g_str_has_suffix(line, ", apiaryctl)."));
        g_free(line);

        CTL(f, &c, "kill", "echo/2", "RTMIN+3");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        line = test_daemon_wait_log(d, "Kill(SIGRTMIN+3) on worker echo/2 called by :", TEST_TIMEOUT_USEC);
        g_free(line);

        CTL(f, &c, "stop", "control");
        ctl_clear(&c);
        CTL(f, &c, "restart", "control");
        assert_int_equal(c.status, 1);
        ctl_clear(&c);
        line = test_daemon_wait_log(d, "Restart() on pool control by :", TEST_TIMEOUT_USEC);
        assert_non_null(strstr(line, "apiaryctl) refused: org.apiary.Apiary1.Error.PoolStopped: Pool \"control\" is "
                                     "stopped; it must be started first."));
        g_free(line);

        /* Refused for want of the right: logged as such, with the other user's process. */
        if (geteuid() == 0) {
                assert_int_equal(test_client(&f->bus, 65534, &out, (const char *[]) { "call-pool", "echo", "Stop", NULL }),
                                 1);
                assert_non_null(strstr(out, "org.freedesktop.DBus.Error.AccessDenied"));
                line = test_daemon_wait_log(d, "Stop() on pool echo by :", TEST_TIMEOUT_USEC);
                assert_non_null(strstr(line, "(UID 65534, PID "));
                assert_non_null(strstr(line, "refused: org.freedesktop.DBus.Error.AccessDenied: User 65534 may not call Stop()"));
        }
}

/* On a terminal, the wait shows a one-line progress, rewritten in place and cleared at the end. */
static void test_progress_on_a_tty(void **state) {
        Fixture *f = *state;
        g_autofree char *cmd = NULL, *out = NULL, *err = NULL;
        g_autoptr(GError) e = NULL;
        int status = 0;

        /* Workers that take 300 ms to start, so that the wait shows progress however fast forks are. */
        test_daemon_start(&f->daemon, &f->bus,
                          "[Pool slow]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=2\n[Pool slow Plugin]\nInitDelayMs=300\n",
                          true);
        /* script(1) gives apiaryctl a pseudo-terminal for stdout and stderr. */
        cmd = g_strdup_printf("%s --bus=%s restart slow", getenv("APIARYCTL"), f->bus.address);
        if (!g_spawn_sync(NULL, (char *[]) { (char *) "script", (char *) "-qec", cmd, (char *) "/dev/null", NULL }, NULL,
                          G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &e))
                fail_msg("cannot run script: %s", e->message);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_non_null(strstr(out, "\rpool \"slow\": 0/2 workers replaced…\033[K"));
        assert_true(g_str_has_suffix(out, "\r\033[K"));
}

/* top, through a pseudo-terminal (script(1)) as a person sees it: frames drawn over each other,
 * the second with rates; the task run shows in its worker's TASKS; q ends it with status 0 and
 * the cursor back. */
static void test_top_on_a_tty(void **state) {
        Fixture *f = *state;
        g_autofree char *cmd = NULL, *result = NULL;
        g_autoptr(GError) e = NULL;
        g_autoptr(GRegex) worker_row = NULL, pool_row = NULL;
        CtlProcess p = {};
        int in_fd = -1;

        test_daemon_start(&f->daemon, &f->bus, config, true);
        result = test_run_text(&f->daemon, "echo", "x", 0);
        assert_string_equal(result, "x");

        cmd = g_strdup_printf("%s --bus=%s --no-color top", getenv("APIARYCTL"), f->bus.address);
        if (!g_spawn_async_with_pipes(NULL, (char *[]) { (char *) "script", (char *) "-qec", cmd, (char *) "/dev/null", NULL },
                                      NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH, NULL, NULL, &p.pid, &in_fd,
                                      &p.out_fd, &p.err_fd, &e))
                fail_msg("cannot run script: %s", e->message);
        p.out = g_string_new(NULL);
        p.err = g_string_new(NULL);

        /* The first frame has no rates yet; the second has them. Each begins with the clear and
         * its header line; what follows the second header is the second frame's. */
        assert_true(read_until(p.out_fd, p.out, "(q quits)"));
        assert_non_null(strstr(p.out->str, "\033[H\033[2J"));
        g_string_truncate(p.out, 0);
        assert_true(read_until(p.out_fd, p.out, "(q quits)"));
        g_string_erase(p.out, 0, g_strrstr(p.out->str, "(q quits)") - p.out->str);
        assert_true(read_until(p.out_fd, p.out, "control 0"));
        pool_row = g_regex_new("\\becho +running +2/2 +[0-9]+\\.[0-9] +0 +0 +1 +0 +0\\b", 0, 0, NULL);
        worker_row = g_regex_new("\\becho +[01] +[0-9]+ +ready +[0-9]+\\.[0-9] +[0-9.]+[BKMG] +[0-9a-z]+ +1\\r", 0, 0, NULL);
        if (!g_regex_match(pool_row, p.out->str, 0, NULL) || !g_regex_match(worker_row, p.out->str, 0, NULL))
                fail_msg("the second frame of top lacks the echo pool's or worker's row:\n%s", p.out->str);

        assert_int_equal(write(in_fd, "q", 1), 1);
        close(in_fd);
        assert_int_equal(ctl_finish(&p), 0);
        assert_true(g_str_has_suffix(p.out->str, "\033[?25h"));
        ctl_process_free(&p);
}

/* A start that ends in failure is a failure of start, with the reason. */
static void test_start_fails(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        Ctl c = {};

        test_daemon_start(d, &f->bus, "[Pool bad]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\n"
                                     "StartLimitBurst=0\nRestart=no\nFailedRetrySec=infinity\n"
                                     "[Pool bad Plugin]\nInitMode=exit\nExitCode=3\n", true);
        CTL(f, &c, "stop", "bad");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        CTL(f, &c, "start", "bad");
        assert_int_equal(c.status, 1);
        assert_non_null(strstr(c.err, "Failed to start pool \"bad\": Pool \"bad\" failed: exited with status 3"));
        ctl_clear(&c);
}

static void test_access_denied(void **state) {
        static const char *const restricted =
                "[Apiary]\nControlUsers=daemon\nSubmitUsers=daemon\n"
                "[Pool echo]\nPlugin=@PLUGINS@/echo.so\nWorkers=1\n";
        Fixture *f = *state;
        CtlProcess p = {};
        Ctl c = {};

        if (geteuid() != 0)
                skip();
        test_daemon_start(&f->daemon, &f->bus, restricted, true);

        /* nobody (65534) may look, but neither control nor submit: 3. */
        CTL_AS(f, 65534, &c, "pools");
        assert_int_equal(c.status, 0);
        assert_non_null(strstr(c.out, "echo "));
        ctl_clear(&c);
        CTL_AS(f, 65534, &c, "pause", "echo");
        assert_int_equal(c.status, 3);
        assert_non_null(strstr(c.err, "may not call Pause()"));
        ctl_clear(&c);
        CTL_AS(f, 65534, &c, "-v", "run", "echo", "x");
        assert_int_equal(c.status, 3);
        assert_non_null(strstr(c.err, "org.freedesktop.DBus.Error.AccessDenied"));
        ctl_clear(&c);
        assert_false(pool_paused(&f->daemon, "echo"));

        /* wait must monitor the bus (TaskFinished goes to the submitter only): not as nobody. */
        CTL_AS(f, 65534, &c, "--timeout=1s", "wait", "1");
        assert_int_equal(c.status, 3);
        assert_non_null(strstr(c.err, "submit --wait"));
        ctl_clear(&c);

        /* monitor as nobody: the broadcast signals only. */
        ctl_spawn_as(f, 65534, &p, (const char *const[]) { "-v", "monitor", NULL });
        assert_true(read_until(p.err_fd, p.err, "Monitoring"));
        assert_non_null(strstr(p.err->str, "Not allowed to monitor"));
        CTL(f, &c, "restart", "echo/0");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        assert_true(read_until(p.out_fd, p.out, " worker echo/0 PID="));
        kill(p.pid, SIGTERM);
        assert_int_equal(ctl_finish(&p), 0);
        ctl_process_free(&p);

        /* daemon (1) may do both, and follow its own tasks. */
        CTL_AS(f, 1, &c, "submit", "--wait", "echo", "mine");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out, "mine");
        ctl_clear(&c);
        CTL_AS(f, 1, &c, "run", "echo", "allowed");
        assert_int_equal(c.status, 0);
        assert_string_equal(c.out, "allowed");
        ctl_clear(&c);
}

/* --private: the same commands peer-to-peer on apiaryd's private socket, with the same
 * authorization, and what needs the bus said so. */
static void test_private_socket(void **state) {
        Fixture *f = *state;
        g_autofree char *path = g_strdup_printf("%s/apiary-private", f->bus.dir);
        g_autofree char *conf = g_strdup_printf("[Apiary]\nPrivateSocket=%s\nSubmitUsers=daemon\n%s", path, config);
        g_autofree char *opt = g_strdup_printf("--private=%s", path);
        Ctl c = {};

        test_daemon_start(&f->daemon, &f->bus, conf, true);

        CTL(f, &c, opt, "run", "echo", "peer");
        assert_int_equal(c.status, 0);
        assert_int_equal(c.out_size, 4);
        assert_memory_equal(c.out, "peer", 4);
        ctl_clear(&c);

        CTL(f, &c, opt, "submit", "--wait", "echo", "a", "b");
        assert_int_equal(c.status, 0);
        assert_non_null(strstr(c.out, "done \"a\""));
        assert_non_null(strstr(c.out, "done \"b\""));
        ctl_clear(&c);

        CTL(f, &c, opt, "pools");
        assert_int_equal(c.status, 0);
        assert_non_null(strstr(c.out, "echo "));
        ctl_clear(&c);

        /* Waiting for the effect works without the bus daemon too (Subscribe()). */
        CTL(f, &c, opt, "scale", "echo", "3");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        {
                unsigned three = 3;
                assert_true(pool_has_workers(&f->daemon, &three));
        }

        /* Others' TaskFinished never reach a peer: wait needs the bus. */
        CTL(f, &c, opt, "--timeout=1s", "wait", "1");
        assert_int_equal(c.status, 2);
        assert_non_null(strstr(c.err, "submitter only"));
        ctl_clear(&c);

        if (geteuid() == 0) {
                /* A user that may submit is served here as on the bus... */
                CTL_AS(f, 1, &c, opt, "run", "echo", "daemon's");
                assert_int_equal(c.status, 0);
                assert_string_equal(c.out, "daemon's");
                ctl_clear(&c);
                /* ... one that may neither submit nor control is turned away before it can send
                 * anything, and told where to go instead. */
                CTL_AS(f, 65534, &c, opt, "status");
                assert_int_equal(c.status, 3);
                assert_non_null(strstr(c.err, "apiaryd turned the connection away"));
                assert_non_null(strstr(c.err, "without --private, apiaryctl reads the state on the bus"));
                ctl_clear(&c);
        }
}

static void test_monitor(void **state) {
        Fixture *f = *state;
        CtlProcess p = {}, w = {};
        Ctl c = {};

        test_daemon_start(&f->daemon, &f->bus, config, true);

        ctl_spawn(f, &p, (const char *const[]) { "-v", "monitor", NULL });
        assert_true(read_until(p.err_fd, p.err, "Monitoring"));

        CTL(f, &c, "submit", "echo", "seen");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        assert_true(read_until(p.out_fd, p.out, " echo done \"seen\"\n"));

        CTL(f, &c, "restart", "control/0");
        assert_int_equal(c.status, 0);
        ctl_clear(&c);
        assert_true(read_until(p.out_fd, p.out, " worker control/0 PID="));
        /* Times as local time, not microseconds since the epoch. */
        assert_true(read_until(p.out_fd, p.out, " PlannedRestarts=1 StartedAt=\"20"));
        assert_true(read_until(p.out_fd, p.out, " pool control State="));

        kill(p.pid, SIGINT);
        assert_int_equal(ctl_finish(&p), 0);
        ctl_process_free(&p);

        /* apiaryd goes: wait gives up (5), monitor says so and goes on, until the bus goes too. */
        ctl_spawn(f, &w, (const char *const[]) { "-v", "wait", "999999", NULL });
        assert_true(read_until(w.err_fd, w.err, "Waiting"));
        ctl_spawn(f, &p, (const char *const[]) { "-v", "monitor", NULL });
        assert_true(read_until(p.err_fd, p.err, "Monitoring"));
        assert_int_equal(test_daemon_kill_and_wait(&f->daemon, SIGTERM), 0);
        assert_int_equal(ctl_finish(&w), 5);
        assert_non_null(strstr(w.err->str, "apiaryd left the bus before task 999999 finished."));
        assert_true(read_until(p.out_fd, p.out, " apiaryd left the bus\n"));
        test_bus_stop(&f->bus);
        assert_int_equal(ctl_finish(&p), 5);
        assert_non_null(strstr(p.err->str, "Lost the connection to the bus."));
        ctl_process_free(&w);
        ctl_process_free(&p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_run_and_submit, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_wait, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_status_pools_workers, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_show_and_is_active, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_completion, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_control, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_reload, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_start_fails, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_audit_log, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_progress_on_a_tty, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_top_on_a_tty, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_access_denied, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_monitor, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_private_socket, test_fixture_setup, test_fixture_teardown),
        };

        if (getenv("TEST_FILTER"))
                cmocka_set_test_filter(getenv("TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
