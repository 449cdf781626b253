/* SPDX-License-Identifier: MIT */
#pragma once

/* The state of apiaryd as its bus API shows it: the manager, every pool, every worker slot. */

#include <glib.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "util/macro.h"

typedef struct WorkerInfo {
        char *path;
        const char *pool_name;          /* borrowed from the pool */
        char *pool_path;
        uint32_t slot;
        uint32_t pid;
        char *state;
        uint32_t restarts;
        uint32_t planned_restarts;
        uint64_t started_at;            /* µs since the epoch, 0 if never */
        char *last_exit;
        uint64_t tasks_dispatched;      /* handed to its process; UINT64_MAX if apiaryd does not say */
        uint64_t cpu_nsec;              /* of its process so far; UINT64_MAX if none */
        uint64_t rss_bytes;             /* its process's resident memory; UINT64_MAX if none */
} WorkerInfo;

typedef struct PoolInfo {
        char *path;
        char *name;
        char *plugin;
        char *kind;
        char *state;
        char *failure_reason;
        char **worker_paths;
        uint32_t workers_wanted;
        uint32_t workers_ready;
        int paused;
        uint64_t restarts;
        uint64_t planned_restarts;
        uint64_t tasks_submitted, tasks_queued, tasks_running, tasks_done, tasks_failed;
        uint32_t queue_limit;
        uint32_t concurrency;
        /* A shared pool's (docs/shared-pools.md); source is "" for a local pool. */
        char *source, *source_state, *source_error;
        uint64_t source_held, source_awaiting, source_pulled, source_ran, source_released, source_duplicates;
        uint64_t source_pending, source_ack_pending, source_redelivered;
        uint64_t queued_by_priority[10];
        char *memory_warning;
        uint32_t workers_min, workers_max;      /* Workers=MIN..MAX; equal for a fixed count */
        uint64_t scale_ups, scale_downs;        /* QueuedByPriority, priority 0 first */
        GPtrArray *workers;             /* of WorkerInfo, in the order of Workers */
} PoolInfo;

typedef struct ManagerInfo {
        char *version;
        char *state;
        char **pool_paths;
        uint64_t tasks_submitted, tasks_queued, tasks_running, tasks_done, tasks_failed;
        char *host_id;
        uint32_t pid;
        uint64_t started_at;            /* µs since the epoch */
        char *config_path;
        char *bus;                      /* "system", "session" or an address */
} ManagerInfo;

typedef struct Snapshot {
        ManagerInfo manager;
        GPtrArray *pools;               /* of PoolInfo, in the order of Manager.Pools */
} Snapshot;

/* Two calls: Properties.GetAll on the manager, ObjectManager.GetManagedObjects for the rest, both
 * without D-Bus activation. A pool or slot that went away between the two is left out. */
int snapshot_load(sd_bus *bus, Snapshot **ret, sd_bus_error *error);
Snapshot *snapshot_free(Snapshot *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Snapshot *, snapshot_free);

PoolInfo *snapshot_find_pool(const Snapshot *s, const char *name);

/* Calls MEMBER on apiaryd's object PATH with arguments TYPES, ... (or none), without D-Bus
 * activation: looking must not start apiaryd. */
int ctl_call_looking(sd_bus *bus, const char *path, const char *interface, const char *member, sd_bus_error *error,
                     sd_bus_message **ret_reply, const char *types, ...);
