/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>

#include <glib.h>

#include "daemon/manager.h"
#include "daemon/pool.h"
#include "daemon/recycle.h"
#include "daemon/worker.h"
#include "util/proc-usage.h"

/* Whether a slot of P is being recycled for its age now. */
static bool pool_age_recycling(const Pool *p) {
        for (unsigned i = 0; i < p->n_workers; i++)
                if (p->workers[i]->age_recycling)
                        return true;
        return false;
}

/* W is past its age: it retires, and until its slot has a ready worker again no other slot of
 * the pool goes for its age. A worker that cannot retire now (already on its way out, or
 * stopping) is replaced anyway, or not wanted: it does not hold up the others. */
static bool worker_recycle_for_age(Worker *w) {
        char buf[FORMAT_TIMESPAN_MAX];

        w->age_due = false;
        /* Already on its way out for its tasks or its memory: replaced anyway, not ours. */
        if (w->life.state == SLOT_RETIRING)
                return false;
        w->retire_reason = RECYCLE_AGE;
        if (worker_retire(w) < 0)
                return false;
        w->age_recycling = true;
        w->pool->age_recycles++;
        log_worker(LOG_INFO, w, "Worker is %s old (MaxWorkerAgeSec=), recycling it once its tasks end.",
                   format_timespan(buf, sizeof(buf),
                                   (now_usec(CLOCK_MONOTONIC) - w->ready_mono) / USEC_PER_MSEC * USEC_PER_MSEC));
        /* An idle worker is drained already: it goes now. */
        worker_update_load(w);
        return true;
}

static int on_age_next(sd_event_source *s, void *userdata) {
        Pool *p = userdata;

        if (pool_age_recycling(p))
                return 0;
        for (unsigned i = 0; i < p->n_workers; i++)
                if (p->workers[i]->age_due && worker_recycle_for_age(p->workers[i]))
                        return 0;
        return 0;
}

/* The age recycle of a slot of P ended: the next worker due goes, in slot order. From a defer
 * source, never inside the slot change that ended it: retiring a worker there would change (and
 * may free) slots under the caller's feet. */
static void pool_age_next(Pool *p) {
        int r;

        if (!p->age_next_source)
                r = sd_event_add_defer(p->manager->event, &p->age_next_source, on_age_next, p);
        else
                r = 0;
        if (r >= 0)
                r = sd_event_source_set_enabled(p->age_next_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to schedule the next age recycle of pool %s: %m", p->config->name);
}

static int on_age(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        w->age_source = sd_event_source_disable_unref(w->age_source);
        if (pool_age_recycling(w->pool)) {
                w->age_due = true;
                return 0;
        }
        (void) worker_recycle_for_age(w);
        return 0;
}

static void worker_arm_age(Worker *w) {
        const PoolConfig *c = w->pool->config;
        usec_t jitter = c->max_worker_age_jitter_usec, usec;
        int r;

        if (c->max_worker_age_usec == USEC_INFINITY)
                return;
        if (jitter == USEC_INFINITY)
                jitter = c->max_worker_age_usec / 10;
        usec = usec_add(c->max_worker_age_usec,
                        jitter > 0 ? (usec_t) g_random_double_range(0, (double) jitter) : 0);
        w->age_source = sd_event_source_disable_unref(w->age_source);
        r = sd_event_add_time_relative(w->pool->manager->event, &w->age_source, CLOCK_MONOTONIC, usec, USEC_PER_SEC / 10,
                                       on_age, w);
        if (r < 0)
                log_worker_errno(LOG_WARNING, r, w, "Failed to arm the timer of MaxWorkerAgeSec=, it is not recycled "
                                 "for its age: %m");
}

void recycle_worker_ready(Worker *w) {
        const PoolConfig *c = w->pool->config;
        bool was_recycling = w->age_recycling;

        w->age_recycling = w->age_due = false;
        w->starts_over_memory = false;
        if (c->max_memory_per_worker != UINT64_MAX) {
                uint64_t rss = proc_rss_bytes(w->pid);
                char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX];

                w->start_rss = rss == UINT64_MAX ? 0 : rss;
                if (w->start_rss > c->max_memory_per_worker) {
                        w->starts_over_memory = true;
                        log_worker(LOG_WARNING, w, "Worker uses %s right after it started, above "
                                   "MaxMemoryPerWorker=%s: it is not recycled for its memory, as a new one would "
                                   "start as big. Raise MaxMemoryPerWorker=, or make the plugin's init() smaller.",
                                   format_bytes_short(a, sizeof(a), w->start_rss),
                                   format_size(b, sizeof(b), c->max_memory_per_worker));
                }
        }
        worker_arm_age(w);
        if (was_recycling)
                pool_age_next(w->pool);
}

void recycle_check_memory(Worker *w) {
        const PoolConfig *c = w->pool->config;
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX];
        uint64_t rss;

        if (c->max_memory_per_worker == UINT64_MAX || w->starts_over_memory || w->pid <= 0 ||
            !slot_takes_tasks(&w->life))
                return;
        rss = proc_rss_bytes(w->pid);
        if (rss == UINT64_MAX || rss <= c->max_memory_per_worker)
                return;
        w->retire_reason = RECYCLE_MEMORY;
        if (worker_retire(w) < 0)
                return;
        w->pool->memory_recycles++;
        log_worker(LOG_INFO, w, "Worker uses %s, above MaxMemoryPerWorker=%s: recycling it once its tasks end.",
                   format_bytes_short(a, sizeof(a), rss), format_size(b, sizeof(b), c->max_memory_per_worker));
}

void recycle_worker_dropped(Worker *w) {
        w->age_source = sd_event_source_disable_unref(w->age_source);
        w->age_due = false;
}

void recycle_slot_changed(Pool *p, Worker *w) {
        if (!w->age_recycling || !IN_SET(w->state, WORKER_DEAD, WORKER_STOPPED))
                return;
        w->age_recycling = false;
        pool_age_next(p);
}

char *recycle_memory_warning(const Pool *p) {
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX];

        for (unsigned i = 0; i < p->n_workers; i++) {
                const Worker *w = p->workers[i];

                if (w->starts_over_memory && w->pid > 0)
                        return g_strdup_printf("worker %u uses %s right after it starts, above MaxMemoryPerWorker=%s: "
                                               "not recycled for its memory", w->slot,
                                               format_bytes_short(a, sizeof(a), w->start_rss),
                                               format_size(b, sizeof(b), p->config->max_memory_per_worker));
        }
        return NULL;
}
