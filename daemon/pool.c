/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/autoscale.h"
#include "daemon/manager.h"
#include "daemon/objects.h"
#include "daemon/pool.h"
#include "daemon/reload.h"
#include "daemon/source.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/time-util.h"

/* What an event brings besides the pool's own state. */
typedef struct PoolEventArgs {
        const char *reason;             /* FAIL: why */
        const Worker *changed;          /* SLOTS: the worker that shows a new state, if one does */
        bool trial;                     /* ROLL: new settings from a reload, p->previous kept */
} PoolEventArgs;

static int pool_event(Pool *p, PoolEvent e, const PoolEventArgs *args);

unsigned pool_workers_ready(const Pool *p) {
        unsigned n = 0;

        for (unsigned i = 0; i < p->n_workers; i++)
                if (IN_SET(p->workers[i]->state, WORKER_READY, WORKER_BUSY))
                        n++;
        return n;
}

bool pool_has_started(const Pool *p) {
        return p->state != POOL_STARTING;
}

bool pool_is_idle(const Pool *p) {
        for (unsigned i = 0; i < p->n_workers; i++)
                if (worker_is_running(p->workers[i]))
                        return false;
        return true;
}

bool pool_is_active(const Pool *p) {
        return pool_phase_is_active(p->life.phase);
}

bool pool_is_trying(const Pool *p) {
        return IN_SET(p->life.intent, POOL_INTENT_TRY, POOL_INTENT_ROLL_BACK);
}

bool pool_is_removed(const Pool *p) {
        return p->life.intent == POOL_INTENT_REMOVE;
}

bool pool_can_be_freed(const Pool *p) {
        return pool_is_removed(p) && IN_SET(p->life.phase, POOL_PHASE_STOPPED, POOL_PHASE_FAILED) &&
               task_queue_length(&p->queue) == 0 && (!p->source || source_is_stopped(p->source));
}

void pool_mark_changed(Pool *p) {
        manager_mark_changed(p->manager, p->object_path, APIARY_POOL_INTERFACE, "State", "FailureReason", "WorkersReady",
                             "Restarts", "PlannedRestarts");
}

/* Frees the slots above n_wanted once their workers are gone, highest first. */
static void pool_trim(Pool *p) {
        Manager *m = p->manager;

        while (p->n_workers > p->n_wanted) {
                Worker *w = p->workers[p->n_workers - 1];

                if (w->life.state != SLOT_DEAD)
                        return;
                manager_object_removed(m, w->object_path, APIARY_WORKER_INTERFACE);
                worker_free(w);
                p->workers[--p->n_workers] = NULL;
                manager_mark_changed(m, p->object_path, APIARY_POOL_INTERFACE, "Workers");
        }
}

void pool_slot_planned(Pool *p, Worker *w) {
        if (w->slot < p->n_workers)
                p->settled[w->slot] = false;
}

void pool_worker_changed(Pool *p, Worker *w) {
        if (!IN_SET(w->state, WORKER_STARTING, WORKER_STOPPING))
                p->settled[w->slot] = true;

        recycle_slot_changed(p, w);
        autoscale_slot_changed(p, w);
        (void) pool_event(p, POOL_EVENT_SLOTS, &(PoolEventArgs) { .changed = w });
        pool_trim(p);           /* W may be gone from here on */
        if (p->source)
                source_places_changed(p->source);
}

int pool_start(Pool *p) {
        return pool_event(p, POOL_EVENT_START, NULL);
}

void pool_release_held(Pool *p) {
        (void) pool_event(p, POOL_EVENT_ZYGOTE_SETTLED, NULL);
}

void pool_stop(Pool *p) {
        (void) pool_event(p, POOL_EVENT_STOP, NULL);
}

void pool_remove(Pool *p) {
        if (p->source)
                source_stop(p->source, TASK_REJECT_POOL_REMOVED,
                            "the pool was removed by a reload: the task is stored in the shared pool and runs, but "
                            "its result cannot reach this caller");
        (void) pool_event(p, POOL_EVENT_REMOVE, NULL);
}

int pool_restart(Pool *p) {
        return pool_event(p, POOL_EVENT_ROLL, NULL);
}

void pool_try_settings(Pool *p, PoolConfig *new) {
        p->previous = p->config;
        p->previous_generation = p->generation;
        p->previous_wanted = p->n_wanted;
        p->config = new;
        p->generation = ++p->n_generations;
        if (pool_event(p, POOL_EVENT_ROLL, &(PoolEventArgs) { .trial = true }) < 0) {
                /* Not running: nothing to try the settings on, nothing to go back to. */
                p->previous = pool_config_free(p->previous);
        }
}

void pool_roll_failed(Pool *p, const char *reason) {
        (void) pool_event(p, POOL_EVENT_ROLL_FAILED, &(PoolEventArgs) { .reason = reason });
}

void pool_forget_rollback(Pool *p) {
        if (!p->rollback_reason)
                return;
        p->rollback_reason = mfree(p->rollback_reason);
        pool_mark_changed(p);
        (void) pool_event(p, POOL_EVENT_SLOTS, NULL);
}

void pool_fail(Pool *p, const char *reason) {
        (void) pool_event(p, POOL_EVENT_FAIL, &(PoolEventArgs) { .reason = reason });
}

void pool_set_paused(Pool *p, bool paused) {
        Manager *m = p->manager;

        if (p->paused == paused)
                return;
        p->paused = paused;
        log_pool(LOG_NOTICE, p, "Dispatch %s.", paused ? "paused" : "resumed");
        manager_mark_changed(m, p->object_path, APIARY_POOL_INTERFACE, "Paused");
        if (!paused)
                pool_dispatch(p);
        if (p->source)
                source_places_changed(p->source);
}

int pool_scale(Pool *p, unsigned n) {
        Manager *m = p->manager;
        unsigned old = p->n_wanted;
        int r;

        if (n == p->n_wanted)
                return 0;
        log_pool(LOG_NOTICE, p, "Scaling from %u to %u worker%s.", old, n, n == 1 ? "" : "s");

        if (n > p->n_workers) {
                Worker **workers = reallocarray(p->workers, n, sizeof(Worker *));
                bool *settled;

                if (!workers)
                        return -ENOMEM;
                p->workers = workers;
                settled = reallocarray(p->settled, n, sizeof(bool));
                if (!settled)
                        return -ENOMEM;
                p->settled = settled;
                for (unsigned i = p->n_workers; i < n; i++) {
                        r = worker_new(&p->workers[i], p, i);
                        if (r < 0)
                                return r;
                        p->settled[i] = false;
                        p->n_workers++;
                        manager_object_added(m, p->workers[i]->object_path);
                }
        }
        p->n_wanted = n;

        /* Slots below N run (a slot on its way out is revived once gone), slots from N go. */
        for (unsigned i = 0; i < p->n_workers; i++) {
                Worker *w = p->workers[i];

                if (i >= n)
                        worker_stop(w);
                else if (pool_is_active(p))
                        worker_revive(w);
        }

        manager_mark_changed(m, p->object_path, APIARY_POOL_INTERFACE, "Workers", "WorkersWanted");
        pool_trim(p);
        (void) pool_event(p, POOL_EVENT_SLOTS, NULL);
        return 0;
}

/* ---- the state machine's events, and their actions ---- */

static int on_retry_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Pool *p = userdata;

        p->retry_source = sd_event_source_disable_unref(p->retry_source);
        if (p->life.phase == POOL_PHASE_FAILED)
                log_pool(LOG_NOTICE, p, "Retrying the failed pool.");
        (void) pool_event(p, POOL_EVENT_RETRY, NULL);
        return 0;
}

static int on_held_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Pool *p = userdata;

        log_pool(LOG_WARNING, p, "The zygote is not ready after %llu ms, spawning the workers instead.",
                 (unsigned long long) (ZYGOTE_HOLD_USEC / USEC_PER_MSEC));
        p->held_source = sd_event_source_disable_unref(p->held_source);
        (void) pool_event(p, POOL_EVENT_ZYGOTE_SETTLED, NULL);
        return 0;
}

/* The facts of pool-fsm.h, as of now. */
static PoolFacts pool_facts(Pool *p, const PoolEventArgs *args) {
        const Worker *changed = args->changed;
        PoolFacts f = {
                .trial = args->trial,
                .rolled_back = p->rollback_reason,
                .zygote = p->config->zygote,
                .settled = true,
                .all_ready = pool_workers_ready(p) >= p->n_wanted,
                .idle = pool_is_idle(p),
                .retry = p->config->failed_retry_usec != USEC_INFINITY && p->manager->state != MANAGER_STOPPING,
        };

        f.only_planned = true;
        for (unsigned i = 0; i < p->n_wanted; i++) {
                bool ready = IN_SET(p->workers[i]->state, WORKER_READY, WORKER_BUSY);

                if (!p->settled[i])
                        f.settled = false;
                else if (!ready)
                        f.only_planned = false;
        }
        /* The slot being rolled has its new worker once one spawned since the roll began is ready. */
        f.rolled = changed && changed->slot == p->rolling_slot && IN_SET(changed->state, WORKER_READY, WORKER_BUSY) &&
                   changed->spawned_mono >= p->rolling_began;
        return f;
}

/* Shows the pool's state on the bus, if it changed. */
static void pool_publish(Pool *p) {
        PoolState shown = pool_phase_to_public(p->life.phase);

        if (shown < 0 || shown == p->state)
                return;
        log_pool(shown == POOL_FAILED ? LOG_ERR : LOG_INFO, p, "Pool %s → %s.", pool_state_to_string(p->state),
                 pool_state_to_string(shown));
        p->state = shown;
        pool_mark_changed(p);
}

/* Replaces the worker of p->rolling_slot, or the next one that can be; ROLL_DONE past the last.
 * A restart replaces every worker; new settings, tried or rolled back, only those that run other
 * code than they are. */
static PoolEvent pool_roll_on(Pool *p) {
        for (; p->rolling_slot < p->n_wanted; p->rolling_slot++) {
                Worker *w = p->workers[p->rolling_slot];

                if (!pool_intent_is_roll(p->life.intent))
                        return _POOL_EVENT_INVALID;     /* a failure in the restart ended it */
                if (p->life.intent != POOL_INTENT_ROLL && worker_is_running(w) && w->generation == p->generation)
                        continue;
                if (worker_restart(w) >= 0)
                        return _POOL_EVENT_INVALID;     /* SLOTS moves on once it is ready */
        }
        log_pool(LOG_INFO, p, "Rolling restart done.");
        return POOL_EVENT_ROLL_DONE;
}

static PoolEvent pool_start_zygote(Pool *p) {
        int r;

        r = zygote_start(p);
        if (r < 0)
                log_pool(LOG_WARNING, p, "Failed to start the zygote, workers are spawned instead: %s", strerror(-r));
        if (r < 0 || !p->zygote || p->zygote->state != ZYGOTE_STARTING)
                return POOL_EVENT_ZYGOTE_SETTLED;
        r = sd_event_add_time_relative(p->manager->event, &p->held_source, CLOCK_MONOTONIC, ZYGOTE_HOLD_USEC,
                                       USEC_PER_MSEC, on_held_timeout, p);
        return r < 0 ? POOL_EVENT_ZYGOTE_SETTLED : _POOL_EVENT_INVALID;
}

void pool_config_apply_limits(Pool *p, const PoolConfig *old) {
        if (p->config->start_limit_burst == old->start_limit_burst)
                return;
        for (unsigned i = 0; i < p->n_workers; i++) {
                start_limit_deinit(&p->workers[i]->start_limit);
                (void) start_limit_init(&p->workers[i]->start_limit, p->config->start_limit_burst);
        }
}

static void pool_start_slots(Pool *p) {
        for (unsigned i = 0; i < p->n_wanted && pool_is_active(p); i++)
                if (!worker_is_running(p->workers[i]))
                        (void) worker_start(p->workers[i]);     /* a failure fails the pool */
}

/* The settings tried failed: the previous ones come back, in every slot that runs the new ones. */
static PoolEvent pool_roll_back(Pool *p) {
        PoolConfig *rejected = p->config;
        int r;

        log_pool(LOG_WARNING, p, "Rolling back to the previous settings.");
        p->config = TAKE_PTR(p->previous);
        p->generation = p->previous_generation;
        pool_config_apply_limits(p, rejected);
        pool_config_free(rejected);
        manager_mark_changed(p->manager, p->object_path, APIARY_POOL_INTERFACE, "Plugin", "Kind", "QueueLimit",
                             "QueueBytesLimit", "Concurrency");
        if (p->n_wanted != p->previous_wanted) {
                r = pool_scale(p, p->previous_wanted);
                if (r < 0)
                        log_pool(LOG_ERR, p, "Failed to scale back to %u workers: %s", p->previous_wanted, strerror(-r));
        }
        zygote_stop(p);
        if (p->config->zygote)
                (void) zygote_start(p);
        pool_start_slots(p);
        p->rolling_slot = 0;
        p->rolling_began = now_usec(CLOCK_MONOTONIC);
        return pool_roll_on(p);
}

static void pool_arm_retry(Pool *p, usec_t usec, bool soon) {
        int r;

        r = sd_event_add_time_relative(p->manager->event, &p->retry_source, CLOCK_MONOTONIC, usec,
                                       soon ? USEC_PER_MSEC : 1, on_retry_timer, p);
        if (r < 0)
                log_pool(LOG_WARNING, p, "Failed to arm the retry timer, the pool stays failed: %s", strerror(-r));
        else if (!soon)
                log_pool(LOG_NOTICE, p, "Retrying in %s.",
                         format_timespan((char[FORMAT_TIMESPAN_MAX]) {}, FORMAT_TIMESPAN_MAX, usec));
}

/* The actions of D, in order; the pool shows its new state once its queued tasks have heard.
 * Returns the event an action raises when it is done (or could not be), or _POOL_EVENT_INVALID. */
static PoolEvent pool_act(Pool *p, const PoolDecision *d) {
        PoolEvent then = _POOL_EVENT_INVALID;
        unsigned a = d->actions;

        if (a & POOL_ACTION_DISARM_HOLD)
                p->held_source = sd_event_source_disable_unref(p->held_source);
        if (a & POOL_ACTION_DISARM_RETRY)
                p->retry_source = sd_event_source_disable_unref(p->retry_source);
        if (a & POOL_ACTION_RESET) {
                free(p->failure_reason);
                p->failure_reason = NULL;
                for (unsigned i = 0; i < p->n_workers; i++) {
                        p->settled[i] = false;
                        worker_reset(p->workers[i]);
                }
                log_pool(LOG_INFO, p, "Starting %u worker%s of plugin %s.", p->n_wanted, p->n_wanted == 1 ? "" : "s",
                         p->config->plugin_path);
        }
        if (a & POOL_ACTION_FAIL_QUEUED) {
                _cleanup_(freep) char *why = NULL;

                if (pool_is_removed(p))
                        pool_fail_queued(p, "pool removed by a reload");
                else {
                        if (asprintf(&why, "pool failed: %s", strempty(p->failure_reason)) < 0)
                                why = NULL;
                        pool_fail_queued(p, why ?: "pool failed");
                }
        }
        pool_publish(p);
        if (a & POOL_ACTION_START_ZYGOTE)
                then = pool_start_zygote(p);
        if (a & POOL_ACTION_START_WORKERS) {
                pool_start_slots(p);
                then = POOL_EVENT_SLOTS;
        }
        if (a & POOL_ACTION_ROLL_BEGIN) {
                log_pool(LOG_INFO, p, "Rolling restart of %u worker%s.", p->n_wanted, p->n_wanted == 1 ? "" : "s");
                p->rolling_slot = 0;
                p->rolling_began = now_usec(CLOCK_MONOTONIC);
                then = pool_roll_on(p);
        }
        if (a & POOL_ACTION_ROLL_NEXT) {
                p->rolling_slot++;
                then = pool_roll_on(p);
        }
        if (a & POOL_ACTION_STOP_WORKERS) {
                for (unsigned i = 0; i < p->n_workers; i++)
                        worker_stop(p->workers[i]);
                /* After the workers: those it is forking right now are stopped (or spawned) through
                 * the answers to their Fork(), which it still sends or which fail as it goes. */
                zygote_stop(p);
                then = POOL_EVENT_SLOTS;        /* stopped or failed already, if none was running */
        }
        if (a & POOL_ACTION_ARM_RETRY)
                pool_arm_retry(p, p->config->failed_retry_usec, false);
        if (a & POOL_ACTION_ARM_RETRY_SOON)
                pool_arm_retry(p, 100 * USEC_PER_MSEC, true);
        if (a & POOL_ACTION_ROLL_BACK)
                then = pool_roll_back(p);
        if (a & POOL_ACTION_FREE)
                manager_schedule_gc(p->manager);
        return then;
}

/*
 * Raises event E on P: pool_decide() says what it leads to, pool_act() does it, and the manager
 * hears of it. Returns -EBUSY if E means nothing in the pool's phase (nothing changed).
 */
static int pool_event(Pool *p, PoolEvent e, const PoolEventArgs *args) {
        static const PoolEventArgs no_args = {};
        PoolPhase was = p->life.phase;
        PoolFacts f;
        PoolDecision d;
        PoolEvent then;

        if (!args)
                args = &no_args;
        f = pool_facts(p, args);
        d = pool_decide(&p->life, e, &f);
        if (!d.legal) {
                log_pool(LOG_DEBUG, p, "Event %s means nothing in phase %s, ignored.", pool_event_to_string(e),
                         pool_phase_to_string(was));
                return -EBUSY;
        }
        p->life = d.next;
        if (d.next.phase != was)
                log_pool(LOG_DEBUG, p, "%s: %s → %s.", pool_event_to_string(e), pool_phase_to_string(was),
                         pool_phase_to_string(d.next.phase));
        if (e == POOL_EVENT_FAIL) {
                free(p->failure_reason);
                p->failure_reason = strdup(strempty(args->reason));
                log_pool(LOG_ERR, p, "Pool failed: %s", strempty(args->reason));
        }
        if (e == POOL_EVENT_ROLL_FAILED) {
                free(p->rollback_reason);
                p->rollback_reason = strdup(strempty(args->reason));
                pool_mark_changed(p);
                log_pool(LOG_ERR, p, "The new settings failed: %s", strempty(args->reason));
        }

        then = pool_act(p, &d);
        /* Tried no more (done, stopped, failed, restarted): the old settings are not needed. */
        if (p->previous && p->life.intent != POOL_INTENT_TRY)
                p->previous = pool_config_free(p->previous);
        if (then >= 0)
                (void) pool_event(p, then, NULL);
        manager_pool_changed(p->manager, p);
        return 0;
}

static int pool_new_slots(Pool *p) {
        unsigned n = p->config->workers;
        int r;

        p->workers = calloc(n, sizeof(Worker *));
        p->settled = calloc(n, sizeof(bool));
        if (!p->workers || !p->settled)
                return -ENOMEM;
        for (unsigned i = 0; i < n; i++) {
                r = worker_new(&p->workers[i], p, i);
                if (r < 0)
                        return r;
                p->n_workers++;
        }
        p->n_wanted = n;
        return 0;
}

int pool_new(Pool **ret, Manager *m, PoolConfig *config) {
        _cleanup_(pool_freep) Pool *p = NULL;
        int r;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->manager = m;
        p->config = config;
        p->life = (PoolLife) { .phase = POOL_PHASE_NEW };
        p->state = pool_phase_to_public(POOL_PHASE_NEW);

        r = object_pool_path(config->name, &p->object_path);
        if (r >= 0)
                r = pool_new_slots(p);
        if (r >= 0 && config->source)
                r = source_new(&p->source, p);
        if (r < 0) {
                p->config = NULL;       /* still the caller's */
                return r;
        }

        *ret = TAKE_PTR(p);
        return 0;
}

/* The page of P's claims with INDEX, made if need be. */
int pool_claim_page(Pool *p, unsigned index, LinkClaimPage **ret) {
        int r;

        if (index >= p->n_claim_pages) {
                LinkClaimPage **pages = reallocarray(p->claim_pages, index + 1, sizeof(LinkClaimPage *));

                if (!pages)
                        return -ENOMEM;
                p->claim_pages = pages;
                for (unsigned i = p->n_claim_pages; i <= index; i++)
                        pages[i] = NULL;
                p->n_claim_pages = index + 1;
        }
        if (!p->claim_pages[index]) {
                r = link_claim_page_new(&p->claim_pages[index]);
                if (r < 0)
                        return r;
        }
        *ret = p->claim_pages[index];
        return 0;
}

Pool *pool_free(Pool *p) {
        if (!p)
                return NULL;

        p->held_source = sd_event_source_disable_unref(p->held_source);
        zygote_stop(p);
        p->source = source_free(p->source);
        for (unsigned i = 0; i < p->n_workers; i++)
                worker_free(p->workers[i]);
        free(p->workers);
        free(p->settled);
        for (unsigned i = 0; i < p->n_claim_pages; i++)
                link_claim_page_free(p->claim_pages[i]);
        free(p->claim_pages);
        sd_event_source_disable_unref(p->take_back_source);
        sd_event_source_disable_unref(p->scale_source);
        sd_event_source_disable_unref(p->age_next_source);
        sd_event_source_disable_unref(p->retry_source);
        free(p->object_path);
        free(p->failure_reason);
        pool_config_free(p->config);
        pool_config_free(p->previous);
        free(p->rollback_reason);
        free(p);
        return NULL;
}
