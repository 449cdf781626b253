/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "config/config.h"
#include "ipc/claim.h"
#include "ipc/link-supervisor.h"
#include "ipc/link-watch.h"
#include "daemon/recycle.h"
#include "daemon/restart.h"
#include "daemon/worker-fsm.h"
#include "util/log.h"
#include "util/time-util.h"

typedef struct Manager Manager;
typedef struct Pool Pool;
typedef struct Task Task;

/* One slot of a pool and the process that currently fills it. The slot (and its bus object)
 * stays across restarts; the process changes. Its life is the state machine of worker-fsm.h. */
typedef struct Worker {
        Pool *pool;
        unsigned slot;
        char *object_path;

        Slot life;                      /* state, intent, result: written by worker_event() only */
        WorkerState state;              /* what the bus shows, as last published */
        pid_t pid;
        sd_event_source *child_source;
        sd_event_source *timer_source;  /* start timeout, stop timeout or backoff: see on_slot_timer() */
        sd_bus *link;                   /* private connection to this worker's apiary-worker */
        LinkWatch *link_watch;          /* what watches it on the loop (ipc/link-watch.h) */
        LinkSupervisor link_supervisor; /* what serves Supervisor1 on it */
        sd_event_source *link_source;   /* the link closed under a running worker: SIGKILL at StopTimeoutSec */

        unsigned restarts;              /* processes started in this slot after the first, not asked for */
        unsigned planned_restarts;      /* ... asked for: recycled by Restart(), a reload, MaxTasksPerWorker= */
        unsigned failures;              /* failed runs in a row, for the backoff */
        StartLimit start_limit;
        usec_t backoff_usec;            /* the restart delay the last exit's decision was made with */

        uint64_t generation;            /* the pool's code generation its current (or last) process runs */
        usec_t started_at;              /* CLOCK_REALTIME, when the current process was spawned */
        usec_t spawned_mono;            /* CLOCK_MONOTONIC, likewise */
        usec_t ready_mono;              /* CLOCK_MONOTONIC, when it reported Ready; 0 if not yet */
        usec_t exited_mono;             /* CLOCK_MONOTONIC, when the last process exited */

        GQueue in_flight;               /* of Task, dispatched and not finished, in order */
        unsigned n_started;             /* the first ones of in_flight, started; the rest wait in its window */
        uint64_t n_dispatched;          /* tasks sent to the current process */
        LinkClaimPage *claim_page;      /* the pool's page that holds its claim */
        LinkClaim *claim;               /* which of the tasks sent its process has started (ipc/claim.h) */
        uint32_t n_sent;                /* tasks sent to its process, taken back or not: the next one's number */
        bool taken_back;                /* tasks were taken back: the next send moves the claim past them
                                         * (link_claim_resume()) */

        ino_t link_ino;                 /* the inode of the link's worker end, checked at Ready() */
        sd_bus_slot *fork_slot;         /* the zygote's Fork() for this slot, until it answers */
        int fork_fd;                    /* the worker's end of the link, while its Fork() waits to be sent */
        sd_bus_message *ready_call;     /* a Ready() that came before Fork()'s answer */
        int pending_signal;             /* what worker_kill() could not send yet, for lack of a PID */

        RecycleReason retire_reason;    /* why it retires, when it does */
        sd_event_source *age_source;    /* MaxWorkerAgeSec=, with its jitter, from when it became ready */
        bool age_due;                   /* past its age, waiting for another slot's age recycle to end */
        bool age_recycling;             /* retired for its age: until the slot has a ready worker again */
        uint64_t start_rss;             /* RSS when it became ready (with MaxMemoryPerWorker=) */
        usec_t idle_since;              /* CLOCK_MONOTONIC: ready and holding nothing since; 0 if not (autoscale.h) */
        bool starts_over_memory;        /* ... above MaxMemoryPerWorker=: not recycled for its memory */

        char *last_exit;                /* "exited with status 3", "killed by SIGSEGV", ... */
        char *failure_message;          /* what the worker said in Failed(), for this process */
        char *failure_error;            /* the error name it gave */
} Worker;

int worker_new(Worker **ret, Pool *pool, unsigned slot);
Worker *worker_free(Worker *w);
static inline void worker_freep(Worker **w) {
        if (*w)
                worker_free(*w);
}

/* Spawns a process for the slot now (from DEAD or BACKOFF). */
int worker_start(Worker *w);
/* Stops taking tasks, lets those in flight finish, then SIGTERM; SIGKILL at StopTimeoutSec after
 * the stop began. A slot in backoff just stops waiting. */
void worker_stop(Worker *w);
/* Signals the current process through its pidfd. */
void worker_kill(Worker *w, int sig);
/* Restart(): a running worker drains and is replaced at once; a waiting or dead slot starts now.
 * -EBUSY while it starts or stops. */
int worker_restart(Worker *w);
/* Scaled back in: a slot on its way out starts again once its process is gone, a dead one now. */
void worker_revive(Worker *w);
/* Forgets the tally and the backoff (a pool started anew by the operator or the retry timer). */
void worker_reset(Worker *w);

bool worker_is_running(const Worker *w);
/* Whether the worker takes another task now. */
bool worker_has_capacity(const Worker *w);
#define log_worker(level, w, ...)                                                                       \
        ({                                                                                              \
                LogContext _ctx = { .pool = (w)->pool->config->name, .slot = (int) (w)->slot,            \
                                    .pid = (int) (w)->pid };                                             \
                log_ctx((level), &_ctx, __VA_ARGS__);                                                   \
        })
#define log_worker_errno(level, error, w, ...)                                                          \
        ({                                                                                              \
                LogContext _ctx = { .pool = (w)->pool->config->name, .slot = (int) (w)->slot,            \
                                    .pid = (int) (w)->pid };                                             \
                log_ctx_errno((level), (error), &_ctx, __VA_ARGS__);                                    \
        })

/* Spawns apiary-worker for POOL with ROLE ("--slot=N" or "--zygote") and FD as its link (fd 3). */
int host_spawn(Manager *m, const PoolConfig *c, const char *role, int fd, pid_t *ret_pid);
/* Spawns PATH with ARGV, FD_LINK as its fd 3, stdin /dev/null, our stderr as its stdout and
 * stderr, no signal blocked, a session of its own: how apiaryd starts each of its helpers. */
int spawn_with_link(Manager *m, const char *path, char **argv, int fd_link, pid_t *ret_pid);
/* For zygote.c: the steps of a worker start that worker_spawn() takes for a spawned process. */
void worker_process_begins(Worker *w, pid_t pid);
/* The zygote forked W's process, whose PID (W->pid) was verified: watches it (through PIDFD if
 * >= 0, consumed), and handles a Ready() that came first. */
void worker_forked(Worker *w, int pidfd);
/* The zygote could not fork W's process: spawn it the usual way (or not, if it was stopped). */
void worker_fork_failed(Worker *w);
int worker_link_new(Worker *w, int fd);
/* Stops watching the link and closes it (what is queued is flushed first). */
void worker_close_link(Worker *w);
/* Remembers which socket is the worker's end of its link (FD), for worker_check_peer(). */
void worker_note_link_end(Worker *w, int fd);
/* Whether the process W->pid holds the worker end of W's link as its fd 3. */
bool worker_check_peer(Worker *w);

/* Supervisor1.Results on a worker's link (dispatch.c). */
int link_method_results(sd_bus_message *msg, void *userdata, sd_bus_error *error);
/* Recomputes ready/busy after tasks came or went, and recycles a drained retiring worker. */
void worker_update_load(Worker *w);
/* W takes no more tasks, and is recycled once drained, for W->retire_reason (recycle.h): it took
 * its MaxTasksPerWorker='th task, or is too big or too old. -EBADE if W cannot retire now (it is
 * not serving). */
int worker_retire(Worker *w);
/* Kills the worker for the overdue task T, which fails with "timeout". */
void worker_kill_for_timeout(Worker *w, Task *t);
/* ... the killing: the worker's run ends for that task, not by its own fault. */
void worker_task_timed_out(Worker *w);
/* Handles the tasks a dead worker leaves behind: re-queued, or failed past TaskRetries=. */
void worker_release_tasks(Worker *w, const char *reason);

