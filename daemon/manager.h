/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <systemd/sd-id128.h>

#include "config/config.h"
#include "daemon/changes.h"
#include "daemon/finished-batch.h"
#include "daemon/pool.h"

#define STATUS_INTERVAL_USEC (100 * USEC_PER_MSEC)

typedef enum ManagerState {
        MANAGER_STARTING,
        MANAGER_RUNNING,
        MANAGER_RELOADING,
        MANAGER_STOPPING,
        _MANAGER_STATE_MAX,
        _MANAGER_STATE_INVALID = -EINVAL,
} ManagerState;

/* How a reload ended (reload.c). */
typedef enum ReloadResult {
        RELOAD_DONE,            /* the new settings run everywhere */
        RELOAD_ROLLED_BACK,     /* some pool's new settings failed and were rolled back */
        RELOAD_STOPPING,        /* apiaryd stops before it ended */
        _RELOAD_RESULT_MAX,
        _RELOAD_RESULT_INVALID = -EINVAL,
} ReloadResult;

/* What the supervision core tells the D-Bus edge, which registers it (main.c): the core builds no
 * message itself. */
typedef struct ManagerObserver {
        /* Returns whether the end went out as a result: false if it went out as a failure (a
         * result that did not fit in its RunBatch reply), which the core then counts. */
        bool (*task_finished)(Task *t, bool ok, const void *data, size_t size);
        /* Once per turn of the loop, for each object that changed (changes.h). */
        void (*properties_changed)(Manager *m, const char *path, const char *interface, const char *const *names);
        void (*object_added)(Manager *m, const char *path);
        void (*object_removed)(Manager *m, const char *path);
        /* A plugin's Submit over its worker's link, from the pool FROM: the edge queues it as it
         * queues a Run, so SubmitFrom= and every limit are decided in one place (bus-tasks.c). */
        int (*worker_submit)(sd_bus_message *msg, Manager *m, const char *from, sd_bus_error *error);
        /* A task submitted to a shared pool is stored in the engine: accepted (source.c). */
        void (*task_stored)(Task *t);
        /* ... has no end to report here (task.h): its caller hears WHY and MESSAGE. */
        void (*task_rejected)(Task *t, TaskRejection why, const char *message);
        /* A reload ended; MESSAGE says why it did not end well (NULL if it did). */
        void (*reload_finished)(Manager *m, ReloadResult result, const char *message);
        /* The loop is about to exit, or the manager is freed: let go of what could hold it. */
        void (*closing)(Manager *m);
} ManagerObserver;

typedef struct Manager {
        const char *version;
        usec_t started_at;              /* CLOCK_REALTIME, when apiaryd started */
        ManagerObserver observer;
        Changes changes;                /* property changes not signalled yet */
        sd_event *event;
        sd_bus *bus;                    /* the public bus, from Bus= (bus-connect.c); closed with us */
        Config *config;
        const char *worker_path;        /* the apiary-worker binary */
        const char *source_path;        /* the apiary-source binary */
        char *source_id_prefix;         /* "HOST.RUN.": ids of tasks submitted here to shared pools are
                                         * this and their task id, unique across hosts and runs */
        char **worker_env;              /* environ without systemd's notify/watchdog/listen vars */
        sd_id128_t link_id;             /* the server id of every private worker connection */

        Pool **pools;
        size_t n_pools;

        GHashTable *tasks;              /* uint64_t id → Task, every task not yet finished */
        FinishedBatches *finished_batches;      /* TasksFinished signals being filled this turn */
        GHashTable *callers;            /* unique bus name → credentials (auth.c); freed with us */
        GHashTable *caller_tasks;       /* caller → CallerTasks, while it has unfinished tasks */
        GHashTable *peers;              /* sd_bus * → Peer, the private socket's connections */
        char *peer_path;                /* the private socket we listen on, or NULL */
        uint64_t next_peer_id;
        sd_event_source *peer_source;
        sd_event_source *peer_retry_source;     /* accept() failed: listening again after a pause */
        usec_t peer_retry_usec;
        bool reap_deferred;             /* reaper.c held back for an unanswered Fork() */
        uint64_t next_task_id;
        uint64_t n_submitted, n_running, n_done, n_failed, n_queued;

        ManagerState state;
        bool ready_sent;
        int exit_status;
        int log_level_override;         /* --log-level, or -1: LogLevel= decides */
        sd_event_source *gc_source;     /* frees pools a reload removed, once idle */
        sd_event_source *reload_source; /* looks whether the reload under way has ended */
        GPtrArray *reload_calls;        /* the edge's: Reload() calls that wait for it to end */
        bool exiting;                   /* the loop was told to exit */
        char *status;                   /* last STATUS= sent */
        usec_t status_sent_usec;        /* CLOCK_MONOTONIC, when */
        sd_event_source *status_source; /* a STATUS= update held back by the rate limit */
} Manager;

int manager_new(Manager **ret, Config *config, const char *worker_path);  /* takes CONFIG */
Manager *manager_free(Manager *m);
static inline void manager_freep(Manager **m) {
        if (*m)
                manager_free(*m);
}

int manager_start(Manager *m);
/* Begins the shutdown: stops every pool; the loop exits when the last worker is gone. */
void manager_stop(Manager *m);

Pool *manager_find_pool(Manager *m, const char *name);
/* Whether PID is the process of a worker other than EXCEPT (may be NULL), of a zygote, or of a
 * shared pool's apiary-source. */
bool manager_pid_is_taken(Manager *m, pid_t pid, const Worker *except);
/* Whether some worker waits for its zygote's Fork() answer: its PID is not known yet. */
bool manager_fork_pending(Manager *m);

/* Called whenever a pool changed state or readiness: updates STATUS=, READY=1, shutdown. */
void manager_pool_changed(Manager *m, Pool *p);

const char *manager_state_to_string(ManagerState s);
