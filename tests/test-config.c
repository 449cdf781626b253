/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>
#include <cmocka.h>

#include <glib.h>

#include "build-config.h"
#include "config/config.h"
#include "util/macro.h"

#define N_CPUS 4
#define POISON ((Config *) 0x1)
#define SPAN " (e.g. 500ms, 30s, 5min)"

typedef struct Env {
        char dir[64];
        char *conf;             /* DIR/apiary.conf */
        char *dropins;          /* DIR/apiary.conf.d */
        char *plugins;          /* DIR/plugins */
} Env;

static int setup(void **state) {
        Env *e = calloc(1, sizeof(*e));

        assert_non_null(e);
        strcpy(e->dir, "/tmp/test-config-XXXXXX");
        assert_non_null(mkdtemp(e->dir));
        e->conf = g_strdup_printf("%s/apiary.conf", e->dir);
        e->dropins = g_strdup_printf("%s/apiary.conf.d", e->dir);
        e->plugins = g_strdup_printf("%s/plugins", e->dir);
        assert_int_equal(mkdir(e->plugins, 0755), 0);
        *state = e;
        return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static int teardown(void **state) {
        Env *e = *state;

        assert_int_equal(nftw(e->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
        g_free(e->conf);
        g_free(e->dropins);
        g_free(e->plugins);
        free(e);
        return 0;
}

static void write_file(const char *path, const char *text) {
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_true(fputs(text, f) >= 0);
        assert_int_equal(fclose(f), 0);
}

/* Writes DIR/apiary.conf.d/NAME and returns its path. */
static char *write_dropin(const Env *e, const char *name, const char *text) {
        char *path = g_strdup_printf("%s/%s", e->dropins, name);

        (void) mkdir(e->dropins, 0755);
        write_file(path, text);
        return path;
}

static Config *load_n(const Env *e, unsigned n_cpus) {
        Config *c = NULL;
        char *error = NULL;
        int r;

        r = config_load(e->conf, n_cpus, &c, &error);
        if (r < 0)
                fail_msg("config_load() failed: %d %s", r, error);
        assert_null(error);
        assert_non_null(c);
        return c;
}

static Config *load(const Env *e, const char *text) {
        write_file(e->conf, text);
        return load_n(e, N_CPUS);
}

/* Loads and expects exactly the error message EXPECTED; RET stays untouched. Returns the errno. */
static int assert_load_fails(const Env *e, const char *expected) {
        Config *c = POISON;
        char *error = NULL;
        int r;

        r = config_load(e->conf, N_CPUS, &c, &error);
        assert_true(r < 0);
        assert_ptr_equal(c, POISON);
        assert_non_null(error);
        assert_string_equal(error, expected);
        free(error);

        /* Also without anywhere to put the message. */
        assert_int_equal(config_load(e->conf, N_CPUS, &c, NULL), r);
        assert_ptr_equal(c, POISON);
        return r;
}

/* Writes TEXT as the main file and expects "MAIN:LINE: " SUFFIX. */
static void assert_conf_error(const Env *e, const char *text, unsigned line, const char *suffix) {
        g_autofree char *expected = g_strdup_printf("%s:%u: %s", e->conf, line, suffix);

        write_file(e->conf, text);
        assert_int_equal(assert_load_fails(e, expected), -EINVAL);
}

/* Same, with TEXT placed after "[Pool echo]\nPlugin=echo.so\n": its first line is line 3. */
static void assert_pool_error(const Env *e, const char *text, unsigned line, const char *suffix) {
        g_autofree char *conf = g_strconcat("[Pool echo]\nPlugin=echo.so\n", text, NULL);

        assert_conf_error(e, conf, line, suffix);
}

static void test_defaults(void **state) {
        Env *e = *state;
        Config *c;
        const PoolConfig *p;

        c = load(e, "# nothing but a pool\n[Pool echo]\nPlugin=echo.so\n");
        assert_string_equal(c->path, e->conf);
        assert_string_equal(c->plugin_directory, APIARY_PLUGIN_DIR);
        assert_int_equal(c->bus, BUS_KIND_SYSTEM);
        assert_null(c->bus_address);
        assert_int_equal(c->log_level, LOG_INFO);
        assert_int_equal(c->max_tasks_per_caller, 16384);
        assert_true(c->max_bytes_per_caller == 256ULL << 20);
        assert_int_equal(c->n_pools, 1);

        p = c->pools[0];
        assert_ptr_equal(config_find_pool(c, "echo"), p);
        assert_null(config_find_pool(c, "other"));
        assert_string_equal(p->name, "echo");
        assert_string_equal(p->plugin, "echo.so");
        assert_string_equal(p->plugin_path, APIARY_PLUGIN_DIR "/echo.so");
        /* Where Plugin= was written, for messages. */
        {
                g_autofree char *where = g_strdup_printf("%s:3", e->conf);

                assert_string_equal(p->plugin_file, where);
        }
        assert_int_equal(p->kind, POOL_KIND_CPU);
        assert_true(p->workers_auto);
        assert_int_equal(p->workers, N_CPUS);
        assert_int_equal(p->restart, RESTART_ALWAYS);
        assert_int_equal(p->restart_usec, 100 * USEC_PER_MSEC);
        assert_int_equal(p->restart_max_usec, 30 * USEC_PER_SEC);
        assert_int_equal(p->start_limit_burst, 5);
        assert_int_equal(p->start_limit_interval_usec, 10 * USEC_PER_SEC);
        assert_int_equal(p->failed_retry_usec, 5 * USEC_PER_MINUTE);
        assert_int_equal(p->start_timeout_usec, 30 * USEC_PER_SEC);
        assert_int_equal(p->stop_timeout_usec, 10 * USEC_PER_SEC);
        assert_int_equal(p->queue_limit, 65536);
        assert_true(p->queue_bytes_limit == 1ULL << 30);
        assert_int_equal(p->concurrency, 1);
        assert_int_equal(p->task_retries, 2);
        assert_int_equal(p->task_timeout_usec, USEC_INFINITY);
        assert_int_equal(p->max_tasks_per_worker, 0);
        assert_true(p->max_memory_per_worker == UINT64_MAX);
        assert_int_equal(p->max_worker_age_usec, USEC_INFINITY);
        assert_int_equal(p->max_worker_age_jitter_usec, USEC_INFINITY);
        assert_int_equal(p->priority_aging_usec, USEC_PER_SEC);
        assert_true(p->limit_data == UINT64_MAX);
        assert_int_equal(p->n_plugin, 0);
        config_free(c);

        /* An empty file is a valid configuration without pools. */
        c = load(e, "");
        assert_int_equal(c->n_pools, 0);
        assert_null(c->pools);
        config_free(c);
}

/* Shared pools: every Source key, HostId=, Workers=0; a name the engine cannot take. */
static void test_shared_pool_keys(void **state) {
        Env *e = *state;
        Config *c;
        const PoolConfig *p;

        c = load(e,
                 "[Apiary]\n"
                 "HostId=web-1\n"
                 "[Pool resize]\n"
                 "Plugin=echo.so\n"
                 "Workers=0\n"
                 "Source=nats://10.0.0.1:4222, n2:4222,tls://n3.example:4223\n"
                 "SourceReplicas=3\n"
                 "SourceLeaseSec=45s\n"
                 "SourceCredentials=/etc/apiary/nats.creds\n"
                 "SourceTLSCA=/etc/apiary/ca.pem\n");
        assert_string_equal(c->host_id, "web-1");
        p = config_find_pool(c, "resize");
        assert_int_equal(p->workers, 0);
        assert_string_equal(p->source, "nats://10.0.0.1:4222, n2:4222,tls://n3.example:4223");
        assert_int_equal(p->source_replicas, 3);
        assert_int_equal(p->source_lease_usec, 45 * USEC_PER_SEC);
        assert_string_equal(p->source_credentials, "/etc/apiary/nats.creds");
        assert_string_equal(p->source_tls_ca, "/etc/apiary/ca.pem");
        config_free(c);

        /* Defaults: one replica, a 30 s lease, the machine ID as HostId= (where there is one). */
        c = load(e, "[Pool resize]\nPlugin=echo.so\nSource=127.0.0.1:4222\n");
        p = config_find_pool(c, "resize");
        assert_int_equal(p->source_replicas, 1);
        assert_int_equal(p->source_lease_usec, 30 * USEC_PER_SEC);
        assert_null(p->source_credentials);
        if (access("/etc/machine-id", R_OK) == 0)
                assert_int_equal(strlen(c->host_id), 32);
        config_free(c);

        assert_conf_error(e, "[Apiary]\nHostId=web.1\n[Pool echo]\nPlugin=echo.so\n", 2,
                          "[Apiary] HostId=web.1: expected 1 to 64 characters of A-Z, a-z, 0-9, _ and -");
        assert_conf_error(e, "[Pool a.b]\nPlugin=echo.so\nSource=h:1\n", 3,
                          "[Pool a.b] Source=h:1: a shared pool's name names its stream in the engine: expected 1 "
                          "to 64 characters of A-Z, a-z, 0-9, _ and - (no \".\")");
}

static void test_every_key(void **state) {
        Env *e = *state;
        Config *c;
        const PoolConfig *p;

        c = load(e,
                 "[Apiary]\n"
                 "PluginDirectory=/opt/apiary/plugins/\n"
                 "Bus=session\n"
                 "LogLevel=debug\n"
                 "MaxTasksPerCaller=0\n"
                 "MaxBytesPerCaller=infinity\n"
                 "\n"
                 "[Pool echo]\n"
                 "Plugin=echo.so\n"
                 "Workers=7\n"
                 "Kind=io\n"
                 "Restart=on-failure\n"
                 "RestartSec=250ms\n"
                 "RestartMaxSec=1min 30s\n"
                 "StartLimitBurst=0\n"
                 "StartLimitIntervalSec=20\n"
                 "FailedRetrySec=infinity\n"
                 "StartTimeoutSec=1.5s\n"
                 "StopTimeoutSec=2min\n");
        assert_string_equal(c->plugin_directory, "/opt/apiary/plugins");
        assert_int_equal(c->bus, BUS_KIND_SESSION);
        assert_null(c->bus_address);
        assert_int_equal(c->log_level, LOG_DEBUG);
        assert_int_equal(c->max_tasks_per_caller, 0);
        assert_true(c->max_bytes_per_caller == UINT64_MAX);

        p = c->pools[0];
        assert_string_equal(p->plugin_path, "/opt/apiary/plugins/echo.so");
        assert_int_equal(p->kind, POOL_KIND_IO);
        assert_false(p->workers_auto);
        assert_int_equal(p->workers, 7);
        assert_int_equal(p->restart, RESTART_ON_FAILURE);
        assert_int_equal(p->restart_usec, 250 * USEC_PER_MSEC);
        assert_int_equal(p->restart_max_usec, 90 * USEC_PER_SEC);
        assert_int_equal(p->start_limit_burst, 0);
        assert_int_equal(p->start_limit_interval_usec, 20 * USEC_PER_SEC);
        assert_int_equal(p->failed_retry_usec, USEC_INFINITY);
        assert_int_equal(p->start_timeout_usec, 1500 * USEC_PER_MSEC);
        assert_int_equal(p->stop_timeout_usec, 2 * USEC_PER_MINUTE);
        config_free(c);

        c = load(e, "[Pool echo]\nPlugin=echo.so\nRestart=no\nWorkers=4096\nRestartSec=0\nRestartMaxSec=0\n"
                    "StartTimeoutSec=infinity\nStopTimeoutSec=1s 2\n");
        assert_int_equal(c->pools[0]->restart, RESTART_NO);
        assert_int_equal(c->pools[0]->workers, 4096);
        assert_int_equal(c->pools[0]->restart_usec, 0);
        assert_int_equal(c->pools[0]->restart_max_usec, 0);
        assert_int_equal(c->pools[0]->start_timeout_usec, USEC_INFINITY);
        assert_int_equal(c->pools[0]->stop_timeout_usec, 3 * USEC_PER_SEC);    /* bare numbers are seconds */
        config_free(c);

        /* The task and resource keys. */
        c = load(e, "[Pool echo]\nPlugin=echo.so\nQueueLimit=10\nConcurrency=3\nTaskRetries=0\nTaskTimeoutSec=1min\n"
                    "MaxTasksPerWorker=100\nLimitDATA=64M\nQueueBytesLimit=512K\nMaxMemoryPerWorker=1G\n"
                    "MaxWorkerAgeSec=1h\nMaxWorkerAgeJitterSec=0\nPriorityAgingSec=infinity\n");
        p = c->pools[0];
        assert_int_equal(p->queue_limit, 10);
        assert_true(p->queue_bytes_limit == 512ULL << 10);
        assert_int_equal(p->concurrency, 3);
        assert_int_equal(p->task_retries, 0);
        assert_int_equal(p->task_timeout_usec, USEC_PER_MINUTE);
        assert_int_equal(p->max_tasks_per_worker, 100);
        assert_true(p->max_memory_per_worker == 1ULL << 30);
        assert_int_equal(p->max_worker_age_usec, 3600 * USEC_PER_SEC);
        assert_int_equal(p->max_worker_age_jitter_usec, 0);
        assert_int_equal(p->priority_aging_usec, USEC_INFINITY);
        assert_true(p->limit_data == 64ULL << 20);
        config_free(c);
        c = load(e, "[Pool echo]\nPlugin=echo.so\nLimitDATA=4096\n[Pool two]\nPlugin=echo.so\nLimitDATA=infinity\n"
                    "[Pool three]\nPlugin=echo.so\nLimitDATA=2GiB\n");
        assert_true(c->pools[0]->limit_data == 4096);
        assert_true(c->pools[1]->limit_data == UINT64_MAX);
        assert_true(c->pools[2]->limit_data == 2ULL << 30);
        config_free(c);

        /* RestartMaxSec= may equal RestartSec=. */
        c = load(e, "[Pool echo]\nPlugin=echo.so\nRestart=always\nRestartSec=1min\nRestartMaxSec=60s\n");
        assert_int_equal(c->pools[0]->restart, RESTART_ALWAYS);
        assert_int_equal(c->pools[0]->restart_max_usec, USEC_PER_MINUTE);
        config_free(c);
}

static void test_log_level(void **state) {
        static const struct {
                const char *value;
                int level;
        } levels[] = {
                { "err", LOG_ERR }, { "warning", LOG_WARNING }, { "notice", LOG_NOTICE },
                { "info", LOG_INFO }, { "debug", LOG_DEBUG }, { "0", 0 }, { "3", 3 }, { "7", 7 },
        };
        Env *e = *state;

        for (size_t i = 0; i < ELEMENTSOF(levels); i++) {
                g_autofree char *text = g_strdup_printf("[Apiary]\nLogLevel=%s\n", levels[i].value);
                Config *c = load(e, text);

                assert_int_equal(c->log_level, levels[i].level);
                config_free(c);
        }
}

static void test_workers_auto(void **state) {
        static const char text[] =
                "[Pool c]\nPlugin=echo.so\nKind=cpu\nWorkers=auto\n"
                "[Pool i]\nPlugin=echo.so\nKind=io\n"
                "[Pool fixed]\nPlugin=echo.so\nKind=io\nWorkers=3\n";
        static const struct {
                unsigned n_cpus, cpu, io;
        } cases[] = {
                { 3, 3, 12 },
                { 0, 1, 4 },            /* unknown CPU count counts as one */
                { 2000, 2000, 4096 },   /* capped like an explicit Workers= */
        };
        Env *e = *state;

        write_file(e->conf, text);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Config *c = load_n(e, cases[i].n_cpus);

                assert_true(config_find_pool(c, "c")->workers_auto);
                assert_int_equal(config_find_pool(c, "c")->workers, cases[i].cpu);
                assert_true(config_find_pool(c, "i")->workers_auto);
                assert_int_equal(config_find_pool(c, "i")->workers, cases[i].io);
                assert_false(config_find_pool(c, "fixed")->workers_auto);
                assert_int_equal(config_find_pool(c, "fixed")->workers, 3);
                config_free(c);
        }
}

/* Workers=MIN..MAX: each side a number or "auto", resolved like Workers=auto; MIN above MAX once
 * resolved is an error naming the value; a shared pool does not autoscale. */
static void test_workers_range(void **state) {
        Env *e = *state;
        Config *c;
        const PoolConfig *p;
        g_autofree char *expected = NULL, *shared = NULL;

        write_file(e->conf, "[Pool a]\nPlugin=echo.so\nWorkers=2..16\nScaleDownIdleSec=5s\n"
                            "[Pool b]\nPlugin=echo.so\nKind=io\nWorkers=1..auto\n"
                            "[Pool fixed]\nPlugin=echo.so\nWorkers=3\n");
        c = load_n(e, 3);
        p = config_find_pool(c, "a");
        assert_int_equal(p->workers, 2);
        assert_int_equal(p->workers_max, 16);
        assert_int_equal(p->scale_down_idle_usec, 5 * USEC_PER_SEC);
        p = config_find_pool(c, "b");
        assert_int_equal(p->workers, 1);
        assert_int_equal(p->workers_max, 12);
        assert_int_equal(p->scale_down_idle_usec, 30 * USEC_PER_SEC);
        p = config_find_pool(c, "fixed");
        assert_int_equal(p->workers, 3);
        assert_int_equal(p->workers_max, 3);
        assert_false(pool_config_equal(config_find_pool(c, "a"), config_find_pool(c, "fixed")));
        config_free(c);

        /* 8..auto with auto = N_CPUS for Kind=cpu */
        write_file(e->conf, "[Pool a]\nPlugin=echo.so\nWorkers=8..auto\n");
        expected = g_strdup_printf("%s:3: [Pool a] Workers=8..auto: MIN is above MAX here (\"auto\" is %u for Kind=cpu)",
                                   e->conf, (unsigned) N_CPUS);
        if (N_CPUS < 8)
                assert_int_equal(assert_load_fails(e, expected), -EINVAL);

        write_file(e->conf, "[Pool a]\nPlugin=echo.so\nWorkers=1..4\nSource=127.0.0.1:4222\n");
        shared = g_strdup_printf("%s:3: [Pool a] Workers=1..4: a shared pool does not autoscale (its queue is the "
                                 "engine's); give it a number of workers", e->conf);
        assert_int_equal(assert_load_fails(e, shared), -EINVAL);
}

static void test_dropin_order(void **state) {
        Env *e = *state;
        g_autofree char *a = NULL, *b = NULL, *nine = NULL, *ten = NULL, *expected = NULL;
        Config *c;
        const PoolConfig *p;

        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\nWorkers=1\nKind=io\nRestartSec=1s\n");
        /* strcmp() order, not numeric or locale order: "10-" < "9-" and "B" < "a". */
        ten = write_dropin(e, "10-x.conf", "[Pool echo]\nWorkers=10\nRestartSec=2s\n");
        nine = write_dropin(e, "9-x.conf", "[Pool echo]\nWorkers=9\nPlugin=/usr/lib/nine.so\n");
        b = write_dropin(e, "B.conf", "[Pool echo]\nStopTimeoutSec=1\n");
        a = write_dropin(e, "a.conf", "[Pool echo]\nStopTimeoutSec=2\n");

        c = load_n(e, N_CPUS);
        p = c->pools[0];
        assert_int_equal(p->workers, 9);
        assert_int_equal(p->stop_timeout_usec, 2 * USEC_PER_SEC);
        /* Keys override one by one, not whole groups. */
        assert_int_equal(p->kind, POOL_KIND_IO);
        assert_int_equal(p->restart_usec, 2 * USEC_PER_SEC);
        assert_string_equal(p->plugin_path, "/usr/lib/nine.so");
        {
                g_autofree char *where = g_strdup_printf("%s:3", nine);

                assert_string_equal(p->plugin_file, where);
        }
        config_free(c);

        /* An error names the drop-in that set the bad value... */
        write_file(a, "[Pool echo]\nStopTimeoutSec=forever\n");
        expected = g_strdup_printf("%s:2: [Pool echo] StopTimeoutSec=forever: expected a positive time span" SPAN
                                   " or \"infinity\"", a);
        assert_load_fails(e, expected);

        /* ...and a bad value that a later file overrides is never looked at. */
        write_file(b, "[Pool echo]\nStopTimeoutSec=forever\n");
        write_file(a, "[Pool echo]\nStopTimeoutSec=3\n");
        c = load_n(e, N_CPUS);
        assert_int_equal(c->pools[0]->stop_timeout_usec, 3 * USEC_PER_SEC);
        config_free(c);
}

static void test_dropin_ignored(void **state) {
        Env *e = *state;
        g_autofree char *sub = NULL;
        Config *c;

        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\n");
        g_free(write_dropin(e, "x.conf.bak", "garbage\n"));
        g_free(write_dropin(e, "x.conf~", "garbage\n"));
        g_free(write_dropin(e, "README", "garbage\n"));
        g_free(write_dropin(e, "conf", "garbage\n"));
        g_free(write_dropin(e, ".hidden.conf", "garbage\n"));
        sub = g_strdup_printf("%s/subdir", e->dropins);
        assert_int_equal(mkdir(sub, 0755), 0);
        /* An editor's lock file: a hidden, dangling symlink named *.conf. */
        {
                g_autofree char *lock = g_strdup_printf("%s/.#x.conf", e->dropins);
                assert_int_equal(symlink("user@host.1234", lock), 0);
        }

        c = load_n(e, N_CPUS);
        assert_int_equal(c->n_pools, 1);
        assert_int_equal(c->pools[0]->workers, N_CPUS);
        config_free(c);
}

static void test_pool_order(void **state) {
        Env *e = *state;
        Config *c;

        write_file(e->conf,
                   "[Pool b]\nPlugin=echo.so\n"
                   "[Pool a]\nPlugin=echo.so\n");
        g_free(write_dropin(e, "50-x.conf",
                            "[Pool c Plugin]\nX=1\n"
                            "[Pool c]\nPlugin=echo.so\n"
                            "[Pool a]\nWorkers=2\n"
                            "[Pool 0]\nPlugin=echo.so\n"));

        c = load_n(e, N_CPUS);
        assert_int_equal(c->n_pools, 4);
        assert_string_equal(c->pools[0]->name, "b");
        assert_string_equal(c->pools[1]->name, "a");
        assert_string_equal(c->pools[2]->name, "c");
        assert_string_equal(c->pools[3]->name, "0");
        assert_int_equal(c->pools[1]->workers, 2);
        assert_int_equal(c->pools[2]->n_plugin, 1);
        config_free(c);
}

static void test_plugin_settings(void **state) {
        Env *e = *state;
        const PoolConfig *p;
        Config *c;

        write_file(e->conf,
                   "[Pool echo Plugin]\n"
                   "Prefix=hi\n"
                   "Greeting=hello world\n"
                   "Padded=\\sx\\n\n"
                   "Prefix=hi again\n"    /* a repeated key: the last one wins, like systemd */
                   "[Pool echo]\n"
                   "Plugin=echo.so\n"
                   "Workers=1\n"
                   "Workers=2\n");
        g_free(write_dropin(e, "50-x.conf", "[Pool echo Plugin]\nExtra=1\nPrefix=bye\n"));

        c = load_n(e, N_CPUS);
        p = c->pools[0];
        assert_int_equal(p->workers, 2);
        assert_int_equal(p->n_plugin, 4);
        assert_string_equal(p->plugin_keys[0], "Prefix");
        assert_string_equal(p->plugin_values[0], "bye");
        assert_string_equal(p->plugin_keys[1], "Greeting");
        assert_string_equal(p->plugin_values[1], "hello world");
        assert_string_equal(p->plugin_keys[2], "Padded");
        assert_string_equal(p->plugin_values[2], " x\n");
        assert_string_equal(p->plugin_keys[3], "Extra");
        assert_string_equal(p->plugin_values[3], "1");
        config_free(c);
}

static void test_plugin_path(void **state) {
        Env *e = *state;
        g_autofree char *dropin = NULL;
        Config *c;

        /* The final PluginDirectory= counts, even when set by a later file than Plugin=. */
        write_file(e->conf,
                   "[Pool rel]\nPlugin=echo.so\n"
                   "[Pool abs]\nPlugin=/srv/plugins/abs.so\n"
                   "[Apiary]\nPluginDirectory=/first\n");
        dropin = write_dropin(e, "50-x.conf", "[Apiary]\nPluginDirectory=/second//\n");
        c = load_n(e, N_CPUS);
        assert_string_equal(c->plugin_directory, "/second");
        assert_string_equal(config_find_pool(c, "rel")->plugin, "echo.so");
        assert_string_equal(config_find_pool(c, "rel")->plugin_path, "/second/echo.so");
        assert_string_equal(config_find_pool(c, "abs")->plugin_path, "/srv/plugins/abs.so");
        config_free(c);

        write_file(dropin, "[Apiary]\nPluginDirectory=/\n");
        c = load_n(e, N_CPUS);
        assert_string_equal(config_find_pool(c, "rel")->plugin_path, "/echo.so");
        config_free(c);
        assert_int_equal(unlink(dropin), 0);

        assert_conf_error(e, "[Pool echo]\nPlugin=lib/echo.so\n", 2,
                          "[Pool echo] Plugin=lib/echo.so: expected a file name in PluginDirectory= or an absolute path");
        assert_conf_error(e, "[Pool echo]\nPlugin=./echo.so\n", 2,
                          "[Pool echo] Plugin=./echo.so: expected a file name in PluginDirectory= or an absolute path");
        assert_conf_error(e, "[Pool echo]\nPlugin=..\n", 2,
                          "[Pool echo] Plugin=..: expected a file name in PluginDirectory= or an absolute path");
        assert_conf_error(e, "[Pool echo]\nPlugin=\n", 2,
                          "[Pool echo] Plugin=: expected a file name in PluginDirectory= or an absolute path");
        assert_conf_error(e, "[Apiary]\nPluginDirectory=plugins\n", 2,
                          "[Apiary] PluginDirectory=plugins: expected an absolute path");
        assert_conf_error(e, "[Apiary]\nMaxBytesPerCaller=0\n", 2,
                          "[Apiary] MaxBytesPerCaller=0: expected a positive size (e.g. 64M, 1G) or \"infinity\"");
}

static void test_bus(void **state) {
        Env *e = *state;
        g_autofree char *dropin = NULL;
        Config *c;

        c = load(e, "[Apiary]\nBus=system\n");
        assert_int_equal(c->bus, BUS_KIND_SYSTEM);
        assert_null(c->bus_address);
        config_free(c);

        c = load(e, "[Apiary]\nBus=session\n");
        assert_int_equal(c->bus, BUS_KIND_SESSION);
        assert_null(c->bus_address);
        config_free(c);

        c = load(e, "[Apiary]\nBus=unix:path=/run/apiary/bus\n");
        assert_int_equal(c->bus, BUS_KIND_ADDRESS);
        assert_string_equal(c->bus_address, "unix:path=/run/apiary/bus");
        config_free(c);

        c = load(e, "[Apiary]\nBus=tcp:host=127.0.0.1,port=4711\n");
        assert_int_equal(c->bus, BUS_KIND_ADDRESS);
        assert_string_equal(c->bus_address, "tcp:host=127.0.0.1,port=4711");
        config_free(c);

        /* A drop-in overrides an address back to a named bus. */
        dropin = write_dropin(e, "50-bus.conf", "[Apiary]\nBus=session\n");
        c = load(e, "[Apiary]\nBus=unix:path=/run/x\n");
        assert_int_equal(c->bus, BUS_KIND_SESSION);
        assert_null(c->bus_address);
        config_free(c);
        assert_int_equal(unlink(dropin), 0);

        assert_conf_error(e, "[Apiary]\nBus=user\n", 2,
                          "[Apiary] Bus=user: expected \"system\", \"session\" or a D-Bus address such as unix:path=/run/bus");
        assert_conf_error(e, "[Apiary]\nBus=unix:/run/x\n", 2,
                          "[Apiary] Bus=unix:/run/x: expected \"system\", \"session\" or a D-Bus address such as unix:path=/run/bus");
        assert_conf_error(e, "[Apiary]\nBus=path=/run/x\n", 2,
                          "[Apiary] Bus=path=/run/x: expected \"system\", \"session\" or a D-Bus address such as unix:path=/run/bus");
        assert_conf_error(e, "[Apiary]\nBus=:path=/run/x\n", 2,
                          "[Apiary] Bus=:path=/run/x: expected \"system\", \"session\" or a D-Bus address such as unix:path=/run/bus");
        assert_conf_error(e, "[Apiary]\nBus=System\n", 2,
                          "[Apiary] Bus=System: expected \"system\", \"session\" or a D-Bus address such as unix:path=/run/bus");
}

static void test_error_unknown(void **state) {
        Env *e = *state;

        assert_pool_error(e, "Wrkers=2\n", 3, "[Pool echo] Wrkers=2: unknown key; did you mean Workers=?");
        assert_pool_error(e, "workers=2\n", 3, "[Pool echo] workers=2: unknown key; did you mean Workers=?");
        assert_pool_error(e, "Restrat=no\n", 3, "[Pool echo] Restrat=no: unknown key; did you mean Restart=?");
        assert_pool_error(e, "StartLimitBurts=3\n", 3,
                          "[Pool echo] StartLimitBurts=3: unknown key; did you mean StartLimitBurst=?");
        /* Nothing near enough: no guess. */
        assert_pool_error(e, "Threads=2\n", 3, "[Pool echo] Threads=2: unknown key");
        assert_pool_error(e, "Workers[de]=2\n", 3, "[Pool echo] Workers[de]=2: unknown key");
        assert_conf_error(e, "[Apiary]\nPlugin=echo.so\n", 2, "[Apiary] Plugin=echo.so: unknown key");
        assert_conf_error(e, "[Apiary]\nLogTarget=journal\n", 2, "[Apiary] LogTarget=journal: unknown key");

        assert_conf_error(e, "[Daemon]\nX=1\n", 1,
                          "[Daemon]: unknown group; expected [Apiary], [Pool NAME] or [Pool NAME Plugin]");
        assert_conf_error(e, "[Pool]\n", 1,
                          "[Pool]: unknown group; expected [Apiary], [Pool NAME] or [Pool NAME Plugin]");
        assert_conf_error(e, "[pool echo]\nPlugin=echo.so\n", 1,
                          "[pool echo]: unknown group; expected [Apiary], [Pool NAME] or [Pool NAME Plugin]");
        assert_conf_error(e, "[apiary]\n", 1,
                          "[apiary]: unknown group; expected [Apiary], [Pool NAME] or [Pool NAME Plugin]");
}

static void test_error_values(void **state) {
        static const struct {
                const char *line, *message;
        } cases[] = {
                /* Workers=: number and range */
                { "Workers=lots", "Workers=lots: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=0", "Workers=0: expected a number from 1 to 4096 or \"auto\" (0 only for a shared pool, with "
                               "Source=: a host that only submits)" },
                { "Workers=4097", "Workers=4097: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=-1", "Workers=-1: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=+2", "Workers=+2: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=2x", "Workers=2x: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=2 3", "Workers=2 3: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=0x10", "Workers=0x10: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=99999999999999999999", "Workers=99999999999999999999: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=Auto", "Workers=Auto: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=", "Workers=: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                /* enums */
                { "Kind=gpu", "Kind=gpu: expected \"cpu\" or \"io\"" },
                { "Kind=CPU", "Kind=CPU: expected \"cpu\" or \"io\"" },
                { "Restart=sometimes", "Restart=sometimes: expected \"always\", \"on-failure\" or \"no\"" },
                { "Restart=yes", "Restart=yes: expected \"always\", \"on-failure\" or \"no\"" },
                { "Restart=", "Restart=: expected \"always\", \"on-failure\" or \"no\"" },
                /* unsigned */
                { "StartLimitBurst=-1", "StartLimitBurst=-1: expected a non-negative integer" },
                { "StartLimitBurst=1.5", "StartLimitBurst=1.5: expected a non-negative integer" },
                { "StartLimitBurst=5 times", "StartLimitBurst=5 times: expected a non-negative integer" },
                { "StartLimitBurst=4294967296", "StartLimitBurst=4294967296: expected a non-negative integer" },
                { "StartLimitBurst=", "StartLimitBurst=: expected a non-negative integer" },
                /* time spans */
                { "RestartSec=5 parsecs", "RestartSec=5 parsecs: expected a time span" SPAN },
                { "RestartSec=-1s", "RestartSec=-1s: expected a time span" SPAN },
                { "RestartSec=infinity", "RestartSec=infinity: expected a time span" SPAN },
                { "RestartSec=", "RestartSec=: expected a time span" SPAN },
                { "RestartMaxSec=soon", "RestartMaxSec=soon: expected a time span" SPAN },
                { "StartLimitIntervalSec=0", "StartLimitIntervalSec=0: expected a positive time span" SPAN },
                { "StartLimitIntervalSec=1x", "StartLimitIntervalSec=1x: expected a positive time span" SPAN },
                { "FailedRetrySec=never", "FailedRetrySec=never: expected a time span" SPAN " or \"infinity\"" },
                { "FailedRetrySec=99999999999999999999", "FailedRetrySec=99999999999999999999: expected a time span" SPAN " or \"infinity\"" },
                { "StartTimeoutSec=0", "StartTimeoutSec=0: expected a positive time span" SPAN " or \"infinity\"" },
                { "StartTimeoutSec=30 s x", "StartTimeoutSec=30 s x: expected a positive time span" SPAN " or \"infinity\"" },
                { "StopTimeoutSec=0ms", "StopTimeoutSec=0ms: expected a positive time span" SPAN " or \"infinity\"" },
                /* the rest of the keys: wrong type, out of range, empty */
                { "Kind=", "Kind=: expected \"cpu\" or \"io\"" },
                { "RestartMaxSec=infinity", "RestartMaxSec=infinity: expected a time span" SPAN },
                { "StartLimitIntervalSec=infinity", "StartLimitIntervalSec=infinity: expected a positive time span" SPAN },
                { "Workers=4..2", "Workers=4..2: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=0..4", "Workers=0..4: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=2..", "Workers=2..: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=..3", "Workers=..3: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "Workers=1..4097", "Workers=1..4097: expected a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
                { "ScaleDownIdleSec=0", "ScaleDownIdleSec=0: expected a positive time span" SPAN },
                { "QueueLimit=0", "QueueLimit=0: expected a positive integer" },
                { "QueueLimit=-1", "QueueLimit=-1: expected a positive integer" },
                { "QueueLimit=many", "QueueLimit=many: expected a positive integer" },
                { "QueueLimit=4294967296", "QueueLimit=4294967296: expected a positive integer" },
                { "QueueLimit=", "QueueLimit=: expected a positive integer" },
                { "Concurrency=0", "Concurrency=0: expected a positive integer or \"auto\"" },
                { "Concurrency=Auto", "Concurrency=Auto: expected a positive integer or \"auto\"" },
                { "Concurrency=1.5", "Concurrency=1.5: expected a positive integer or \"auto\"" },
                { "TaskRetries=-1", "TaskRetries=-1: expected a non-negative integer" },
                { "TaskRetries=two", "TaskRetries=two: expected a non-negative integer" },
                { "TaskTimeoutSec=0", "TaskTimeoutSec=0: expected a positive time span" SPAN " or \"infinity\"" },
                { "TaskTimeoutSec=soon", "TaskTimeoutSec=soon: expected a positive time span" SPAN " or \"infinity\"" },
                { "MaxTasksPerWorker=-5", "MaxTasksPerWorker=-5: expected a non-negative integer (0: no limit)" },
                { "MaxTasksPerWorker=1e3", "MaxTasksPerWorker=1e3: expected a non-negative integer (0: no limit)" },
                { "LimitDATA=0", "LimitDATA=0: expected a positive size (e.g. 512M, 2G) or \"infinity\"" },
                { "LimitDATA=-1", "LimitDATA=-1: expected a positive size (e.g. 512M, 2G) or \"infinity\"" },
                { "LimitDATA=64X", "LimitDATA=64X: expected a positive size (e.g. 512M, 2G) or \"infinity\"" },
                { "LimitDATA=lots", "LimitDATA=lots: expected a positive size (e.g. 512M, 2G) or \"infinity\"" },
                { "LimitDATA=99999999999999999999", "LimitDATA=99999999999999999999: expected a positive size (e.g. 512M, 2G) or \"infinity\"" },
                { "LimitDATA=", "LimitDATA=: expected a positive size (e.g. 512M, 2G) or \"infinity\"" },
                { "QueueBytesLimit=0", "QueueBytesLimit=0: expected a positive size (e.g. 512M, 2G) or \"infinity\"" },
                /* shared pools */
                { "Source=", "Source=: expected nats://HOST:PORT, or several separated by commas" },
                { "Source=nats://host", "Source=nats://host: expected nats://HOST:PORT, or several separated by commas" },
                { "Source=host:0", "Source=host:0: expected nats://HOST:PORT, or several separated by commas" },
                { "Source=a:1,:2", "Source=a:1,:2: expected nats://HOST:PORT, or several separated by commas" },
                { "Source=h st:1", "Source=h st:1: expected nats://HOST:PORT, or several separated by commas" },
                { "SourceReplicas=2", "SourceReplicas=2: expected 1, 3 or 5" },
                { "SourceReplicas=", "SourceReplicas=: expected 1, 3 or 5" },
                { "SourceLeaseSec=0", "SourceLeaseSec=0: expected a positive time span" SPAN },
                { "SourceCredentials=x.creds", "SourceCredentials=x.creds: expected an absolute path (a NATS .creds file)" },
                { "SourceTLSCA=ca.pem", "SourceTLSCA=ca.pem: expected an absolute path (CA certificates, PEM)" },
                { "QueueBytesLimit=1Q", "QueueBytesLimit=1Q: expected a positive size (e.g. 512M, 2G) or \"infinity\"" },
        };
        Env *e = *state;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                g_autofree char *line = g_strconcat(cases[i].line, "\n", NULL);
                g_autofree char *message = g_strconcat("[Pool echo] ", cases[i].message, NULL);

                assert_pool_error(e, line, 3, message);
        }

        assert_conf_error(e, "[Apiary]\nLogLevel=loud\n", 2,
                          "[Apiary] LogLevel=loud: expected a log level: emerg, alert, crit, err, warning, notice, info, debug or 0-7");
        assert_conf_error(e, "[Apiary]\nLogLevel=8\n", 2,
                          "[Apiary] LogLevel=8: expected a log level: emerg, alert, crit, err, warning, notice, info, debug or 0-7");
        assert_conf_error(e, "[Apiary]\nLogLevel=-1\n", 2,
                          "[Apiary] LogLevel=-1: expected a log level: emerg, alert, crit, err, warning, notice, info, debug or 0-7");
        assert_conf_error(e, "[Apiary]\nLogLevel=\n", 2,
                          "[Apiary] LogLevel=: expected a log level: emerg, alert, crit, err, warning, notice, info, debug or 0-7");
        assert_conf_error(e, "[Apiary]\nPluginDirectory=\n", 2, "[Apiary] PluginDirectory=: expected an absolute path");
        assert_conf_error(e, "[Apiary]\nBus=\n", 2,
                          "[Apiary] Bus=: expected \"system\", \"session\" or a D-Bus address such as unix:path=/run/bus");
        /* Names are resolved when the file is read: an unknown one is an error. */
        assert_conf_error(e, "[Apiary]\nSubmitUsers=root no-such-user-apiary\n", 2,
                          "[Apiary] SubmitUsers=root no-such-user-apiary: expected user names or numeric UIDs, separated by spaces");
        assert_conf_error(e, "[Apiary]\nSubmitGroups=no-such-group-apiary\n", 2,
                          "[Apiary] SubmitGroups=no-such-group-apiary: expected group names or numeric GIDs, separated by spaces");
        assert_conf_error(e, "[Apiary]\nControlUsers=-1\n", 2,
                          "[Apiary] ControlUsers=-1: expected user names or numeric UIDs, separated by spaces");
        assert_conf_error(e, "[Apiary]\nControlGroups=4294967296\n", 2,
                          "[Apiary] ControlGroups=4294967296: expected group names or numeric GIDs, separated by spaces");
}

static void test_error_restart_max(void **state) {
        Env *e = *state;
        g_autofree char *dropin = NULL, *expected = NULL;

        assert_pool_error(e, "RestartSec=5s\nRestartMaxSec=1s\n", 4,
                          "[Pool echo] RestartMaxSec=1s: expected a time span >= RestartSec= (5s)");
        /* With RestartMaxSec= at its default, the message still points at it. */
        assert_pool_error(e, "RestartSec=1min\n", 3,
                          "[Pool echo] RestartSec=1min: expected a time span <= RestartMaxSec= (default 30s)");

        /* The file named is the one that set RestartMaxSec=. */
        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\nRestartMaxSec=2s\n");
        dropin = write_dropin(e, "50-x.conf", "[Pool echo]\nRestartSec=3s\n");
        expected = g_strdup_printf("%s:3: [Pool echo] RestartMaxSec=2s: expected a time span >= RestartSec= (3s)",
                                   e->conf);
        assert_load_fails(e, expected);
}

static void test_error_missing_plugin(void **state) {
        Env *e = *state;
        g_autofree char *dropin = NULL, *expected = NULL;

        assert_conf_error(e, "[Pool echo]\nWorkers=2\n", 1, "[Pool echo]: missing Plugin=");
        assert_conf_error(e, "[Pool echo]\n", 1, "[Pool echo]: missing Plugin=");

        /* Named after the last file that has the group. */
        write_file(e->conf, "[Pool echo]\nWorkers=2\n[Pool other]\nPlugin=echo.so\n");
        dropin = write_dropin(e, "50-x.conf", "[Pool echo]\nKind=io\n");
        expected = g_strdup_printf("%s:1: [Pool echo]: missing Plugin=", dropin);
        assert_load_fails(e, expected);
}

static void test_error_plugin_group_without_pool(void **state) {
        Env *e = *state;

        assert_conf_error(e, "[Pool echo]\nPlugin=echo.so\n[Pool ehco Plugin]\nPrefix=x\n", 3,
                          "[Pool ehco Plugin]: no matching [Pool ehco] group");
        assert_conf_error(e, "[Pool echo Plugin]\n", 1,
                          "[Pool echo Plugin]: no matching [Pool echo] group");
}

static void test_error_pool_name(void **state) {
        Env *e = *state;
        g_autofree char *long_name = g_strnfill(65, 'a');
        g_autofree char *text = NULL, *message = NULL;
        Config *c;

        assert_conf_error(e, "[Pool a/b]\nPlugin=echo.so\n", 1,
                          "[Pool a/b]: invalid pool name \"a/b\"; expected 1 to 64 characters from A-Z, a-z, 0-9, \"_\", \".\" and \"-\"");
        assert_conf_error(e, "[Pool ]\nPlugin=echo.so\n", 1,
                          "[Pool ]: invalid pool name \"\"; expected 1 to 64 characters from A-Z, a-z, 0-9, \"_\", \".\" and \"-\"");
        assert_conf_error(e, "[Pool my pool]\nPlugin=echo.so\n", 1,
                          "[Pool my pool]: invalid pool name \"my pool\"; expected 1 to 64 characters from A-Z, a-z, 0-9, \"_\", \".\" and \"-\"");
        assert_conf_error(e, "[Pool a:b Plugin]\nX=1\n", 1,
                          "[Pool a:b Plugin]: invalid pool name \"a:b\"; expected 1 to 64 characters from A-Z, a-z, 0-9, \"_\", \".\" and \"-\"");

        text = g_strdup_printf("[Pool %s]\nPlugin=echo.so\n", long_name);
        message = g_strdup_printf("[Pool %s]: invalid pool name \"%s\"; expected 1 to 64 characters from A-Z, a-z, 0-9, \"_\", \".\" and \"-\"",
                                  long_name, long_name);
        assert_conf_error(e, text, 1, message);

        /* 64 is fine, and so is a pool called "Plugin". */
        long_name[64] = '\0';
        g_free(text);
        text = g_strdup_printf("[Pool %s]\nPlugin=echo.so\n[Pool Plugin]\nPlugin=echo.so\n[Pool Plugin Plugin]\nX=1\n",
                               long_name);
        c = load(e, text);
        assert_int_equal(c->n_pools, 2);
        assert_string_equal(c->pools[1]->name, "Plugin");
        assert_int_equal(c->pools[1]->n_plugin, 1);
        config_free(c);
}

/* One run tells every problem of the configuration, each on its line, in the order found. */
static void test_error_all_of_them(void **state) {
        Env *e = *state;
        g_autofree char *dropin = NULL, *expected = NULL;

        write_file(e->conf, "[Apiary]\nLogLevel=loud\n[Pool echo]\nPlugin=echo.so\nWrkers=2\nKind=gpu\n"
                            "[Pool two]\nWorkers=3\n[Nope]\n[Pool ghost Plugin]\nX=1\n");
        dropin = write_dropin(e, "50-x.conf", "[Pool echo]\nRestart=sometimes\n");
        expected = g_strdup_printf(
                "%1$s:2: [Apiary] LogLevel=loud: expected a log level: emerg, alert, crit, err, warning, notice, info, debug or 0-7\n"
                "%1$s:5: [Pool echo] Wrkers=2: unknown key; did you mean Workers=?\n"
                "%1$s:6: [Pool echo] Kind=gpu: expected \"cpu\" or \"io\"\n"
                "%2$s:2: [Pool echo] Restart=sometimes: expected \"always\", \"on-failure\" or \"no\"\n"
                "%1$s:7: [Pool two]: missing Plugin=\n"
                "%1$s:9: [Nope]: unknown group; expected [Apiary], [Pool NAME] or [Pool NAME Plugin]\n"
                "%1$s:10: [Pool ghost Plugin]: no matching [Pool ghost] group",
                e->conf, dropin);
        assert_int_equal(assert_load_fails(e, expected), -EINVAL);
}

static void test_error_duplicate_group(void **state) {
        Env *e = *state;

        assert_conf_error(e, "[Pool echo]\nPlugin=echo.so\n[Pool other]\nPlugin=echo.so\n[Pool echo]\nWorkers=2\n", 5,
                          "[Pool echo]: group appears more than once in this file (first on line 1)");
        assert_conf_error(e, "[Apiary]\nLogLevel=info\n\n  [Apiary]  \nBus=session\n", 4,
                          "[Apiary]: group appears more than once in this file (first on line 1)");
        assert_conf_error(e, "[Pool echo]\nPlugin=echo.so\n[Pool echo Plugin]\nX=1\n[Pool echo Plugin]\nY=1\n", 5,
                          "[Pool echo Plugin]: group appears more than once in this file (first on line 3)");
}

static void test_error_parse(void **state) {
        Env *e = *state;
        g_autofree char *dropin = NULL, *expected = NULL;

        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\n");
        dropin = write_dropin(e, "50-x.conf", "[Pool echo]\nthis is not a key\n");
        expected = g_strdup_printf("%s:2: expected KEY=VALUE, a [GROUP] header or a # comment, got \"this is not a key\"",
                                   dropin);
        assert_int_equal(assert_load_fails(e, expected), -EBADMSG);

        /* Every bad line of the file, each with its number. */
        write_file(dropin, "Workers=2\n[Pool echo\n# fine\n\n[Pool echo]\n  Kind = io  \nnot a key\n=3\n");
        g_free(expected);
        expected = g_strdup_printf("%1$s:1: \"Workers=2\" comes before any [GROUP] header\n"
                                   "%1$s:2: expected a group header \"[NAME]\", got \"[Pool echo\"\n"
                                   "%1$s:7: expected KEY=VALUE, a [GROUP] header or a # comment, got \"not a key\"\n"
                                   "%1$s:8: expected KEY=VALUE, a [GROUP] header or a # comment, got \"=3\"",
                                   dropin);
        assert_int_equal(assert_load_fails(e, expected), -EBADMSG);
        assert_int_equal(unlink(dropin), 0);

        /* Bad escapes and NUL bytes. */
        assert_conf_error(e, "[Pool echo]\nPlugin=echo.so\n[Pool echo Plugin]\nX=a\\qb\n", 4,
                          "[Pool echo Plugin] X=a\\qb: expected UTF-8 text with valid escapes (\\s \\n \\t \\r \\\\)");
        {
                static const char nul[] = "[Pool echo]\nPlugin=echo.so\0\n";
                FILE *f = fopen(e->conf, "we");

                assert_non_null(f);
                assert_int_equal(fwrite(nul, 1, sizeof(nul) - 1, f), sizeof(nul) - 1);
                assert_int_equal(fclose(f), 0);
                g_free(expected);
                expected = g_strdup_printf("%s: cannot parse: file contains a NUL byte", e->conf);
                assert_int_equal(assert_load_fails(e, expected), -EBADMSG);
        }
}

static void test_error_missing_main(void **state) {
        Env *e = *state;
        g_autofree char *expected = g_strdup_printf("%s: cannot read: No such file or directory", e->conf);

        assert_int_equal(assert_load_fails(e, expected), -ENOENT);

        /* A drop-in directory alone does not make a configuration. */
        g_free(write_dropin(e, "50-x.conf", "[Pool echo]\nPlugin=echo.so\n"));
        assert_int_equal(assert_load_fails(e, expected), -ENOENT);

        assert_int_equal(mkdir(e->conf, 0755), 0);
        g_clear_pointer(&expected, g_free);
        expected = g_strdup_printf("%s: cannot read: Is a directory", e->conf);
        assert_int_equal(assert_load_fails(e, expected), -EISDIR);
}

static void test_error_dropin_unreadable(void **state) {
        Env *e = *state;
        g_autofree char *path = NULL, *expected = NULL;

        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\n");
        (void) mkdir(e->dropins, 0755);

        /* A dangling symlink. */
        path = g_strdup_printf("%s/50-dangling.conf", e->dropins);
        assert_int_equal(symlink("/nonexistent/apiary.conf", path), 0);
        expected = g_strdup_printf("%s: cannot read: No such file or directory", path);
        assert_int_equal(assert_load_fails(e, expected), -ENOENT);
        assert_int_equal(unlink(path), 0);
        g_clear_pointer(&path, g_free);
        g_clear_pointer(&expected, g_free);

        /* A directory. */
        path = g_strdup_printf("%s/50-dir.conf", e->dropins);
        assert_int_equal(mkdir(path, 0755), 0);
        expected = g_strdup_printf("%s: cannot read: Is a directory", path);
        assert_int_equal(assert_load_fails(e, expected), -EISDIR);
        assert_int_equal(rmdir(path), 0);
        g_clear_pointer(&path, g_free);
        g_clear_pointer(&expected, g_free);

        /* A FIFO: rejected without blocking. */
        path = g_strdup_printf("%s/50-fifo.conf", e->dropins);
        assert_int_equal(mkfifo(path, 0644), 0);
        expected = g_strdup_printf("%s: cannot read: not a regular file", path);
        assert_int_equal(assert_load_fails(e, expected), -EBADFD);
        assert_int_equal(unlink(path), 0);
        g_clear_pointer(&path, g_free);
        g_clear_pointer(&expected, g_free);

        /* PATH.d that is not a directory. */
        assert_int_equal(rmdir(e->dropins), 0);
        write_file(e->dropins, "");
        expected = g_strdup_printf("%s: cannot open drop-in directory: Not a directory", e->dropins);
        assert_int_equal(assert_load_fails(e, expected), -ENOTDIR);
        assert_int_equal(unlink(e->dropins), 0);
}

static void test_error_dropin_loop(void **state) {
        Env *e = *state;
        g_autofree char *a = NULL, *b = NULL, *self = NULL, *expected = NULL;

        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\n");
        (void) mkdir(e->dropins, 0755);
        a = g_strdup_printf("%s/a.conf", e->dropins);
        b = g_strdup_printf("%s/b.conf", e->dropins);
        assert_int_equal(symlink("b.conf", a), 0);
        assert_int_equal(symlink("a.conf", b), 0);
        expected = g_strdup_printf("%s: cannot read: Too many levels of symbolic links", a);
        assert_int_equal(assert_load_fails(e, expected), -ELOOP);
        assert_int_equal(unlink(a), 0);
        assert_int_equal(unlink(b), 0);
        g_clear_pointer(&expected, g_free);

        self = g_strdup_printf("%s/self.conf", e->dropins);
        assert_int_equal(symlink("self.conf", self), 0);
        expected = g_strdup_printf("%s: cannot read: Too many levels of symbolic links", self);
        assert_int_equal(assert_load_fails(e, expected), -ELOOP);
}

static void test_error_dropin_dir_loop(void **state) {
        Env *e = *state;
        g_autofree char *expected = NULL, *dot = NULL;

        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\n");

        /* PATH.d itself a symlink loop: the error names the directory. */
        assert_int_equal(symlink("apiary.conf.d", e->dropins), 0);
        expected = g_strdup_printf("%s: cannot open drop-in directory: Too many levels of symbolic links", e->dropins);
        assert_int_equal(assert_load_fails(e, expected), -ELOOP);
        assert_int_equal(unlink(e->dropins), 0);
        g_clear_pointer(&expected, g_free);

        /* A drop-in that is a symlink back to its own directory: a directory, not a file. */
        assert_int_equal(mkdir(e->dropins, 0755), 0);
        dot = g_strdup_printf("%s/50-dot.conf", e->dropins);
        assert_int_equal(symlink(".", dot), 0);
        expected = g_strdup_printf("%s: cannot read: Is a directory", dot);
        assert_int_equal(assert_load_fails(e, expected), -EISDIR);
}

/* Loads E's configuration as UID 65534 in a child (root reads everything), and returns the error
 * message, or "" if it loaded. */
static char *load_as_nobody(const Env *e) {
        char buf[1024] = "";
        int p[2], status;
        ssize_t n;
        pid_t pid;

        assert_int_equal(pipe(p), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char *error = NULL;

                close(p[0]);
                if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
                        _exit(2);
                if (config_load(e->conf, N_CPUS, NULL, &error) < 0 && error)
                        (void) !write(p[1], error, strlen(error));
                _exit(0);
        }
        close(p[1]);
        n = read(p[0], buf, sizeof(buf) - 1);
        close(p[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        buf[n > 0 ? n : 0] = '\0';
        return g_strdup(buf);
}

static void test_error_unreadable(void **state) {
        Env *e = *state;
        g_autofree char *dropin = NULL, *expected = NULL, *error = NULL;

        if (geteuid() != 0)
                skip();         /* a user's test run: chmod 000 would do, but the checks below are root's */

        /* The files are root's, 0600, in a directory others may enter. */
        assert_int_equal(chmod(e->dir, 0755), 0);
        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\n");
        assert_int_equal(chmod(e->conf, 0600), 0);
        error = load_as_nobody(e);
        expected = g_strdup_printf("%s: cannot read: Permission denied", e->conf);
        assert_string_equal(error, expected);
        g_clear_pointer(&error, g_free);
        g_clear_pointer(&expected, g_free);

        /* A readable main file, an unreadable drop-in: the drop-in is named. */
        assert_int_equal(chmod(e->conf, 0644), 0);
        dropin = write_dropin(e, "50-secret.conf", "[Pool echo]\nWorkers=2\n");
        assert_int_equal(chmod(dropin, 0600), 0);
        error = load_as_nobody(e);
        expected = g_strdup_printf("%s: cannot read: Permission denied", dropin);
        assert_string_equal(error, expected);
        g_clear_pointer(&error, g_free);
        g_clear_pointer(&expected, g_free);

        /* A drop-in directory that cannot be listed. */
        assert_int_equal(chmod(e->dropins, 0700), 0);
        error = load_as_nobody(e);
        expected = g_strdup_printf("%s: cannot open drop-in directory: Permission denied", e->dropins);
        assert_string_equal(error, expected);

        assert_int_equal(chmod(e->dropins, 0755), 0);
        assert_int_equal(chmod(dropin, 0644), 0);
        g_free(error);
        error = load_as_nobody(e);
        assert_string_equal(error, "");
}

static void test_error_duplicate_group_in_dropin(void **state) {
        Env *e = *state;
        g_autofree char *dropin = NULL, *expected = NULL;
        Config *c;

        /* The same group in two files is how drop-ins work; twice in one drop-in is an error that
         * names the drop-in. */
        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\n");
        dropin = write_dropin(e, "50-x.conf", "[Pool echo]\nWorkers=2\n[Apiary]\nLogLevel=debug\n[Pool echo]\nWorkers=3\n");
        expected = g_strdup_printf("%s:5: [Pool echo]: group appears more than once in this file (first on line 1)",
                                   dropin);
        assert_int_equal(assert_load_fails(e, expected), -EINVAL);

        write_file(dropin, "[Pool echo]\nWorkers=2\n");
        g_free(write_dropin(e, "60-y.conf", "[Pool echo]\nWorkers=3\n"));
        c = load_n(e, N_CPUS);
        assert_int_equal(c->pools[0]->workers, 3);
        config_free(c);
}

static void test_ret_pointers(void **state) {
        Env *e = *state;
        char *error = (char *) "untouched";
        Config *c = NULL;

        /* On success *ret_error stays as it was, and RET may be NULL to only validate. */
        write_file(e->conf, "[Pool echo]\nPlugin=echo.so\n");
        assert_int_equal(config_load(e->conf, N_CPUS, &c, &error), 0);
        assert_string_equal(error, "untouched");
        assert_non_null(c);
        config_free(c);
        assert_int_equal(config_load(e->conf, N_CPUS, NULL, NULL), 0);

        write_file(e->conf, "[Pool echo]\nWorkers=x\n");
        assert_int_equal(config_load(e->conf, N_CPUS, NULL, NULL), -EINVAL);

        assert_null(config_free(NULL));
        assert_null(pool_config_free(NULL));
        assert_null(config_find_pool(NULL, "echo"));
}

static void test_check_plugins(void **state) {
        Env *e = *state;
        g_autofree char *text = NULL, *good = NULL, *dir = NULL, *fifo = NULL, *dropin = NULL;
        g_autofree char *m1 = NULL, *m2 = NULL, *m3 = NULL;
        char **errors = NULL;
        Config *c;

        good = g_strdup_printf("%s/echo.so", e->plugins);
        write_file(good, "");
        dir = g_strdup_printf("%s/dir.so", e->plugins);
        assert_int_equal(mkdir(dir, 0755), 0);
        fifo = g_strdup_printf("%s/fifo.so", e->plugins);
        assert_int_equal(mkfifo(fifo, 0644), 0);

        text = g_strdup_printf("[Apiary]\nPluginDirectory=%s\n"
                               "[Pool good]\nPlugin=echo.so\n"
                               "[Pool abs]\nPlugin=%s\n",
                               e->plugins, good);
        c = load(e, text);
        assert_int_equal(config_check_plugins(c, &errors), 0);
        assert_null(errors);
        config_free(c);

        dropin = write_dropin(e, "50-x.conf",
                              "[Pool missing]\nPlugin=echo-missing.so\n"
                              "[Pool dir]\nPlugin=dir.so\n"
                              "[Pool fifo]\nPlugin=fifo.so\n");
        c = load(e, text);
        assert_int_equal(c->n_pools, 5);
        assert_int_equal(config_check_plugins(c, NULL), 3);

        m1 = g_strdup_printf("%s:2: [Pool missing] Plugin=echo-missing.so: %s/echo-missing.so: No such file or directory",
                             dropin, e->plugins);
        m2 = g_strdup_printf("%s:4: [Pool dir] Plugin=dir.so: %s: Is a directory", dropin, dir);
        m3 = g_strdup_printf("%s:6: [Pool fifo] Plugin=fifo.so: %s: not a regular file", dropin, fifo);

        assert_int_equal(config_check_plugins(c, &errors), 3);
        assert_non_null(errors);
        assert_int_equal(g_strv_length(errors), 3);
        assert_string_equal(errors[0], m1);
        assert_string_equal(errors[1], m2);
        assert_string_equal(errors[2], m3);

        /* Appends to what is there. */
        assert_int_equal(config_check_plugins(c, &errors), 3);
        assert_int_equal(g_strv_length(errors), 6);
        assert_string_equal(errors[3], m1);
        assert_string_equal(errors[5], m3);
        g_strfreev(errors);
        config_free(c);
}

static void test_pool_config_equal(void **state) {
        Env *e = *state;
        static const char text[] =
                "[Pool echo]\nPlugin=echo.so\nWorkers=3\n"
                "[Pool echo Plugin]\nA=1\nB=2\n";
        char *keys_swapped[] = { (char *) "B", (char *) "A", NULL };
        char *values_swapped[] = { (char *) "2", (char *) "1", NULL };
        char *values_changed[] = { (char *) "2", (char *) "x", NULL };
        char *keys_renamed[] = { (char *) "B", (char *) "C", NULL };
        const PoolConfig *a;
        PoolConfig b;
        Config *c1, *c2;

        c1 = load(e, text);
        c2 = load(e, text);
        a = c1->pools[0];
        assert_true(pool_config_equal(a, c2->pools[0]));
        assert_true(pool_config_equal(a, a));
        assert_false(pool_config_equal(a, NULL));
        assert_false(pool_config_equal(NULL, a));
        assert_true(pool_config_equal(NULL, NULL));

#define ASSERT_DIFFERS(field, value)                            \
        do {                                                    \
                b = *a;                                         \
                b.field = (value);                              \
                assert_false(pool_config_equal(a, &b));         \
                assert_false(pool_config_equal(&b, a));         \
        } while (0)

        ASSERT_DIFFERS(name, (char *) "other");
        ASSERT_DIFFERS(plugin, (char *) "other.so");
        ASSERT_DIFFERS(plugin_path, (char *) "/other.so");
        ASSERT_DIFFERS(kind, POOL_KIND_IO);
        ASSERT_DIFFERS(workers, 4);
        ASSERT_DIFFERS(workers_auto, true);
        ASSERT_DIFFERS(restart, RESTART_NO);
        ASSERT_DIFFERS(restart_usec, 1);
        ASSERT_DIFFERS(restart_max_usec, 1);
        ASSERT_DIFFERS(start_limit_burst, 0);
        ASSERT_DIFFERS(start_limit_interval_usec, 1);
        ASSERT_DIFFERS(failed_retry_usec, USEC_INFINITY);
        ASSERT_DIFFERS(start_timeout_usec, 1);
        ASSERT_DIFFERS(stop_timeout_usec, 1);
        ASSERT_DIFFERS(queue_limit, 1);
        ASSERT_DIFFERS(concurrency, 7);
        ASSERT_DIFFERS(task_retries, 9);
        ASSERT_DIFFERS(task_timeout_usec, 1);
        ASSERT_DIFFERS(max_tasks_per_worker, 1);
        ASSERT_DIFFERS(limit_data, 1 << 20);
        ASSERT_DIFFERS(n_plugin, 1);
        ASSERT_DIFFERS(plugin_values, values_changed);
        ASSERT_DIFFERS(plugin_keys, keys_renamed);
#undef ASSERT_DIFFERS

        /* Workers keep the limits they started with: a new LimitDATA= needs new workers, a new
         * queue setting does not. */
        b = *a;
        b.limit_data = 1 << 20;
        assert_false(pool_config_same_code(a, &b));
        b = *a;
        b.queue_limit = 1;
        b.task_timeout_usec = 1;
        assert_true(pool_config_same_code(a, &b));

        /* Where Plugin= was written, and the order of plugin keys, do not matter. */
        b = *a;
        b.plugin_file = (char *) "/elsewhere.conf";
        b.plugin_keys = keys_swapped;
        b.plugin_values = values_swapped;
        assert_true(pool_config_equal(a, &b));

        config_free(c1);
        config_free(c2);
}

static void test_names(void **state) {
        assert_string_equal(pool_kind_to_string(POOL_KIND_CPU), "cpu");
        assert_string_equal(pool_kind_to_string(POOL_KIND_IO), "io");
        assert_null(pool_kind_to_string(_POOL_KIND_MAX));
        assert_null(pool_kind_to_string(_POOL_KIND_INVALID));
        assert_int_equal(pool_kind_from_string("io"), POOL_KIND_IO);
        assert_int_equal(pool_kind_from_string("IO"), _POOL_KIND_INVALID);
        assert_int_equal(pool_kind_from_string(NULL), _POOL_KIND_INVALID);

        assert_string_equal(restart_policy_to_string(RESTART_ALWAYS), "always");
        assert_string_equal(restart_policy_to_string(RESTART_ON_FAILURE), "on-failure");
        assert_string_equal(restart_policy_to_string(RESTART_NO), "no");
        assert_null(restart_policy_to_string(_RESTART_POLICY_MAX));
        assert_int_equal(restart_policy_from_string("on-failure"), RESTART_ON_FAILURE);
        assert_int_equal(restart_policy_from_string("on_failure"), _RESTART_POLICY_INVALID);

        assert_true(pool_name_is_valid("echo"));
        assert_true(pool_name_is_valid("Echo_2.io-x"));
        assert_false(pool_name_is_valid(""));
        assert_false(pool_name_is_valid(NULL));
        assert_false(pool_name_is_valid("a b"));
        assert_false(pool_name_is_valid("a/b"));
        assert_false(pool_name_is_valid("ü"));
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_defaults),
                T(test_shared_pool_keys),
                T(test_every_key),
                T(test_log_level),
                T(test_workers_auto),
                T(test_workers_range),
                T(test_dropin_order),
                T(test_dropin_ignored),
                T(test_pool_order),
                T(test_plugin_settings),
                T(test_plugin_path),
                T(test_bus),
                T(test_error_unknown),
                T(test_error_values),
                T(test_error_restart_max),
                T(test_error_missing_plugin),
                T(test_error_plugin_group_without_pool),
                T(test_error_pool_name),
                T(test_error_all_of_them),
                T(test_error_duplicate_group),
                T(test_error_parse),
                T(test_error_missing_main),
                T(test_error_dropin_unreadable),
                T(test_error_dropin_loop),
                T(test_error_dropin_dir_loop),
                T(test_error_unreadable),
                T(test_error_duplicate_group_in_dropin),
                T(test_ret_pointers),
                T(test_check_plugins),
                T(test_pool_config_equal),
                T(test_names),
        };
#undef T

        return cmocka_run_group_tests(tests, NULL, NULL);
}
