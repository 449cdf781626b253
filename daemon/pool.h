/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include <glib.h>

#include "config/config.h"
#include "daemon/histogram.h"
#include "daemon/pool-fsm.h"
#include "daemon/task.h"
#include "daemon/task-queue.h"
#include "daemon/worker.h"
#include "daemon/zygote.h"

typedef struct Manager Manager;
typedef struct Source Source;

typedef struct Pool {
        Manager *manager;
        PoolConfig *config;             /* owned: replaced by a reload */
        PoolConfig *previous;           /* while a reload's new settings are tried (intent try): the old ones */
        uint64_t generation;            /* of the code in config (plugin, its settings, user, limits) */
        uint64_t previous_generation;   /* ... of previous */
        unsigned previous_wanted;       /* ... and the workers it had then */
        uint64_t n_generations;         /* the last generation given out: none is reused */
        char *rollback_reason;          /* a reload's settings failed and were rolled back, until the next
                                         * reload: it runs the previous ones, shown as degraded */
        char *object_path;

        PoolLife life;                  /* its phase and intent (pool-fsm.h): written by pool_event() only */
        PoolState state;                /* what the bus shows, from life.phase */
        Worker **workers;               /* one per slot */
        unsigned n_workers;             /* slots that exist: n_wanted, plus any still being removed */
        unsigned n_wanted;              /* Workers=, or what Scale() asked for */
        bool *settled;                  /* per slot: it has been ready, or backoff, or dead, since the start or
                                         * since its planned replacement began */

        uint64_t restarts;              /* worker restarts over the pool's life that nobody asked for */
        uint64_t planned_restarts;      /* ... that were asked for (Restart(), a reload, MaxTasksPerWorker=) */
        uint64_t memory_recycles;       /* workers retired for MaxMemoryPerWorker= */
        uint64_t scale_ups, scale_downs; /* Workers=MIN..MAX: the autoscaler's steps (autoscale.h) */
        sd_event_source *scale_source;  /* ... when the first idle worker has been idle ScaleDownIdleSec= */
        sd_event_source *age_next_source; /* the next age recycle, once the one before ended (recycle.c) */
        uint64_t age_recycles;          /* ... for MaxWorkerAgeSec= */
        char *failure_reason;           /* why the pool last failed */
        sd_event_source *retry_source;  /* FailedRetrySec timer while failed */

        bool paused;                    /* Pause(): a setting of dispatch, in every phase (pool-fsm.h) */
        unsigned rolling_slot;          /* while rolling: the slot being replaced */
        usec_t rolling_began;           /* CLOCK_MONOTONIC */

        Zygote *zygote;                 /* Zygote=yes: forks its workers (zygote.c) */
        Source *source;                 /* Source=: a shared pool's engine (source.c); NULL: local */
        sd_event_source *held_source;   /* a start held back for the zygote: its time limit */

        TaskQueue queue;                /* a FIFO per priority (task-queue.h); links embedded in the tasks */
        uint64_t queued_bytes;          /* their payloads', against QueueBytesLimit= */
        unsigned dispatch_cursor;       /* where the search for a free worker starts */
        usec_t task_usec_est;           /* how long its tasks run: the last long one, decaying (dispatch.c) */
        bool task_usec_known;
        sd_event_source *take_back_source; /* when to look again for windows held behind a long task */
        LinkClaimPage **claim_pages;    /* its workers' claims, LINK_CLAIMS_PER_PAGE slots a page */
        unsigned n_claim_pages;
        uint64_t n_submitted, n_running, n_done, n_failed;
        /* Of the tasks that ended with their worker's answer (dispatch.c): how long they ran, as
         * the worker measured, and how long they waited from submission to that run's start. */
        Histogram run_time, queue_wait;
} Pool;

#define log_pool(level, p, ...)                                                         \
        ({                                                                              \
                LogContext _ctx = { .pool = (p)->config->name, .slot = -1, .pid = 0 };  \
                log_ctx((level), &_ctx, __VA_ARGS__);                                   \
        })

/* Takes CONFIG on success. */
int pool_new(Pool **ret, Manager *m, PoolConfig *config);
/* The page of the pool's claims with INDEX (ipc/claim.h), made if need be. */
int pool_claim_page(Pool *p, unsigned index, LinkClaimPage **ret);
Pool *pool_free(Pool *p);
static inline void pool_freep(Pool **p) {
        if (*p)
                pool_free(*p);
}

/* The events of pool-fsm.h, raised from outside. Each returns -EBUSY if it means nothing in the
 * pool's phase now (nothing changed). */
int pool_start(Pool *p);
/* Starts the workers of a start held back for the zygote (it is ready, gone, or too slow). */
void pool_release_held(Pool *p);
void pool_stop(Pool *p);
/* Gone from the configuration: its queued tasks fail, its workers stop, then it is freed. */
void pool_remove(Pool *p);
/* Rolling restart: one slot at a time, each new worker ready before the next slot goes. */
int pool_restart(Pool *p);
/* A reload gives P new code (NEW, taken): rolled in like a restart, but the first new worker that
 * fails before it is ready rolls the pool back to what it ran (pool_roll_failed()). A pool that is
 * not active just takes NEW. */
void pool_try_settings(Pool *p, PoolConfig *new);
/* P's settings changed from OLD: its slots' start limits follow StartLimitBurst=. */
void pool_config_apply_limits(Pool *p, const PoolConfig *old);
/* A worker of the settings being tried ended before it was ready, for REASON. */
void pool_roll_failed(Pool *p, const char *reason);
/* A reload found P's configured settings again: it is no longer shown rolled back. */
void pool_forget_rollback(Pool *p);
/* Whether a reload's new settings are still rolling in, or rolling back, in P. */
bool pool_is_trying(const Pool *p);
/* Changes the number of workers: new slots start, the highest slots drain and go away. */
int pool_scale(Pool *p, unsigned n);
void pool_set_paused(Pool *p, bool paused);
/* Whether the pool is meant to be running (not stopped, failed or stopping), and takes tasks. */
bool pool_is_active(const Pool *p);
bool pool_is_removed(const Pool *p);
/* Removed, no worker left and nothing queued: to be freed. */
bool pool_can_be_freed(const Pool *p);
/* Stops every worker and marks the pool failed with REASON; retries after FailedRetrySec. */
void pool_fail(Pool *p, const char *reason);

/* Its State, FailureReason, WorkersReady or Restarts changed: the group is signalled, once this
 * turn of the loop (changes.h). */
void pool_mark_changed(Pool *p);
/* W is being replaced as asked (recycled, revived): until it settles, it does not degrade P. */
void pool_slot_planned(Pool *p, Worker *w);
/* Called by a worker of the pool whenever its state changed. */
void pool_worker_changed(Pool *p, Worker *w);

unsigned pool_workers_ready(const Pool *p);
bool pool_has_started(const Pool *p);
bool pool_is_idle(const Pool *p);      /* no process left */

/* Why a pool takes no more tasks now, the one answer to "does it take tasks?"; the D-Bus edge
 * (bus-tasks.c) turns each into its documented error. */
typedef enum PoolRefusal {
        POOL_TAKES_TASKS = 0,
        POOL_REFUSAL_STOPPING,          /* apiaryd is stopping */
        POOL_REFUSAL_FAILED,            /* the pool failed (FailureReason) */
        POOL_REFUSAL_STOPPED,           /* stopping its workers, or stopped */
        POOL_REFUSAL_QUEUE_FULL,        /* no room for that many tasks (QueueLimit=) */
        POOL_REFUSAL_QUEUE_BYTES,       /* no room for that many payload bytes (QueueBytesLimit=) */
        POOL_REFUSAL_SOURCE_UNAVAILABLE, /* a shared pool whose engine is not ready (SourceError) */
} PoolRefusal;

/* The queue (dispatch.c). */
/* Whether P takes N more tasks of BYTES payload bytes in all now. */
PoolRefusal pool_check_tasks(const Pool *p, unsigned n, uint64_t bytes);
unsigned pool_queue_room(const Pool *p);
/* The tasks W takes now: its free places, no more than it may run before its recycling. */
unsigned worker_room(const Worker *w);
uint64_t pool_queue_bytes_room(const Pool *p);  /* UINT64_MAX: QueueBytesLimit=infinity */
void pool_enqueue(Pool *p, Task *t);
void pool_dispatch(Pool *p);
/* Fails every queued task with REASON. */
void pool_fail_queued(Pool *p, const char *reason);

