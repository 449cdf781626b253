/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>

/* The states a pool shows on the bus (the Pool's State property, docs/apiaryd.md). */
typedef enum PoolState {
        POOL_STARTING,          /* some slot has not settled yet */
        POOL_RUNNING,           /* every slot's worker is ready */
        POOL_DEGRADED,          /* started, but some slot is not ready (restarting, or Restart=no) */
        POOL_FAILED,            /* start limit hit or plugin unloadable; retried after FailedRetrySec */
        POOL_STOPPED,           /* stopped on purpose */
        POOL_STOPPING,          /* its workers are being stopped on purpose (Stop(), a removal, apiaryd stopping) */
        _POOL_STATE_MAX,
        _POOL_STATE_INVALID = -EINVAL,
} PoolState;

/*
 * The life of a pool, as data, in the shape of worker-fsm.h: its phases, the events that move it,
 * and what was asked of it (its intent). Every event goes through pool_decide(), one pure
 * function; pool.c raises the events with the facts they need, performs the actions it gets
 * back, and is the only writer of a pool's phase. Paused is no phase: it is a setting of
 * dispatch that holds in every phase, as systemd keeps a unit's freezer state beside its active
 * state.
 *
 *   new, stopped, failed ──START──▶ held ──ZYGOTE_SETTLED──▶ starting ──SLOTS──▶ running, degraded
 *                          (Zygote=no) ─────────────────────▲
 *   new … degraded ──STOP, REMOVE──▶ stopping ──SLOTS, idle──▶ stopped
 *   new … stopping ──FAIL──▶ failing ──SLOTS, idle──▶ failed ──RETRY──▶ held or starting
 *
 * A roll (an intent, in the active phases): ROLL replaces the workers slot by slot; a reload's
 * new code rolls in as a trial (intent try), whose first worker to fail before it is ready
 * (ROLL_FAILED) turns it into a roll back to the previous settings (intent roll-back), as nginx
 * keeps its old workers when the new ones cannot start.
 */
typedef enum PoolPhase {
        POOL_PHASE_NEW,         /* made, not started yet */
        POOL_PHASE_HELD,        /* started; its workers wait for its zygote (ZYGOTE_HOLD_USEC at most) */
        POOL_PHASE_STARTING,    /* its workers start; some slot has not settled */
        POOL_PHASE_RUNNING,     /* every slot's worker is ready */
        POOL_PHASE_DEGRADED,    /* every slot has settled, not every one is ready */
        POOL_PHASE_STOPPING,    /* its workers are being stopped */
        POOL_PHASE_STOPPED,     /* stopped, no worker left */
        POOL_PHASE_FAILING,     /* failed; its workers are being stopped */
        POOL_PHASE_FAILED,      /* failed, no worker left; retried after FailedRetrySec= */
        _POOL_PHASE_MAX,
        _POOL_PHASE_INVALID = -EINVAL,
} PoolPhase;

typedef enum PoolEvent {
        POOL_EVENT_START,               /* the first start, Start(), new code for a failed pool */
        POOL_EVENT_ZYGOTE_SETTLED,      /* its zygote is ready, gone, or too slow: held workers start */
        POOL_EVENT_SLOTS,               /* a slot shows a new state, or slots came or went */
        POOL_EVENT_ROLL,                /* Restart(): replace the workers one slot at a time */
        POOL_EVENT_ROLL_DONE,           /* past the last slot of the roll */
        POOL_EVENT_ROLL_FAILED,         /* a worker of a trial's new settings ended before it was ready */
        POOL_EVENT_STOP,                /* Stop(), or apiaryd stops */
        POOL_EVENT_REMOVE,              /* gone from the configuration: stopped, then freed */
        POOL_EVENT_FAIL,                /* a slot hit its start limit, the plugin cannot load, no spawn */
        POOL_EVENT_RETRY,               /* FailedRetrySec= passed */
        _POOL_EVENT_MAX,
        _POOL_EVENT_INVALID = -EINVAL,
} PoolEvent;

/* What was asked of the pool besides running; NONE after a start. */
typedef enum PoolIntent {
        POOL_INTENT_NONE,
        POOL_INTENT_ROLL,               /* a rolling restart is under way */
        POOL_INTENT_TRY,                /* a reload's new settings roll in; the previous ones are kept */
        POOL_INTENT_ROLL_BACK,          /* they failed: the previous settings roll back in */
        POOL_INTENT_STOP,               /* stopped on purpose: no retry */
        POOL_INTENT_REMOVE,             /* removed by a reload: freed once it has no worker, never started again */
        _POOL_INTENT_MAX,
        _POOL_INTENT_INVALID = -EINVAL,
} PoolIntent;

/* What the caller does with a decision, in the order of these values. */
typedef enum PoolAction {
        POOL_ACTION_DISARM_HOLD    = 1 << 0,    /* the time limit of a start held for the zygote */
        POOL_ACTION_DISARM_RETRY   = 1 << 1,    /* the FailedRetrySec= timer */
        POOL_ACTION_RESET          = 1 << 2,    /* forget the failure; every slot unsettled, its tally forgotten */
        POOL_ACTION_FAIL_QUEUED    = 1 << 3,    /* queued tasks fail: the pool failed, or was removed */
        POOL_ACTION_START_ZYGOTE   = 1 << 4,    /* start the zygote, hold the workers back (ZYGOTE_SETTLED if it cannot) */
        POOL_ACTION_START_WORKERS  = 1 << 5,    /* start every wanted slot that has no process */
        POOL_ACTION_ROLL_BEGIN     = 1 << 6,    /* replace the first slot (ROLL_DONE past the last) */
        POOL_ACTION_ROLL_NEXT      = 1 << 7,    /* replace the next slot (ROLL_DONE past the last) */
        POOL_ACTION_STOP_WORKERS   = 1 << 8,    /* stop every slot, then the zygote; then SLOTS */
        POOL_ACTION_ARM_RETRY      = 1 << 9,    /* the timer: FailedRetrySec= */
        POOL_ACTION_ARM_RETRY_SOON = 1 << 10,   /* the timer: a look again shortly, the last run's workers still go */
        POOL_ACTION_FREE           = 1 << 11,   /* removed and without worker: freed from the loop */
        POOL_ACTION_ROLL_BACK      = 1 << 12,   /* the previous settings back, slots without a process started,
                                                 * the slots of the new ones replaced (ROLL_DONE past the last) */
} PoolAction;

typedef struct PoolLife {
        PoolPhase phase;
        PoolIntent intent;
} PoolLife;

/* What a decision depends on besides the pool itself, filled in by the caller. */
typedef struct PoolFacts {
        bool zygote;            /* START, RETRY: Zygote=yes, its workers wait for it */
        bool settled;           /* SLOTS: every wanted slot has settled (docs/apiaryd.md) */
        bool all_ready;         /* SLOTS: every wanted slot's worker is ready */
        bool only_planned;      /* SLOTS: every wanted slot that is not ready comes up as planned (a new
                                 * slot, a replacement asked for): a running pool stays running */
        bool idle;              /* SLOTS, REMOVE: no worker has a process */
        bool rolled;            /* SLOTS: the slot being rolled has its new worker ready */
        bool trial;             /* ROLL: new settings from a reload, the previous ones kept to go back to */
        bool rolled_back;       /* SLOTS: a reload's settings were rolled back: it does not run what is configured */
        bool retry;             /* FAIL: FailedRetrySec= is finite and apiaryd is not stopping */
} PoolFacts;

typedef struct PoolDecision {
        bool legal;             /* false: the event means nothing in this phase; nothing changes */
        PoolLife next;
        unsigned actions;       /* PoolAction flags */
} PoolDecision;

PoolDecision pool_decide(const PoolLife *l, PoolEvent e, const PoolFacts *f);

/* What the bus shows for PHASE. */
PoolState pool_phase_to_public(PoolPhase phase);
/* Whether a pool in PHASE is meant to run its workers, and so takes tasks: the one answer. */
bool pool_phase_is_active(PoolPhase phase);
bool pool_phase_has_failed(PoolPhase phase);
/* Whether INTENT replaces the workers slot by slot (roll, try, roll-back). */
bool pool_intent_is_roll(PoolIntent intent);

const char *pool_phase_to_string(PoolPhase p);
const char *pool_event_to_string(PoolEvent e);
const char *pool_intent_to_string(PoolIntent i);
const char *pool_state_to_string(PoolState s);
