/* SPDX-License-Identifier: MIT */
/*
 * The security findings of issue 13, one regression test each: a real apiaryd on a real bus,
 * attacked by real unprivileged processes (forked here, then setresuid() to nobody). Needs root
 * (skipped otherwise). docs/security.md names the test that proves each claim.
 */
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/harness.h"
#include "util/macro.h"

#define POOL_IFACE "org.apiary.Apiary1.Pool"
#define MANAGER_IFACE "org.apiary.Apiary1.Manager"
#define NOBODY 65534
#define INVALID_OPTION "org.apiary.Apiary1.Error.InvalidOption"
#define CONTROL_GID 4242        /* a group nobody is in: ControlGroups= of the tests below */

typedef TestFixture Fixture;

static char *socket_path(Fixture *f) {
        return g_strdup_printf("%s/apiary-private", f->bus.dir);
}

static char *make_config(Fixture *f, const char *extra_apiary, const char *pools) {
        g_autofree char *path = socket_path(f);

        return g_strdup_printf("[Apiary]\nPluginDirectory=@PLUGINS@\nPrivateSocket=%s\n%s%s", path,
                               strempty(extra_apiary), pools ?: "[Pool echo]\nPlugin=echo.so\nWorkers=1\n");
}

/* apiaryd with an echo pool (or POOLS), serving privately on socket_path() too, its log kept. */
static void start(Fixture *f, const char *extra_apiary, const char *pools) {
        g_autofree char *config = make_config(f, extra_apiary, pools);

        test_daemon_start_logged(&f->daemon, &f->bus, config, true);
}

/* What a forked attacker does, and how it went: its exit status. */
enum {
        CALL_OK = 0,
        CALL_DENIED = 1,        /* org.freedesktop.DBus.Error.AccessDenied */
        CALL_OTHER_ERROR = 2,
        CALL_SETUP_FAILED = 3,
};

typedef struct Attack {
        const char *address;
        bool bus_client;                /* a bus (Hello) or a peer-to-peer connection */
        gid_t groups_at_connect[4];     /* its supplementary groups when it connects */
        size_t n_groups_at_connect;
        gid_t groups_later[4];          /* ... and when it calls (it keeps CAP_SETGID for that) */
        size_t n_groups_later;
        bool change_groups;
        const char *forged_sender;      /* written into the SENDER field of its call */
        const char *path, *interface, *member;
} Attack;

static int keep_cap_setgid(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct data[2] = {};

        data[0].effective = data[0].permitted = 1u << CAP_SETGID;
        return (int) syscall(SYS_capset, &h, data);
}

static _noreturn_ void attack_child(const Attack *a) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        sd_bus *bus = NULL;

        if (setgroups(a->n_groups_at_connect, a->groups_at_connect) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0)
                _exit(CALL_SETUP_FAILED);
        if (a->change_groups && prctl(PR_SET_KEEPCAPS, 1) < 0)
                _exit(CALL_SETUP_FAILED);
        if (setresuid(NOBODY, NOBODY, NOBODY) < 0)
                _exit(CALL_SETUP_FAILED);
        if (a->change_groups && keep_cap_setgid() < 0)
                _exit(CALL_SETUP_FAILED);

        if (sd_bus_new(&bus) < 0 || sd_bus_set_address(bus, a->address) < 0 ||
            sd_bus_set_bus_client(bus, a->bus_client) < 0 || sd_bus_start(bus) < 0)
                _exit(CALL_SETUP_FAILED);
        /* Connected (and, on the bus, registered): now it gains a group it did not have. */
        if (a->change_groups && setgroups(a->n_groups_later, a->groups_later) < 0)
                _exit(CALL_SETUP_FAILED);

        if (sd_bus_message_new_method_call(bus, &m, a->bus_client ? "org.apiary.Apiary1" : NULL, a->path,
                                           a->interface, a->member) < 0)
                _exit(CALL_SETUP_FAILED);
        if (a->forged_sender && sd_bus_message_set_sender(m, a->forged_sender) < 0)
                _exit(CALL_SETUP_FAILED);
        if (sd_bus_call(bus, m, 10 * USEC_PER_SEC, &error, &reply) >= 0)
                _exit(CALL_OK);
        if (sd_bus_error_has_name(&error, SD_BUS_ERROR_ACCESS_DENIED))
                _exit(CALL_DENIED);
        fprintf(stderr, "attacker: %s: %s\n", error.name, error.message);
        _exit(CALL_OTHER_ERROR);
}

static int attack(const Attack *a) {
        int status;
        pid_t pid;

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
                attack_child(a);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_not_equal(WEXITSTATUS(status), CALL_SETUP_FAILED);
        return WEXITSTATUS(status);
}

static bool pool_paused(TestDaemon *d, const char *pool) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *path = test_pool_path(pool);
        int b = 0;

        assert_true(sd_bus_get_property_trivial(d->bus, "org.apiary.Apiary1", path, POOL_IFACE, "Paused", &error, 'b',
                                                &b) >= 0);
        return b;
}

static bool worker_busy(TestDaemon *d, const void *userdata) {
        g_autofree char *s = test_worker_state(d, userdata, 0);

        return streq(s, "busy");
}

static void call_pool(TestDaemon *d, const char *pool, const char *member) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *path = test_pool_path(pool);

        assert_true(sd_bus_call_method(d->bus, "org.apiary.Apiary1", path, POOL_IFACE, member, &error, NULL, "") >= 0);
}

/* Finding 1: a peer on the private socket that writes a root bus client's unique name into
 * SENDER is still itself: nobody (a submitter, so that it is served there), and denied. */
static void test_forged_sender_on_private_socket(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = socket_path(f), *address = g_strdup_printf("unix:path=%s", path);
        g_autofree char *pool = test_pool_path("echo"), *log = NULL;
        const char *root_name;
        Attack a = { .address = address, .path = pool, .interface = POOL_IFACE, .member = "Pause" };

        if (geteuid() != 0)
                skip();
        start(f, "SubmitUsers=nobody\n", NULL);

        /* Root, on the bus, makes one control call and stays connected: its credentials are known. */
        call_pool(d, "echo", "Resume");
        assert_true(sd_bus_get_unique_name(d->bus, &root_name) >= 0);

        a.forged_sender = root_name;
        assert_int_equal(attack(&a), CALL_DENIED);
        assert_false(pool_paused(d, "echo"));

        a.member = "Stop";
        assert_int_equal(attack(&a), CALL_DENIED);
        g_autofree char *state_s = test_pool_state(d, "echo");
        assert_string_equal(state_s, "running");

        /* And the log names the real caller, not root, and says it was refused. */
        log = test_daemon_log(d);
        assert_null(strstr(log, "Pause() on pool echo called by"));
        assert_non_null(strstr(log, "Pause() on pool echo by private connection "));
        assert_non_null(strstr(log, " refused: org.freedesktop.DBus.Error.AccessDenied: User 65534 may not call "
                                    "Pause()"));
        call_pool(d, "echo", "Pause");
        g_free(log);
        log = test_daemon_wait_log(d, "Pause() on pool echo called by", TEST_TIMEOUT_USEC);
        assert_non_null(strstr(log, root_name));
        assert_non_null(strstr(log, "(UID 0, PID "));
}

/* Finding 6: groups are those of the moment of connecting, on the bus and on the private
 * socket: a process that gains a group later does not gain ControlGroups= rights with it. */
static void test_groups_as_of_connecting(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = socket_path(f), *private = g_strdup_printf("unix:path=%s", path);
        g_autofree char *pool = test_pool_path("echo");
        /* A submitter, so that the private socket serves it at all. */
        g_autofree char *extra = g_strdup_printf("ControlGroups=%u\nSubmitUsers=nobody\n", CONTROL_GID);
        Attack a = { .path = pool, .interface = POOL_IFACE, .member = "Pause" };

        if (geteuid() != 0)
                skip();
        start(f, extra, NULL);

        for (int i = 0; i < 2; i++) {
                a.address = i == 0 ? f->bus.address : private;
                a.bus_client = i == 0;

                /* Not a member when it connected, a member when it calls: denied. */
                a.n_groups_at_connect = 0;
                a.change_groups = true;
                a.groups_later[0] = CONTROL_GID;
                a.n_groups_later = 1;
                assert_int_equal(attack(&a), CALL_DENIED);
                assert_false(pool_paused(d, "echo"));

                /* A member when it connected, none later: allowed (what counts is the connect). */
                a.groups_at_connect[0] = CONTROL_GID;
                a.n_groups_at_connect = 1;
                a.n_groups_later = 0;
                assert_int_equal(attack(&a), CALL_OK);
                assert_true(pool_paused(d, "echo"));
                call_pool(d, "echo", "Resume");
        }
}

/* Finding 10: a batch larger than MaxTasksPerCaller= from a caller with no task yet is refused
 * with the right count (it read freed memory, and aborted an ASan build). */
static void test_batch_over_caller_limit(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

        start(f, "MaxTasksPerCaller=4\n", NULL);
        for (int i = 0; i < 2; i++) {
                g_autofree char *path = socket_path(f);

                if (i == 1)
                        test_daemon_connect_private(d, path);
                m = sd_bus_message_unref(m);
                sd_bus_error_free(&error);
                assert_true(sd_bus_message_new_method_call(d->bus, &m, d->private ? NULL : "org.apiary.Apiary1",
                                                           "/org/apiary/Apiary1", MANAGER_IFACE, "SubmitBatch") >= 0);
                assert_true(sd_bus_message_append(m, "s", "echo") >= 0);
                assert_true(sd_bus_message_open_container(m, 'a', "ay") >= 0);
                for (int k = 0; k < 5; k++)
                        assert_true(sd_bus_message_append_array(m, 'y', "x", 1) >= 0);
                assert_true(sd_bus_message_close_container(m) >= 0);
                assert_true(sd_bus_message_append(m, "a{sv}", 0) >= 0);
                assert_true(sd_bus_call(d->bus, m, TEST_TIMEOUT_USEC, &error, NULL) < 0);
                assert_string_equal(error.name, "org.apiary.Apiary1.Error.TooManyTasks");
                assert_non_null(strstr(error.message, "has no unfinished task and asked for 5; MaxTasksPerCaller=4."));
        }
        assert_int_equal(test_get_manager_u64(d, "TasksSubmitted"), 0);
}

/* Finding 11: the payload bytes of unfinished tasks are bounded per caller UID (MaxBytesPerCaller=,
 * over all its connections), and those of queued tasks per pool (QueueBytesLimit=); past either,
 * the call is refused with an error that names the limit, and nothing is queued. */
static void test_byte_budgets(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *path = socket_path(f), *peer = g_strdup_printf("peer:unix:path=%s", path);
        g_autofree char *pool = test_pool_path("echo"), *out = NULL, *big = g_malloc(64 * 1024);
        g_autofree char *k30 = g_strnfill(30 * 1024, 'b'), *k40 = g_strnfill(40 * 1024, 'c');
        g_autofree char *k24 = g_strnfill(24 * 1024, 'd');
        void *result = NULL;
        size_t size;

        start(f, "MaxBytesPerCaller=64K\nSubmitUsers=nobody\n",
              "[Pool echo]\nPlugin=echo.so\nWorkers=1\nQueueBytesLimit=100K\n");
        assert_int_equal(test_get_u64(d, pool, POOL_IFACE, "QueueBytesLimit"), 100 * 1024);
        call_pool(d, "echo", "Pause");          /* so that what is submitted stays queued */

        /* Root's 40K fit its 64K; 30K more do not, from another connection either. */
        memset(big, 'a', 64 * 1024);
        assert_true(test_submit(d, "echo", big, 40 * 1024) > 0);
        assert_int_equal(test_client_at(peer, 0, &out, (const char *[]) { "submit", "echo", k30, NULL }), 1);
        assert_string_equal(out, "org.apiary.Apiary1.Error.TooManyTasks: UID 0's unfinished tasks hold 40960 bytes "
                                 "and this call brings 30720 more; MaxBytesPerCaller=64K.");
        g_clear_pointer(&out, g_free);

        /* Nobody has a share of its own; then the pool's 100K are what is short. */
        assert_int_equal(test_client(&f->bus, NOBODY, &out, (const char *[]) { "submit", "echo", k40, NULL }), 0);
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client(&f->bus, NOBODY, &out, (const char *[]) { "submit", "echo", k24, NULL }), 1);
        assert_string_equal(out, "org.apiary.Apiary1.Error.QueueFull: Pool \"echo\"'s queued tasks hold 81920 "
                                 "bytes and this call brings 24576 more (QueueBytesLimit=100K).");
        assert_int_equal(test_get_u64(d, pool, POOL_IFACE, "QueuedBytes"), 80 * 1024);
        assert_int_equal(test_get_manager_u64(d, "TasksSubmitted"), 2);

        /* Once they have run (a Run queued behind them returns last), the bytes are free again:
         * root's whole 64K fit at once. */
        call_pool(d, "echo", "Resume");
        assert_int_equal(test_run(d, "echo", "z", 1, 0, &result, &size, &error), 0);
        free(result);
        assert_int_equal(test_get_u64(d, pool, POOL_IFACE, "QueuedBytes"), 0);
        assert_true(test_submit(d, "echo", big, 64 * 1024) > 0);
}

/* Finding 7: a User= worker dies with a SIGKILLed apiaryd even while it is stuck in a task and
 * cannot notice its link closing (setresuid() had cleared its PR_SET_PDEATHSIG). */
static void test_user_workers_die_with_apiaryd(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        pid_t pid;

        if (geteuid() != 0)
                skip();
        /* Not logged: a surviving worker would hold the log's pipe open, and fail the wait for
         * apiaryd's exit before the check below could say what is wrong. */
        g_autofree char *config = make_config(f, NULL,
                                              "[Pool hung]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nUser=nobody\n");
        test_daemon_start(d, &f->bus, config, true);
        pid = test_worker_pid(d, "hung", 0);
        (void) test_submit(d, "hung", "hang", 4);
        test_wait_until(d, worker_busy, "hung", TEST_TIMEOUT_USEC, "the worker running the task");

        assert_int_equal(test_daemon_kill_and_wait(d, SIGKILL), 128 + SIGKILL);
        if (!test_wait_pid_gone(pid, 5 * USEC_PER_SEC)) {
                (void) kill(pid, SIGKILL);
                fail_msg("User=nobody worker %i outlived its SIGKILLed apiaryd", (int) pid);
        }
}

static void reload(TestDaemon *d) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;

        if (sd_bus_call_method(d->bus, "org.apiary.Apiary1", "/org/apiary/Apiary1", MANAGER_IFACE, "Reload", &error,
                               NULL, "") < 0)
                fail_msg("Reload: %s: %s", error.name, error.message);
}

/* Run(POOL, TEXT) on an echo pool: TEXT comes back. */
static void run_ok(TestDaemon *d, const char *pool, const char *text, usec_t timeout_opt) {
        g_autofree char *result = test_run_text(d, pool, text, timeout_opt);

        assert_string_equal(result, text);
}

/* Finding 9: a reload that lowers MaxTasksPerWorker= below what a worker has run recycles it;
 * it does not sit "ready" forever with the queue waiting. */
static void test_lowered_max_tasks_per_worker(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        pid_t old;

        start(f, NULL, "[Pool echo]\nPlugin=echo.so\nWorkers=1\nMaxTasksPerWorker=100\n");
        old = test_worker_pid(d, "echo", 0);
        for (int i = 0; i < 5; i++)
                run_ok(d, "echo", "before", 0);
        assert_int_equal(test_worker_pid(d, "echo", 0), old);

        g_autofree char *config = make_config(f, NULL, "[Pool echo]\nPlugin=echo.so\nWorkers=1\nMaxTasksPerWorker=3\n");
        test_daemon_write_config(d, config);
        reload(d);
        run_ok(d, "echo", "after", 0);
        assert_int_not_equal(test_worker_pid(d, "echo", 0), old);
}

/* Finding 14: a task's "timeout" may shorten the pool's TaskTimeoutSec=, not lift it (a huge
 * one used to fail to arm, and the task ran with no timeout at all). */
static void test_task_timeout_option_is_bounded(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;

        start(f, NULL,
              "[Pool bounded]\nPlugin=echo.so\nWorkers=1\nTaskTimeoutSec=2s\n"
              "[Pool open]\nPlugin=echo.so\nWorkers=1\n");
        g_free(test_run_refused(d, "bounded", "x", USEC_PER_HOUR, INVALID_OPTION,
                                "Option \"timeout\" is 1h, longer than pool \"bounded\"'s TaskTimeoutSec=2s"));
        g_free(test_run_refused(d, "bounded", "x", UINT64_MAX - 1, INVALID_OPTION, "TaskTimeoutSec=2s"));
        g_free(test_run_refused(d, "open", "x", UINT64_C(1) << 63 | 1, INVALID_OPTION,
                                "more than the 9223372036854775808 µs a timer can be armed for"));
        run_ok(d, "bounded", "shorter", USEC_PER_SEC);
        run_ok(d, "bounded", "as long", 2 * USEC_PER_SEC);
        run_ok(d, "open", "a year", 365 * USEC_PER_DAY);
        assert_int_equal(test_get_manager_u64(d, "TasksSubmitted"), 3);
}

/* A client of the private socket that sends calls and never reads the replies. Returns the
 * connection (its calls all written, unless MAY_BE_CUT_OFF and apiaryd closed it first). */
static sd_bus *connect_non_reader(Fixture *f, unsigned n_calls, bool may_be_cut_off) {
        g_autofree char *path = socket_path(f), *address = g_strdup_printf("unix:path=%s", path);
        sd_bus *bus = NULL;

        assert_true(sd_bus_new(&bus) >= 0);
        assert_true(sd_bus_set_address(bus, address) >= 0);
        assert_true(sd_bus_start(bus) >= 0);
        for (unsigned i = 0; i < n_calls; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

                assert_true(sd_bus_message_new_method_call(bus, &m, NULL, "/org/apiary/Apiary1",
                                                           "org.freedesktop.DBus.ObjectManager",
                                                           "GetManagedObjects") >= 0);
                /* With a cookie: sd-bus marks a call sent without one as wanting no reply. */
                if (sd_bus_send(bus, m, &(uint64_t) { 0 }) < 0 && may_be_cut_off)
                        return bus;
                assert_true(sd_bus_is_open(bus) > 0);
        }
        if (sd_bus_flush(bus) < 0)
                assert_true(may_be_cut_off);
        return bus;
}

/* Waits until apiaryd holds replies for BUS that the socket did not take: the kernel queues
 * megabytes for a stream socket, so what tells is apiaryd's memory, grown by KIB since BASE. */
static void wait_replies_held(TestDaemon *d, sd_bus *bus, uint64_t base, uint64_t kib) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + TEST_TIMEOUT_USEC;
        int n = 0;

        for (;;) {
                assert_int_equal(ioctl(sd_bus_get_fd(bus), SIOCINQ, &n), 0);
                if (n > 0 && test_proc_rss_kib(d->pid) >= base + kib)
                        return;
                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        fail_msg("apiaryd did not answer the calls (%i bytes to read, RSS %" PRIu64
                                 " KiB, was %" PRIu64 ")", n, test_proc_rss_kib(d->pid), base);
                (void) usleep(10 * 1000);
        }
}

/* Finding 5: a peer that does not read cannot hold apiaryd's exit: SIGTERM still ends it, with
 * status 0, within a bounded time. */
static void test_exit_with_a_peer_that_does_not_read(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *sloth = NULL;
        uint64_t base;

        /* 64 workers: each reply is tens of KiB, and 1,000 of them more than the socket takes,
         * yet fewer than would get the peer disconnected (see the next test). Under valgrind,
         * making those replies takes apiaryd so long that the bus daemon gives up on it. */
        if (test_under_wrapper())
                skip();
        start(f, NULL, "[Pool echo]\nPlugin=echo.so\nWorkers=32\n[Pool echo2]\nPlugin=echo.so\nWorkers=32\n");
        base = test_proc_rss_kib(d->pid);
        sloth = connect_non_reader(f, 1000, false);
        run_ok(d, "echo", "still serving", 0);
        wait_replies_held(d, sloth, base, 4096);
        assert_int_equal(test_daemon_kill_and_wait(d, SIGTERM), 0);
        sloth = sd_bus_close_unref(sloth);
}

/* Finding 3 (what apiaryd sends): a peer that sends calls and never reads the replies is
 * disconnected once 1,024 are queued for it; apiaryd does not grow without bound. */
static void test_peer_that_does_not_read_is_cut_off(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        _cleanup_(sd_bus_close_unrefp) sd_bus *sloth = NULL;
        g_autofree char *line = NULL;
        uint64_t base;

        start(f, NULL, NULL);
        base = test_proc_rss_kib(d->pid);
        sloth = connect_non_reader(f, 50000, true);
        run_ok(d, "echo", "still serving", 0);
        line = test_daemon_wait_log(d, "does not read its replies", TEST_TIMEOUT_USEC);
        assert_non_null(strstr(line, "(UID 0, PID"));
        /* 1,024 replies of about 1 KiB at most, whatever the 50,000 calls. (ASan keeps freed
         * memory in quarantine, valgrind has its own heap: the figure means nothing there.) */
        if (!test_under_asan() && !test_under_wrapper() && test_proc_rss_kib(d->pid) > base + 16 * 1024)
                fail_msg("apiaryd grew from %" PRIu64 " to %" PRIu64 " KiB", base, test_proc_rss_kib(d->pid));
        run_ok(d, "echo", "still serving", 0);
}

/* A process of UID that connects N times to the private socket, never handshakes, and then
 * tells through its exit status how many of its connections apiaryd closed within 10 s (the
 * handshake deadline is 5 s). Signals the parent through READY_FD once connected. */
static _noreturn_ void hog_connections(const char *path, uid_t uid, unsigned n, int ready_fd) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fds[256];
        unsigned closed = 0;

        if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
                _exit(255);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        for (unsigned i = 0; i < n; i++) {
                fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fds[i] < 0 || connect(fds[i], (struct sockaddr *) &sa, sizeof(sa)) < 0)
                        _exit(254);
        }
        (void) write(ready_fd, "x", 1);
        for (unsigned i = 0; i < n; i++) {
                struct pollfd pfd = { .fd = fds[i], .events = POLLIN };
                char c;

                if (poll(&pfd, 1, 10000) > 0 && read(fds[i], &c, 1) == 0)
                        closed++;
        }
        _exit((int) MIN(closed, 250u));
}

/* As UID: connects to PATH, authenticates, and sends the start of one method call that says its
 * body is 100 MiB, then as much of that body as gets through, up to 64 MiB. Exits with how many
 * MiB of it went (0 if the connection was closed first), or 255 if it could not begin. */
static _noreturn_ void half_send_message(const char *path, uid_t uid) {
        static const char auth[] = "\0AUTH EXTERNAL 3635353334\r\nBEGIN\r\n";     /* "65534" in hex */
        const uint32_t header[4] = { 'l' | 1 << 8 | 1 << 24, 100u << 20, 1, 0 };  /* method call, v1 */
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = 10 };
        size_t chunk = 1 << 20, sent = 0;
        char *body = calloc(1, chunk);
        int fd;

        if (!body || setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
                _exit(255);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
            connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                _exit(255);
        if (send(fd, auth, sizeof(auth) - 1, MSG_NOSIGNAL) < 0 || send(fd, header, sizeof(header), MSG_NOSIGNAL) < 0)
                _exit(0);
        while (sent < 64u << 20) {
                ssize_t k = send(fd, body, chunk, MSG_NOSIGNAL);

                if (k <= 0)
                        break;
                sent += (size_t) k;
        }
        _exit((int) (sent >> 20));
}

/* Finding 3, incoming: sd-bus reads a message whole (up to 128 MiB) before apiaryd can look at
 * it, so the private socket serves only those who may submit or control. Anyone else is turned
 * away as it connects: a half-sent 100 MiB call does not get its body into apiaryd (it did, and
 * three of them pinned 300 MB), and the log says who and why. */
static void test_private_socket_turns_away_the_unauthorized(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = socket_path(f), *line = NULL, *state_s = NULL;
        int status;
        pid_t pid;

        if (geteuid() != 0)
                skip();
        start(f, "SubmitUsers=4243\n", NULL);
        for (int i = 0; i < 3; i++) {
                pid = fork();
                assert_true(pid >= 0);
                if (pid == 0)
                        half_send_message(path, NOBODY);
                assert_int_equal(waitpid(pid, &status, 0), pid);
                assert_true(WIFEXITED(status));
                /* What the kernel's socket buffers take, under 1 MiB, never the 64 MiB. */
                assert_int_equal(WEXITSTATUS(status), 0);
        }
        line = test_daemon_wait_log(d, "(UID 65534, PID", TEST_TIMEOUT_USEC);
        assert_non_null(strstr(line, "it may neither submit tasks nor control"));
        state_s = test_pool_state(d, "echo");
        assert_string_equal(state_s, "running");
}

/* Finding 4: one user cannot take every connection of the private socket, nor keep them
 * without a handshake; another user, and root, still get in. */
static void test_connection_limits(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = socket_path(f), *peer = g_strdup_printf("peer:unix:path=%s", path);
        g_autofree char *out = NULL, *line = NULL;
        int pipefd[2], status;
        pid_t pid;
        char c;

        if (geteuid() != 0)
                skip();
        start(f, "SubmitUsers=nobody 4243\n", NULL);
        assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
                hog_connections(path, NOBODY, 100, pipefd[1]);
        close(pipefd[1]);
        assert_int_equal(read(pipefd[0], &c, 1), 1);
        close(pipefd[0]);

        line = test_daemon_wait_log(d, "UID 65534 has 64 connections open already", TEST_TIMEOUT_USEC);
        /* Another user, and root, are not locked out. */
        assert_int_equal(test_client_at(peer, 4243, &out, (const char *[]) { "get", "State", NULL }), 0);
        assert_string_equal(out, "running");
        g_clear_pointer(&out, g_free);
        assert_int_equal(test_client_at(peer, 0, &out, (const char *[]) { "run", "echo", "root", NULL }), 0);
        assert_string_equal(out, "root");

        /* All 100 are closed: 36 at once, 64 at the handshake deadline. */
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 100);
        g_free(line);
        line = test_daemon_wait_log(d, "no handshake within 5s", TEST_TIMEOUT_USEC);
        assert_non_null(strstr(line, "(UID 65534, PID"));
}

/* Finding 4: when accept() fails (out of descriptors), apiaryd backs off instead of spinning
 * and logging in a loop, and accepts again once it can. */
static void test_accept_errors_back_off(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *path = socket_path(f), *address = g_strdup_printf("unix:path=%s", path);
        struct rlimit old, low;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fds[8];
        unsigned lines = 0;

        /* valgrind keeps descriptors of its own below the limit it shows: it cannot be set here. */
        if (test_under_wrapper())
                skip();
        start(f, NULL, NULL);
        assert_int_equal(prlimit(d->pid, RLIMIT_NOFILE, NULL, &old), 0);
        low = (struct rlimit) { .rlim_cur = test_proc_count_fds(d->pid), .rlim_max = old.rlim_max };
        assert_int_equal(prlimit(d->pid, RLIMIT_NOFILE, &low, NULL), 0);

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
                fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                assert_int_equal(connect(fds[i], (struct sockaddr *) &sa, sizeof(sa)), 0);
        }
        g_free(test_daemon_wait_log(d, "Failed to accept a private connection", TEST_TIMEOUT_USEC));
        (void) usleep(1000 * 1000);     /* a second of it: 100 ms, 200, 400, 800: 4 or 5 lines */
        g_autofree char *log = test_daemon_log(d);
        for (const char *p = log; (p = strstr(p, "Failed to accept")); p++)
                lines++;
        if (lines > 6)
                fail_msg("%u lines of accept() failures in a second", lines);

        /* Descriptors again: the waiting connections are taken, and served. */
        assert_int_equal(prlimit(d->pid, RLIMIT_NOFILE, &old, NULL), 0);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                close(fds[i]);
        test_daemon_connect_private(d, path);
        run_ok(d, "echo", "accepted again", 0);
}

/* Finding 15 (and docs/tasks.md): tasks still running when StopTimeoutSec= kills the workers of a
 * stopped pool fail with "pool stopped"; they do not go back to a queue nobody serves. */
static void test_stop_timeout_fails_running_tasks(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        uint64_t id;

        start(f, NULL, "[Pool hung]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nStopTimeoutSec=200ms\n");
        test_collect_results(d);
        id = test_submit(d, "hung", "hang", 4);
        test_wait_until(d, worker_busy, "hung", TEST_TIMEOUT_USEC, "the worker running the task");
        call_pool(d, "hung", "Stop");
        test_wait_results(d, 1);
        assert_false(test_result(d, id)->ok);
        assert_string_equal(test_result(d, id)->data, "pool stopped");
        assert_int_equal(test_get_manager_u64(d, "TasksQueued"), 0);
}

static bool pool_worker_ready(TestDaemon *d, const void *userdata) {
        g_autofree char *s = test_worker_state(d, userdata, 0);

        return streq(s, "ready");
}

/* Finding 2: a zygote (plugin code, here as nobody) that answers Fork() with the PID of some
 * other process of root's is not believed: that process lives on, apiaryd stops the zygote,
 * spawns its workers instead, and serves on. */
static void test_zygote_pid_is_verified(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        g_autofree char *real = g_strdup(getenv("APIARY_WORKER_PATH"));
        g_autofree char *source = g_path_get_dirname(getenv("APIARY_TEST_CLIENT"));
        g_autofree char *wrapper = g_strdup_printf("%s/plugins/lying-zygote-worker.sh", source);
        g_autofree char *preload = g_strdup_printf("%s/lying-zygote.so", getenv("APIARY_TEST_PLUGIN_DIR"));
        g_autofree char *lie = NULL, *line = NULL;
        pid_t victim, worker;

        if (geteuid() != 0)
                skip();
        victim = fork();
        assert_true(victim >= 0);
        if (victim == 0) {
                pause();
                _exit(0);
        }
        lie = g_strdup_printf("%i", (int) victim);
        assert_int_equal(setenv("APIARY_TEST_LIE_PID", lie, 1), 0);
        assert_int_equal(setenv("APIARY_TEST_LYING_ZYGOTE", preload, 1), 0);
        assert_int_equal(setenv("APIARY_TEST_REAL_WORKER", real, 1), 0);
        assert_int_equal(setenv("APIARY_WORKER_PATH", wrapper, 1), 0);
        start(f, NULL, "[Pool forked]\nPlugin=echo.so\nWorkers=1\nZygote=yes\nUser=nobody\nRestartSec=0\n");
        assert_int_equal(setenv("APIARY_WORKER_PATH", real, 1), 0);
        unsetenv("APIARY_TEST_LIE_PID");

        line = test_daemon_wait_log(d, "not a child of apiaryd", TEST_TIMEOUT_USEC);
        assert_non_null(strstr(line, lie));
        test_wait_until(d, pool_worker_ready, "forked", TEST_TIMEOUT_USEC, "the spawned worker");
        worker = test_worker_pid(d, "forked", 0);
        assert_int_not_equal(worker, victim);
        run_ok(d, "forked", "still serving", 0);

        /* And the next worker is spawned too: the zygote is not asked again. */
        assert_int_equal(kill(worker, SIGKILL), 0);
        assert_int_not_equal(test_wait_worker_replaced(d, "forked", 0, worker), victim);
        run_ok(d, "forked", "still serving", 0);

        assert_true(test_pid_alive(victim));
        assert_int_not_equal(test_proc_state(victim), 'Z');
        assert_int_equal(kill(victim, SIGKILL), 0);
        assert_int_equal(waitpid(victim, NULL, 0), victim);
}

/* apiaryd's children that are zombies. */
static unsigned count_zombie_children(pid_t pid) {
        size_t n;
        g_autofree pid_t *children = test_proc_children(pid, &n);
        unsigned zombies = 0;

        for (size_t i = 0; i < n; i++)
                if (test_proc_state(children[i]) == 'Z')
                        zombies++;
        return zombies;
}

/* Finding 8: children a plugin makes apiaryd's (clone(CLONE_PARENT)) are reaped, not left as
 * zombies counted against TasksMax=. */
static void test_unknown_children_are_reaped(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        usec_t deadline;

        start(f, NULL, "[Pool control]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=2\n");
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *result = NULL;
        size_t size;

        if (test_run(d, "control", "orphan 200", 10, 0, (void **) &result, &size, &error) < 0)
                fail_msg("orphan 200: %s: %s", error.name, error.message);
        assert_int_equal(size, 12);
        assert_memory_equal(result, "orphaned 200", 12);
        deadline = now_usec(CLOCK_MONOTONIC) + TEST_TIMEOUT_USEC;
        while (count_zombie_children(d->pid) > 0) {
                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        fail_msg("apiaryd has %u zombie children", count_zombie_children(d->pid));
                (void) usleep(20 * 1000);
        }
        /* Its workers are still its own, and still serve. */
        run_ok(d, "control", "alive", 0);
        assert_int_equal(test_get_manager_u64(d, "TasksFailed"), 0);
}

/* Finding 12: a plugin that floods its link with calls and never reads the answers is killed,
 * with that as the reason; apiaryd does not grow without bound. */
static void test_link_flood_kills_the_worker(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        uint64_t base;

        /* Under valgrind, the kernel's megabytes of socket buffer alone take apiaryd longer to fill
         * than a Run() may wait. */
        if (test_under_wrapper())
                skip();
        start(f, NULL, "[Pool control]\nPlugin=@TEST_PLUGINS@/control.so\nWorkers=1\nTaskRetries=0\nUser=nobody\n");
        base = test_proc_rss_kib(d->pid);
        assert_true(test_run(d, "control", "flood 300000", 12, 0, NULL, NULL, &error) < 0);
        assert_string_equal(error.name, "org.apiary.Apiary1.Error.TaskFailed");
        if (!strstr(error.message, "it did not read its link"))
                fail_msg("unexpected reason: %s", error.message);
        if (!test_under_asan() && !test_under_wrapper() && test_proc_rss_kib(d->pid) > base + 32 * 1024)
                fail_msg("apiaryd grew from %" PRIu64 " to %" PRIu64 " KiB", base, test_proc_rss_kib(d->pid));
        test_wait_until(d, pool_worker_ready, "control", TEST_TIMEOUT_USEC, "the replaced worker");
        run_ok(d, "control", "still serving", 0);
}

static void run_relay(TestDaemon *d, const char *pool, const char *payload, const char *expect_result,
                      const char *expect_error) {
        g_autofree char *result = NULL;

        if (!expect_result) {
                g_free(test_run_refused(d, pool, payload, 0, NULL, expect_error));
                return;
        }
        result = test_run_text(d, pool, payload, 0);
        assert_string_equal(result, expect_result);
}

/* Finding 16: a plugin's submit() is held to SubmitFrom= of the pool it submits to: a
 * sandboxed pool does not feed a root pool unless that pool says so; its own pool it may. */
static void test_submit_from(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;

        start(f, NULL,
              "[Pool sandbox]\nPlugin=@TEST_PLUGINS@/control.so\nKind=io\nWorkers=1\nUser=nobody\n"
              "[Pool root]\nPlugin=echo.so\nWorkers=1\n"
              "[Pool open]\nPlugin=echo.so\nWorkers=1\nSubmitFrom=*\n"
              "[Pool chosen]\nPlugin=echo.so\nWorkers=1\nSubmitFrom=other sandbox\n");
        run_relay(d, "sandbox", "relay root x", NULL,
                  "Pool \"root\" takes no tasks from the plugin of pool \"sandbox\" (SubmitFrom= of [Pool root]).");
        run_relay(d, "sandbox", "relay open x", "relayed:x", NULL);
        run_relay(d, "sandbox", "relay chosen y", "relayed:y", NULL);
        run_relay(d, "sandbox", "relay sandbox z", "relayed:z", NULL);
        assert_int_equal(test_get_u64(d, "/org/apiary/Apiary1/pool/root", POOL_IFACE, "TasksSubmitted"), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_forged_sender_on_private_socket, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_groups_as_of_connecting, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_batch_over_caller_limit, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_byte_budgets, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_user_workers_die_with_apiaryd, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_lowered_max_tasks_per_worker, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_task_timeout_option_is_bounded, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_exit_with_a_peer_that_does_not_read, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_peer_that_does_not_read_is_cut_off, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_private_socket_turns_away_the_unauthorized, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_connection_limits, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_accept_errors_back_off, test_fixture_setup, test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_stop_timeout_fails_running_tasks, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_zygote_pid_is_verified, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_unknown_children_are_reaped, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_link_flood_kills_the_worker, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test_setup_teardown(test_submit_from, test_fixture_setup, test_fixture_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
