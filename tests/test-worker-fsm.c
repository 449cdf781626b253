/* SPDX-License-Identifier: MIT */
/*
 * The worker slot's state machine (daemon/worker-fsm.c) without a process: every (state, event)
 * pair is tried, what is legal is held against a table written here independently of the code,
 * and the lives a slot leads (a crash loop, a stop, a recycle, a zygote fork) are walked through.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/worker-fsm.h"
#include "tests/doc-table.h"
#include "util/macro.h"

#define BIT(s) (1u << (s))
#define PROCESS_STATES                                                                                  \
        (BIT(SLOT_FORKING) | BIT(SLOT_STARTING) | BIT(SLOT_READY) | BIT(SLOT_BUSY) | BIT(SLOT_RETIRING) |  \
         BIT(SLOT_DRAINING) | BIT(SLOT_STOP_SIGTERM) | BIT(SLOT_STOP_SIGKILL))
#define ALL_STATES ((1u << _SLOT_STATE_MAX) - 1)

/* In which states each event means something. */
static const unsigned legal_in[_SLOT_EVENT_MAX] = {
        [SLOT_EVENT_START] = BIT(SLOT_DEAD) | BIT(SLOT_BACKOFF),
        [SLOT_EVENT_FORKED] = BIT(SLOT_FORKING) | BIT(SLOT_STOP_SIGTERM) | BIT(SLOT_STOP_SIGKILL),
        [SLOT_EVENT_FORK_FAILED] = BIT(SLOT_FORKING) | BIT(SLOT_STOP_SIGTERM) | BIT(SLOT_STOP_SIGKILL),
        [SLOT_EVENT_SPAWN_FAILED] = BIT(SLOT_FORKING) | BIT(SLOT_STARTING),
        [SLOT_EVENT_READY] = BIT(SLOT_FORKING) | BIT(SLOT_STARTING) | BIT(SLOT_DRAINING) | BIT(SLOT_STOP_SIGTERM) |
                             BIT(SLOT_STOP_SIGKILL),
        [SLOT_EVENT_LOAD] = ALL_STATES,
        [SLOT_EVENT_RETIRE] = BIT(SLOT_READY) | BIT(SLOT_BUSY) | BIT(SLOT_RETIRING),
        [SLOT_EVENT_STOP] = ALL_STATES,
        [SLOT_EVENT_RECYCLE] = BIT(SLOT_READY) | BIT(SLOT_BUSY) | BIT(SLOT_RETIRING) | BIT(SLOT_DEAD) |
                               BIT(SLOT_BACKOFF),
        [SLOT_EVENT_REVIVE] = ALL_STATES,
        [SLOT_EVENT_START_TIMEOUT] = BIT(SLOT_FORKING) | BIT(SLOT_STARTING),
        [SLOT_EVENT_STOP_TIMEOUT] = BIT(SLOT_DRAINING) | BIT(SLOT_STOP_SIGTERM),
        [SLOT_EVENT_TASK_TIMEOUT] = BIT(SLOT_READY) | BIT(SLOT_BUSY) | BIT(SLOT_RETIRING) | BIT(SLOT_DRAINING) |
                                    BIT(SLOT_STOP_SIGTERM) | BIT(SLOT_STOP_SIGKILL),
        [SLOT_EVENT_LINK_LOST] = PROCESS_STATES,
        [SLOT_EVENT_EXIT] = PROCESS_STATES & ~BIT(SLOT_FORKING),
        [SLOT_EVENT_EXITED] = BIT(SLOT_EXITED),
        [SLOT_EVENT_BACKOFF_DONE] = BIT(SLOT_BACKOFF),
};

/* Facts to try each pair with: none, a loaded and wanted slot with a zygote, an exit by signal. */
static const SlotFacts facts[] = {
        {},
        { .in_flight = 3, .zygote_ready = true, .wanted = true, .restart = RESTART_ALWAYS, .backoff = true },
        { .wanted = true, .exit_signal = true, .restart = RESTART_ON_FAILURE, .start_limit_trips = true },
        { .wanted = true, .exit_clean = true, .restart = RESTART_NO },
};

static void test_every_pair(void **state) {
        for (SlotState st = 0; st < _SLOT_STATE_MAX; st++)
                for (SlotEvent e = 0; e < _SLOT_EVENT_MAX; e++)
                        for (size_t k = 0; k < ELEMENTSOF(facts); k++) {
                                Slot s = { .state = st };
                                SlotDecision d = slot_decide(&s, e, &facts[k]);
                                bool expect = legal_in[e] & BIT(st);

                                if (d.legal != expect)
                                        fail_msg("%s in %s: %s, expected %s", slot_event_to_string(e),
                                                 slot_state_to_string(st), d.legal ? "legal" : "illegal",
                                                 expect ? "legal" : "illegal");
                                if (!d.legal) {
                                        /* Nothing changes, nothing is done. */
                                        assert_int_equal(d.next.state, st);
                                        assert_int_equal(d.actions, 0);
                                        continue;
                                }
                                assert_true(d.next.state >= 0 && d.next.state < _SLOT_STATE_MAX);
                                assert_true(d.next.intent >= 0 && d.next.intent < _SLOT_INTENT_MAX);
                                assert_true(d.next.result >= 0 && d.next.result < _SLOT_RESULT_MAX);
                                /* A signal goes only to a process; a new run only from no process. */
                                if (d.actions & (SLOT_ACTION_SIGTERM | SLOT_ACTION_SIGKILL))
                                        assert_true(BIT(st) & PROCESS_STATES);
                                if (d.actions & (SLOT_ACTION_FORK | SLOT_ACTION_SPAWN))
                                        assert_true(IN_SET(d.next.state, SLOT_FORKING, SLOT_STARTING));
                                if (d.actions & SLOT_ACTION_START)
                                        assert_true(IN_SET(d.next.state, SLOT_DEAD, SLOT_BACKOFF));
                                /* SIGTERM is what stop-sigterm means. */
                                if (d.actions & SLOT_ACTION_SIGTERM)
                                        assert_int_equal(d.next.state, SLOT_STOP_SIGTERM);
                                /* A stop says why it was asked. */
                                if (IN_SET(d.next.state, SLOT_DRAINING, SLOT_STOP_SIGTERM, SLOT_STOP_SIGKILL) &&
                                    !IN_SET(st, SLOT_DRAINING, SLOT_STOP_SIGTERM, SLOT_STOP_SIGKILL))
                                        assert_int_not_equal(d.next.intent, SLOT_INTENT_NONE);
                        }
}

static void test_public_states(void **state) {
        for (SlotState st = 0; st < _SLOT_STATE_MAX; st++) {
                WorkerState w = slot_to_public(&(Slot) { .state = st }, 1);

                assert_non_null(slot_state_to_string(st));
                if (st == SLOT_EXITED)
                        assert_int_equal(w, _WORKER_STATE_INVALID);
                else
                        assert_non_null(worker_state_to_string(w));
        }
        assert_int_equal(slot_to_public(&(Slot) { .state = SLOT_FORKING }, 0), WORKER_STARTING);
        assert_int_equal(slot_to_public(&(Slot) { .state = SLOT_RETIRING }, 2), WORKER_BUSY);
        assert_int_equal(slot_to_public(&(Slot) { .state = SLOT_RETIRING }, 0), WORKER_READY);
        assert_int_equal(slot_to_public(&(Slot) { .state = SLOT_DRAINING }, 2), WORKER_STOPPING);
        assert_int_equal(slot_to_public(&(Slot) { .state = SLOT_STOP_SIGKILL }, 0), WORKER_STOPPING);
        /* Dead as asked is "stopped"; dead by itself is "dead". */
        assert_int_equal(slot_to_public(&(Slot) { .state = SLOT_DEAD, .intent = SLOT_INTENT_STOP }, 0), WORKER_STOPPED);
        assert_int_equal(slot_to_public(&(Slot) { .state = SLOT_DEAD, .intent = SLOT_INTENT_RECYCLE }, 0),
                         WORKER_STOPPED);
        assert_int_equal(slot_to_public(&(Slot) { .state = SLOT_DEAD, .result = SLOT_RESULT_SIGNAL }, 0), WORKER_DEAD);
        assert_false(slot_state_has_process(SLOT_DEAD));
        assert_false(slot_state_has_process(SLOT_BACKOFF));
        assert_true(slot_state_has_process(SLOT_EXITED));
        assert_true(slot_takes_tasks(&(Slot) { .state = SLOT_BUSY }));
        assert_false(slot_takes_tasks(&(Slot) { .state = SLOT_RETIRING }));
        assert_false(slot_takes_tasks(&(Slot) { .state = SLOT_DRAINING }));
        for (SlotEvent e = 0; e < _SLOT_EVENT_MAX; e++)
                assert_non_null(slot_event_to_string(e));
        for (SlotResult r = 0; r < _SLOT_RESULT_MAX; r++)
                assert_non_null(slot_result_to_string(r));
}

/* Applies E with F to S, which must be legal; returns the actions. */
static unsigned step(Slot *s, SlotEvent e, const SlotFacts *f) {
        SlotDecision d = slot_decide(s, e, f);

        if (!d.legal)
                fail_msg("%s in %s is illegal", slot_event_to_string(e), slot_state_to_string(s->state));
        *s = d.next;
        return d.actions;
}

static void test_crash_loop(void **state) {
        SlotFacts f = { .wanted = true, .restart = RESTART_ALWAYS };
        Slot s = {};
        unsigned a;

        a = step(&s, SLOT_EVENT_START, &f);
        assert_int_equal(s.state, SLOT_STARTING);
        assert_int_equal(a, SLOT_ACTION_DISARM | SLOT_ACTION_SPAWN | SLOT_ACTION_ARM_START);
        a = step(&s, SLOT_EVENT_READY, &f);
        assert_int_equal(s.state, SLOT_READY);
        assert_true(a & SLOT_ACTION_ACCEPT_READY);

        /* The first crash in a row restarts at once... */
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_signal = true });
        assert_int_equal(s.state, SLOT_EXITED);
        assert_int_equal(s.result, SLOT_RESULT_SIGNAL);
        a = step(&s, SLOT_EVENT_EXITED, &f);
        assert_int_equal(a, SLOT_ACTION_COUNT_FAILURE | SLOT_ACTION_DISPATCH | SLOT_ACTION_COUNT_RESTART |
                            SLOT_ACTION_START);

        /* ... the next waits, and then starts... */
        s = (Slot) { .state = SLOT_EXITED, .result = SLOT_RESULT_EXIT_CODE };
        f.backoff = true;
        a = step(&s, SLOT_EVENT_EXITED, &f);
        assert_int_equal(s.state, SLOT_BACKOFF);
        assert_true(a & SLOT_ACTION_ARM_BACKOFF);
        a = step(&s, SLOT_EVENT_BACKOFF_DONE, &f);
        assert_int_equal(a, SLOT_ACTION_START);
        a = step(&s, SLOT_EVENT_START, &f);
        assert_int_equal(s.result, SLOT_RESULT_SUCCESS);

        /* ... and past the start limit the pool fails. */
        s = (Slot) { .state = SLOT_EXITED, .result = SLOT_RESULT_SIGNAL };
        f.start_limit_trips = true;
        a = step(&s, SLOT_EVENT_EXITED, &f);
        assert_int_equal(s.state, SLOT_DEAD);
        assert_int_equal(s.result, SLOT_RESULT_START_LIMIT);
        assert_int_equal(a, SLOT_ACTION_COUNT_FAILURE | SLOT_ACTION_FAIL_POOL);
}

static void test_exit_reasons(void **state) {
        SlotFacts f = { .wanted = true, .restart = RESTART_ON_FAILURE };
        Slot s;
        unsigned a;

        /* A plugin that cannot load fails the pool, whatever Restart= says. */
        s = (Slot) { .state = SLOT_STARTING };
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_load = true });
        assert_int_equal(s.result, SLOT_RESULT_LOAD);
        a = step(&s, SLOT_EVENT_EXITED, &f);
        assert_int_equal(s.state, SLOT_DEAD);
        assert_int_equal(a, SLOT_ACTION_FAIL_POOL);

        /* A start timeout is a failure: on-failure restarts it. */
        s = (Slot) { .state = SLOT_STARTING };
        a = step(&s, SLOT_EVENT_START_TIMEOUT, &f);
        assert_int_equal(a, SLOT_ACTION_SIGKILL);
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_signal = true });
        assert_int_equal(s.result, SLOT_RESULT_START_TIMEOUT);
        assert_true(step(&s, SLOT_EVENT_EXITED, &f) & SLOT_ACTION_START);

        /* Killed for a task's timeout: it takes nothing more while its SIGKILL lands, is replaced
         * at once, and that is not counted as its failure. */
        s = (Slot) { .state = SLOT_BUSY };
        assert_true(slot_takes_tasks(&s));
        step(&s, SLOT_EVENT_TASK_TIMEOUT, &f);
        assert_int_equal(s.state, SLOT_BUSY);
        assert_false(slot_takes_tasks(&s));
        s = (Slot) { .state = SLOT_BUSY };
        step(&s, SLOT_EVENT_LINK_LOST, &f);
        assert_false(slot_takes_tasks(&s));
        step(&s, SLOT_EVENT_TASK_TIMEOUT, &f);
        assert_int_equal(s.result, SLOT_RESULT_TASK_TIMEOUT);
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_signal = true });
        a = step(&s, SLOT_EVENT_EXITED, &f);
        assert_int_equal(a, SLOT_ACTION_COUNT_RESTART | SLOT_ACTION_DISPATCH | SLOT_ACTION_START);

        /* A run of a reload's new settings that ends before it is ready, however it ends, rolls
         * the pool back instead: the slot counts nothing and waits for the pool to start it. */
        s = (Slot) { .state = SLOT_STARTING };
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_load = true });
        a = step(&s, SLOT_EVENT_EXITED, &(SlotFacts) { .wanted = true, .trial = true, .start_limit_trips = true });
        assert_int_equal(s.state, SLOT_DEAD);
        assert_int_equal(a, SLOT_ACTION_DISPATCH | SLOT_ACTION_ROLL_BACK);
        s = (Slot) { .state = SLOT_STARTING };
        step(&s, SLOT_EVENT_START_TIMEOUT, &f);
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_signal = true });
        assert_int_equal(step(&s, SLOT_EVENT_EXITED, &(SlotFacts) { .wanted = true, .trial = true }),
                         SLOT_ACTION_DISPATCH | SLOT_ACTION_ROLL_BACK);
        s = (Slot) { .state = SLOT_STARTING };
        assert_int_equal(step(&s, SLOT_EVENT_SPAWN_FAILED, &(SlotFacts) { .trial = true }),
                         SLOT_ACTION_DROP | SLOT_ACTION_ROLL_BACK);
        /* ... but a stop asked for stays a stop. */
        s = (Slot) { .state = SLOT_STARTING };
        step(&s, SLOT_EVENT_STOP, &f);
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_signal = true });
        assert_false(step(&s, SLOT_EVENT_EXITED, &(SlotFacts) { .trial = true }) & SLOT_ACTION_ROLL_BACK);

        /* A clean exit is no failure: on-failure leaves it dead, and so does Restart=no. */
        s = (Slot) { .state = SLOT_READY };
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_clean = true });
        assert_int_equal(s.result, SLOT_RESULT_SUCCESS);
        a = step(&s, SLOT_EVENT_EXITED, &f);
        assert_int_equal(s.state, SLOT_DEAD);
        assert_false(a & SLOT_ACTION_START);
        s = (Slot) { .state = SLOT_EXITED, .result = SLOT_RESULT_SIGNAL };
        f.restart = RESTART_NO;
        a = step(&s, SLOT_EVENT_EXITED, &f);
        assert_int_equal(s.state, SLOT_DEAD);
        assert_false(a & SLOT_ACTION_START);
}

static void test_stop(void **state) {
        Slot s = { .state = SLOT_BUSY };
        unsigned a;

        /* Tasks in flight finish first; the stop timer runs from the stop. */
        a = step(&s, SLOT_EVENT_STOP, &(SlotFacts) { .in_flight = 2 });
        assert_int_equal(s.state, SLOT_DRAINING);
        assert_int_equal(s.intent, SLOT_INTENT_STOP);
        assert_int_equal(a, SLOT_ACTION_ARM_STOP);
        assert_int_equal(step(&s, SLOT_EVENT_LOAD, &(SlotFacts) { .in_flight = 1 }), 0);
        assert_int_equal(s.state, SLOT_DRAINING);
        a = step(&s, SLOT_EVENT_LOAD, &(SlotFacts) {});
        assert_int_equal(s.state, SLOT_STOP_SIGTERM);
        assert_int_equal(a, SLOT_ACTION_SIGTERM);
        a = step(&s, SLOT_EVENT_STOP_TIMEOUT, NULL);
        assert_int_equal(s.state, SLOT_STOP_SIGKILL);
        assert_int_equal(a, SLOT_ACTION_SIGKILL);

        /* Its exit, by that SIGKILL, is what was asked: no failure, no restart. */
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_signal = true });
        assert_int_equal(s.result, SLOT_RESULT_SUCCESS);
        a = step(&s, SLOT_EVENT_EXITED, &(SlotFacts) { .wanted = true, .restart = RESTART_ALWAYS });
        assert_int_equal(s.state, SLOT_DEAD);
        assert_int_equal(a, SLOT_ACTION_DISPATCH);

        /* A slot waiting in backoff just stops waiting, and shows that it was stopped. */
        s = (Slot) { .state = SLOT_BACKOFF };
        assert_int_equal(step(&s, SLOT_EVENT_STOP, NULL), SLOT_ACTION_DISARM);
        assert_int_equal(s.state, SLOT_DEAD);
        assert_int_equal(slot_to_public(&s, 0), WORKER_STOPPED);
}

static void test_recycle_and_revive(void **state) {
        SlotFacts wanted = { .wanted = true }, unwanted = {};
        Slot s = { .state = SLOT_READY };
        unsigned a;

        /* Restart(): stopped (its pool told that it comes back as planned), then a new process at
         * once, counted as a planned restart. */
        a = step(&s, SLOT_EVENT_RECYCLE, &(SlotFacts) {});
        assert_int_equal(s.state, SLOT_STOP_SIGTERM);
        assert_int_equal(s.intent, SLOT_INTENT_RECYCLE);
        assert_int_equal(a, SLOT_ACTION_ARM_STOP | SLOT_ACTION_SIGTERM | SLOT_ACTION_PLANNED);
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_clean = true });
        a = step(&s, SLOT_EVENT_EXITED, &wanted);
        assert_int_equal(a, SLOT_ACTION_COUNT_PLANNED | SLOT_ACTION_START | SLOT_ACTION_DISPATCH);

        /* Scaled away meanwhile: it stays dead. */
        s = (Slot) { .state = SLOT_EXITED, .intent = SLOT_INTENT_RECYCLE };
        assert_int_equal(step(&s, SLOT_EVENT_EXITED, &unwanted), SLOT_ACTION_DISPATCH);
        assert_int_equal(s.state, SLOT_DEAD);

        /* Not while it starts or stops; a dead or waiting slot starts afresh. */
        s = (Slot) { .state = SLOT_STARTING };
        assert_false(slot_decide(&s, SLOT_EVENT_RECYCLE, NULL).legal);
        s = (Slot) { .state = SLOT_BACKOFF };
        assert_int_equal(step(&s, SLOT_EVENT_RECYCLE, NULL), SLOT_ACTION_RESET | SLOT_ACTION_START);

        /* Scaled down, then up again while it drains: it starts afresh once gone. A scale-down
         * during a recycle makes it a stop. */
        s = (Slot) { .state = SLOT_BUSY };
        step(&s, SLOT_EVENT_RECYCLE, &(SlotFacts) { .in_flight = 1 });
        step(&s, SLOT_EVENT_STOP, NULL);
        assert_int_equal(s.intent, SLOT_INTENT_STOP);
        step(&s, SLOT_EVENT_REVIVE, NULL);
        assert_int_equal(s.intent, SLOT_INTENT_REVIVE);
        step(&s, SLOT_EVENT_LOAD, &(SlotFacts) {});
        step(&s, SLOT_EVENT_EXIT, &(SlotFacts) { .exit_clean = true });
        a = step(&s, SLOT_EVENT_EXITED, &wanted);
        assert_int_equal(a, SLOT_ACTION_RESET | SLOT_ACTION_START | SLOT_ACTION_DISPATCH);
        s = (Slot) { .state = SLOT_DEAD };
        assert_int_equal(step(&s, SLOT_EVENT_REVIVE, NULL), SLOT_ACTION_RESET | SLOT_ACTION_START);
}

static void test_retire(void **state) {
        Slot s = { .state = SLOT_BUSY };
        unsigned a;

        step(&s, SLOT_EVENT_RETIRE, NULL);
        assert_int_equal(s.state, SLOT_RETIRING);
        assert_int_equal(step(&s, SLOT_EVENT_LOAD, &(SlotFacts) { .in_flight = 1 }), 0);
        a = step(&s, SLOT_EVENT_LOAD, &(SlotFacts) {});
        assert_int_equal(s.state, SLOT_STOP_SIGTERM);
        assert_int_equal(s.intent, SLOT_INTENT_RECYCLE);
        assert_int_equal(a, SLOT_ACTION_ARM_STOP | SLOT_ACTION_SIGTERM | SLOT_ACTION_PLANNED);
}

static void test_zygote_fork(void **state) {
        SlotFacts f = { .zygote_ready = true, .wanted = true };
        Slot s = {};
        unsigned a;

        a = step(&s, SLOT_EVENT_START, &f);
        assert_int_equal(s.state, SLOT_FORKING);
        assert_int_equal(a, SLOT_ACTION_DISARM | SLOT_ACTION_FORK | SLOT_ACTION_ARM_START);
        /* A Ready() before the zygote said the PID waits for it. */
        assert_int_equal(step(&s, SLOT_EVENT_READY, &f), SLOT_ACTION_HOLD_READY);
        assert_int_equal(s.state, SLOT_FORKING);
        step(&s, SLOT_EVENT_FORKED, &f);
        assert_int_equal(s.state, SLOT_STARTING);

        /* No fork: spawned instead, afresh. */
        s = (Slot) { .state = SLOT_FORKING, .result = SLOT_RESULT_START_TIMEOUT };
        assert_int_equal(step(&s, SLOT_EVENT_FORK_FAILED, &f), SLOT_ACTION_SPAWN);
        assert_int_equal(s.state, SLOT_STARTING);
        assert_int_equal(s.result, SLOT_RESULT_SUCCESS);

        /* Stopped while forking: the fork's answer finds it stopping, or its failure dead. */
        s = (Slot) { .state = SLOT_FORKING };
        a = step(&s, SLOT_EVENT_STOP, &f);
        assert_int_equal(s.state, SLOT_STOP_SIGTERM);
        assert_int_equal(step(&s, SLOT_EVENT_FORKED, &f), 0);
        assert_int_equal(s.state, SLOT_STOP_SIGTERM);
        a = step(&s, SLOT_EVENT_FORK_FAILED, &f);
        assert_int_equal(s.state, SLOT_DEAD);
        assert_true(a & SLOT_ACTION_DROP);

        /* No process at all: the pool fails. */
        s = (Slot) { .state = SLOT_STARTING };
        a = step(&s, SLOT_EVENT_SPAWN_FAILED, &f);
        assert_int_equal(s.state, SLOT_DEAD);
        assert_int_equal(s.result, SLOT_RESULT_SPAWN);
        assert_true(a & SLOT_ACTION_FAIL_POOL);
}

static const char *doc_path;

static const char *event_name(unsigned e) {
        return slot_event_to_string((SlotEvent) e);
}

static void doc_row(const DocRow *r, void *userdata) {
        unsigned *seen = userdata, legal = 0;
        SlotState st;

        for (st = 0; st < _SLOT_STATE_MAX; st++)
                if (strcmp(slot_state_to_string(st), r->inside) == 0)
                        break;
        if (st == _SLOT_STATE_MAX)
                fail_msg("docs: no state \"%s\"", r->inside);
        assert_false(*seen & BIT(st));
        *seen |= BIT(st);

        if (st == SLOT_EXITED)
                assert_string_equal(r->shown, "(as before)");
        else
                assert_string_equal(r->shown, worker_state_to_string(slot_to_public(&(Slot) { .state = st }, 1)));

        for (SlotEvent e = 0; e < _SLOT_EVENT_MAX; e++)
                if (slot_decide(&(Slot) { .state = st }, e, NULL).legal)
                        legal |= BIT(e);
        doc_row_check(r->inside, doc_row_takes(r, event_name, _SLOT_EVENT_MAX), legal, event_name, _SLOT_EVENT_MAX);
}

/* docs/apiaryd.md's table of a slot's inner states says what the code does: each state's shown
 * state, and the events it takes (those slot_decide() finds legal there), each state once. */
static void test_doc_table(void **state) {
        unsigned seen = 0;

        if (!doc_path)
                skip();
        doc_table_foreach(doc_path, "slot-states", doc_row, &seen);
        assert_int_equal(seen, ALL_STATES);
}

int main(int argc, char *argv[]) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_pair),
                cmocka_unit_test(test_public_states),
                cmocka_unit_test(test_crash_loop),
                cmocka_unit_test(test_exit_reasons),
                cmocka_unit_test(test_stop),
                cmocka_unit_test(test_recycle_and_revive),
                cmocka_unit_test(test_retire),
                cmocka_unit_test(test_zygote_fork),
                cmocka_unit_test(test_doc_table),
        };

        doc_path = argc > 1 ? argv[1] : NULL;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
