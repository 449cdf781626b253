/* SPDX-License-Identifier: MIT */
/*
 * The queue: every pool keeps its tasks in a FIFO per priority (task-queue.h) and hands them to workers with room, up to
 * Concurrency= each, as Worker1.Dispatch messages on their private links that carry as many tasks
 * as the worker takes; results come back the same way, in Supervisor1.Results. A worker that
 * dies takes nothing with it: its tasks go back to the head of the queue, or fail once they have
 * used up TaskRetries=.
 */
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/autoscale.h"
#include "daemon/manager.h"
#include "daemon/pool.h"
#include "daemon/recycle.h"
#include "daemon/source.h"
#include "daemon/task.h"
#include "daemon/worker.h"
#include "ipc/protocol.h"
#include "ipc/task-codec.h"
#include "util/log.h"
#include "util/macro.h"

/* A worker's window holds at most this much of the pool's task time, and this many tasks, beyond
 * its Concurrency=. */
#define WINDOW_BUDGET_USEC ((usec_t) 500)
#define WINDOW_EXTRA_MAX 63u

unsigned pool_queue_room(const Pool *p) {
        unsigned n = task_queue_length(&p->queue);

        return n >= p->config->queue_limit ? 0 : p->config->queue_limit - n;
}

uint64_t pool_queue_bytes_room(const Pool *p) {
        uint64_t limit = p->config->queue_bytes_limit;

        if (limit == UINT64_MAX)
                return UINT64_MAX;
        return p->queued_bytes >= limit ? 0 : limit - p->queued_bytes;
}

PoolRefusal pool_check_tasks(const Pool *p, unsigned n, uint64_t bytes) {
        const char *why;

        if (p->manager->state == MANAGER_STOPPING)
                return POOL_REFUSAL_STOPPING;
        if (pool_phase_has_failed(p->life.phase))
                return POOL_REFUSAL_FAILED;
        if (!pool_is_active(p))
                return POOL_REFUSAL_STOPPED;
        /* A shared pool queues in the engine: its own queue holds only what its workers have room
         * for, pulled from there. */
        if (p->source)
                return source_is_ready(p->source, &why) ? POOL_TAKES_TASKS : POOL_REFUSAL_SOURCE_UNAVAILABLE;
        if (pool_queue_room(p) < n)
                return POOL_REFUSAL_QUEUE_FULL;
        if (pool_queue_bytes_room(p) < bytes)
                return POOL_REFUSAL_QUEUE_BYTES;
        return POOL_TAKES_TASKS;
}

void pool_enqueue(Pool *p, Task *t) {
        if (t->queued_mono == 0)
                (void) sd_event_now(p->manager->event, CLOCK_MONOTONIC, &t->queued_mono);
        task_queue_push_tail(&p->queue, t);
        t->in_queue = true;
        t->state = TASK_QUEUED;
        p->queued_bytes += t->payload_size;
        p->manager->n_queued++;
}

/* A task whose worker died goes back to the head of its priority: it has waited longest. */
static void pool_requeue_front(Pool *p, Task *t) {
        task_queue_push_head(&p->queue, t);
        t->in_queue = true;
        t->state = TASK_QUEUED;
        p->queued_bytes += t->payload_size;     /* past QueueBytesLimit= if need be: it was accepted */
        p->manager->n_queued++;
}

/* The task that goes next (task-queue.h), at this turn's time: the same until it is dequeued. */
static Task *pool_queue_peek(Pool *p) {
        usec_t now = 0;

        (void) sd_event_now(p->manager->event, CLOCK_MONOTONIC, &now);
        return task_queue_peek(&p->queue, now, p->config->priority_aging_usec);
}

/* Takes T, queued in P, out of the queue. */
static Task *pool_unqueue(Pool *p, Task *t) {
        if (!t)
                return NULL;
        task_queue_unlink(&p->queue, t);
        t->in_queue = false;
        p->queued_bytes -= t->payload_size;
        p->manager->n_queued--;
        return t;
}

static Task *pool_dequeue(Pool *p) {
        return pool_unqueue(p, pool_queue_peek(p));
}

void pool_fail_queued(Pool *p, const char *reason) {
        Task *t;

        while ((t = pool_dequeue(p))) {
                if (t->source_token && p->source)
                        /* Pulled from a shared pool: back to the engine, to run elsewhere. */
                        source_release(p->source, t);
                else
                        task_fail(t, reason);
        }
}

/* A worker that died takes nothing, also before we hear of its exit: its link closed first. */
bool worker_has_capacity(const Worker *w) {
        return slot_takes_tasks(&w->life) && w->link && sd_bus_is_open(w->link) > 0;
}

/*
 * The pool's task time: what its workers report each task ran, rising at once to a long one and
 * decaying slowly after it, so that one slow task among fast ones closes the windows for a while.
 */
static void pool_note_run_time(Pool *p, usec_t usec) {
        if (!p->task_usec_known || usec >= p->task_usec_est) {
                p->task_usec_est = usec;
                p->task_usec_known = true;
        } else
                p->task_usec_est -= (p->task_usec_est - usec) / 8;
}

/*
 * How many tasks W may hold beyond Concurrency=, waiting in its window to start one after another:
 * about WINDOW_BUDGET_USEC of the pool's task time, so that nothing waits there long. None while
 * that time is unknown or not short, while W's oldest task has run longer than that (it may be a
 * long one: nothing goes behind it), or for a shared pool, whose hosts pull only what they run.
 */
static unsigned worker_window(const Worker *w) {
        const Pool *p = w->pool;
        const Task *head;
        usec_t now;

        if (p->source || !p->task_usec_known || p->task_usec_est >= WINDOW_BUDGET_USEC)
                return 0;
        head = w->in_flight.head ? w->in_flight.head->data : NULL;
        if (head && head->started &&
            sd_event_now(p->manager->event, CLOCK_MONOTONIC, &now) >= 0 &&
            now - MIN(now, head->started_mono) >= WINDOW_BUDGET_USEC)
                return 0;
        return (unsigned) MIN((usec_t) WINDOW_EXTRA_MAX, WINDOW_BUDGET_USEC / MAX(p->task_usec_est, (usec_t) 1));
}

unsigned worker_room(const Worker *w) {
        const PoolConfig *c = w->pool->config;
        const Task *head = w->in_flight.head ? w->in_flight.head->data : NULL;
        unsigned room, window;

        if (!worker_has_capacity(w) || (head && head->solo))
                return 0;
        window = c->concurrency + worker_window(w);
        if (w->in_flight.length >= window)
                return 0;
        room = window - w->in_flight.length;
        if (c->max_tasks_per_worker > 0) {
                uint64_t left = c->max_tasks_per_worker - MIN(w->n_dispatched, (uint64_t) c->max_tasks_per_worker);

                room = (unsigned) MIN((uint64_t) room, left);
        }
        return room;
}

static int on_task_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Task *t = userdata;

        t->timeout_source = sd_event_source_disable_unref(t->timeout_source);
        worker_kill_for_timeout(t->worker, t);
        return 0;
}

/* W starts T now, as far as apiaryd can tell: it is counted as an attempt, and its timeout runs. */
static void worker_start_task(Worker *w, Task *t) {
        Manager *mgr = w->pool->manager;
        usec_t timeout = t->timeout_usec != USEC_INFINITY ? t->timeout_usec : w->pool->config->task_timeout_usec;
        int r;

        t->started = true;
        w->n_started++;
        t->attempts++;
        (void) sd_event_now(mgr->event, CLOCK_MONOTONIC, &t->started_mono);

        t->armed_timeout_usec = timeout;
        if (timeout != USEC_INFINITY) {
                r = sd_event_add_time_relative(mgr->event, &t->timeout_source, CLOCK_MONOTONIC, timeout, USEC_PER_MSEC,
                                               on_task_timeout, t);
                if (r < 0)
                        log_warning_errno(r, "Failed to arm the timeout of task %" PRIu64 ", it runs without: %m",
                                          t->id);
        }
}

/*
 * The worker starts its tasks in the order they came, Concurrency= at a time: those at the head of
 * in_flight are started, the rest wait. An end frees a place, and the worker starts the next one
 * in the same turn; apiaryd counts it as started when it reads that end, which the worker sends
 * within its turn's budget (LINK_TURN_BUDGET_USEC).
 */
static void worker_start_waiting(Worker *w) {
        unsigned max = w->pool->config->concurrency;

        for (GList *l = g_queue_peek_nth_link(&w->in_flight, w->n_started); l && w->n_started < max; l = l->next)
                worker_start_task(w, l->data);
}

/* T is on its way to W, at the end of its window: counted as running, not started yet. */
static void worker_take_task(Worker *w, Task *t) {
        Pool *p = w->pool;
        Manager *mgr = p->manager;

        t->state = TASK_RUNNING;
        t->worker = w;
        t->started = false;
        t->number = w->n_sent++;
        g_queue_push_tail_link(&w->in_flight, &t->worker_link);
        p->n_running++;
        mgr->n_running++;

        w->n_dispatched++;
        if (p->config->max_tasks_per_worker > 0 && w->n_dispatched >= p->config->max_tasks_per_worker) {
                w->retire_reason = RECYCLE_TASKS;
                (void) worker_retire(w);
        }
}

/* Takes T back from W before it ever reached it (the send failed). */
static void worker_untake_task(Worker *w, Task *t) {
        Pool *p = w->pool;

        g_queue_unlink(&w->in_flight, &t->worker_link);
        t->worker = NULL;
        w->n_sent--;
        w->n_dispatched--;
        p->n_running--;
        p->manager->n_running--;
}

/*
 * Sends up to N tasks from the head of the queue to W in one Worker1.Dispatch(ua(tay)) message,
 * which wants no reply: the results come back in Supervisor1.Results() messages, many per message
 * too. A deep queue thus costs a few messages, not two per task. A task marked solo goes alone to
 * a worker that holds nothing, and nothing goes behind it.
 */
static int worker_send_tasks(Worker *w, unsigned n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        Pool *p = w->pool;
        Task *first = NULL;
        size_t bytes = 0;
        unsigned k = 0;
        int r;

        r = task_codec_new_dispatch(w->link, p->config->concurrency, &m);
        if (r < 0)
                return r;

        /* The payloads are copied into the message: keep one message reasonably sized. */
        while (k < n && task_queue_length(&p->queue) > 0 && (k == 0 || bytes < DISPATCH_BYTES_MAX)) {
                Task *t = pool_queue_peek(p);

                if (t->solo && (k > 0 || w->in_flight.length > 0))
                        break;
                r = task_codec_add_task(m, t->id, t->payload, t->payload_size);
                if (r < 0) {
                        if (k == 0)
                                /* Not even alone: too big for a message, say. */
                                task_failf(pool_unqueue(p, t), "could not send the task to worker %u: %s", w->slot,
                                           strerror(-r));
                        break;
                }
                (void) pool_unqueue(p, t);
                worker_take_task(w, t);
                if (!first)
                        first = t;
                bytes += t->payload_size;
                k++;
                if (t->solo)
                        break;
        }
        if (k == 0)
                return 0;

        r = task_codec_close(m);
        if (r >= 0) {
                /* Claimable before they can arrive. Should the send fail, the worker never sees
                 * those numbers, and a limit past what it has is harmless. */
                if (w->taken_back) {
                        link_claim_resume(w->claim, first->number, k);
                        w->taken_back = false;
                } else
                        link_claim_allow(w->claim, k);
                r = sd_bus_send(w->link, m, NULL);
        }
        if (r < 0) {
                /* Nothing went out: the tasks go back to the head of the queue, in order. */
                GList *l = g_queue_peek_tail_link(&w->in_flight);

                while (l) {
                        Task *t = l->data;
                        GList *prev = l->prev;

                        worker_untake_task(w, t);
                        pool_requeue_front(p, t);
                        if (t == first)
                                break;
                        l = prev;
                }
                return r;
        }
        worker_start_waiting(w);
        return (int) k;
}

/* A worker that has run its MaxTasksPerWorker= retires once it is drained, also when a reload
 * lowered the limit below what it has run already: else it would sit ready and take nothing. */
static void worker_check_retire(Worker *w) {
        uint64_t max = w->pool->config->max_tasks_per_worker;

        if (max == 0 || w->n_dispatched < max || !slot_takes_tasks(&w->life))
                return;
        w->retire_reason = RECYCLE_TASKS;
        (void) worker_retire(w);
        worker_update_load(w);
}

/* How many of the tasks W holds its process has not started yet, as its claim says. */
static unsigned worker_n_unclaimed(const Worker *w) {
        int32_t n = (int32_t) (w->n_sent - link_claim_consumed(w->claim));

        if (w->taken_back || n <= 0)
                return 0;
        return MIN((unsigned) n, w->in_flight.length);
}

/* Takes back from W every task its process has not started, to the head of the queue in order. */
static void worker_take_back(Worker *w) {
        Pool *p = w->pool;
        uint32_t first = link_claim_take_back(w->claim);
        unsigned n = 0;
        GList *l;

        w->taken_back = true;
        while ((l = g_queue_peek_tail_link(&w->in_flight))) {
                Task *t = l->data;

                if ((int32_t) (t->number - first) < 0)
                        break;
                if (t->started) {
                        /* Counted as started from an end that came first: it had not. */
                        t->started = false;
                        w->n_started--;
                        t->attempts--;
                        t->timeout_source = sd_event_source_disable_unref(t->timeout_source);
                }
                worker_untake_task(w, t);
                w->n_sent++;    /* its number stays used: the worker skips it */
                pool_requeue_front(p, t);
                n++;
        }
        log_worker(LOG_DEBUG, w, "Took back %u tasks waiting behind one that runs long.", n);
}

static int on_take_back_time(sd_event_source *s, uint64_t usec, void *userdata) {
        pool_dispatch(userdata);
        return 0;
}

/*
 * No task waits in a window behind a long one while another worker has room: once the task that
 * runs at the head of a window has run WINDOW_BUDGET_USEC, what its worker has not started comes
 * back, and goes to the workers with room. Before that, a timer looks again then. Returns whether
 * tasks came back.
 */
static bool pool_take_back_windows(Pool *p) {
        usec_t now, next = USEC_INFINITY;
        unsigned n_room = 0;
        bool moved = false;
        int r;

        if (task_queue_length(&p->queue) > 0 || p->source || p->n_workers < 2)
                return false;
        for (unsigned i = 0; i < p->n_workers && n_room < 2; i++)
                if (worker_room(p->workers[i]) > 0)
                        n_room++;
        if (n_room == 0 || sd_event_now(p->manager->event, CLOCK_MONOTONIC, &now) < 0)
                return false;

        for (unsigned i = 0; i < p->n_workers; i++) {
                Worker *w = p->workers[i];
                const Task *head = w->in_flight.head ? w->in_flight.head->data : NULL;
                usec_t since;

                /* Only from a window (more than Concurrency=, so that something waits for sure),
                 * and only if another worker has room. */
                if (!head || !head->started || w->in_flight.length <= p->config->concurrency ||
                    n_room - (worker_room(w) > 0) == 0 || worker_n_unclaimed(w) == 0)
                        continue;
                since = head->started_mono;
                if (now >= since + WINDOW_BUDGET_USEC) {
                        worker_take_back(w);
                        worker_update_load(w);
                        moved = true;
                } else
                        next = MIN(next, since + WINDOW_BUDGET_USEC);
        }
        if (next == USEC_INFINITY)
                return moved;

        if (p->take_back_source)
                r = sd_event_source_set_time(p->take_back_source, next);
        else
                r = sd_event_add_time(p->manager->event, &p->take_back_source, CLOCK_MONOTONIC, next,
                                      WINDOW_BUDGET_USEC / 4, on_take_back_time, p);
        if (r >= 0)
                r = sd_event_source_set_enabled(p->take_back_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm the window check of pool %s: %m", p->config->name);
        return moved;
}

void pool_dispatch(Pool *p) {
        if (p->manager->state == MANAGER_STOPPING || p->paused) {
                if (p->source)
                        source_places_changed(p->source);
                return;
        }

        for (unsigned i = 0; i < p->n_workers; i++)
                worker_check_retire(p->workers[i]);
again:
        /* Round robin over the slots, starting after the last one served, each taking an even
         * share of what is queued (as much as it has room for when the queue is deep). */
        while (task_queue_length(&p->queue) > 0) {
                unsigned n_open = 0, share, served = 0;

                for (unsigned i = 0; i < p->n_workers; i++)
                        if (worker_room(p->workers[i]) > 0)
                                n_open++;
                if (n_open == 0)
                        break;
                share = (task_queue_length(&p->queue) + n_open - 1) / n_open;

                for (unsigned i = 0; i < p->n_workers && task_queue_length(&p->queue) > 0; i++) {
                        unsigned slot = (p->dispatch_cursor + i) % p->n_workers;
                        Worker *w = p->workers[slot];
                        unsigned room = worker_room(w);
                        int r;

                        if (room == 0)
                                continue;
                        r = worker_send_tasks(w, MIN(room, share));
                        if (r < 0 && !sd_bus_is_open(w->link))
                                /* The worker died and we have not heard of its exit yet: its closed
                                 * link leaves it out from now on. */
                                continue;
                        if (r < 0) {
                                Task *t = pool_dequeue(p);

                                /* Cannot say why the link refuses: fail one task rather than spin. */
                                task_failf(t, "could not send the task to worker %u: %s", w->slot, strerror(-r));
                                continue;
                        }
                        if (r == 0)
                                continue;       /* a solo task waits for a worker that holds nothing */
                        p->dispatch_cursor = slot + 1;
                        served++;
                        worker_update_load(w);
                }
                if (served == 0)
                        break;
        }
        if (pool_take_back_windows(p))
                goto again;
        if (task_queue_length(&p->queue) > 0)
                autoscale_queue_waits(p);
        if (p->source)
                source_places_changed(p->source);
}

static int on_result(uint64_t id, bool ok, uint64_t run_usec, const void *data, size_t size, void *userdata) {
        Worker *w = userdata;
        Task *t = g_hash_table_lookup(w->pool->manager->tasks, &id);

        if (!t || t->worker != w)
                return 0;
        pool_note_run_time(w->pool, run_usec);
        histogram_add(&w->pool->run_time, run_usec);
        if (t->queued_mono > 0 && t->started_mono >= t->queued_mono)
                histogram_add(&w->pool->queue_wait, t->started_mono - t->queued_mono);
        if (ok)
                task_finish(t, true, data, size);
        else {
                /* The reason reaches D-Bus error messages: mend what is not UTF-8. */
                g_autofree char *reason = g_utf8_make_valid(data, (gssize) size);

                task_fail(t, reason);
        }
        return 0;
}

/* Supervisor1.Results(a(tbtay)): the ends of tasks, as many as the worker had ready. A result
 * for a task that is no longer this worker's (it timed out meanwhile) is dropped. Each end lets
 * the worker start the next task of its window. */
int link_method_results(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;
        int r;

        r = task_codec_read_results(msg, on_result, w);
        if (r < 0) {
                /* Only our own apiary-worker talks here: garbage means it is broken. */
                log_worker(LOG_ERR, w, "Worker sent malformed results (%s), killing it.", strerror(-r));
                worker_kill(w, SIGKILL);
                return 1;
        }
        worker_start_waiting(w);
        /* Above MaxMemoryPerWorker= now: it retires before it is given more. */
        recycle_check_memory(w);

        /* Dispatch first: a worker that gets its next tasks at once stays "busy", and no
         * PropertiesChanged goes out for a flip to "ready" and back. */
        pool_dispatch(w->pool);
        worker_update_load(w);
        return 1;
}

/* T, pulled from a shared pool, lost its worker W: the attempts are the engine's deliveries, across
 * all hosts. Not its fault (or not known to be): it stays here. Its fault: back to the engine for
 * another try anywhere, or past TaskRetries= it fails for good. Nothing to run it here any more:
 * back. */
static void worker_release_pulled(Worker *w, Task *t, const char *reason, bool stopping, bool not_its_fault) {
        Pool *p = w->pool;

        if (stopping || !pool_is_active(p) || pool_is_removed(p) || (not_its_fault && p->source->stopping)) {
                source_release(p->source, t);
                return;
        }
        if (not_its_fault) {
                pool_requeue_front(p, t);
                return;
        }
        if (t->deliveries > p->config->task_retries) {
                task_failf(t, "worker crashed running this task, %u time%s across the pool's hosts; last: %s",
                           t->deliveries, t->deliveries == 1 ? "" : "s", strempty(reason));
                return;
        }
        source_release(p->source, t);
}

/* Whether W may have started tasks that apiaryd counts as waiting: it held a window, and its
 * synchronous plugin may have run into it before the ends went out. Then which task crashed or
 * hung is not known. */
static bool worker_loss_is_unsure(const Worker *w) {
        return w->n_started < w->in_flight.length;
}

void worker_release_tasks(Worker *w, const char *reason) {
        Pool *p = w->pool;
        bool stopping = p->manager->state == MANAGER_STOPPING;
        /* Killed for a task's timeout, or stopped on purpose: not the fault of the others. */
        bool not_their_fault = w->life.result == SLOT_RESULT_TASK_TIMEOUT || w->life.intent != SLOT_INTENT_NONE;
        bool unsure = worker_loss_is_unsure(w);
        GList *l;

        /* Back to the head of the queue in their original order: walk from the newest. */
        while ((l = g_queue_peek_tail_link(&w->in_flight))) {
                Task *t = l->data;
                bool started = t->started;

                g_queue_unlink(&w->in_flight, l);
                if (started)
                        w->n_started--;
                t->started = false;
                t->worker = NULL;
                t->timeout_source = sd_event_source_disable_unref(t->timeout_source);
                p->n_running--;
                p->manager->n_running--;

                /* Which task crashed is not known: none is charged, and each runs alone next time,
                 * where a crash is its own. */
                if (started && (not_their_fault || unsure))
                        t->attempts--;
                if (unsure && !not_their_fault)
                        t->solo = true;

                free(t->last_loss);
                t->last_loss = strdup(strempty(reason));

                if (t->source_token && p->source) {
                        worker_release_pulled(w, t, reason, stopping, not_their_fault || unsure || !started);
                        continue;
                }
                if (pool_phase_has_failed(p->life.phase))
                        task_failf(t, "pool failed: %s", strempty(p->failure_reason));
                else if (stopping)
                        task_fail(t, "apiaryd is stopping");
                else if (pool_is_removed(p))
                        /* Nothing would ever run it: the pool is on its way out. */
                        task_fail(t, "pool removed by a reload");
                else if (!pool_is_active(p))
                        task_fail(t, "pool stopped");
                else if (started && !unsure && t->attempts > p->config->task_retries)
                        task_failf(t, "worker crashed %u time%s running this task; last: %s", t->attempts,
                                   t->attempts == 1 ? "" : "s", strempty(reason));
                else
                        pool_requeue_front(p, t);
        }
        w->n_started = 0;
}

void worker_kill_for_timeout(Worker *w, Task *t) {
        char buf[FORMAT_TIMESPAN_MAX];
        usec_t timeout = t->armed_timeout_usec;
        LogContext ctx = { .pool = w->pool->config->name, .slot = (int) w->slot, .pid = (int) w->pid };

        if (worker_loss_is_unsure(w)) {
                /* T may have ended and a task after it in the window hangs, its end not sent: kill,
                 * and run each of them alone, where a timeout is its own. */
                log_ctx(LOG_WARNING, &ctx,
                        "Task %" PRIu64 ", or a task after it in the worker's window, ran past %s, killing its worker; "
                        "its %u tasks run again one at a time.", t->id, format_timespan(buf, sizeof(buf), timeout),
                        w->in_flight.length);
                for (GList *l = w->in_flight.head; l; l = l->next)
                        ((Task *) l->data)->solo = true;
                worker_task_timed_out(w);
                return;
        }
        log_ctx(LOG_WARNING, &ctx, "Task %" PRIu64 " timed out after %s, killing its worker.", t->id,
                format_timespan(buf, sizeof(buf), timeout));
        task_failf(t, "timeout: no result within %s", format_timespan(buf, sizeof(buf), timeout));
        worker_task_timed_out(w);
}
