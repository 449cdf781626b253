/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/time-util.h"

/*
 * apiary.conf: a GKeyFile (systemd-style INI) main file, then the drop-ins PATH.d/\*.conf in
 * lexical order, later keys overriding earlier ones. The loader never logs: every problem comes
 * back as one message that names the file, the group and the key and says what was expected, e.g.
 *   /etc/apiary/apiary.conf: [Pool echo] Workers=lots: expected a positive number or "auto"
 */

#define CONCURRENCY_IO_DEFAULT 64u
#define MAX_TASKS_PER_CALLER_DEFAULT 16384u
#define MAX_BYTES_PER_CALLER_DEFAULT (256u * 1024 * 1024)
#define QUEUE_BYTES_LIMIT_DEFAULT (UINT64_C(1024) * 1024 * 1024)

typedef enum PoolKind {
        POOL_KIND_CPU,
        POOL_KIND_IO,
        _POOL_KIND_MAX,
        _POOL_KIND_INVALID = -EINVAL,
} PoolKind;

/* Zygote=: no keeps none; yes and auto both keep one (so the value reads as a boolean), and with
 * auto it forks only for a plugin that declares APIARY_PLUGIN_FORK_SAFE. */
typedef enum ZygoteMode {
        ZYGOTE_NO,
        ZYGOTE_YES,
        ZYGOTE_AUTO,
} ZygoteMode;

typedef enum RestartPolicy {
        RESTART_ALWAYS,
        RESTART_ON_FAILURE,
        RESTART_NO,
        _RESTART_POLICY_MAX,
        _RESTART_POLICY_INVALID = -EINVAL,
} RestartPolicy;

typedef enum BusKind {
        BUS_KIND_SYSTEM,
        BUS_KIND_SESSION,
        BUS_KIND_ADDRESS,       /* Config.bus_address holds a D-Bus address, e.g. unix:path=/run/x */
        _BUS_KIND_MAX,
        _BUS_KIND_INVALID = -EINVAL,
} BusKind;

typedef struct IdList {
        unsigned *ids;
        size_t n;
} IdList;

bool id_list_contains(const IdList *l, unsigned id);

typedef struct PoolConfig {
        char *name;                     /* NAME of [Pool NAME] */
        char *plugin;                   /* Plugin= as written */
        char *plugin_path;              /* Plugin= resolved: absolute, or PluginDirectory/Plugin */
        char *plugin_file;              /* the file Plugin= came from, for messages; not compared */
        PoolKind kind;                  /* Kind=, default cpu */
        unsigned workers;               /* Workers=, resolved ("auto": CPUs for cpu, 4×CPUs for io); of
                                         * Workers=MIN..MAX, MIN: where it starts, and its floor */
        bool workers_auto;
        unsigned workers_max;           /* ... MAX, resolved: an autoscaled pool if > workers (daemon/autoscale.h);
                                         * else equal to workers */
        bool workers_max_auto;
        bool workers_range;             /* Workers= was MIN..MAX */
        usec_t scale_down_idle_usec;    /* ScaleDownIdleSec=, default 30s: idle this long, a worker goes */
        RestartPolicy restart;          /* Restart=, default always */
        usec_t restart_usec;            /* RestartSec=, default 100ms: delay after a 2nd failure in a row, doubling */
        usec_t restart_max_usec;        /* RestartMaxSec=, default 30s: backoff cap (>= RestartSec) */
        unsigned start_limit_burst;     /* StartLimitBurst=, default 5; 0 disables the limit */
        usec_t start_limit_interval_usec; /* StartLimitIntervalSec=, default 10s */
        usec_t failed_retry_usec;       /* FailedRetrySec=, default 5min; infinity: stay failed */
        usec_t start_timeout_usec;      /* StartTimeoutSec=, default 30s: spawn to ready */
        usec_t stop_timeout_usec;       /* StopTimeoutSec=, default 10s: SIGTERM to SIGKILL */

        unsigned queue_limit;           /* QueueLimit=, default 65536: queued tasks past which Submit fails */
        uint64_t queue_bytes_limit;     /* QueueBytesLimit=, default 1G: their payloads' bytes; UINT64_MAX: none */
        unsigned concurrency;           /* Concurrency=, tasks in flight per worker: cpu 1, io 64 */
        unsigned task_retries;          /* TaskRetries=, default 2: re-runs after the worker died under a task */
        usec_t task_timeout_usec;       /* TaskTimeoutSec=, default infinity: from its start to its result */
        unsigned max_tasks_per_worker;  /* MaxTasksPerWorker=, default 0 (none): recycle after this many */
        uint64_t max_memory_per_worker; /* MaxMemoryPerWorker=, bytes, default UINT64_MAX (none): RSS past which
                                         * a worker is recycled after a task */
        usec_t max_worker_age_usec;     /* MaxWorkerAgeSec=, default infinity: recycled this long after it was ready */
        usec_t max_worker_age_jitter_usec; /* MaxWorkerAgeJitterSec=: plus a random part of this; USEC_INFINITY
                                         * (unset): a tenth of MaxWorkerAgeSec= */
        usec_t priority_aging_usec;     /* PriorityAgingSec=, default 1s: a waiting task's priority grows by one
                                         * each (daemon/task-queue.h); infinity: strict priorities */
        ZygoteMode zygote;              /* Zygote=, default auto: fork workers from a loaded copy */
        /* User=, Group=: who the workers run as; (uid_t) -1 / (gid_t) -1: apiaryd's own. User=
         * also gives the group, the user's primary one, unless Group= says otherwise. */
        uid_t user;
        gid_t user_gid;
        gid_t group;
        uint64_t limit_data;            /* LimitDATA=, bytes, default UINT64_MAX (infinity): RLIMIT_DATA of each worker */
        char *submit_from;              /* SubmitFrom=: the pools whose plugins may submit() here, separated
                                         * by spaces, "*" for every pool; NULL: only this pool's own */

        /* Source=: the pool is shared, its tasks in a NATS JetStream stream (docs/shared-pools.md);
         * NULL: a local pool. As written: nats://HOST:PORT or HOST:PORT, separated by commas. */
        char *source;
        unsigned source_replicas;       /* SourceReplicas=, 1, 3 or 5, default 1 */
        usec_t source_lease_usec;       /* SourceLeaseSec=, default 30s: the engine's AckWait */
        char *source_credentials;       /* SourceCredentials=: a NATS .creds file, or NULL */
        char *source_tls_ca;            /* SourceTLSCA=: CA certificates (PEM): TLS to the engine, or NULL */

        /* [Pool NAME Plugin]: free-form, in order of first appearance; later files override values. */
        char **plugin_keys;
        char **plugin_values;
        size_t n_plugin;

        /* [Pool NAME] as written, the same way: what a reload reports as changed; not compared. */
        char **written_keys;
        char **written_values;
        size_t n_written;
} PoolConfig;

typedef struct Config {
        char *path;                     /* the main file */
        char *plugin_directory;         /* PluginDirectory=, default APIARY_PLUGIN_DIR */
        BusKind bus;                    /* Bus=, default system */
        char *bus_address;              /* for BUS_KIND_ADDRESS */
        /* PrivateSocket=: where the same API is served peer-to-peer. private_socket_set: the
         * key was given (then NULL means "no"); unset, the default follows Bus= (see
         * config_private_socket()). */
        char *private_socket;
        bool private_socket_set;
        int log_level;                  /* LogLevel=, syslog priority, default LOG_INFO */
        unsigned max_tasks_per_caller;  /* MaxTasksPerCaller=, default 16384; 0: no limit (per UID) */
        uint64_t max_bytes_per_caller;  /* MaxBytesPerCaller=, default 256M: their payloads' bytes; UINT64_MAX: none */
        char *host_id;                  /* HostId=, default the machine ID: this host among a shared pool's */

        /* Who may call Submit/Run (Submit*) and the control methods (Control*), besides root and
         * apiaryd's own user: SubmitUsers=, SubmitGroups=, ControlUsers=, ControlGroups=, lists of
         * names or numbers, resolved when loaded. */
        IdList submit_users, submit_groups, control_users, control_groups;

        PoolConfig **pools;             /* in order of first appearance */
        size_t n_pools;

        /* [Apiary] as written: what a reload reports as changed; not compared. */
        char **written_keys;
        char **written_values;
        size_t n_written;
} Config;

/* Loads PATH and PATH.d/\*.conf. On failure returns a negative errno and, if ret_error is not
 * NULL, a malloc()ed message naming file, group and key. N_CPUS resolves Workers=auto. RET may be
 * NULL to only validate; *ret is left untouched on failure and *ret_error on success. */
int config_load(const char *path, unsigned n_cpus, Config **ret, char **ret_error);

/* Checks what config_load() leaves to run time: that every pool's plugin file exists and is a
 * regular, readable file. Returns 0, or the number of problems found, each appended (one line,
 * naming file/group/key) to *ret_errors, a NULL-terminated strv to free with g_strfreev(). */
int config_check_plugins(const Config *c, char ***ret_errors);

Config *config_free(Config *c);
static inline void config_freep(Config **c) {
        if (*c)
                config_free(*c);
}

PoolConfig *pool_config_free(PoolConfig *p);
static inline void pool_config_freep(PoolConfig **p) {
        if (*p)
                pool_config_free(*p);
}

/* The path of the private socket to serve, or NULL for none: PrivateSocket= if given, otherwise
 * /run/apiary/bus for the system bus, $XDG_RUNTIME_DIR/apiary/bus for the session bus, and none
 * for an explicit address. Returns a malloc()ed string, or NULL (no socket, or no memory: errno). */
char *config_private_socket(const Config *c);

const PoolConfig *config_find_pool(const Config *c, const char *name);
/* True when workers of A and B run the same plugin with the same [Pool NAME Plugin] settings and
 * the same LimitDATA=: what a reload must restart workers for (the rest applies to running workers). */
bool pool_config_same_code(const PoolConfig *a, const PoolConfig *b);
/* True when A and B reach their engine the same way: Source=, SourceReplicas=, SourceLeaseSec=,
 * SourceCredentials=, SourceTLSCA=. */
bool pool_config_same_source(const PoolConfig *a, const PoolConfig *b);
/* True when two pools would run the same workers the same way (used by reload). */
bool pool_config_equal(const PoolConfig *a, const PoolConfig *b);
/* The keys whose values as written differ from A to B: KEY of [Pool NAME], or of [Pool NAME
 * Plugin] if PLUGIN; OLD or NEW is NULL where the key is not set. Drop-ins count as written: the
 * value is the one that won. */
typedef void (*ConfigChangeFn)(const char *key, bool plugin, const char *old, const char *new, void *userdata);
void pool_config_diff(const PoolConfig *a, const PoolConfig *b, ConfigChangeFn fn, void *userdata);
/* The same for [Apiary] (PLUGIN is false). */
void config_diff(const Config *a, const Config *b, ConfigChangeFn fn, void *userdata);
/* What a worker of the pool C runs: its plugin's path, and its [Pool NAME Plugin] settings. */
void pool_config_plugin_settings(const PoolConfig *c, const char **ret_path, char *const **ret_keys,
                                 char *const **ret_values, size_t *ret_n);
/* The UID and GID the pool's workers switch to; (uid_t) -1 / (gid_t) -1 for none. */
uid_t pool_config_uid(const PoolConfig *c);
gid_t pool_config_gid(const PoolConfig *c);

const char *pool_kind_to_string(PoolKind k);
PoolKind pool_kind_from_string(const char *s);
const char *restart_policy_to_string(RestartPolicy p);
RestartPolicy restart_policy_from_string(const char *s);

/* Whether the pool name is usable: non-empty, at most 64 bytes of [A-Za-z0-9_.-]. */
bool pool_name_is_valid(const char *name);
/* Whether NAME can name a host or a shared pool in the engine: 1 to 64 bytes of [A-Za-z0-9_-]
 * (no '.', which separates subject tokens). */
bool engine_name_is_valid(const char *name);
/* Whether a plugin of pool FROM may submit() to the pool C (SubmitFrom=). */
bool pool_config_accepts_from(const PoolConfig *c, const char *from);
