/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/bus-api.h"
#include "daemon/manager.h"
#include "daemon/pool.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/time-util.h"

static const char *const pool_state_table[_POOL_STATE_MAX] = {
        [POOL_STARTING] = "starting",
        [POOL_RUNNING] = "running",
        [POOL_DEGRADED] = "degraded",
        [POOL_FAILED] = "failed",
        [POOL_STOPPED] = "stopped",
};

const char *pool_state_to_string(PoolState s) {
        if (s < 0 || s >= _POOL_STATE_MAX)
                return NULL;
        return pool_state_table[s];
}

#define log_pool(level, p, ...)                                                         \
        ({                                                                              \
                LogContext _ctx = { .pool = (p)->config->name, .slot = -1, .pid = 0 };  \
                log_ctx((level), &_ctx, __VA_ARGS__);                                   \
        })

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

static void pool_set_state(Pool *p, PoolState state) {
        if (p->state == state)
                return;

        log_pool(state == POOL_FAILED ? LOG_ERR : LOG_INFO, p, "Pool %s → %s.",
                 pool_state_to_string(p->state), pool_state_to_string(state));
        p->state = state;
        bus_pool_emit_changed(p);
        manager_pool_changed(p->manager, p);
}

bool pool_is_active(const Pool *p) {
        return !IN_SET(p->state, POOL_FAILED, POOL_STOPPED) && !p->stopping;
}

/* Derives starting/running/degraded from the slots; failed and stopped are left by hand only. */
static void pool_update_state(Pool *p) {
        bool all_settled = true;
        unsigned ready;

        if (!pool_is_active(p))
                return;

        for (unsigned i = 0; i < p->n_wanted; i++)
                if (!p->first_outcome[i])
                        all_settled = false;

        ready = pool_workers_ready(p);
        if (ready >= p->n_wanted)
                pool_set_state(p, POOL_RUNNING);
        else if (!all_settled && p->state == POOL_STARTING)
                ; /* still coming up */
        else
                pool_set_state(p, POOL_DEGRADED);
}

/* Frees the slots above n_wanted once their workers are gone, highest first. */
static void pool_trim(Pool *p) {
        Manager *m = p->manager;

        while (p->n_workers > p->n_wanted) {
                Worker *w = p->workers[p->n_workers - 1];

                if (w->life.state != SLOT_DEAD)
                        return;
                bus_emit_object_removed(m, w->object_path);
                worker_free(w);
                p->workers[--p->n_workers] = NULL;
                bus_emit_properties_changed(m, p->object_path, APIARY_POOL_INTERFACE, "Workers");
        }
}

static void pool_roll_next(Pool *p);

void pool_worker_changed(Pool *p, Worker *w) {
        if (!IN_SET(w->state, WORKER_STARTING, WORKER_STOPPING))
                p->first_outcome[w->slot] = true;

        if (p->rolling && w->slot == p->rolling_slot && IN_SET(w->state, WORKER_READY, WORKER_BUSY) &&
            w->spawned_mono >= p->rolling_began) {
                p->rolling_slot++;
                pool_roll_next(p);
        }

        if (p->stopping && pool_is_idle(p)) {
                p->stopping = false;
                if (p->state != POOL_FAILED)
                        pool_set_state(p, POOL_STOPPED);
        }

        pool_trim(p);
        pool_update_state(p);
        if (pool_workers_ready(p) != p->ready_emitted || p->restarts != p->restarts_emitted)
                bus_pool_emit_changed(p);
        manager_pool_changed(p->manager, p);
}

/* Replaces the worker of p->rolling_slot, or ends the roll after the last slot. */
static void pool_roll_next(Pool *p) {
        while (p->rolling && p->rolling_slot < p->n_wanted) {
                Worker *w = p->workers[p->rolling_slot];

                if (!pool_is_active(p))
                        break;
                if (worker_restart(w) >= 0)
                        return;         /* pool_worker_changed() moves on once it is ready */
                p->rolling_slot++;
        }
        if (p->rolling)
                log_pool(LOG_INFO, p, "Rolling restart done.");
        p->rolling = false;
}

void pool_restart(Pool *p) {
        log_pool(LOG_INFO, p, "Rolling restart of %u worker%s.", p->n_wanted, p->n_wanted == 1 ? "" : "s");
        p->rolling = true;
        p->rolling_slot = 0;
        p->rolling_began = now_usec(CLOCK_MONOTONIC);
        pool_roll_next(p);
}

void pool_set_paused(Pool *p, bool paused) {
        Manager *m = p->manager;

        if (p->paused == paused)
                return;
        p->paused = paused;
        log_pool(LOG_NOTICE, p, "Dispatch %s.", paused ? "paused" : "resumed");
        bus_emit_properties_changed(m, p->object_path, APIARY_POOL_INTERFACE, "Paused");
        if (!paused)
                pool_dispatch(p);
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
                bool *outcome;

                if (!workers)
                        return -ENOMEM;
                p->workers = workers;
                outcome = reallocarray(p->first_outcome, n, sizeof(bool));
                if (!outcome)
                        return -ENOMEM;
                p->first_outcome = outcome;
                for (unsigned i = p->n_workers; i < n; i++) {
                        r = worker_new(&p->workers[i], p, i);
                        if (r < 0)
                                return r;
                        p->first_outcome[i] = false;
                        p->n_workers++;
                        bus_emit_object_added(m, p->workers[i]->object_path);
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

        bus_emit_properties_changed(m, p->object_path, APIARY_POOL_INTERFACE, "Workers", "WorkersWanted");
        pool_trim(p);
        pool_update_state(p);
        manager_pool_changed(m, p);
        return 0;
}

static int on_retry_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Pool *p = userdata;
        int r;

        p->retry_source = sd_event_source_disable_unref(p->retry_source);
        if (p->stopping) {
                /* The last run's workers are still on their way out: look again shortly. */
                r = sd_event_add_time_relative(p->manager->event, &p->retry_source, CLOCK_MONOTONIC,
                                               100 * USEC_PER_MSEC, USEC_PER_MSEC, on_retry_timer, p);
                if (r < 0)
                        log_pool(LOG_ERR, p, "Failed to re-arm the retry timer, the pool stays failed: %s", strerror(-r));
                return 0;
        }
        log_pool(LOG_NOTICE, p, "Retrying the failed pool.");
        r = pool_start(p);
        if (r < 0)
                log_pool(LOG_ERR, p, "Failed to restart pool: %s", strerror(-r));
        return 0;
}

static int pool_start_workers(Pool *p);
static int on_held_timeout(sd_event_source *s, uint64_t usec, void *userdata);

int pool_start(Pool *p) {
        int r;

        if (p->stopping) {
                /* Workers of the last run are still on their way out: refuse rather than run two
                 * processes in one slot. */
                return -EBUSY;
        }

        p->retry_source = sd_event_source_disable_unref(p->retry_source);
        free(p->failure_reason);
        p->failure_reason = NULL;
        p->state = POOL_STARTING;
        for (unsigned i = 0; i < p->n_workers; i++) {
                p->first_outcome[i] = false;
                worker_reset(p->workers[i]);
        }
        bus_pool_emit_changed(p);

        log_pool(LOG_INFO, p, "Starting %u worker%s of plugin %s.", p->n_wanted, p->n_wanted == 1 ? "" : "s",
                 p->config->plugin_path);
        r = zygote_start(p);
        if (r < 0)
                log_pool(LOG_WARNING, p, "Failed to start the zygote, workers are spawned instead: %s", strerror(-r));
        else if (p->zygote && p->zygote->state == ZYGOTE_STARTING) {
                /* Its workers are to come from the zygote, which takes about as long to load the
                 * plugin as one spawned worker: hold them back until it is ready (or gone, or late). */
                r = sd_event_add_time_relative(p->manager->event, &p->held_source, CLOCK_MONOTONIC,
                                               ZYGOTE_HOLD_USEC, USEC_PER_MSEC, on_held_timeout, p);
                if (r >= 0)
                        return 0;
        }
        return pool_start_workers(p);
}

static int pool_start_workers(Pool *p) {
        int r;

        for (unsigned i = 0; i < p->n_wanted && p->state != POOL_FAILED; i++) {
                if (worker_is_running(p->workers[i]))
                        continue;
                r = worker_start(p->workers[i]);
                if (r < 0)
                        return r;
        }
        pool_update_state(p);
        return 0;
}

void pool_release_held(Pool *p) {
        if (!p->held_source)
                return;
        p->held_source = sd_event_source_disable_unref(p->held_source);
        if (pool_is_active(p))
                (void) pool_start_workers(p);
}

static int on_held_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Pool *p = userdata;

        log_pool(LOG_WARNING, p, "The zygote is not ready after %llu ms, spawning the workers instead.",
                 (unsigned long long) (ZYGOTE_HOLD_USEC / USEC_PER_MSEC));
        pool_release_held(p);
        return 0;
}

void pool_stop(Pool *p) {
        p->held_source = sd_event_source_disable_unref(p->held_source);
        p->retry_source = sd_event_source_disable_unref(p->retry_source);
        p->rolling = false;
        p->stopping = true;
        for (unsigned i = 0; i < p->n_workers; i++)
                worker_stop(p->workers[i]);
        /* After the workers: those it is forking right now are stopped (or spawned) through the
         * answers to their Fork(), which it still sends or which fail as it goes. */
        zygote_stop(p);
        if (pool_is_idle(p)) {
                p->stopping = false;
                if (p->state != POOL_FAILED)
                        pool_set_state(p, POOL_STOPPED);
                else
                        manager_pool_changed(p->manager, p);
        }
}

void pool_fail(Pool *p, const char *reason) {
        Manager *m = p->manager;
        usec_t retry = p->config->failed_retry_usec;
        char buf[FORMAT_TIMESPAN_MAX];
        int r;

        if (p->state == POOL_FAILED)
                return;

        free(p->failure_reason);
        p->failure_reason = strdup(reason);
        log_pool(LOG_ERR, p, "Pool failed: %s", reason);

        {
                _cleanup_(freep) char *why = NULL;

                if (asprintf(&why, "pool failed: %s", reason) < 0)
                        why = NULL;
                pool_fail_queued(p, why ?: "pool failed");
        }

        /* Mark failed first, so that the workers we stop below do not count as new failures. */
        for (unsigned i = 0; i < p->n_workers; i++)
                p->first_outcome[i] = true;
        pool_set_state(p, POOL_FAILED);
        pool_stop(p);

        if (retry == USEC_INFINITY || m->state == MANAGER_STOPPING)
                return;
        r = sd_event_add_time_relative(m->event, &p->retry_source, CLOCK_MONOTONIC, retry, 1, on_retry_timer, p);
        if (r < 0)
                log_pool(LOG_WARNING, p, "Failed to arm the retry timer, the pool stays failed: %s", strerror(-r));
        else
                log_pool(LOG_NOTICE, p, "Retrying in %s.", format_timespan(buf, sizeof(buf), retry));
}

static int pool_new_slots(Pool *p) {
        unsigned n = p->config->workers;
        int r;

        p->workers = calloc(n, sizeof(Worker *));
        p->first_outcome = calloc(n, sizeof(bool));
        if (!p->workers || !p->first_outcome)
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
        p->state = POOL_STARTING;

        r = bus_pool_path(config->name, &p->object_path);
        if (r >= 0)
                r = pool_new_slots(p);
        if (r < 0) {
                p->config = NULL;       /* still the caller's */
                return r;
        }

        *ret = TAKE_PTR(p);
        return 0;
}

Pool *pool_free(Pool *p) {
        if (!p)
                return NULL;

        p->held_source = sd_event_source_disable_unref(p->held_source);
        zygote_stop(p);
        for (unsigned i = 0; i < p->n_workers; i++)
                worker_free(p->workers[i]);
        free(p->workers);
        free(p->first_outcome);
        sd_event_source_disable_unref(p->retry_source);
        free(p->object_path);
        free(p->failure_reason);
        pool_config_free(p->config);
        free(p);
        return NULL;
}
