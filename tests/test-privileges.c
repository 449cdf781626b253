/* SPDX-License-Identifier: MIT */
/*
 * User= and Group=: workers run as their pool's user, with its group only, no supplementary
 * groups and no_new_privs, holding no descriptor of apiaryd's but their link; spawned and forked
 * (Zygote=yes) alike. Needs root (skipped otherwise).
 */
#include <errno.h>
#include <signal.h>
#include <glib.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config/config.h"
#include "tests/harness.h"
#include "util/macro.h"

typedef TestFixture Fixture;

static const char *const pools =
        "[Pool plain]\n"
        "Plugin=@PLUGINS@/echo.so\n"
        "Workers=1\n"
        "User=nobody\n"
        "StartLimitBurst=0\n"
        "RestartSec=0\n"
        "[Pool forked]\n"
        "Plugin=@PLUGINS@/echo.so\n"
        "Workers=1\n"
        "User=65534\n"
        "Group=65534\n"
        "Zygote=yes\n"
        "StartLimitBurst=0\n"
        "RestartSec=0\n";

/* The value of KEY: in /proc/PID/status, tabs and all. */
static char *status_field(pid_t pid, const char *key) {
        g_autofree char *path = g_strdup_printf("/proc/%i/status", (int) pid), *text = NULL;
        g_auto(GStrv) lines = NULL;

        assert_true(g_file_get_contents(path, &text, NULL, NULL));
        lines = g_strsplit(text, "\n", -1);
        for (size_t i = 0; lines[i]; i++)
                if (g_str_has_prefix(lines[i], key) && lines[i][strlen(key)] == ':')
                        return g_strstrip(g_strdup(lines[i] + strlen(key) + 1));
        fail_msg("no %s: in %s", key, path);
        return NULL;
}

/* The worker's credentials, and its descriptors: stdio, the link (fd 3, close-on-exec, a
 * socket), and its own event loop's; nothing of apiaryd's. */
static void assert_dropped(pid_t pid) {
        g_autofree char *uid = status_field(pid, "Uid"), *gid = status_field(pid, "Gid");
        g_autofree char *groups = status_field(pid, "Groups"), *nnp = status_field(pid, "NoNewPrivs");
        g_autofree char *fddir = g_strdup_printf("/proc/%i/fd", (int) pid);
        g_autofree char *fdinfo = g_strdup_printf("/proc/%i/fdinfo/3", (int) pid), *info = NULL;
        g_autoptr(GDir) dir = NULL;
        const char *name;
        unsigned flags = 0;

        assert_string_equal(uid, "65534\t65534\t65534\t65534");
        assert_string_equal(gid, "65534\t65534\t65534\t65534");
        assert_string_equal(groups, "");
        assert_string_equal(nnp, "1");

        dir = g_dir_open(fddir, 0, NULL);
        assert_non_null(dir);
        while ((name = g_dir_read_name(dir))) {
                g_autofree char *link = g_strdup_printf("%s/%s", fddir, name), *target = g_file_read_link(link, NULL);
                int fd = atoi(name);

                assert_non_null(target);
                if (fd <= 2)
                        continue;
                if (fd == 3)
                        assert_true(g_str_has_prefix(target, "socket:"));
                else if (!g_str_has_prefix(target, "anon_inode:"))
                        fail_msg("worker %i holds fd %i → %s", (int) pid, fd, target);
        }
        assert_true(g_file_get_contents(fdinfo, &info, NULL, NULL));
        assert_int_equal(sscanf(strstr(info, "flags:") + 6, "%o", &flags), 1);
        assert_true(flags & 02000000);  /* O_CLOEXEC */
}

static void run_echo(TestDaemon *d, const char *pool) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *result = NULL;
        size_t size;

        assert_int_equal(test_run(d, pool, "as nobody", 9, 0, (void **) &result, &size, &error), 0);
        assert_memory_equal(result, "as nobody", 9);
}

static pid_t zygote_pid(TestDaemon *d, const char *pool) {
        g_autofree char *path = test_pool_path(pool);

        return (pid_t) test_get_u32(d, path, "org.apiary.Apiary1.Pool", "ZygotePID");
}

static bool zygote_ready(TestDaemon *d, const void *userdata) {
        return zygote_pid(d, userdata) > 0;
}

static void test_workers_run_as_the_pools_user(void **state) {
        Fixture *f = *state;
        TestDaemon *d = &f->daemon;
        pid_t old, zygote;

        if (geteuid() != 0)
                skip();
        test_daemon_start(d, &f->bus, pools, true);

        assert_dropped(test_worker_pid(d, "plain", 0));
        run_echo(d, "plain");

        /* The zygote drops privileges before it loads the plugin, and the workers it forks (the
         * first ones too: a start waits for the zygote) inherit that. */
        old = test_worker_pid(d, "forked", 0);
        assert_dropped(old);
        test_wait_until(d, zygote_ready, "forked", TEST_TIMEOUT_USEC, "the zygote of pool forked");
        zygote = zygote_pid(d, "forked");
        assert_dropped(zygote);
        assert_int_equal(kill(old, SIGKILL), 0);
        assert_dropped(test_wait_worker_replaced(d, "forked", 0, old));
        run_echo(d, "forked");
}

/* A user or group that does not exist is a configuration error naming file, group and key. */
static void test_unknown_user_is_a_config_error(void **state) {
        g_autofree char *dir = g_dir_make_tmp("apiary-test-user-XXXXXX", NULL), *path = NULL;
        _cleanup_(freep) char *error = NULL;
        Config *c = NULL;

        assert_non_null(dir);
        path = g_strdup_printf("%s/apiary.conf", dir);
        assert_true(g_file_set_contents(path, "[Pool p]\nPlugin=/x.so\nUser=no-such-user-apiary\n", -1, NULL));
        assert_true(config_load(path, 1, &c, &error) < 0);
        assert_non_null(strstr(error, "[Pool p] User=no-such-user-apiary: expected a user name that exists"));
        free(TAKE_PTR(error));

        assert_true(g_file_set_contents(path, "[Pool p]\nPlugin=/x.so\nGroup=no-such-group-apiary\n", -1, NULL));
        assert_true(config_load(path, 1, &c, &error) < 0);
        assert_non_null(strstr(error, "[Pool p] Group=no-such-group-apiary: expected a group name that exists"));
        (void) unlink(path);
        (void) rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_workers_run_as_the_pools_user, test_fixture_setup,
                                                test_fixture_teardown),
                cmocka_unit_test(test_unknown_user_is_a_config_error),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
