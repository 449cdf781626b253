/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>

#include "config/config.h"

/* The states a slot shows on the bus (the Worker's State property, docs/apiaryd.md). */
typedef enum WorkerState {
        WORKER_DEAD,            /* no process, none coming, not asked for (Restart= did not restart it, it failed its pool) */
        WORKER_STARTING,        /* spawned, plugin loading or in init() */
        WORKER_READY,           /* init() done, serving */
        WORKER_BUSY,            /* serving, with tasks in flight */
        WORKER_STOPPING,        /* being stopped: SIGTERM once drained, SIGKILL at StopTimeoutSec */
        WORKER_BACKOFF,         /* exited, restart timer running */
        WORKER_STOPPED,         /* no process, none coming, as asked (a stop, its pool's, a scale-down) */
        _WORKER_STATE_MAX,
        _WORKER_STATE_INVALID = -EINVAL,
} WorkerState;

/*
 * The life of a worker slot, as data: the states it goes through, the events that move it, what
 * was asked of it (its intent) and why its run ended (its result, recorded once, as systemd's
 * ServiceResult). Every event goes through slot_decide(), one pure function, so whether a pair
 * (state, event) means anything, and what it leads to, can be read and tested in one place, as
 * s6-supervise's actions[state][event]. Nothing here touches a process, a descriptor or a timer:
 * worker.c raises the events with the facts they need, performs the actions it gets back, and is
 * the only writer of a slot's state.
 *
 *               START (zygote ready)      FORKED
 *   dead, backoff ─────────────▶ forking ────────▶ starting ──READY──▶ ready ◀─LOAD─▶ busy
 *          │ START (else)                       ▲       │                 │  RETIRE   │
 *          └────────────────────────────────────┘       │ STOP            ▼           │
 *                                                        │        retiring ◀──────────┘
 *            STOP, RECYCLE (from ready, busy, retiring) │              │ LOAD, drained:
 *            with tasks in flight ──▶ draining ──LOAD, drained──┐      │ RECYCLE
 *            without ─────────────────────────────────────────▶ stop-sigterm
 *                           draining, stop-sigterm ──STOP_TIMEOUT──▶ stop-sigkill
 *   any state with a process ──EXIT──▶ exited ──EXITED──▶ dead, backoff, or a new start
 */
typedef enum SlotState {
        SLOT_DEAD,              /* no process, none coming */
        SLOT_FORKING,           /* the zygote is forking its process: no PID yet */
        SLOT_STARTING,          /* its process loads the plugin; no Ready() yet */
        SLOT_READY,             /* serving, no task in flight */
        SLOT_BUSY,              /* serving, tasks in flight */
        SLOT_RETIRING,          /* recycled (recycle.h): takes no more, replaced once drained */
        SLOT_DRAINING,          /* asked to stop: takes no more, SIGTERM once its tasks have ended */
        SLOT_STOP_SIGTERM,      /* SIGTERM sent; SIGKILL at StopTimeoutSec= after the stop began */
        SLOT_STOP_SIGKILL,      /* StopTimeoutSec= ran out: SIGKILL sent */
        SLOT_EXITED,            /* its process exited and the exit is being handled: shown as before, takes nothing */
        SLOT_BACKOFF,           /* exited; its restart waits for RestartSec= */
        _SLOT_STATE_MAX,
        _SLOT_STATE_INVALID = -EINVAL,
} SlotState;

typedef enum SlotEvent {
        SLOT_EVENT_START,               /* a run is wanted: pool start, revived, Restart(), a restart */
        SLOT_EVENT_FORKED,              /* the zygote answered with a PID that was verified */
        SLOT_EVENT_FORK_FAILED,         /* the zygote did not fork it: spawn it instead */
        SLOT_EVENT_SPAWN_FAILED,        /* not even a process */
        SLOT_EVENT_READY,               /* Ready() on its link */
        SLOT_EVENT_LOAD,                /* its tasks in flight changed */
        SLOT_EVENT_RETIRE,              /* MaxTasksPerWorker=, MaxMemoryPerWorker=, MaxWorkerAgeSec= */
        SLOT_EVENT_STOP,                /* the pool stops or failed, the slot was scaled away, apiaryd stops */
        SLOT_EVENT_RECYCLE,             /* Restart(): drain, then a new process at once */
        SLOT_EVENT_REVIVE,              /* scaled back in while on its way out: start again once gone */
        SLOT_EVENT_START_TIMEOUT,       /* StartTimeoutSec= ran out before Ready() */
        SLOT_EVENT_STOP_TIMEOUT,        /* StopTimeoutSec= ran out */
        SLOT_EVENT_TASK_TIMEOUT,        /* one of its tasks ran out of time */
        SLOT_EVENT_LINK_LOST,           /* its link closed, and it did not exit within StopTimeoutSec= */
        SLOT_EVENT_EXIT,                /* its process exited */
        SLOT_EVENT_EXITED,              /* ... and what it left behind is handled */
        SLOT_EVENT_BACKOFF_DONE,        /* RestartSec= passed */
        _SLOT_EVENT_MAX,
        _SLOT_EVENT_INVALID = -EINVAL,
} SlotEvent;

/* What was asked of the current run; NONE until a stop. */
typedef enum SlotIntent {
        SLOT_INTENT_NONE,
        SLOT_INTENT_STOP,               /* no process afterwards */
        SLOT_INTENT_RECYCLE,            /* a new process at once afterwards, if the slot is still wanted */
        SLOT_INTENT_REVIVE,             /* a stop overtaken by a scale-up: start afresh afterwards */
        _SLOT_INTENT_MAX,
        _SLOT_INTENT_INVALID = -EINVAL,
} SlotIntent;

/* Why the current (or last) run ended; SUCCESS while it runs, and for an exit that was asked for
 * or clean. The first reason recorded stays (a task timeout overrides a lost link). */
typedef enum SlotResult {
        SLOT_RESULT_SUCCESS,
        SLOT_RESULT_EXIT_CODE,          /* exited with another status than 0 */
        SLOT_RESULT_SIGNAL,             /* killed by a signal (not one of ours for a reason below) */
        SLOT_RESULT_START_TIMEOUT,      /* killed: no Ready() within StartTimeoutSec= */
        SLOT_RESULT_TASK_TIMEOUT,       /* killed for a task that ran too long: the task failed, not it */
        SLOT_RESULT_LINK_LOST,          /* killed: its link closed and it did not exit */
        SLOT_RESULT_LOAD,               /* its plugin could not be loaded: the next try would fail too */
        SLOT_RESULT_SPAWN,              /* no process could be started */
        SLOT_RESULT_START_LIMIT,        /* failed StartLimitBurst= + 1 times within StartLimitIntervalSec= */
        _SLOT_RESULT_MAX,
        _SLOT_RESULT_INVALID = -EINVAL,
} SlotResult;

/* What the caller does with a decision, in the order of these values. */
typedef enum SlotAction {
        SLOT_ACTION_DROP          = 1 << 0,     /* forget the process: its link, its timers, its PID */
        SLOT_ACTION_DISARM        = 1 << 1,     /* the slot's timer */
        SLOT_ACTION_RESET         = 1 << 2,     /* forget the failures in a row and the start limit */
        SLOT_ACTION_COUNT_FAILURE = 1 << 3,     /* one more failure in a row, into the start limit */
        SLOT_ACTION_COUNT_RESTART = 1 << 4,     /* Restarts + 1, the slot's and its pool's: one nobody asked for */
        SLOT_ACTION_DISPATCH      = 1 << 5,     /* the pool's queue may go to others meanwhile */
        SLOT_ACTION_FORK          = 1 << 6,     /* ask the zygote for the process (FORK_FAILED if it cannot) */
        SLOT_ACTION_SPAWN         = 1 << 7,     /* spawn+exec apiary-worker (SPAWN_FAILED if it cannot) */
        SLOT_ACTION_ARM_START     = 1 << 8,     /* the timer: StartTimeoutSec= */
        SLOT_ACTION_ARM_STOP      = 1 << 9,     /* the timer: StopTimeoutSec= */
        SLOT_ACTION_ARM_BACKOFF   = 1 << 10,    /* the timer: the restart delay */
        SLOT_ACTION_SIGTERM       = 1 << 11,
        SLOT_ACTION_SIGKILL       = 1 << 12,
        SLOT_ACTION_HOLD_READY    = 1 << 13,    /* answer Ready() once the zygote has said the PID */
        SLOT_ACTION_ACCEPT_READY  = 1 << 14,    /* answer Ready(), and give it tasks */
        SLOT_ACTION_START         = 1 << 15,    /* then raise START: a new run in this slot */
        SLOT_ACTION_FAIL_POOL     = 1 << 16,    /* the pool fails with the result as its reason */
        SLOT_ACTION_COUNT_PLANNED = 1 << 18,    /* PlannedRestarts + 1: a replacement that was asked for */
        SLOT_ACTION_PLANNED       = 1 << 19,    /* its next run comes as planned (a recycle, a revive): the pool
                                                 * is not degraded while it comes up */
        SLOT_ACTION_ROLL_BACK     = 1 << 17,    /* the pool goes back to its previous settings, this run's end
                                                 * the reason (and the slot starts again with them) */
} SlotAction;

typedef struct Slot {
        SlotState state;
        SlotIntent intent;
        SlotResult result;
} Slot;

/* What a decision depends on besides the slot itself, filled in by the caller for the events
 * that read it. */
typedef struct SlotFacts {
        unsigned in_flight;             /* LOAD, STOP, RECYCLE: tasks in flight */
        bool zygote_ready;              /* START: the pool's zygote can fork the process */
        bool wanted;                    /* EXITED, FORK_FAILED, BACKOFF_DONE: the slot is below the pool's
                                         * number of workers, and the pool is active */
        bool exit_clean;                /* EXIT: exit status 0 */
        bool exit_signal;               /* EXIT: killed by a signal */
        bool exit_load;                 /* EXIT: the status that says the plugin cannot be loaded, before Ready() */
        RestartPolicy restart;          /* EXITED: Restart= */
        bool start_limit_trips;         /* EXITED: one more failure now would be past StartLimitBurst= */
        bool backoff;                   /* EXITED: a restart now would wait (RestartSec=) */
        bool trial;                     /* EXITED, SPAWN_FAILED: the run tried a reload's new settings and
                                         * was never ready: its end is theirs, not the slot's */
} SlotFacts;

typedef struct SlotDecision {
        bool legal;                     /* false: the event means nothing in this state; nothing changes */
        Slot next;
        unsigned actions;               /* SlotAction flags */
} SlotDecision;

SlotDecision slot_decide(const Slot *s, SlotEvent e, const SlotFacts *f);

/* What the bus shows for slot S with IN_FLIGHT tasks; _WORKER_STATE_INVALID for SLOT_EXITED, whose
 * slot shows what it showed before. A dead slot whose end was asked for shows "stopped". */
WorkerState slot_to_public(const Slot *s, unsigned in_flight);
/* Whether a slot in STATE has a process (or one on its way, or one whose exit is being handled). */
bool slot_state_has_process(SlotState state);
/* Whether slot S takes tasks (when it has room): serving, and not condemned by its result. */
bool slot_takes_tasks(const Slot *s);

const char *slot_state_to_string(SlotState s);
const char *slot_event_to_string(SlotEvent e);
const char *slot_result_to_string(SlotResult r);
const char *worker_state_to_string(WorkerState s);
