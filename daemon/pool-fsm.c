/* SPDX-License-Identifier: MIT */
#include "daemon/pool-fsm.h"
#include "util/macro.h"

static const char *const pool_phase_table[_POOL_PHASE_MAX] = {
        [POOL_PHASE_NEW] = "new",
        [POOL_PHASE_HELD] = "held",
        [POOL_PHASE_STARTING] = "starting",
        [POOL_PHASE_RUNNING] = "running",
        [POOL_PHASE_DEGRADED] = "degraded",
        [POOL_PHASE_STOPPING] = "stopping",
        [POOL_PHASE_STOPPED] = "stopped",
        [POOL_PHASE_FAILING] = "failing",
        [POOL_PHASE_FAILED] = "failed",
};

static const char *const pool_event_table[_POOL_EVENT_MAX] = {
        [POOL_EVENT_START] = "start",
        [POOL_EVENT_ZYGOTE_SETTLED] = "zygote-settled",
        [POOL_EVENT_SLOTS] = "slots",
        [POOL_EVENT_ROLL] = "roll",
        [POOL_EVENT_ROLL_DONE] = "roll-done",
        [POOL_EVENT_ROLL_FAILED] = "roll-failed",
        [POOL_EVENT_STOP] = "stop",
        [POOL_EVENT_REMOVE] = "remove",
        [POOL_EVENT_FAIL] = "fail",
        [POOL_EVENT_RETRY] = "retry",
};

static const char *const pool_intent_table[_POOL_INTENT_MAX] = {
        [POOL_INTENT_NONE] = "none",
        [POOL_INTENT_ROLL] = "roll",
        [POOL_INTENT_TRY] = "try",
        [POOL_INTENT_ROLL_BACK] = "roll-back",
        [POOL_INTENT_STOP] = "stop",
        [POOL_INTENT_REMOVE] = "remove",
};

static const char *const pool_state_table[_POOL_STATE_MAX] = {
        [POOL_STARTING] = "starting",
        [POOL_RUNNING] = "running",
        [POOL_DEGRADED] = "degraded",
        [POOL_FAILED] = "failed",
        [POOL_STOPPED] = "stopped",
        [POOL_STOPPING] = "stopping",
};

/* What each phase shows, as systemd's state_translation_table[]. */
static const PoolState pool_public_table[_POOL_PHASE_MAX] = {
        [POOL_PHASE_NEW] = POOL_STARTING,
        [POOL_PHASE_HELD] = POOL_STARTING,
        [POOL_PHASE_STARTING] = POOL_STARTING,
        [POOL_PHASE_RUNNING] = POOL_RUNNING,
        [POOL_PHASE_DEGRADED] = POOL_DEGRADED,
        [POOL_PHASE_STOPPING] = POOL_STOPPING,
        [POOL_PHASE_STOPPED] = POOL_STOPPED,
        [POOL_PHASE_FAILING] = POOL_FAILED,
        [POOL_PHASE_FAILED] = POOL_FAILED,
};

#define STRING_OF(table, i) ((i) >= 0 && (size_t) (i) < ELEMENTSOF(table) ? (table)[i] : NULL)

const char *pool_phase_to_string(PoolPhase p) {
        return STRING_OF(pool_phase_table, p);
}

const char *pool_event_to_string(PoolEvent e) {
        return STRING_OF(pool_event_table, e);
}

const char *pool_intent_to_string(PoolIntent i) {
        return STRING_OF(pool_intent_table, i);
}

const char *pool_state_to_string(PoolState s) {
        return STRING_OF(pool_state_table, s);
}

PoolState pool_phase_to_public(PoolPhase phase) {
        if (phase < 0 || phase >= _POOL_PHASE_MAX)
                return _POOL_STATE_INVALID;
        return pool_public_table[phase];
}

bool pool_phase_is_active(PoolPhase phase) {
        return IN_SET(phase, POOL_PHASE_HELD, POOL_PHASE_STARTING, POOL_PHASE_RUNNING, POOL_PHASE_DEGRADED);
}

bool pool_phase_has_failed(PoolPhase phase) {
        return IN_SET(phase, POOL_PHASE_FAILING, POOL_PHASE_FAILED);
}

bool pool_intent_is_roll(PoolIntent intent) {
        return IN_SET(intent, POOL_INTENT_ROLL, POOL_INTENT_TRY, POOL_INTENT_ROLL_BACK);
}

static PoolDecision illegal(const PoolLife *l) {
        return (PoolDecision) { .legal = false, .next = *l };
}

static PoolDecision stay(const PoolLife *l, unsigned actions) {
        return (PoolDecision) { .legal = true, .next = *l, .actions = actions };
}

static PoolDecision go(const PoolLife *l, PoolPhase phase, unsigned actions) {
        PoolDecision d = stay(l, actions);

        d.next.phase = phase;
        return d;
}

static PoolDecision start(const PoolLife *l, const PoolFacts *f) {
        PoolDecision d;

        if (f->zygote)
                /* Its workers are to come from the zygote, which takes about as long to load the
                 * plugin as one spawned worker: they wait until it is ready (or gone, or late). */
                d = go(l, POOL_PHASE_HELD, POOL_ACTION_DISARM_RETRY | POOL_ACTION_RESET | POOL_ACTION_START_ZYGOTE);
        else
                d = go(l, POOL_PHASE_STARTING, POOL_ACTION_DISARM_RETRY | POOL_ACTION_RESET | POOL_ACTION_START_WORKERS);
        d.next.intent = POOL_INTENT_NONE;
        return d;
}

/* starting, running or degraded, from its slots. */
static PoolDecision derive(const PoolLife *l, const PoolFacts *f) {
        unsigned roll = pool_intent_is_roll(l->intent) && f->rolled ? POOL_ACTION_ROLL_NEXT : 0;

        /* Rolled back, it serves, but not with what is configured: that is no "running". */
        if (f->all_ready && !f->rolled_back)
                return go(l, POOL_PHASE_RUNNING, roll);
        /* A scale-up, a rolling restart, a recycle: slots down as planned do not degrade it. */
        if (l->phase == POOL_PHASE_RUNNING && f->only_planned && !f->rolled_back)
                return stay(l, roll);
        if (!f->settled && l->phase == POOL_PHASE_STARTING)
                return stay(l, roll);   /* still coming up */
        return go(l, POOL_PHASE_DEGRADED, roll);
}

/* Its workers are going: once the last is gone, it rests in REST (and a removed pool is freed). */
static PoolDecision drain(const PoolLife *l, const PoolFacts *f, PoolPhase rest) {
        if (!f->idle)
                return stay(l, 0);
        return go(l, rest, l->intent == POOL_INTENT_REMOVE ? POOL_ACTION_FREE : 0);
}

/* What is asked now, unless the pool is removed, which stays. */
static PoolIntent ask(const PoolLife *l, PoolIntent intent) {
        return l->intent == POOL_INTENT_REMOVE ? POOL_INTENT_REMOVE : intent;
}

PoolDecision pool_decide(const PoolLife *l, PoolEvent e, const PoolFacts *f) {
        static const PoolFacts none = {};
        PoolPhase ph = l->phase;
        PoolDecision d;

        if (!f)
                f = &none;

        switch (e) {
        case POOL_EVENT_START:
                if (!IN_SET(ph, POOL_PHASE_NEW, POOL_PHASE_STOPPED, POOL_PHASE_FAILED) ||
                    l->intent == POOL_INTENT_REMOVE)
                        return illegal(l);
                return start(l, f);

        case POOL_EVENT_ZYGOTE_SETTLED:
                if (ph != POOL_PHASE_HELD)
                        return illegal(l);
                return go(l, POOL_PHASE_STARTING, POOL_ACTION_DISARM_HOLD | POOL_ACTION_START_WORKERS);

        case POOL_EVENT_SLOTS:
                switch (ph) {
                case POOL_PHASE_STARTING:
                case POOL_PHASE_RUNNING:
                case POOL_PHASE_DEGRADED:
                        return derive(l, f);
                case POOL_PHASE_STOPPING:
                        return drain(l, f, POOL_PHASE_STOPPED);
                case POOL_PHASE_FAILING:
                        return drain(l, f, POOL_PHASE_FAILED);
                default:
                        /* Slots change around every phase (scaled while stopped): only those above care. */
                        return stay(l, 0);
                }

        case POOL_EVENT_ROLL:
                if (!pool_phase_is_active(ph) || l->intent == POOL_INTENT_REMOVE)
                        return illegal(l);
                d = stay(l, POOL_ACTION_ROLL_BEGIN);
                d.next.intent = f->trial ? POOL_INTENT_TRY : POOL_INTENT_ROLL;
                return d;

        case POOL_EVENT_ROLL_DONE:
                if (!pool_intent_is_roll(l->intent) || !pool_phase_is_active(ph))
                        return illegal(l);
                d = stay(l, 0);
                d.next.intent = POOL_INTENT_NONE;
                return d;

        case POOL_EVENT_ROLL_FAILED:
                /* Only a trial goes back: a Restart()'s new workers run what already ran. */
                if (l->intent != POOL_INTENT_TRY || !pool_phase_is_active(ph))
                        return illegal(l);
                d = stay(l, POOL_ACTION_ROLL_BACK);
                d.next.intent = POOL_INTENT_ROLL_BACK;
                return d;

        case POOL_EVENT_STOP:
        case POOL_EVENT_REMOVE: {
                PoolIntent intent = e == POOL_EVENT_REMOVE ? POOL_INTENT_REMOVE : POOL_INTENT_STOP;
                unsigned fail_queued = e == POOL_EVENT_REMOVE ? POOL_ACTION_FAIL_QUEUED : 0;

                if (e == POOL_EVENT_REMOVE && l->intent == POOL_INTENT_REMOVE)
                        return illegal(l);
                switch (ph) {
                case POOL_PHASE_STOPPING:
                case POOL_PHASE_FAILING:
                        /* Already on its way down: now for good, and without a retry. */
                        d = stay(l, POOL_ACTION_DISARM_RETRY | fail_queued);
                        break;
                case POOL_PHASE_STOPPED:
                case POOL_PHASE_FAILED:
                        /* No worker left: a removed pool can go at once. */
                        d = stay(l, POOL_ACTION_DISARM_RETRY | fail_queued |
                                    (e == POOL_EVENT_REMOVE ? POOL_ACTION_FREE : 0));
                        break;
                default:
                        d = go(l, POOL_PHASE_STOPPING, POOL_ACTION_DISARM_HOLD | POOL_ACTION_DISARM_RETRY | fail_queued |
                                                       POOL_ACTION_STOP_WORKERS);
                        break;
                }
                d.next.intent = ask(l, intent);
                return d;
        }

        case POOL_EVENT_FAIL:
                if (IN_SET(ph, POOL_PHASE_STOPPED, POOL_PHASE_FAILING, POOL_PHASE_FAILED))
                        return illegal(l);
                d = go(l, POOL_PHASE_FAILING, POOL_ACTION_DISARM_HOLD | POOL_ACTION_FAIL_QUEUED | POOL_ACTION_STOP_WORKERS);
                if (pool_intent_is_roll(l->intent))
                        d.next.intent = POOL_INTENT_NONE;
                /* A pool stopped or removed on purpose is not tried again. */
                if (f->retry && d.next.intent == POOL_INTENT_NONE)
                        d.actions |= POOL_ACTION_ARM_RETRY;
                return d;

        case POOL_EVENT_RETRY:
                if (l->intent != POOL_INTENT_NONE)
                        return illegal(l);
                if (ph == POOL_PHASE_FAILING)
                        /* The last run's workers are still on their way out: never two in a slot. */
                        return stay(l, POOL_ACTION_ARM_RETRY_SOON);
                if (ph == POOL_PHASE_FAILED)
                        return start(l, f);
                return illegal(l);

        default:
                return illegal(l);
        }
}
