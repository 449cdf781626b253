/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <dbus/dbus.h>

#include "tests/harness.h"

static const char *env_or_fail(const char *name) {
        const char *v = getenv(name);

        if (!v)
                fail_msg("$%s is not set: run the tests through meson test", name);
        return v;
}

static void rm_rf(const char *dir) {
        g_autofree char *cmd = NULL;

        if (!dir)
                return;
        cmd = g_strdup_printf("rm -rf '%s'", dir);
        (void) system(cmd);
}

/* The daemon started last and not stopped yet: whose notify socket test_wait_child() reads. */
static TestDaemon *current_daemon;

static void notify_receive(TestDaemon *d, usec_t timeout);

static int pidfd_open_(pid_t pid) {
        return (int) syscall(SYS_pidfd_open, pid, 0);
}

static bool pidfd_wait(int pidfd, usec_t timeout) {
        struct pollfd p = { .fd = pidfd, .events = POLLIN };
        int r;

        do
                r = poll(&p, 1, (int) (timeout / USEC_PER_MSEC));
        while (r < 0 && errno == EINTR);
        return r > 0;
}

bool test_pid_alive(pid_t pid) {
        return kill(pid, 0) == 0 || errno != ESRCH;
}

DBusConnection *test_libdbus_connect(const char *address) {
        DBusError error;
        DBusConnection *c;

        dbus_error_init(&error);
        c = dbus_connection_open_private(address, &error);
        if (!c)
                fail_msg("libdbus: %s", error.message);
        assert_true(dbus_bus_register(c, &error));
        return c;
}

void test_libdbus_disconnect(DBusConnection *c) {
        dbus_connection_close(c);
        dbus_connection_unref(c);
}

bool test_wait_pid_gone(pid_t pid, usec_t timeout) {
        int fd = pidfd_open_(pid);
        bool gone;

        if (fd < 0)
                return errno == ESRCH;
        gone = pidfd_wait(fd, timeout);
        close(fd);
        if (gone)
                /* We are the subreaper of apiaryd's orphans: reap it if it came to us. */
                (void) waitpid(pid, NULL, WNOHANG);
        return gone;
}

/* ---- the bus ---- */

void test_bus_start(TestBus *b) {
        g_autofree char *conf = NULL, *conf_path = NULL, *fd_arg = NULL;
        char buf[512];
        size_t n = 0;
        int pipefd[2];
        pid_t pid;

        *b = (TestBus) {};

        /* Orphaned workers come to us, so that tests can see (and reap) them. */
        (void) prctl(PR_SET_CHILD_SUBREAPER, 1);

        b->dir = g_strdup("/tmp/apiary-test-bus-XXXXXX");
        assert_non_null(g_mkdtemp(b->dir));
        /* Clients of other users (authorization tests) must reach the socket. */
        assert_int_equal(chmod(b->dir, 0755), 0);
        conf_path = g_strdup_printf("%s/bus.conf", b->dir);
        conf = g_strdup_printf(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                "<busconfig>\n"
                "  <type>session</type>\n"
                "  <listen>unix:path=%s/bus</listen>\n"
                "  <auth>EXTERNAL</auth>\n"
                "  <policy context=\"default\">\n"
                "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
                "    <allow eavesdrop=\"true\"/>\n"
                "    <allow own=\"*\"/>\n"
                "    <allow user=\"*\"/>\n"
                "  </policy>\n"
                "</busconfig>\n", b->dir);
        assert_true(g_file_set_contents(conf_path, conf, -1, NULL));

        assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                g_autofree char *arg_conf = g_strdup_printf("--config-file=%s", conf_path);
                g_autofree char *arg_print = NULL;

                if (pipefd[1] == 3)
                        (void) fcntl(3, F_SETFD, 0);
                else
                        (void) dup2(pipefd[1], 3);
                arg_print = g_strdup("--print-address=3");
                execlp("dbus-daemon", "dbus-daemon", "--nofork", "--nopidfile", "--nosyslog", arg_conf, arg_print,
                       (char *) NULL);
                _exit(127);
        }
        close(pipefd[1]);

        while (n < sizeof(buf) - 1) {
                ssize_t k = read(pipefd[0], buf + n, sizeof(buf) - 1 - n);
                if (k <= 0)
                        break;
                n += (size_t) k;
                if (memchr(buf, '\n', n))
                        break;
        }
        close(pipefd[0]);
        buf[n] = '\0';
        if (n == 0 || !strchr(buf, '\n'))
                fail_msg("dbus-daemon did not print its address");
        *strchr(buf, '\n') = '\0';

        b->pid = pid;
        b->address = g_strdup(buf);
}

void test_bus_stop(TestBus *b) {
        if (b->pid > 0) {
                kill(b->pid, SIGTERM);
                (void) waitpid(b->pid, NULL, 0);
        }
        rm_rf(b->dir);
        g_free(b->dir);
        g_free(b->address);
        *b = (TestBus) {};
}

/* ---- the daemon ---- */

static void notify_receive(TestDaemon *d, usec_t timeout) {
        struct pollfd p = { .fd = d->notify_fd, .events = POLLIN };
        char buf[4096];
        ssize_t k;

        if (poll(&p, 1, (int) (timeout / USEC_PER_MSEC)) <= 0)
                return;
        while ((k = recv(d->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
                buf[k] = '\0';
                d->notify = g_renew(char *, d->notify, d->n_notify + 2);
                d->notify[d->n_notify++] = g_strdup(buf);
                d->notify[d->n_notify] = NULL;
        }
}

static bool has_line(const char *msg, const char *prefix) {
        size_t l = strlen(prefix);

        for (const char *p = msg; p && *p; ) {
                if (strncmp(p, prefix, l) == 0)
                        return true;
                p = strchr(p, '\n');
                if (p)
                        p++;
        }
        return false;
}

const char *test_daemon_find_notify(TestDaemon *d, const char *prefix) {
        notify_receive(d, 0);
        for (size_t i = d->n_notify; i > 0; i--)
                if (has_line(d->notify[i - 1], prefix))
                        return d->notify[i - 1];
        return NULL;
}

const char *test_daemon_wait_notify(TestDaemon *d, const char *prefix, usec_t timeout) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;
        size_t seen = 0;

        for (;;) {
                usec_t now;

                for (; seen < d->n_notify; seen++)
                        if (has_line(d->notify[seen], prefix))
                                return d->notify[seen];
                now = now_usec(CLOCK_MONOTONIC);
                if (now >= deadline)
                        break;
                if (d->pid > 0 && waitpid(d->pid, &d->exit_status, WNOHANG) == d->pid) {
                        d->pid = 0;
                        fail_msg("apiaryd exited (wait status %i) before sending %s", d->exit_status, prefix);
                }
                notify_receive(d, MIN(deadline - now, 100 * USEC_PER_MSEC));
        }
        fail_msg("apiaryd did not send %s in time", prefix);
        return NULL;
}

static char *substitute(const char *config) {
        g_autofree char *a = NULL;
        char **parts;
        char *result;

        parts = g_strsplit(config, "@TEST_PLUGINS@", -1);
        a = g_strjoinv(env_or_fail("APIARY_TEST_PLUGIN_DIR"), parts);
        g_strfreev(parts);
        parts = g_strsplit(a, "@PLUGINS@", -1);
        result = g_strjoinv(env_or_fail("APIARY_PLUGIN_DIR"), parts);
        g_strfreev(parts);
        return result;
}

static bool name_has_owner(TestDaemon *d, const void *userdata) {
        sd_bus_message *reply = NULL;
        int has = 0, r;

        r = sd_bus_call_method(d->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "NameHasOwner", NULL, &reply, "s", "org.apiary.Apiary1");
        assert_true(r >= 0);
        assert_true(sd_bus_message_read(reply, "b", &has) >= 0);
        sd_bus_message_unref(reply);
        return has;
}

/* Starts `tee -a LOG` with its stdin on a pipe and its stdout on our stderr; returns the pipe's
 * write end (O_CLOEXEC), for apiaryd's stderr. */
static int start_tee(TestDaemon *d) {
        int p[2];
        pid_t pid;

        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                (void) dup2(p[0], STDIN_FILENO);
                (void) dup2(STDERR_FILENO, STDOUT_FILENO);
                execlp("tee", "tee", "-a", d->log_path, (char *) NULL);
                _exit(127);
        }
        close(p[0]);
        d->tee_pid = pid;
        return p[1];
}

static void daemon_start(TestDaemon *d, const TestBus *b, const char *config, bool wait_ready, bool capture_log) {
        g_autofree char *text = NULL, *notify_path = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *apiaryd = env_or_fail("APIARYD");
        const char *worker = env_or_fail("APIARY_WORKER_PATH");
        int log_fd = -1;
        pid_t pid;
        int r;

        *d = (TestDaemon) { .notify_fd = -1, .pidfd = -1 };

        d->dir = g_strdup("/tmp/apiary-test-XXXXXX");
        assert_non_null(g_mkdtemp(d->dir));
        d->config_path = g_strdup_printf("%s/apiary.conf", d->dir);
        text = substitute(config);
        assert_true(g_file_set_contents(d->config_path, text, -1, NULL));

        notify_path = g_strdup_printf("%s/notify", d->dir);
        d->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        assert_true(d->notify_fd >= 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", notify_path);
        assert_int_equal(bind(d->notify_fd, (struct sockaddr *) &sa, sizeof(sa)), 0);

        if (capture_log) {
                d->log_path = g_strdup_printf("%s/apiaryd.log", d->dir);
                assert_true(g_file_set_contents(d->log_path, "", 0, NULL));
                log_fd = start_tee(d);
        }

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                g_autofree char *arg_config = g_strdup_printf("--config=%s", d->config_path);
                g_autofree char *arg_bus = g_strdup_printf("--bus=%s", b->address);
                g_autofree char *arg_worker = g_strdup_printf("--worker-path=%s", worker);

                const char *wrapper = getenv("APIARY_TEST_WRAPPER");

                setenv("NOTIFY_SOCKET", notify_path, 1);
                unsetenv("JOURNAL_STREAM");
                if (log_fd >= 0)
                        (void) dup2(log_fd, STDERR_FILENO);
                if (wrapper && wrapper[0]) {
                        /* e.g. "valgrind --error-exitcode=99 --leak-check=full": apiaryd under a checker. */
                        g_autofree char *cmd = g_strdup_printf("exec %s %s %s %s %s --log-level=debug", wrapper, apiaryd,
                                                               arg_config, arg_bus, arg_worker);
                        execl("/bin/sh", "sh", "-c", cmd, (char *) NULL);
                } else
                        execl(apiaryd, "apiaryd", arg_config, arg_bus, arg_worker, "--log-level=debug", (char *) NULL);
                _exit(127);
        }
        d->pid = pid;
        d->pidfd = pidfd_open_(pid);
        if (log_fd >= 0)
                close(log_fd);

        r = sd_bus_new(&d->bus);
        assert_int_equal(r, 0);
        assert_true(sd_bus_set_address(d->bus, b->address) >= 0);
        assert_true(sd_bus_set_bus_client(d->bus, true) >= 0);
        assert_true(sd_bus_start(d->bus) >= 0);
        assert_true(sd_bus_add_match(d->bus, NULL,
                                     "type='signal',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'",
                                     NULL, NULL) >= 0);

        assert_true(sd_bus_add_match(d->bus, NULL,
                                     "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.apiary.Apiary1'",
                                     NULL, NULL) >= 0);

        if (wait_ready)
                test_daemon_wait_notify(d, "READY=1", TEST_TIMEOUT_USEC);
        else
                test_wait_until(d, name_has_owner, NULL, TEST_TIMEOUT_USEC, "apiaryd to own org.apiary.Apiary1");
}

void test_daemon_connect_private(TestDaemon *d, const char *path) {
        g_autofree char *address = g_strdup_printf("unix:path=%s", path);
        sd_bus *bus;

        assert_int_equal(sd_bus_new(&bus), 0);
        assert_true(sd_bus_set_address(bus, address) >= 0);
        assert_true(sd_bus_start(bus) >= 0);
        /* No bus daemon, no AddMatch: apiaryd sends us its signals once subscribed. */
        assert_true(sd_bus_call_method(bus, NULL, "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager", "Subscribe",
                                       NULL, NULL, NULL) >= 0);
        sd_bus_flush_close_unref(d->bus);
        d->bus = bus;
        d->private = true;
}

void test_daemon_start(TestDaemon *d, const TestBus *b, const char *config, bool wait_ready) {
        daemon_start(d, b, config, wait_ready, false);
        current_daemon = d;
}

void test_daemon_start_logged(TestDaemon *d, const TestBus *b, const char *config, bool wait_ready) {
        daemon_start(d, b, config, wait_ready, true);
        current_daemon = d;
}

int test_wait_child(pid_t pid, usec_t timeout) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;
        int pidfd = pidfd_open_(pid), status = 0;

        assert_true(pidfd >= 0);
        for (;;) {
                TestDaemon *d = current_daemon;
                struct pollfd p[2] = {
                        { .fd = pidfd, .events = POLLIN },
                        { .fd = d ? d->notify_fd : -1, .events = POLLIN },
                };
                usec_t now = now_usec(CLOCK_MONOTONIC);
                int r;

                if (now >= deadline) {
                        close(pidfd);
                        kill(pid, SIGKILL);
                        (void) waitpid(pid, NULL, 0);
                        fail_msg("child %i did not finish in time", (int) pid);
                }
                r = poll(p, 2, (int) ((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC));
                if (r < 0 && errno != EINTR)
                        fail_msg("poll: %s", strerror(errno));
                if (r > 0 && (p[1].revents & POLLIN))
                        notify_receive(d, 0);
                if (r > 0 && (p[0].revents & POLLIN))
                        break;
        }
        close(pidfd);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

char *test_daemon_log(TestDaemon *d) {
        char *text = NULL;

        assert_non_null(d->log_path);
        assert_true(g_file_get_contents(d->log_path, &text, NULL, NULL));
        return text;
}

/* The line of TEXT that holds NEEDLE, or NULL. */
static char *find_line(const char *text, const char *needle) {
        const char *hit = strstr(text, needle), *begin, *end;

        if (!hit)
                return NULL;
        for (begin = hit; begin > text && begin[-1] != '\n'; begin--)
                ;
        end = strchrnul(hit, '\n');
        return g_strndup(begin, (gsize) (end - begin));
}

char *test_daemon_find_log(TestDaemon *d, const char *needle, usec_t timeout) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;
        int fd, wd;

        assert_non_null(d->log_path);
        /* The line can still be in the pipe to tee when the bus has told us what it is about:
         * wake on every write to the file (inotify), not on a timer. */
        fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        assert_true(fd >= 0);
        wd = inotify_add_watch(fd, d->log_path, IN_MODIFY);
        assert_true(wd >= 0);

        for (;;) {
                g_autofree char *text = test_daemon_log(d);
                char *line = find_line(text, needle);
                struct pollfd p = { .fd = fd, .events = POLLIN };
                char buf[4096];
                usec_t now;

                if (line) {
                        close(fd);
                        return line;
                }
                now = now_usec(CLOCK_MONOTONIC);
                if (now >= deadline)
                        break;
                (void) poll(&p, 1, (int) ((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC));
                while (read(fd, buf, sizeof(buf)) > 0)
                        ;
        }
        close(fd);
        return NULL;
}

char *test_daemon_wait_log(TestDaemon *d, const char *needle, usec_t timeout) {
        char *line = test_daemon_find_log(d, needle, timeout);

        if (!line)
                fail_msg("apiaryd did not log \"%s\" in time", needle);
        return line;
}

void test_daemon_write_config(TestDaemon *d, const char *config) {
        g_autofree char *text = substitute(config);

        assert_true(g_file_set_contents(d->config_path, text, -1, NULL));
}

void test_daemon_write_dropin(TestDaemon *d, const char *name, const char *config) {
        g_autofree char *dir = g_strconcat(d->config_path, ".d", NULL);
        g_autofree char *path = g_build_filename(dir, name, NULL);

        assert_int_equal(g_mkdir_with_parents(dir, 0755), 0);
        if (!config) {
                (void) unlink(path);
                return;
        }
        g_autofree char *text = substitute(config);
        assert_true(g_file_set_contents(path, text, -1, NULL));
}

/* Once apiaryd has exited: waits for the tee of its log to end, so that the log file is whole.
 * tee ends when the last writer (apiaryd, a worker, a plugin's child) is gone. */
static int tee_finish(TestDaemon *d) {
        int tee_pidfd, r = 0;

        if (d->tee_pid <= 0)
                return 0;
        tee_pidfd = pidfd_open_(d->tee_pid);
        if (tee_pidfd < 0 || !pidfd_wait(tee_pidfd, TEST_TIMEOUT_USEC)) {
                fprintf(stderr, "tee of apiaryd's log did not end: something still holds apiaryd's stderr\n");
                kill(d->tee_pid, SIGKILL);
                r = -1;
        }
        if (tee_pidfd >= 0)
                close(tee_pidfd);
        (void) waitpid(d->tee_pid, NULL, 0);
        d->tee_pid = 0;
        return r;
}

/* Waits for apiaryd to exit, reading its notify socket meanwhile, as systemd would: apiaryd's
 * READY=1 and STOPPING=1 block while the socket's queue is full. */
static bool daemon_wait_exit(TestDaemon *d, usec_t timeout) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;

        for (;;) {
                struct pollfd p[2] = {
                        { .fd = d->pidfd, .events = POLLIN },
                        { .fd = d->notify_fd, .events = POLLIN },
                };
                usec_t now = now_usec(CLOCK_MONOTONIC);
                int r;

                if (now >= deadline)
                        return false;
                r = poll(p, d->notify_fd >= 0 ? 2 : 1, (int) ((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC));
                if (r < 0 && errno != EINTR)
                        return false;
                if (r > 0 && (p[0].revents & POLLIN))
                        return true;
                if (r > 0 && (p[1].revents & POLLIN))
                        notify_receive(d, 0);
        }
}

int test_daemon_kill_and_wait(TestDaemon *d, int sig) {
        assert_true(d->pid > 0);
        assert_int_equal(kill(d->pid, sig), 0);
        return test_daemon_wait(d);
}

int test_daemon_wait(TestDaemon *d) {
        int status;

        assert_true(d->pid > 0);
        if (!daemon_wait_exit(d, TEST_TIMEOUT_USEC))
                fail_msg("apiaryd did not exit in time");
        assert_int_equal(waitpid(d->pid, &status, 0), d->pid);
        d->pid = 0;
        notify_receive(d, 0);
        if (tee_finish(d) < 0)
                fail_msg("apiaryd's log did not end with apiaryd");
        d->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return d->exit_status;
}

int test_daemon_stop(TestDaemon *d) {
        int result = 0;

        if (current_daemon == d)
                current_daemon = NULL;
        /* A clean stop, so that apiaryd's own exit checks run (valgrind's and LeakSanitizer's
         * among them), then SIGKILL if it does not come. */
        if (d->pid > 0) {
                int status = 0;

                kill(d->pid, SIGTERM);
                if (!daemon_wait_exit(d, TEST_TIMEOUT_USEC)) {
                        fprintf(stderr, "apiaryd did not stop within the test timeout, killing it\n");
                        kill(d->pid, SIGKILL);
                        result = -1;
                }
                (void) waitpid(d->pid, &status, 0);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        fprintf(stderr, "apiaryd exited uncleanly on SIGTERM (wait status 0x%x)\n", status);
                        result = -1;
                }
        }
        if (tee_finish(d) < 0)
                result = -1;
        if (d->pidfd >= 0)
                close(d->pidfd);
        if (d->notify_fd >= 0)
                close(d->notify_fd);
        sd_bus_flush_close_unref(d->bus);
        if (d->results)
                g_hash_table_destroy(d->results);
        g_strfreev(d->notify);
        rm_rf(d->dir);
        g_free(d->dir);
        g_free(d->config_path);
        g_free(d->log_path);
        *d = (TestDaemon) { .notify_fd = -1, .pidfd = -1 };

        /* Reap whatever orphans came to us. */
        while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
        return result;
}

/* ---- the API ---- */

char *test_pool_path(const char *pool) {
        char *p = NULL;

        assert_true(sd_bus_path_encode("/org/apiary/Apiary1/pool", pool, &p) >= 0);
        return p;
}

char *test_worker_path(const char *pool, unsigned slot) {
        g_autofree char *pp = test_pool_path(pool);

        return g_strdup_printf("%s/%u", pp, slot);
}

char *test_get_string(TestDaemon *d, const char *path, const char *interface, const char *property) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        const char *contents = NULL, *s = NULL;
        char type;
        char *result;
        int r;

        /* Strings and object paths alike. */
        r = sd_bus_call_method(d->bus, "org.apiary.Apiary1", path, "org.freedesktop.DBus.Properties", "Get", &error,
                               &reply, "ss", interface, property);
        if (r < 0)
                fail_msg("Get %s.%s on %s: %s", interface, property, path, error.message ?: strerror(-r));
        assert_true(sd_bus_message_peek_type(reply, &type, &contents) > 0);
        assert_int_equal(type, 'v');
        assert_true(contents[0] == 's' || contents[0] == 'o');
        assert_true(sd_bus_message_enter_container(reply, 'v', contents) >= 0);
        assert_true(sd_bus_message_read_basic(reply, contents[0], &s) > 0);
        result = g_strdup(s);
        sd_bus_message_unref(reply);
        sd_bus_error_free(&error);
        return result;
}

static void get_trivial(TestDaemon *d, const char *path, const char *interface, const char *property, char type,
                        void *ret) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_get_property_trivial(d->bus, "org.apiary.Apiary1", path, interface, property, &error, type, ret);
        if (r < 0)
                fail_msg("Get %s.%s on %s: %s", interface, property, path, error.message ?: strerror(-r));
        sd_bus_error_free(&error);
}

uint32_t test_get_u32(TestDaemon *d, const char *path, const char *interface, const char *property) {
        uint32_t v = 0;

        get_trivial(d, path, interface, property, 'u', &v);
        return v;
}

uint64_t test_get_u64(TestDaemon *d, const char *path, const char *interface, const char *property) {
        uint64_t v = 0;

        get_trivial(d, path, interface, property, 't', &v);
        return v;
}

char **test_get_object_paths(TestDaemon *d, const char *path, const char *interface, const char *property) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        GPtrArray *a = g_ptr_array_new();
        const char *o;
        int r;

        r = sd_bus_get_property(d->bus, "org.apiary.Apiary1", path, interface, property, &error, &reply, "ao");
        if (r < 0)
                fail_msg("Get %s.%s on %s: %s", interface, property, path, error.message ?: strerror(-r));
        assert_true(sd_bus_message_enter_container(reply, 'a', "o") >= 0);
        while ((r = sd_bus_message_read(reply, "o", &o)) > 0)
                g_ptr_array_add(a, g_strdup(o));
        assert_true(r >= 0);
        sd_bus_message_unref(reply);
        g_ptr_array_add(a, NULL);
        return (char **) g_ptr_array_free(a, false);
}

char *test_pool_state(TestDaemon *d, const char *pool) {
        g_autofree char *path = test_pool_path(pool);

        return test_get_string(d, path, "org.apiary.Apiary1.Pool", "State");
}

char *test_worker_state(TestDaemon *d, const char *pool, unsigned slot) {
        g_autofree char *path = test_worker_path(pool, slot);

        return test_get_string(d, path, "org.apiary.Apiary1.Worker", "State");
}

pid_t test_worker_pid(TestDaemon *d, const char *pool, unsigned slot) {
        g_autofree char *path = test_worker_path(pool, slot);

        return (pid_t) test_get_u32(d, path, "org.apiary.Apiary1.Worker", "PID");
}

static void wait_bus_or_notify(TestDaemon *d, usec_t timeout) {
        struct pollfd p[2] = {
                { .fd = sd_bus_get_fd(d->bus), .events = (short) sd_bus_get_events(d->bus) },
                { .fd = d->notify_fd, .events = POLLIN },
        };
        uint64_t bus_timeout;

        if (sd_bus_get_timeout(d->bus, &bus_timeout) > 0 && bus_timeout != UINT64_MAX) {
                usec_t now = now_usec(CLOCK_MONOTONIC);
                timeout = MIN(timeout, bus_timeout > now ? bus_timeout - now : 0);
        }
        if (poll(p, 2, (int) ((timeout + USEC_PER_MSEC - 1) / USEC_PER_MSEC)) > 0 && (p[1].revents & POLLIN))
                notify_receive(d, 0);
}

void test_wait_until(TestDaemon *d, TestPredicate pred, const void *userdata, usec_t timeout, const char *what) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;

        for (;;) {
                usec_t now;
                int r;

                if (pred(d, userdata))
                        return;
                now = now_usec(CLOCK_MONOTONIC);
                if (now >= deadline)
                        fail_msg("timed out waiting for %s", what);

                /* Drain what is queued, then sleep until the next message or the deadline. The
                 * notify socket is drained too: a full one would block apiaryd in sd_notify(). */
                bool processed = false;

                while ((r = sd_bus_process(d->bus, NULL)) > 0)
                        processed = true;
                assert_true(r >= 0);
                if (processed)
                        continue;       /* a callback may have made PRED true */
                wait_bus_or_notify(d, deadline - now);
                while ((r = sd_bus_process(d->bus, NULL)) > 0)
                        ;
        }
}

typedef struct {
        const char *pool;
        unsigned slot;
        pid_t old_pid;
} Replaced;

/* The PID first: once it is a new one, apiaryd has handled the old one's exit, so the state read
 * next is the new process's (read the other way round, the old worker's "ready" could pass for the
 * new one's). The PID again last: the state was read of that process. */
static bool worker_replaced(TestDaemon *d, const void *userdata) {
        const Replaced *r = userdata;
        pid_t pid = test_worker_pid(d, r->pool, r->slot);
        g_autofree char *state = NULL;

        if (pid <= 0 || pid == r->old_pid)
                return false;
        state = test_worker_state(d, r->pool, r->slot);
        return strcmp(state, "ready") == 0 && test_worker_pid(d, r->pool, r->slot) == pid;
}

pid_t test_wait_worker_replaced(TestDaemon *d, const char *pool, unsigned slot, pid_t old_pid) {
        Replaced r = { pool, slot, old_pid };
        g_autofree char *what = g_strdup_printf("worker %s/%u (was PID %i) to be replaced", pool, slot, old_pid);

        test_wait_until(d, worker_replaced, &r, TEST_TIMEOUT_USEC, what);
        if (!test_wait_pid_gone(old_pid, TEST_TIMEOUT_USEC))
                fail_msg("the old worker %i of %s/%u is still there", old_pid, pool, slot);
        return test_worker_pid(d, pool, slot);
}

typedef struct {
        const char *pool;
        const char *state;
} PoolStateWanted;

static bool pool_state_is(TestDaemon *d, const void *userdata) {
        const PoolStateWanted *w = userdata;
        g_autofree char *s = test_pool_state(d, w->pool);

        return strcmp(s, w->state) == 0;
}

void test_wait_pool_state(TestDaemon *d, const char *pool, const char *state) {
        PoolStateWanted w = { pool, state };
        g_autofree char *what = g_strdup_printf("pool %s to be %s", pool, state);

        test_wait_until(d, pool_state_is, &w, TEST_TIMEOUT_USEC, what);
}

/* ---- tasks ---- */

static int new_task_call(TestDaemon *d, const char *member, const char *pool, sd_bus_message **ret) {
        int r;

        r = sd_bus_message_new_method_call(d->bus, ret, "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                           "org.apiary.Apiary1.Manager", member);
        if (r < 0)
                return r;
        return sd_bus_message_append(*ret, "s", pool);
}

static int append_options(sd_bus_message *m, usec_t timeout_opt) {
        if (timeout_opt > 0)
                return sd_bus_message_append(m, "a{sv}", 1, "timeout", "t", (uint64_t) timeout_opt);
        return sd_bus_message_append(m, "a{sv}", 0);
}

int test_run(TestDaemon *d, const char *pool, const void *data, size_t size, usec_t timeout_opt, void **ret,
             size_t *ret_size, sd_bus_error *error) {
        sd_bus_message *m = NULL, *reply = NULL;
        const void *p;
        size_t n;
        int r;

        assert_true(new_task_call(d, "Run", pool, &m) >= 0);
        assert_true(sd_bus_message_append_array(m, 'y', data, size) >= 0);
        assert_true(append_options(m, timeout_opt) >= 0);
        r = sd_bus_call(d->bus, m, 60 * USEC_PER_SEC, error, &reply);
        sd_bus_message_unref(m);
        if (r < 0)
                return r;
        assert_true(sd_bus_message_read_array(reply, 'y', &p, &n) >= 0);
        if (ret) {
                *ret = g_malloc(n + 1);
                memcpy(*ret, p, n);
                ((char *) *ret)[n] = '\0';
        }
        if (ret_size)
                *ret_size = n;
        sd_bus_message_unref(reply);
        return 0;
}

char *test_run_text(TestDaemon *d, const char *pool, const char *text, usec_t timeout_opt) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        char *result = NULL;

        if (test_run(d, pool, text, strlen(text), timeout_opt, (void **) &result, NULL, &error) < 0)
                fail_msg("Run(%s, \"%s\"): %s: %s", pool, text, error.name, error.message);
        return result;
}

char *test_run_refused(TestDaemon *d, const char *pool, const char *text, usec_t timeout_opt, const char *error_name,
                       const char *message) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        char *m;

        if (test_run(d, pool, text, strlen(text), timeout_opt, NULL, NULL, &error) >= 0)
                fail_msg("Run(%s, \"%s\") succeeded, expected %s", pool, text, error_name ?: "an error");
        if (error_name && strcmp(error.name, error_name) != 0)
                fail_msg("Run(%s, \"%s\"): %s: %s, expected %s", pool, text, error.name, error.message, error_name);
        if (!strstr(error.message, message))
                fail_msg("Run(%s, \"%s\"): expected \"%s\" in \"%s\"", pool, text, message, error.message);
        m = g_strdup(error.message);
        sd_bus_error_free(&error);
        return m;
}

uint64_t test_submit(TestDaemon *d, const char *pool, const void *data, size_t size) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL, *reply = NULL;
        uint64_t id = 0;
        int r;

        assert_true(new_task_call(d, "Submit", pool, &m) >= 0);
        assert_true(sd_bus_message_append_array(m, 'y', data, size) >= 0);
        assert_true(append_options(m, 0) >= 0);
        r = sd_bus_call(d->bus, m, 0, &error, &reply);
        if (r < 0)
                fail_msg("Submit to %s: %s: %s", pool, error.name, error.message);
        assert_true(sd_bus_message_read(reply, "t", &id) > 0);
        sd_bus_message_unref(m);
        sd_bus_message_unref(reply);
        return id;
}

/* PRIORITY < 0: no "priority" option. */
static void submit_batch(TestDaemon *d, const char *pool, char **payloads, size_t n, uint64_t *ret_ids,
                         bool batch_results, int priority) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL, *reply = NULL;
        size_t k = 0;
        uint64_t id;
        int r;

        assert_true(new_task_call(d, "SubmitBatch", pool, &m) >= 0);
        assert_true(sd_bus_message_open_container(m, 'a', "ay") >= 0);
        for (size_t i = 0; i < n; i++)
                assert_true(sd_bus_message_append_array(m, 'y', payloads[i], strlen(payloads[i])) >= 0);
        assert_true(sd_bus_message_close_container(m) >= 0);
        if (batch_results)
                assert_true(sd_bus_message_append(m, "a{sv}", 1, "batch-results", "b", 1) >= 0);
        else if (priority >= 0)
                assert_true(sd_bus_message_append(m, "a{sv}", 1, "priority", "y", (uint8_t) priority) >= 0);
        else
                assert_true(append_options(m, 0) >= 0);
        r = sd_bus_call(d->bus, m, 0, &error, &reply);
        if (r < 0)
                fail_msg("SubmitBatch to %s: %s: %s", pool, error.name, error.message);
        assert_true(sd_bus_message_enter_container(reply, 'a', "t") > 0);
        while ((r = sd_bus_message_read(reply, "t", &id)) > 0) {
                assert_true(k < n);
                ret_ids[k++] = id;
        }
        assert_true(r >= 0);
        assert_int_equal(k, n);
        sd_bus_message_unref(m);
        sd_bus_message_unref(reply);
}

void test_submit_batch(TestDaemon *d, const char *pool, char **payloads, size_t n, uint64_t *ret_ids) {
        submit_batch(d, pool, payloads, n, ret_ids, false, -1);
}

void test_submit_batch_priority(TestDaemon *d, const char *pool, char **payloads, size_t n, unsigned priority,
                                uint64_t *ret_ids) {
        submit_batch(d, pool, payloads, n, ret_ids, false, (int) priority);
}

void test_submit_batch_results(TestDaemon *d, const char *pool, char **payloads, size_t n, uint64_t *ret_ids) {
        submit_batch(d, pool, payloads, n, ret_ids, true, -1);
}

static void result_free(gpointer p) {
        TestResult *r = p;

        g_free(r->data);
        g_free(r);
}

static void note_result(TestDaemon *d, uint64_t id, bool ok, const void *data, size_t size) {
        TestResult *r;

        r = g_hash_table_lookup(d->results, &id);
        if (r) {
                r->count++;
                return;
        }
        r = g_new0(TestResult, 1);
        r->ok = ok;
        r->data = g_malloc(size + 1);
        memcpy(r->data, data, size);
        ((char *) r->data)[size] = '\0';
        r->size = size;
        r->count = 1;
        r->order = g_hash_table_size(d->results);
        g_hash_table_insert(d->results, g_memdup2(&id, sizeof(id)), r);
}

/* One end, (t id, s pool, b ok, ay result): a TaskFinished, or an element of TasksFinished. */
static void read_end(TestDaemon *d, sd_bus_message *m) {
        const char *pool;
        const void *data;
        uint64_t id;
        size_t size;
        int ok;

        assert_true(sd_bus_message_read(m, "tsb", &id, &pool, &ok) > 0);
        assert_true(sd_bus_message_read_array(m, 'y', &data, &size) >= 0);
        note_result(d, id, ok, data, size);
}

static int on_task_finished(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        TestDaemon *d = userdata;

        d->n_finished++;
        read_end(d, m);
        return 0;
}

static int on_tasks_finished(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        TestDaemon *d = userdata;
        int r;

        d->n_batches++;
        assert_true(sd_bus_message_enter_container(m, 'a', "(tsbay)") > 0);
        while ((r = sd_bus_message_enter_container(m, 'r', "tsbay")) > 0) {
                read_end(d, m);
                assert_true(sd_bus_message_exit_container(m) >= 0);
        }
        assert_true(r >= 0);
        assert_true(sd_bus_message_exit_container(m) >= 0);
        return 0;
}

void test_collect_results(TestDaemon *d) {
        if (!d->results)
                d->results = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, result_free);
        /* Peer-to-peer, signals have no sender. */
        assert_true(sd_bus_match_signal(d->bus, NULL, d->private ? NULL : "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                        "org.apiary.Apiary1.Manager", "TaskFinished", on_task_finished, d) >= 0);
        assert_true(sd_bus_match_signal(d->bus, NULL, d->private ? NULL : "org.apiary.Apiary1", "/org/apiary/Apiary1",
                                        "org.apiary.Apiary1.Manager", "TasksFinished", on_tasks_finished, d) >= 0);
}

typedef struct {
        size_t n;
} ResultsWanted;

static bool have_results(TestDaemon *d, const void *userdata) {
        const ResultsWanted *w = userdata;

        return g_hash_table_size(d->results) >= w->n;
}

void test_wait_results(TestDaemon *d, size_t n) {
        ResultsWanted w = { n };
        g_autofree char *what = g_strdup_printf("%zu TaskFinished signals", n);

        test_wait_until(d, have_results, &w, 3 * TEST_TIMEOUT_USEC, what);
}

const TestResult *test_result(TestDaemon *d, uint64_t id) {
        return g_hash_table_lookup(d->results, &id);
}

uint64_t test_get_manager_u64(TestDaemon *d, const char *property) {
        return test_get_u64(d, "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager", property);
}

int test_client(const TestBus *b, unsigned uid, char **ret_output, const char *const *args) {
        return test_client_at(b->address, uid, ret_output, args);
}

static char *read_fd_whole(int fd) {
        GString *s = g_string_new(NULL);
        char buf[4096];
        ssize_t k;

        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        while ((k = read(fd, buf, sizeof(buf))) > 0)
                g_string_append_len(s, buf, k);
        return g_string_free(s, false);
}

int test_client_at(const char *address, unsigned uid, char **ret_output, const char *const *args) {
        GPtrArray *argv;
        g_autofree char *out = NULL, *err = NULL;
        g_autoptr(GError) e = NULL;
        int status;

        /* These calls are about who the caller is: root, or another user through setpriv, which
         * takes root too. An unprivileged run (a package build, a developer's checkout) skips the
         * test rather than failing it. */
        if (geteuid() != 0) {
                fprintf(stderr, "# skipped: the client runs as uid %u, which needs root\n", uid);
                skip();
        }

        argv = g_ptr_array_new_with_free_func(g_free);
        if (uid != 0) {
                g_ptr_array_add(argv, g_strdup("setpriv"));
                g_ptr_array_add(argv, g_strdup_printf("--reuid=%u", uid));
                g_ptr_array_add(argv, g_strdup_printf("--regid=%u", uid));
                g_ptr_array_add(argv, g_strdup("--clear-groups"));
        }
        /* Debian's interpreter, which has python3-dbus (not whatever python3 is first on PATH). */
        g_ptr_array_add(argv, g_strdup("/usr/bin/python3"));
        g_ptr_array_add(argv, g_strdup(env_or_fail("APIARY_TEST_CLIENT")));
        g_ptr_array_add(argv, g_strdup(address));
        for (size_t i = 0; args[i]; i++)
                g_ptr_array_add(argv, g_strdup(args[i]));
        g_ptr_array_add(argv, NULL);

        /* Waited for with apiaryd's notify socket read meanwhile: the call may wait for a
         * reload, whose READY=1 blocks apiaryd while the socket's queue is full. */
        int out_fd = memfd_create("client-out", MFD_CLOEXEC), err_fd = memfd_create("client-err", MFD_CLOEXEC);
        GPid pid;

        assert_true(out_fd >= 0 && err_fd >= 0);
        if (!g_spawn_async_with_fds(NULL, (char **) argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH,
                                    NULL, NULL, &pid, -1, out_fd, err_fd, &e))
                fail_msg("cannot run the python3-dbus client: %s", e->message);
        g_ptr_array_free(argv, true);
        status = test_wait_child(pid, 2 * TEST_TIMEOUT_USEC);
        out = read_fd_whole(out_fd);
        err = read_fd_whole(err_fd);
        close(out_fd);
        close(err_fd);
        if (err && err[0])
                fprintf(stderr, "client.py: %s", err);
        g_strchomp(out);
        if (ret_output)
                *ret_output = g_steal_pointer(&out);
        return status;
}

int test_fixture_setup(void **state) {
        TestFixture *f = g_new0(TestFixture, 1);

        test_bus_start(&f->bus);
        *state = f;
        return 0;
}

int test_fixture_teardown(void **state) {
        TestFixture *f = *state;
        int r = test_daemon_stop(&f->daemon);

        test_bus_stop(&f->bus);
        g_free(f);
        return r;
}

/* ---- processes, from /proc ---- */

pid_t *test_proc_children(pid_t pid, size_t *ret_n) {
        g_autofree char *tasks = g_strdup_printf("/proc/%i/task", (int) pid);
        GArray *a = g_array_new(false, false, sizeof(pid_t));
        GDir *dir = g_dir_open(tasks, 0, NULL);
        const char *tid;

        /* Children hang off the thread that spawned them: read every thread's list. */
        while (dir && (tid = g_dir_read_name(dir))) {
                g_autofree char *path = g_strdup_printf("%s/%s/children", tasks, tid), *text = NULL;
                g_auto(GStrv) words = NULL;

                if (!g_file_get_contents(path, &text, NULL, NULL))
                        continue;
                words = g_strsplit_set(g_strstrip(text), " ", -1);
                for (size_t i = 0; words[i]; i++)
                        if (words[i][0]) {
                                pid_t c = (pid_t) atoi(words[i]);
                                g_array_append_val(a, c);
                        }
        }
        if (dir)
                g_dir_close(dir);
        *ret_n = a->len;
        return (pid_t *) g_array_free(a, false);
}

char test_proc_state(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%i/stat", (int) pid), *text = NULL;
        const char *p;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return 0;
        p = strrchr(text, ')');
        return p && p[1] == ' ' ? p[2] : 0;
}

unsigned test_proc_count_fds(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%i/fd", (int) pid);
        GDir *dir = g_dir_open(path, 0, NULL);
        unsigned n = 0;

        assert_non_null(dir);
        while (g_dir_read_name(dir))
                n++;
        g_dir_close(dir);
        return n;
}

uint64_t test_proc_rss_kib(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%i/status", (int) pid), *text = NULL;
        const char *p;

        assert_true(g_file_get_contents(path, &text, NULL, NULL));
        p = strstr(text, "\nVmRSS:");
        assert_non_null(p);
        return g_ascii_strtoull(p + strlen("\nVmRSS:"), NULL, 10);
}

bool test_under_wrapper(void) {
        const char *w = getenv("APIARY_TEST_WRAPPER");

        return w && w[0];
}

bool test_under_asan(void) {
#if defined(__SANITIZE_ADDRESS__)
        return true;
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
        return true;
#  endif
#endif
        return false;
}

uint64_t test_env_u64(const char *name, uint64_t def) {
        const char *v = getenv(name);
        char *end;
        uint64_t n;

        if (!v || !v[0])
                return def;
        n = g_ascii_strtoull(v, &end, 10);
        if (*end)
                fail_msg("$%s=%s: expected a number", name, v);
        return n;
}
