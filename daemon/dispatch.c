/* SPDX-License-Identifier: MIT */
/*
 * The queue: every pool keeps its tasks in a FIFO and hands them to workers with room, as
 * pipelined Worker1.Run calls on their private links, up to Concurrency= each. A worker that
 * dies takes nothing with it: its tasks go back to the head of the queue, or fail once they have
 * used up TaskRetries=.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-api.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "pool.h"
#include "protocol.h"
#include "task.h"
#include "worker.h"

bool pool_accepts_tasks(const Pool *p) {
        return !IN_SET(p->state, POOL_FAILED, POOL_STOPPED) && p->manager->state != MANAGER_STOPPING;
}

unsigned pool_queue_room(const Pool *p) {
        unsigned n = p->queue.length;

        return n >= p->config->queue_limit ? 0 : p->config->queue_limit - n;
}

void pool_enqueue(Pool *p, Task *t) {
        g_queue_push_tail_link(&p->queue, &t->queue_link);
        t->in_queue = true;
        t->state = TASK_QUEUED;
        p->manager->n_queued++;
}

/* A task whose worker died goes back to the head: it has waited longest. */
static void pool_requeue_front(Pool *p, Task *t) {
        g_queue_push_head_link(&p->queue, &t->queue_link);
        t->in_queue = true;
        t->state = TASK_QUEUED;
        p->manager->n_queued++;
}

static Task *pool_dequeue(Pool *p) {
        GList *l = g_queue_pop_head_link(&p->queue);
        Task *t;

        if (!l)
                return NULL;
        t = l->data;
        t->in_queue = false;
        p->manager->n_queued--;
        return t;
}

void pool_fail_queued(Pool *p, const char *reason) {
        Task *t;

        while ((t = pool_dequeue(p)))
                task_fail(t, reason);
}

bool worker_has_capacity(const Worker *w) {
        return IN_SET(w->state, WORKER_READY, WORKER_BUSY) && !w->retiring && !w->gone &&
                w->in_flight.length < w->pool->config->concurrency;
}

/* Round robin over the slots, starting after the last one used, so load spreads evenly. */
static Worker *pool_pick_worker(Pool *p) {
        for (unsigned i = 0; i < p->n_workers; i++) {
                unsigned k = (p->dispatch_cursor + i) % p->n_workers;

                if (worker_has_capacity(p->workers[k])) {
                        p->dispatch_cursor = k + 1;
                        return p->workers[k];
                }
        }
        return NULL;
}

void pool_dispatch(Pool *p) {
        if (p->manager->state == MANAGER_STOPPING || p->paused)
                return;

        while (p->queue.length > 0) {
                Worker *w = pool_pick_worker(p);
                Task *t;
                int r;

                if (!w)
                        return;
                t = pool_dequeue(p);
                r = worker_send_task(w, t);
                if (r < 0 && !sd_bus_is_open(w->link)) {
                        /* The worker died and we have not heard of its exit yet: take another. */
                        w->gone = true;
                        pool_requeue_front(p, t);
                        continue;
                }
                if (r < 0) {
                        task_failf(t, "could not send the task to worker %u: %s", w->slot, strerror(-r));
                        continue;
                }
                worker_update_load(w);
        }
}

static int on_task_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Task *t = userdata;

        t->timeout_source = sd_event_source_disable_unref(t->timeout_source);
        worker_kill_for_timeout(t->worker, t);
        return 0;
}

static int on_task_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Task *t = userdata;
        Worker *w = t->worker;
        const sd_bus_error *e;
        const void *data;
        size_t size;
        int r;

        /* The call is answered: the slot is spent, whatever happens below. */
        t->slot = sd_bus_slot_unref(t->slot);

        e = sd_bus_message_get_error(reply);
        if (e && !sd_bus_error_has_name(e, WORKER_ERROR_TASK_FAILED)) {
                /* Not the plugin's answer but the link's: the worker is gone or going. Its exit
                 * handler decides what happens to the task. */
                if (!sd_bus_is_open(w->link) || sd_bus_error_has_names(e, SD_BUS_ERROR_NO_REPLY,
                                                                        SD_BUS_ERROR_DISCONNECTED))
                        return 0;
                task_failf(t, "worker %u answered %s: %s", w->slot, e->name, strempty(e->message));
        } else if (e)
                task_fail(t, strempty(e->message));
        else {
                r = sd_bus_message_read_array(reply, 'y', &data, &size);
                if (r < 0)
                        task_failf(t, "worker %u sent a malformed result: %s", w->slot, strerror(-r));
                else
                        task_finish(t, true, data, size);
        }

        /* Dispatch first: a worker that gets its next task at once stays "busy", and no
         * PropertiesChanged goes out for a flip to "ready" and back (two signals per task). */
        pool_dispatch(w->pool);
        worker_update_load(w);
        return 0;
}

int worker_send_task(Worker *w, Task *t) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        Pool *p = w->pool;
        Manager *mgr = p->manager;
        usec_t timeout = t->timeout_usec != USEC_INFINITY ? t->timeout_usec : p->config->task_timeout_usec;
        int r;

        r = sd_bus_message_new_method_call(w->link, &m, NULL, WORKER_OBJECT_PATH, WORKER_INTERFACE, "Run");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "t", t->id);
        if (r < 0)
                return r;
        r = sd_bus_message_append_array(m, 'y', t->payload, t->payload_size);
        if (r < 0)
                return r;
        /* No bus timeout: TaskTimeoutSec= is ours to enforce, by killing the worker. */
        r = sd_bus_call_async(w->link, &t->slot, m, on_task_reply, t, UINT64_MAX);
        if (r < 0)
                return r;

        t->armed_timeout_usec = timeout;
        if (timeout != USEC_INFINITY) {
                r = sd_event_add_time_relative(mgr->event, &t->timeout_source, CLOCK_MONOTONIC, timeout, USEC_PER_MSEC,
                                               on_task_timeout, t);
                if (r < 0) {
                        t->slot = sd_bus_slot_unref(t->slot);
                        return r;
                }
        }

        t->state = TASK_RUNNING;
        t->worker = w;
        t->attempts++;
        g_queue_push_tail_link(&w->in_flight, &t->worker_link);
        p->n_running++;
        mgr->n_running++;

        w->n_dispatched++;
        if (p->config->max_tasks_per_worker > 0 && w->n_dispatched >= p->config->max_tasks_per_worker)
                w->retiring = true;
        return 0;
}

void worker_release_tasks(Worker *w, const char *reason) {
        Pool *p = w->pool;
        bool stopping = p->manager->state == MANAGER_STOPPING;
        GList *l;

        /* Back to the head of the queue in their original order: walk from the newest. */
        while ((l = g_queue_peek_tail_link(&w->in_flight))) {
                Task *t = l->data;

                g_queue_unlink(&w->in_flight, l);
                t->worker = NULL;
                t->timeout_source = sd_event_source_disable_unref(t->timeout_source);
                t->slot = sd_bus_slot_unref(t->slot);
                p->n_running--;
                p->manager->n_running--;

                /* Killed for another task's timeout, or stopped on purpose: not this task's fault. */
                if (w->killed_for_timeout || w->stop_wanted)
                        t->attempts--;

                free(t->last_loss);
                t->last_loss = strdup(strempty(reason));

                if (p->state == POOL_FAILED)
                        task_failf(t, "pool failed: %s", strempty(p->failure_reason));
                else if (stopping)
                        task_fail(t, "apiaryd is stopping");
                else if (p->removing)
                        /* Nothing would ever run it: the pool is on its way out. */
                        task_fail(t, "pool removed by a reload");
                else if (p->stopping || p->state == POOL_STOPPED)
                        task_fail(t, "pool stopped");
                else if (t->attempts > p->config->task_retries)
                        task_failf(t, "worker crashed %u time%s running this task; last: %s", t->attempts,
                                   t->attempts == 1 ? "" : "s", strempty(reason));
                else
                        pool_requeue_front(p, t);
        }
}

void worker_kill_for_timeout(Worker *w, Task *t) {
        char buf[FORMAT_TIMESPAN_MAX];
        usec_t timeout = t->armed_timeout_usec;
        LogContext ctx = { .pool = w->pool->config->name, .slot = (int) w->slot, .pid = (int) w->pid };

        log_ctx(LOG_WARNING, &ctx, "Task %" PRIu64 " timed out after %s, killing its worker.", t->id,
                format_timespan(buf, sizeof(buf), timeout));
        task_failf(t, "timeout: no result within %s", format_timespan(buf, sizeof(buf), timeout));

        w->killed_for_timeout = true;
        worker_kill(w, SIGKILL);
}
