/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "daemon/autoscale.h"
#include "daemon/manager.h"
#include "daemon/pool.h"
#include "daemon/worker.h"
#include "util/log.h"

bool pool_autoscales(const Pool *p) {
        return p->config->workers_max > p->config->workers;
}

/* Whether every wanted slot of P serves now, by the slots' own states (not what the bus shows,
 * which lags within an event: a worker that just died still shows busy). */
static bool pool_all_serving(const Pool *p) {
        for (unsigned i = 0; i < p->n_wanted && i < p->n_workers; i++)
                if (!IN_SET(p->workers[i]->life.state, SLOT_READY, SLOT_BUSY))
                        return false;
        return p->n_workers >= p->n_wanted;
}

void autoscale_queue_waits(Pool *p) {
        const PoolConfig *c = p->config;
        unsigned queued = task_queue_length(&p->queue);

        if (!pool_autoscales(p) || queued == 0 || p->n_wanted >= c->workers_max || !pool_is_active(p) ||
            !pool_all_serving(p))
                return;
        log_pool(LOG_INFO, p, "Scaling up to %u workers: %u task%s wait%s and every worker is busy (Workers=%u..%u).",
                 p->n_wanted + 1, queued, queued == 1 ? "" : "s", queued == 1 ? "s" : "", c->workers, c->workers_max);
        p->scale_ups++;
        if (pool_scale(p, p->n_wanted + 1) < 0)
                log_pool(LOG_WARNING, p, "Failed to scale up, staying at %u workers.", p->n_wanted);
}

/* Whether slot I of P has been idle for ScaleDownIdleSec= at NOW. */
static bool slot_idle_long(const Pool *p, unsigned i, usec_t now) {
        const Worker *w = p->workers[i];

        return w->state == WORKER_READY && w->life.state == SLOT_READY && w->idle_since > 0 &&
                now >= usec_add(w->idle_since, p->config->scale_down_idle_usec);
}

static int on_scale_down(sd_event_source *s, uint64_t usec, void *userdata) {
        Pool *p = userdata;
        const PoolConfig *c = p->config;
        usec_t now = now_usec(CLOCK_MONOTONIC);
        char buf[FORMAT_TIMESPAN_MAX];
        unsigned idle = 0, n;

        /* The highest slots go (pool_scale()): as many of them, from the top, as have been idle
         * that long. A busy one stops the count: it is not stopped under its tasks, and the
         * idle ones below it wait for it to go idle too. */
        if (pool_autoscales(p) && pool_is_active(p) && task_queue_length(&p->queue) == 0)
                for (unsigned i = MIN(p->n_wanted, p->n_workers); i > c->workers && slot_idle_long(p, i - 1, now); i--)
                        idle++;
        n = MIN(idle, p->n_wanted - MIN(p->n_wanted, c->workers));
        if (n > 0) {
                log_pool(LOG_INFO, p, "Scaling down to %u worker%s: %u idle for %s (Workers=%u..%u).", p->n_wanted - n,
                         p->n_wanted - n == 1 ? "" : "s", idle, format_timespan(buf, sizeof(buf), c->scale_down_idle_usec),
                         c->workers, c->workers_max);
                p->scale_downs++;
                /* The highest slots go: the idle ones below them serve what comes. */
                if (pool_scale(p, p->n_wanted - n) < 0)
                        log_pool(LOG_WARNING, p, "Failed to scale down, staying at %u workers.", p->n_wanted);
        }
        autoscale_refresh(p);
        return 0;
}

void autoscale_refresh(Pool *p) {
        usec_t next = USEC_INFINITY;
        int r;

        if (pool_autoscales(p) && p->n_wanted > p->config->workers && pool_is_active(p))
                for (unsigned i = 0; i < p->n_wanted && i < p->n_workers; i++) {
                        const Worker *w = p->workers[i];

                        if (w->state == WORKER_READY && w->idle_since > 0)
                                next = MIN(next, usec_add(w->idle_since, p->config->scale_down_idle_usec));
                }
        if (next == USEC_INFINITY) {
                if (p->scale_source)
                        (void) sd_event_source_set_enabled(p->scale_source, SD_EVENT_OFF);
                return;
        }
        if (p->scale_source)
                r = sd_event_source_set_time(p->scale_source, next);
        else
                r = sd_event_add_time(p->manager->event, &p->scale_source, CLOCK_MONOTONIC, next, USEC_PER_SEC / 10,
                                      on_scale_down, p);
        if (r >= 0)
                r = sd_event_source_set_enabled(p->scale_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_pool(LOG_WARNING, p, "Failed to arm the scale-down timer, not scaling down: %s", strerror(-r));
}

void autoscale_slot_changed(Pool *p, Worker *w) {
        if (!pool_autoscales(p))
                return;
        if (w->state != WORKER_READY)
                w->idle_since = 0;
        else if (w->idle_since == 0)
                w->idle_since = now_usec(CLOCK_MONOTONIC);
        autoscale_refresh(p);
}
