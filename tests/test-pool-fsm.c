/* SPDX-License-Identifier: MIT */
/*
 * The pool's state machine (daemon/pool-fsm.c) without a process: every (phase, intent, event)
 * triple is tried, what is legal is held against rules written here independently of the code,
 * and the lives a pool leads (a start with and without a zygote, a failure and its retry, a stop,
 * a removal, a rolling restart) are walked through.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/pool-fsm.h"
#include "tests/doc-table.h"
#include "util/macro.h"

#define BIT(s) (1u << (s))
#define ACTIVE (BIT(POOL_PHASE_HELD) | BIT(POOL_PHASE_STARTING) | BIT(POOL_PHASE_RUNNING) | BIT(POOL_PHASE_DEGRADED))
#define ALL_PHASES ((1u << _POOL_PHASE_MAX) - 1)

/* In which phases each event means something, for a pool with no intent. */
static const unsigned legal_in[_POOL_EVENT_MAX] = {
        [POOL_EVENT_START] = BIT(POOL_PHASE_NEW) | BIT(POOL_PHASE_STOPPED) | BIT(POOL_PHASE_FAILED),
        [POOL_EVENT_ZYGOTE_SETTLED] = BIT(POOL_PHASE_HELD),
        [POOL_EVENT_SLOTS] = ALL_PHASES,
        [POOL_EVENT_ROLL] = ACTIVE,
        [POOL_EVENT_ROLL_DONE] = 0,
        [POOL_EVENT_ROLL_FAILED] = 0,
        [POOL_EVENT_STOP] = ALL_PHASES,
        [POOL_EVENT_REMOVE] = ALL_PHASES,
        [POOL_EVENT_FAIL] = ALL_PHASES & ~(BIT(POOL_PHASE_STOPPED) | BIT(POOL_PHASE_FAILING) | BIT(POOL_PHASE_FAILED)),
        [POOL_EVENT_RETRY] = BIT(POOL_PHASE_FAILING) | BIT(POOL_PHASE_FAILED),
};

static bool expect_legal(PoolPhase ph, PoolIntent in, PoolEvent e) {
        switch (e) {
        case POOL_EVENT_ROLL_DONE:
                /* a roll ends only while it runs */
                return IN_SET(in, POOL_INTENT_ROLL, POOL_INTENT_TRY, POOL_INTENT_ROLL_BACK) && (ACTIVE & BIT(ph));
        case POOL_EVENT_ROLL_FAILED:
                return in == POOL_INTENT_TRY && (ACTIVE & BIT(ph));    /* only a reload's trial goes back */
        case POOL_EVENT_START:
        case POOL_EVENT_REMOVE:
        case POOL_EVENT_ROLL:
                if (in == POOL_INTENT_REMOVE)
                        return false;                                   /* removed is for good */
                break;
        case POOL_EVENT_RETRY:
                if (in != POOL_INTENT_NONE)
                        return false;                                   /* stopped on purpose: no retry */
                break;
        default:
                break;
        }
        return legal_in[e] & BIT(ph);
}

/* Facts to try each triple with: none, all of them, a pool still coming up, an idle one. */
static const PoolFacts facts[] = {
        {},
        { .zygote = true, .settled = true, .all_ready = true, .idle = true, .rolled = true, .retry = true,
          .trial = true, .rolled_back = true },
        { .retry = true },
        { .settled = true, .idle = true, .rolled = true },
        { .settled = true, .all_ready = true, .trial = true },
        { .settled = true, .only_planned = true, .rolled = true },
};

static void test_every_triple(void **state) {
        for (PoolPhase ph = 0; ph < _POOL_PHASE_MAX; ph++)
                for (PoolIntent in = 0; in < _POOL_INTENT_MAX; in++)
                        for (PoolEvent e = 0; e < _POOL_EVENT_MAX; e++)
                                for (size_t k = 0; k < ELEMENTSOF(facts); k++) {
                                        PoolLife l = { .phase = ph, .intent = in };
                                        PoolDecision d = pool_decide(&l, e, &facts[k]);
                                        bool expect = expect_legal(ph, in, e);
                                        PoolPhase to = d.next.phase;

                                        if (d.legal != expect)
                                                fail_msg("%s in %s (intent %d): %s, expected %s",
                                                         pool_event_to_string(e), pool_phase_to_string(ph), in,
                                                         d.legal ? "legal" : "illegal", expect ? "legal" : "illegal");
                                        if (!d.legal) {
                                                /* Nothing changes, nothing is done. */
                                                assert_int_equal(to, ph);
                                                assert_int_equal(d.next.intent, in);
                                                assert_int_equal(d.actions, 0);
                                                continue;
                                        }
                                        assert_true(to >= 0 && to < _POOL_PHASE_MAX);
                                        assert_true(d.next.intent >= 0 && d.next.intent < _POOL_INTENT_MAX);
                                        /* Removed stays removed; a start forgets every other intent. */
                                        if (in == POOL_INTENT_REMOVE)
                                                assert_int_equal(d.next.intent, POOL_INTENT_REMOVE);
                                        if (d.actions & POOL_ACTION_RESET)
                                                assert_int_equal(d.next.intent, POOL_INTENT_NONE);
                                        /* Workers start only into a starting phase, stop only into a stopping one. */
                                        if (d.actions & POOL_ACTION_START_ZYGOTE)
                                                assert_int_equal(to, POOL_PHASE_HELD);
                                        if (d.actions & POOL_ACTION_START_WORKERS)
                                                assert_int_equal(to, POOL_PHASE_STARTING);
                                        if (d.actions & POOL_ACTION_STOP_WORKERS)
                                                assert_true(IN_SET(to, POOL_PHASE_STOPPING, POOL_PHASE_FAILING));
                                        /* No worker is left in stopped and failed. */
                                        if (to != ph && IN_SET(to, POOL_PHASE_STOPPED, POOL_PHASE_FAILED))
                                                assert_true(facts[k].idle);
                                        /* A retry is for a failure nobody asked for; freeing for a removal. */
                                        if (d.actions & POOL_ACTION_ARM_RETRY) {
                                                assert_int_equal(to, POOL_PHASE_FAILING);
                                                assert_int_equal(d.next.intent, POOL_INTENT_NONE);
                                        }
                                        if (d.actions & POOL_ACTION_FREE) {
                                                assert_int_equal(d.next.intent, POOL_INTENT_REMOVE);
                                                assert_true(IN_SET(to, POOL_PHASE_STOPPED, POOL_PHASE_FAILED));
                                        }
                                        /* A roll goes on only while the pool runs. */
                                        if (d.actions & (POOL_ACTION_ROLL_BEGIN | POOL_ACTION_ROLL_NEXT |
                                                         POOL_ACTION_ROLL_BACK)) {
                                                assert_true(pool_intent_is_roll(d.next.intent));
                                                assert_true(pool_phase_is_active(to));
                                        }
                                        /* It begins only in a running pool, and a stop or a failure ends it. */
                                        if (pool_intent_is_roll(d.next.intent) && !pool_intent_is_roll(in))
                                                assert_true(pool_phase_is_active(to));
                                        if (pool_intent_is_roll(in) && pool_phase_is_active(ph) &&
                                            !pool_phase_is_active(to))
                                                assert_false(pool_intent_is_roll(d.next.intent));
                                        /* A reload's trial is begun by a roll with new settings only; it
                                         * goes back by its failure only, and back is where it goes. */
                                        if (d.next.intent == POOL_INTENT_TRY && in != POOL_INTENT_TRY)
                                                assert_true(e == POOL_EVENT_ROLL && facts[k].trial);
                                        if (d.next.intent == POOL_INTENT_ROLL_BACK && in != POOL_INTENT_ROLL_BACK) {
                                                assert_int_equal(e, POOL_EVENT_ROLL_FAILED);
                                                assert_int_equal(d.actions, POOL_ACTION_ROLL_BACK);
                                        }
                                        if (d.actions & POOL_ACTION_ROLL_BACK)
                                                assert_int_equal(in, POOL_INTENT_TRY);
                                        /* A pool rolled back never shows running: it runs what is not configured. */
                                        if (facts[k].rolled_back && to != ph)
                                                assert_int_not_equal(to, POOL_PHASE_RUNNING);
                                }
}

static void test_public_states(void **state) {
        for (PoolPhase ph = 0; ph < _POOL_PHASE_MAX; ph++) {
                PoolState s = pool_phase_to_public(ph);

                assert_non_null(pool_phase_to_string(ph));
                assert_non_null(pool_state_to_string(s));
                /* It takes tasks exactly when it runs or is about to. */
                assert_int_equal(pool_phase_is_active(ph), !!(ACTIVE & BIT(ph)));
                assert_int_equal(pool_phase_has_failed(ph), s == POOL_FAILED);
        }
        assert_int_equal(pool_phase_to_public(POOL_PHASE_NEW), POOL_STARTING);
        assert_int_equal(pool_phase_to_public(POOL_PHASE_STOPPING), POOL_STOPPING);
        assert_int_equal(pool_phase_to_public(POOL_PHASE_HELD), POOL_STARTING);
        assert_int_equal(pool_phase_to_public(POOL_PHASE_FAILING), POOL_FAILED);
        assert_null(pool_phase_to_string(_POOL_PHASE_MAX));
        assert_null(pool_event_to_string(_POOL_EVENT_INVALID));
}

/* Raises E on L with facts F, asserting that it is legal; returns the actions. */
static unsigned raise_event(PoolLife *l, PoolEvent e, const PoolFacts *f) {
        PoolDecision d = pool_decide(l, e, f);

        if (!d.legal)
                fail_msg("%s in %s: illegal", pool_event_to_string(e), pool_phase_to_string(l->phase));
        *l = d.next;
        return d.actions;
}

static void assert_illegal(const PoolLife *l, PoolEvent e) {
        if (pool_decide(l, e, NULL).legal)
                fail_msg("%s in %s: legal", pool_event_to_string(e), pool_phase_to_string(l->phase));
}

static void test_start(void **state) {
        PoolLife l = { .phase = POOL_PHASE_NEW };
        unsigned a;

        /* Spawned workers: each slot settles, then all are ready. */
        a = raise_event(&l, POOL_EVENT_START, &(PoolFacts) {});
        assert_int_equal(l.phase, POOL_PHASE_STARTING);
        assert_true(a & POOL_ACTION_RESET);
        assert_true(a & POOL_ACTION_START_WORKERS);
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) {});
        assert_int_equal(l.phase, POOL_PHASE_STARTING);
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true });
        assert_int_equal(l.phase, POOL_PHASE_DEGRADED);
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true, .all_ready = true });
        assert_int_equal(l.phase, POOL_PHASE_RUNNING);
        /* A worker crashed: degraded, not starting again. */
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) {});
        assert_int_equal(l.phase, POOL_PHASE_DEGRADED);
        assert_illegal(&l, POOL_EVENT_START);

        /* With a zygote, the workers wait for it. */
        l = (PoolLife) { .phase = POOL_PHASE_NEW };
        a = raise_event(&l, POOL_EVENT_START, &(PoolFacts) { .zygote = true });
        assert_int_equal(l.phase, POOL_PHASE_HELD);
        assert_true(a & POOL_ACTION_START_ZYGOTE);
        assert_false(a & POOL_ACTION_START_WORKERS);
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .all_ready = true });
        assert_int_equal(l.phase, POOL_PHASE_HELD);
        a = raise_event(&l, POOL_EVENT_ZYGOTE_SETTLED, NULL);
        assert_int_equal(l.phase, POOL_PHASE_STARTING);
        assert_int_equal(a, POOL_ACTION_DISARM_HOLD | POOL_ACTION_START_WORKERS);
        assert_illegal(&l, POOL_EVENT_ZYGOTE_SETTLED);
}

static void test_fail_and_retry(void **state) {
        PoolLife l = { .phase = POOL_PHASE_RUNNING };
        unsigned a;

        a = raise_event(&l, POOL_EVENT_FAIL, &(PoolFacts) { .retry = true });
        assert_int_equal(l.phase, POOL_PHASE_FAILING);
        assert_int_equal(a, POOL_ACTION_DISARM_HOLD | POOL_ACTION_FAIL_QUEUED | POOL_ACTION_STOP_WORKERS |
                                    POOL_ACTION_ARM_RETRY);
        assert_illegal(&l, POOL_EVENT_FAIL);
        /* The timer fires before the last worker is gone: never two processes in a slot. */
        a = raise_event(&l, POOL_EVENT_RETRY, NULL);
        assert_int_equal(l.phase, POOL_PHASE_FAILING);
        assert_int_equal(a, POOL_ACTION_ARM_RETRY_SOON);
        assert_illegal(&l, POOL_EVENT_START);   /* Start() says Busy */
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .idle = true });
        assert_int_equal(l.phase, POOL_PHASE_FAILED);
        a = raise_event(&l, POOL_EVENT_RETRY, NULL);
        assert_int_equal(l.phase, POOL_PHASE_STARTING);
        assert_true(a & POOL_ACTION_RESET);

        /* FailedRetrySec=infinity, or apiaryd stopping: no retry. */
        l = (PoolLife) { .phase = POOL_PHASE_STARTING };
        a = raise_event(&l, POOL_EVENT_FAIL, &(PoolFacts) {});
        assert_false(a & POOL_ACTION_ARM_RETRY);

        /* Stop() of a failed pool cancels its retry; Start() still starts it. */
        l = (PoolLife) { .phase = POOL_PHASE_FAILED };
        a = raise_event(&l, POOL_EVENT_STOP, NULL);
        assert_int_equal(l.phase, POOL_PHASE_FAILED);
        assert_int_equal(l.intent, POOL_INTENT_STOP);
        assert_int_equal(a, POOL_ACTION_DISARM_RETRY);
        assert_illegal(&l, POOL_EVENT_RETRY);
        raise_event(&l, POOL_EVENT_START, NULL);
        assert_int_equal(l.intent, POOL_INTENT_NONE);
}

static void test_stop(void **state) {
        PoolLife l = { .phase = POOL_PHASE_DEGRADED };
        unsigned a;

        a = raise_event(&l, POOL_EVENT_STOP, NULL);
        assert_int_equal(l.phase, POOL_PHASE_STOPPING);
        assert_int_equal(l.intent, POOL_INTENT_STOP);
        assert_true(a & POOL_ACTION_STOP_WORKERS);
        assert_false(a & POOL_ACTION_FAIL_QUEUED);      /* Stop() fails them itself, apiaryd's stop too */
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .all_ready = true });
        assert_int_equal(l.phase, POOL_PHASE_STOPPING);
        assert_illegal(&l, POOL_EVENT_START);
        assert_illegal(&l, POOL_EVENT_ROLL);

        /* A failure on the way down is recorded, but a stopped pool is not retried. */
        a = raise_event(&l, POOL_EVENT_FAIL, &(PoolFacts) { .retry = true });
        assert_int_equal(l.phase, POOL_PHASE_FAILING);
        assert_false(a & POOL_ACTION_ARM_RETRY);
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .idle = true });
        assert_int_equal(l.phase, POOL_PHASE_FAILED);

        l = (PoolLife) { .phase = POOL_PHASE_RUNNING };
        raise_event(&l, POOL_EVENT_STOP, NULL);
        a = raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .idle = true });
        assert_int_equal(l.phase, POOL_PHASE_STOPPED);
        assert_int_equal(a, 0);
        assert_illegal(&l, POOL_EVENT_FAIL);
        raise_event(&l, POOL_EVENT_START, NULL);
        assert_int_equal(l.phase, POOL_PHASE_STARTING);
}

static void test_remove(void **state) {
        PoolLife l = { .phase = POOL_PHASE_RUNNING };
        unsigned a;

        a = raise_event(&l, POOL_EVENT_REMOVE, NULL);
        assert_int_equal(l.phase, POOL_PHASE_STOPPING);
        assert_int_equal(l.intent, POOL_INTENT_REMOVE);
        assert_true(a & POOL_ACTION_FAIL_QUEUED);
        assert_true(a & POOL_ACTION_STOP_WORKERS);
        assert_false(a & POOL_ACTION_FREE);
        assert_illegal(&l, POOL_EVENT_REMOVE);
        /* Stop() and a failure keep it removed, and do not retry it. */
        raise_event(&l, POOL_EVENT_STOP, NULL);
        assert_int_equal(l.intent, POOL_INTENT_REMOVE);
        a = raise_event(&l, POOL_EVENT_FAIL, &(PoolFacts) { .retry = true });
        assert_false(a & POOL_ACTION_ARM_RETRY);
        a = raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .idle = true });
        assert_int_equal(l.phase, POOL_PHASE_FAILED);
        assert_int_equal(a, POOL_ACTION_FREE);
        assert_illegal(&l, POOL_EVENT_START);
        assert_illegal(&l, POOL_EVENT_RETRY);

        /* A pool with no worker left goes at once. */
        l = (PoolLife) { .phase = POOL_PHASE_STOPPED, .intent = POOL_INTENT_STOP };
        a = raise_event(&l, POOL_EVENT_REMOVE, NULL);
        assert_int_equal(l.phase, POOL_PHASE_STOPPED);
        assert_true(a & POOL_ACTION_FREE);
}

static void test_roll(void **state) {
        PoolLife l = { .phase = POOL_PHASE_RUNNING };
        unsigned a;

        assert_illegal(&l, POOL_EVENT_ROLL_DONE);
        a = raise_event(&l, POOL_EVENT_ROLL, NULL);
        assert_int_equal(l.intent, POOL_INTENT_ROLL);
        assert_int_equal(a, POOL_ACTION_ROLL_BEGIN);
        /* Its slot is replaced as planned: the pool stays running meanwhile... */
        a = raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .only_planned = true });
        assert_int_equal(l.phase, POOL_PHASE_RUNNING);
        assert_int_equal(a, 0);
        a = raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true, .all_ready = true, .rolled = true });
        assert_int_equal(l.phase, POOL_PHASE_RUNNING);
        assert_int_equal(a, POOL_ACTION_ROLL_NEXT);
        /* ... but a slot down that nobody planned degrades it, roll or not. */
        a = raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true });
        assert_int_equal(l.phase, POOL_PHASE_DEGRADED);
        assert_int_equal(a, 0);
        /* Degraded stays degraded until every slot is ready, planned or not. */
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true, .only_planned = true });
        assert_int_equal(l.phase, POOL_PHASE_DEGRADED);
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true, .all_ready = true });
        assert_int_equal(l.phase, POOL_PHASE_RUNNING);
        /* Restart() again begins again. */
        a = raise_event(&l, POOL_EVENT_ROLL, NULL);
        assert_int_equal(a, POOL_ACTION_ROLL_BEGIN);
        raise_event(&l, POOL_EVENT_ROLL_DONE, NULL);
        assert_int_equal(l.intent, POOL_INTENT_NONE);
        a = raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .all_ready = true, .rolled = true });
        assert_int_equal(a, 0);

        /* A failure ends the roll, and is retried. */
        raise_event(&l, POOL_EVENT_ROLL, NULL);
        a = raise_event(&l, POOL_EVENT_FAIL, &(PoolFacts) { .retry = true });
        assert_int_equal(l.intent, POOL_INTENT_NONE);
        assert_true(a & POOL_ACTION_ARM_RETRY);
        assert_illegal(&l, POOL_EVENT_ROLL);
}

/* A reload's new settings: rolled in as a trial; a failure rolls them back, and the pool serves
 * on, degraded, until the next reload. */
static void test_trial(void **state) {
        PoolLife l = { .phase = POOL_PHASE_RUNNING };
        unsigned a;

        assert_illegal(&l, POOL_EVENT_ROLL_FAILED);
        a = raise_event(&l, POOL_EVENT_ROLL, &(PoolFacts) { .trial = true });
        assert_int_equal(l.intent, POOL_INTENT_TRY);
        assert_int_equal(a, POOL_ACTION_ROLL_BEGIN);

        /* The first new worker never becomes ready. */
        a = raise_event(&l, POOL_EVENT_ROLL_FAILED, NULL);
        assert_int_equal(l.intent, POOL_INTENT_ROLL_BACK);
        assert_int_equal(l.phase, POOL_PHASE_RUNNING);
        assert_int_equal(a, POOL_ACTION_ROLL_BACK);
        assert_illegal(&l, POOL_EVENT_ROLL_FAILED);    /* the old settings' failures are failures */
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true, .rolled_back = true });
        assert_int_equal(l.phase, POOL_PHASE_DEGRADED);
        a = raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true, .all_ready = true, .rolled = true,
                                                            .rolled_back = true });
        assert_int_equal(l.phase, POOL_PHASE_DEGRADED);
        assert_int_equal(a, POOL_ACTION_ROLL_NEXT);
        raise_event(&l, POOL_EVENT_ROLL_DONE, NULL);
        assert_int_equal(l.intent, POOL_INTENT_NONE);
        /* Every worker ready, but with the previous settings: degraded until a reload says so. */
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true, .all_ready = true, .rolled_back = true });
        assert_int_equal(l.phase, POOL_PHASE_DEGRADED);
        raise_event(&l, POOL_EVENT_SLOTS, &(PoolFacts) { .settled = true, .all_ready = true });
        assert_int_equal(l.phase, POOL_PHASE_RUNNING);

        /* A trial that goes well ends like a restart; Restart() during it makes it a restart. */
        l = (PoolLife) { .phase = POOL_PHASE_DEGRADED };
        raise_event(&l, POOL_EVENT_ROLL, &(PoolFacts) { .trial = true });
        raise_event(&l, POOL_EVENT_ROLL, NULL);
        assert_int_equal(l.intent, POOL_INTENT_ROLL);
        assert_illegal(&l, POOL_EVENT_ROLL_FAILED);
        l = (PoolLife) { .phase = POOL_PHASE_RUNNING };
        raise_event(&l, POOL_EVENT_ROLL, &(PoolFacts) { .trial = true });
        raise_event(&l, POOL_EVENT_ROLL_DONE, NULL);
        assert_int_equal(l.intent, POOL_INTENT_NONE);

        /* Stopped or failed meanwhile: the trial is over. */
        l = (PoolLife) { .phase = POOL_PHASE_RUNNING, .intent = POOL_INTENT_TRY };
        raise_event(&l, POOL_EVENT_STOP, NULL);
        assert_int_equal(l.intent, POOL_INTENT_STOP);
        assert_illegal(&l, POOL_EVENT_ROLL_FAILED);
        l = (PoolLife) { .phase = POOL_PHASE_RUNNING, .intent = POOL_INTENT_ROLL_BACK };
        raise_event(&l, POOL_EVENT_FAIL, &(PoolFacts) { .retry = true });
        assert_int_equal(l.intent, POOL_INTENT_NONE);
}

static const char *doc_path;

static const char *event_name(unsigned e) {
        return pool_event_to_string((PoolEvent) e);
}

static void doc_row(const DocRow *r, void *userdata) {
        unsigned *seen = userdata, legal = 0;
        PoolPhase ph;

        for (ph = 0; ph < _POOL_PHASE_MAX; ph++)
                if (strcmp(pool_phase_to_string(ph), r->inside) == 0)
                        break;
        if (ph == _POOL_PHASE_MAX)
                fail_msg("docs: no phase \"%s\"", r->inside);
        assert_false(*seen & BIT(ph));
        *seen |= BIT(ph);

        assert_string_equal(r->shown, pool_state_to_string(pool_phase_to_public(ph)));

        /* What it takes with some intent. */
        for (PoolEvent e = 0; e < _POOL_EVENT_MAX; e++)
                for (PoolIntent in = 0; in < _POOL_INTENT_MAX; in++)
                        if (pool_decide(&(PoolLife) { .phase = ph, .intent = in }, e, NULL).legal)
                                legal |= BIT(e);
        doc_row_check(r->inside, doc_row_takes(r, event_name, _POOL_EVENT_MAX), legal, event_name, _POOL_EVENT_MAX);
}

/* docs/apiaryd.md's table of a pool's phases says what the code does. */
static void test_doc_table(void **state) {
        unsigned seen = 0;

        if (!doc_path)
                skip();
        doc_table_foreach(doc_path, "pool-phases", doc_row, &seen);
        assert_int_equal(seen, ALL_PHASES);
}

int main(int argc, char *argv[]) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_triple),
                cmocka_unit_test(test_public_states),
                cmocka_unit_test(test_start),
                cmocka_unit_test(test_fail_and_retry),
                cmocka_unit_test(test_stop),
                cmocka_unit_test(test_remove),
                cmocka_unit_test(test_roll),
                cmocka_unit_test(test_trial),
                cmocka_unit_test(test_doc_table),
        };

        doc_path = argc > 1 ? argv[1] : NULL;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
