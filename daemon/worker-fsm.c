/* SPDX-License-Identifier: MIT */
#include "daemon/worker-fsm.h"
#include "util/macro.h"

static const char *const slot_state_table[_SLOT_STATE_MAX] = {
        [SLOT_DEAD] = "dead",
        [SLOT_FORKING] = "forking",
        [SLOT_STARTING] = "starting",
        [SLOT_READY] = "ready",
        [SLOT_BUSY] = "busy",
        [SLOT_RETIRING] = "retiring",
        [SLOT_DRAINING] = "draining",
        [SLOT_STOP_SIGTERM] = "stop-sigterm",
        [SLOT_STOP_SIGKILL] = "stop-sigkill",
        [SLOT_EXITED] = "exited",
        [SLOT_BACKOFF] = "backoff",
};

static const char *const slot_event_table[_SLOT_EVENT_MAX] = {
        [SLOT_EVENT_START] = "start",
        [SLOT_EVENT_FORKED] = "forked",
        [SLOT_EVENT_FORK_FAILED] = "fork-failed",
        [SLOT_EVENT_SPAWN_FAILED] = "spawn-failed",
        [SLOT_EVENT_READY] = "ready",
        [SLOT_EVENT_LOAD] = "load",
        [SLOT_EVENT_RETIRE] = "retire",
        [SLOT_EVENT_STOP] = "stop",
        [SLOT_EVENT_RECYCLE] = "recycle",
        [SLOT_EVENT_REVIVE] = "revive",
        [SLOT_EVENT_START_TIMEOUT] = "start-timeout",
        [SLOT_EVENT_STOP_TIMEOUT] = "stop-timeout",
        [SLOT_EVENT_TASK_TIMEOUT] = "task-timeout",
        [SLOT_EVENT_LINK_LOST] = "link-lost",
        [SLOT_EVENT_EXIT] = "exit",
        [SLOT_EVENT_EXITED] = "exited",
        [SLOT_EVENT_BACKOFF_DONE] = "backoff-done",
};

static const char *const slot_result_table[_SLOT_RESULT_MAX] = {
        [SLOT_RESULT_SUCCESS] = "success",
        [SLOT_RESULT_EXIT_CODE] = "exit-code",
        [SLOT_RESULT_SIGNAL] = "signal",
        [SLOT_RESULT_START_TIMEOUT] = "start-timeout",
        [SLOT_RESULT_TASK_TIMEOUT] = "task-timeout",
        [SLOT_RESULT_LINK_LOST] = "link-lost",
        [SLOT_RESULT_LOAD] = "load",
        [SLOT_RESULT_SPAWN] = "spawn",
        [SLOT_RESULT_START_LIMIT] = "start-limit",
};

static const char *const worker_state_table[_WORKER_STATE_MAX] = {
        [WORKER_DEAD] = "dead",
        [WORKER_STOPPED] = "stopped",
        [WORKER_STARTING] = "starting",
        [WORKER_READY] = "ready",
        [WORKER_BUSY] = "busy",
        [WORKER_STOPPING] = "stopping",
        [WORKER_BACKOFF] = "backoff",
};

/* What each internal state shows, as systemd's state_translation_table[]; RETIRING shows its load. */
static const WorkerState slot_public_table[_SLOT_STATE_MAX] = {
        [SLOT_DEAD] = WORKER_DEAD,
        [SLOT_FORKING] = WORKER_STARTING,
        [SLOT_STARTING] = WORKER_STARTING,
        [SLOT_READY] = WORKER_READY,
        [SLOT_BUSY] = WORKER_BUSY,
        [SLOT_RETIRING] = WORKER_BUSY,
        [SLOT_DRAINING] = WORKER_STOPPING,
        [SLOT_STOP_SIGTERM] = WORKER_STOPPING,
        [SLOT_STOP_SIGKILL] = WORKER_STOPPING,
        [SLOT_EXITED] = _WORKER_STATE_INVALID,
        [SLOT_BACKOFF] = WORKER_BACKOFF,
};

#define STRING_OF(table, i) ((i) >= 0 && (size_t) (i) < ELEMENTSOF(table) ? (table)[i] : NULL)

const char *slot_state_to_string(SlotState s) {
        return STRING_OF(slot_state_table, s);
}

const char *slot_event_to_string(SlotEvent e) {
        return STRING_OF(slot_event_table, e);
}

const char *slot_result_to_string(SlotResult r) {
        return STRING_OF(slot_result_table, r);
}

const char *worker_state_to_string(WorkerState s) {
        return STRING_OF(worker_state_table, s);
}

WorkerState slot_to_public(const Slot *s, unsigned in_flight) {
        if (s->state < 0 || s->state >= _SLOT_STATE_MAX)
                return _WORKER_STATE_INVALID;
        if (s->state == SLOT_RETIRING && in_flight == 0)
                return WORKER_READY;
        if (s->state == SLOT_DEAD && s->intent != SLOT_INTENT_NONE)
                return WORKER_STOPPED;
        return slot_public_table[s->state];
}

bool slot_state_has_process(SlotState state) {
        return !IN_SET(state, SLOT_DEAD, SLOT_BACKOFF);
}

bool slot_takes_tasks(const Slot *s) {
        /* A run already condemned (a task timeout, a lost link: its SIGKILL is on its way) takes
         * nothing more: a task given to it now would only go back to the queue at its exit. */
        return IN_SET(s->state, SLOT_READY, SLOT_BUSY) && s->result == SLOT_RESULT_SUCCESS;
}

static SlotDecision illegal(const Slot *s) {
        return (SlotDecision) { .legal = false, .next = *s };
}

static SlotDecision stay(const Slot *s, unsigned actions) {
        return (SlotDecision) { .legal = true, .next = *s, .actions = actions };
}

static SlotDecision go(const Slot *s, SlotState state, unsigned actions) {
        SlotDecision d = stay(s, actions);

        d.next.state = state;
        return d;
}

/* A result recorded while the process runs: the first one stays, but for a lost link, which a
 * task timeout explains better (the worker was killed for it, not for the link). */
static SlotResult record(SlotResult old, SlotResult new) {
        if (old == SLOT_RESULT_SUCCESS || (old == SLOT_RESULT_LINK_LOST && new == SLOT_RESULT_TASK_TIMEOUT))
                return new;
        return old;
}

/* A stop of a running process, INTENT being why: with tasks in flight it drains first. The stop
 * timer counts from now either way. */
static SlotDecision stop_running(const Slot *s, SlotIntent intent, unsigned in_flight) {
        SlotDecision d;

        if (in_flight > 0)
                d = go(s, SLOT_DRAINING, SLOT_ACTION_ARM_STOP);
        else
                d = go(s, SLOT_STOP_SIGTERM, SLOT_ACTION_ARM_STOP | SLOT_ACTION_SIGTERM);
        d.next.intent = intent;
        if (intent == SLOT_INTENT_RECYCLE)
                /* Replaced on purpose: its pool does not count the slot as down meanwhile. */
                d.actions |= SLOT_ACTION_PLANNED;
        return d;
}

static SlotDecision start(const Slot *s, const SlotFacts *f) {
        SlotDecision d;

        if (f->zygote_ready)
                d = go(s, SLOT_FORKING, SLOT_ACTION_DISARM | SLOT_ACTION_FORK | SLOT_ACTION_ARM_START);
        else
                d = go(s, SLOT_STARTING, SLOT_ACTION_DISARM | SLOT_ACTION_SPAWN | SLOT_ACTION_ARM_START);
        d.next.intent = SLOT_INTENT_NONE;
        d.next.result = SLOT_RESULT_SUCCESS;
        return d;
}

/* After the exit of a run that was not asked to end: why it ended decides what comes next. */
static SlotDecision after_failure(const Slot *s, const SlotFacts *f) {
        bool failure, restart;
        SlotDecision d;

        if (s->result == SLOT_RESULT_LOAD)
                /* A plugin that cannot be loaded will not load on the next try either. */
                return go(s, SLOT_DEAD, SLOT_ACTION_FAIL_POOL);
        if (s->result == SLOT_RESULT_TASK_TIMEOUT)
                /* Killed for a task that ran too long: that task failed, the worker did not. */
                return go(s, SLOT_DEAD, SLOT_ACTION_COUNT_RESTART | SLOT_ACTION_DISPATCH | SLOT_ACTION_START);

        if (f->start_limit_trips) {
                d = go(s, SLOT_DEAD, SLOT_ACTION_COUNT_FAILURE | SLOT_ACTION_FAIL_POOL);
                d.next.result = SLOT_RESULT_START_LIMIT;
                return d;
        }

        failure = s->result != SLOT_RESULT_SUCCESS;
        switch (f->restart) {
        case RESTART_ALWAYS:
                restart = true;
                break;
        case RESTART_ON_FAILURE:
                restart = failure;
                break;
        case RESTART_NO:
        default:
                restart = false;
                break;
        }
        /* The tasks it left go to the other workers meanwhile. */
        if (!restart)
                return go(s, SLOT_DEAD, SLOT_ACTION_COUNT_FAILURE | SLOT_ACTION_DISPATCH);
        if (f->backoff)
                return go(s, SLOT_BACKOFF, SLOT_ACTION_COUNT_FAILURE | SLOT_ACTION_DISPATCH |
                                           SLOT_ACTION_COUNT_RESTART | SLOT_ACTION_ARM_BACKOFF);
        return go(s, SLOT_DEAD, SLOT_ACTION_COUNT_FAILURE | SLOT_ACTION_DISPATCH | SLOT_ACTION_COUNT_RESTART |
                                SLOT_ACTION_START);
}

static SlotDecision exited(const Slot *s, const SlotFacts *f) {
        /* Asked to end, or no longer wanted (scaled away, the pool stopping): nothing to restart,
         * but a recycle or a revive of a slot that is still wanted. */
        if (s->intent != SLOT_INTENT_NONE || !f->wanted) {
                if (s->intent == SLOT_INTENT_RECYCLE && f->wanted)
                        return go(s, SLOT_DEAD, SLOT_ACTION_COUNT_PLANNED | SLOT_ACTION_START | SLOT_ACTION_DISPATCH);
                if (s->intent == SLOT_INTENT_REVIVE && f->wanted)
                        return go(s, SLOT_DEAD, SLOT_ACTION_RESET | SLOT_ACTION_START | SLOT_ACTION_DISPATCH);
                return go(s, SLOT_DEAD, SLOT_ACTION_DISPATCH);
        }
        /* New settings that cannot bring a worker up: the pool goes back to the previous ones
         * (which starts this slot again). Not the slot's failure: nothing is counted. */
        if (f->trial)
                return go(s, SLOT_DEAD, SLOT_ACTION_DISPATCH | SLOT_ACTION_ROLL_BACK);
        return after_failure(s, f);
}

SlotDecision slot_decide(const Slot *s, SlotEvent e, const SlotFacts *f) {
        static const SlotFacts none = {};
        SlotState st = s->state;
        SlotDecision d;

        if (!f)
                f = &none;

        switch (e) {
        case SLOT_EVENT_START:
                if (!IN_SET(st, SLOT_DEAD, SLOT_BACKOFF))
                        return illegal(s);
                return start(s, f);

        case SLOT_EVENT_FORKED:
                if (st == SLOT_FORKING)
                        return go(s, SLOT_STARTING, 0);
                /* Stopped while the zygote forked it: the stop goes on, now with a PID. */
                if (IN_SET(st, SLOT_STOP_SIGTERM, SLOT_STOP_SIGKILL))
                        return stay(s, 0);
                return illegal(s);

        case SLOT_EVENT_FORK_FAILED:
                if (st == SLOT_FORKING && s->intent == SLOT_INTENT_NONE && f->wanted) {
                        d = go(s, SLOT_STARTING, SLOT_ACTION_SPAWN);
                        d.next.result = SLOT_RESULT_SUCCESS;
                        return d;
                }
                /* Stopped meanwhile: no process is what was wanted. */
                if (IN_SET(st, SLOT_FORKING, SLOT_STOP_SIGTERM, SLOT_STOP_SIGKILL))
                        return go(s, SLOT_DEAD, SLOT_ACTION_DROP | SLOT_ACTION_DISPATCH);
                return illegal(s);

        case SLOT_EVENT_SPAWN_FAILED:
                if (!IN_SET(st, SLOT_FORKING, SLOT_STARTING))
                        return illegal(s);
                d = go(s, SLOT_DEAD, SLOT_ACTION_DROP |
                                     (f->trial && s->intent == SLOT_INTENT_NONE ? SLOT_ACTION_ROLL_BACK :
                                                                                  SLOT_ACTION_FAIL_POOL));
                d.next.result = SLOT_RESULT_SPAWN;
                return d;

        case SLOT_EVENT_READY:
                if (st == SLOT_FORKING)
                        /* Its PID comes on another connection: a ready worker always has one. */
                        return stay(s, SLOT_ACTION_HOLD_READY);
                if (st == SLOT_STARTING)
                        return go(s, SLOT_READY, SLOT_ACTION_DISARM | SLOT_ACTION_ACCEPT_READY | SLOT_ACTION_DISPATCH);
                /* Asked to stop while in init(): it gets SIGTERM now that it can take it. */
                if (IN_SET(st, SLOT_DRAINING, SLOT_STOP_SIGTERM, SLOT_STOP_SIGKILL))
                        return stay(s, SLOT_ACTION_ACCEPT_READY);
                return illegal(s);

        case SLOT_EVENT_LOAD:
                switch (st) {
                case SLOT_READY:
                case SLOT_BUSY:
                        return go(s, f->in_flight > 0 ? SLOT_BUSY : SLOT_READY, 0);
                case SLOT_RETIRING:
                        return f->in_flight > 0 ? stay(s, 0) : stop_running(s, SLOT_INTENT_RECYCLE, 0);
                case SLOT_DRAINING:
                        return f->in_flight > 0 ? stay(s, 0) : go(s, SLOT_STOP_SIGTERM, SLOT_ACTION_SIGTERM);
                default:
                        /* Tasks come and go around every state: only those above care. */
                        return stay(s, 0);
                }

        case SLOT_EVENT_RETIRE:
                if (IN_SET(st, SLOT_READY, SLOT_BUSY))
                        return go(s, SLOT_RETIRING, 0);
                if (st == SLOT_RETIRING)
                        return stay(s, 0);
                return illegal(s);

        case SLOT_EVENT_STOP:
                switch (st) {
                case SLOT_FORKING:
                case SLOT_STARTING:
                case SLOT_READY:
                case SLOT_BUSY:
                case SLOT_RETIRING:
                        return stop_running(s, SLOT_INTENT_STOP, f->in_flight);
                case SLOT_DRAINING:
                case SLOT_STOP_SIGTERM:
                case SLOT_STOP_SIGKILL:
                        /* Already on its way out: now for good (a recycle or revive is off). */
                        d = stay(s, 0);
                        d.next.intent = SLOT_INTENT_STOP;
                        return d;
                case SLOT_BACKOFF:
                        d = go(s, SLOT_DEAD, SLOT_ACTION_DISARM);
                        d.next.intent = SLOT_INTENT_STOP;
                        return d;
                case SLOT_DEAD:
                case SLOT_EXITED:
                default:
                        return stay(s, 0);
                }

        case SLOT_EVENT_RECYCLE:
                if (IN_SET(st, SLOT_READY, SLOT_BUSY, SLOT_RETIRING))
                        return stop_running(s, SLOT_INTENT_RECYCLE, f->in_flight);
                if (IN_SET(st, SLOT_DEAD, SLOT_BACKOFF))
                        /* Nothing to drain: a fresh start now, the tally forgotten. */
                        return go(s, st, SLOT_ACTION_RESET | SLOT_ACTION_START);
                return illegal(s);      /* starting or stopping: not now */

        case SLOT_EVENT_REVIVE:
                if (IN_SET(st, SLOT_DRAINING, SLOT_STOP_SIGTERM, SLOT_STOP_SIGKILL)) {
                        d = stay(s, SLOT_ACTION_PLANNED);
                        d.next.intent = SLOT_INTENT_REVIVE;
                        return d;
                }
                if (st == SLOT_DEAD)
                        return stay(s, SLOT_ACTION_RESET | SLOT_ACTION_START);
                /* Running, or its restart timer runs: it comes back by itself. */
                return stay(s, 0);

        case SLOT_EVENT_START_TIMEOUT:
                if (!IN_SET(st, SLOT_FORKING, SLOT_STARTING))
                        return illegal(s);
                d = stay(s, SLOT_ACTION_SIGKILL);
                d.next.result = record(s->result, SLOT_RESULT_START_TIMEOUT);
                return d;

        case SLOT_EVENT_STOP_TIMEOUT:
                if (!IN_SET(st, SLOT_DRAINING, SLOT_STOP_SIGTERM))
                        return illegal(s);
                return go(s, SLOT_STOP_SIGKILL, SLOT_ACTION_SIGKILL);

        case SLOT_EVENT_TASK_TIMEOUT:
                /* Where tasks can be in flight (its task's end may have drained a stopping one). */
                if (!IN_SET(st, SLOT_READY, SLOT_BUSY, SLOT_RETIRING, SLOT_DRAINING, SLOT_STOP_SIGTERM,
                            SLOT_STOP_SIGKILL))
                        return illegal(s);
                d = stay(s, SLOT_ACTION_SIGKILL);
                d.next.result = record(s->result, SLOT_RESULT_TASK_TIMEOUT);
                return d;

        case SLOT_EVENT_LINK_LOST:
                if (!slot_state_has_process(st) || st == SLOT_EXITED)
                        return illegal(s);
                d = stay(s, SLOT_ACTION_SIGKILL);
                d.next.result = record(s->result, SLOT_RESULT_LINK_LOST);
                return d;

        case SLOT_EVENT_EXIT:
                /* A forked process is watched only once its PID is known (FORKED). */
                if (!slot_state_has_process(st) || IN_SET(st, SLOT_FORKING, SLOT_EXITED))
                        return illegal(s);
                d = go(s, SLOT_EXITED, 0);
                if (f->exit_load && s->result == SLOT_RESULT_SUCCESS && s->intent == SLOT_INTENT_NONE)
                        d.next.result = SLOT_RESULT_LOAD;
                else if (!f->exit_clean && s->intent == SLOT_INTENT_NONE)
                        d.next.result = record(s->result, f->exit_signal ? SLOT_RESULT_SIGNAL : SLOT_RESULT_EXIT_CODE);
                return d;

        case SLOT_EVENT_EXITED:
                if (st != SLOT_EXITED)
                        return illegal(s);
                return exited(s, f);

        case SLOT_EVENT_BACKOFF_DONE:
                if (st != SLOT_BACKOFF)
                        return illegal(s);
                if (!f->wanted)
                        return go(s, SLOT_DEAD, SLOT_ACTION_DISARM);
                return stay(s, SLOT_ACTION_START);

        default:
                return illegal(s);
        }
}
