/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/manager.h"
#include "daemon/pool.h"
#include "daemon/source.h"
#include "daemon/task.h"
#include "util/log.h"
#include "util/macro.h"

void task_set_caller(Task *t, CallerTasks *c) {
        t->caller = c;
        c->n++;
        c->bytes += t->payload_size;
}

/* A queued task with a new id, not yet in the manager's table, nor counted. */
static Task *task_alloc(Pool *pool, sd_bus_message *payload_message, const void *payload, size_t size,
                        usec_t timeout_usec) {
        Task *t = calloc(1, sizeof(*t));

        if (!t)
                return NULL;
        t->id = ++pool->manager->next_task_id;
        t->pool = pool;
        t->state = TASK_QUEUED;
        t->payload_message = sd_bus_message_ref(payload_message);
        t->payload = payload;
        t->payload_size = size;
        t->timeout_usec = timeout_usec;
        t->queue_link.data = t;
        t->worker_link.data = t;
        return t;
}

int task_new(Task **ret, Pool *pool, sd_bus_message *payload_message, const void *payload, size_t size,
             usec_t timeout_usec, sd_bus_message *reply_to) {
        Manager *m = pool->manager;
        Task *t;

        t = task_alloc(pool, payload_message, payload, size, timeout_usec);
        if (!t)
                return -ENOMEM;
        t->reply_to = sd_bus_message_ref(reply_to);
        if (!reply_to)
                t->notify_bus = sd_bus_ref(sd_bus_message_get_bus(payload_message));
        /* On the bus: the unique name dbus-daemon wrote; a peer's own SENDER field means nothing. */
        if (!reply_to && sd_bus_message_get_bus(payload_message) == m->bus &&
            sd_bus_message_get_sender(payload_message)) {
                t->submitter = strdup(sd_bus_message_get_sender(payload_message));
                if (!t->submitter) {
                        sd_bus_unref(t->notify_bus);
                        sd_bus_message_unref(t->payload_message);
                        free(t);
                        return -ENOMEM;
                }
        }

        g_hash_table_insert(m->tasks, &t->id, t);
        pool->n_submitted++;
        m->n_submitted++;
        *ret = t;
        return 0;
}

int task_new_pulled(Task **ret, Pool *pool, sd_bus_message *payload_message, const void *payload, size_t size,
                    usec_t timeout_usec) {
        Task *t;

        t = task_alloc(pool, payload_message, payload, size, timeout_usec);
        if (!t)
                return -ENOMEM;
        t->owner = geteuid();           /* run for another host: only control users cancel it here */
        g_hash_table_insert(pool->manager->tasks, &t->id, t);
        *ret = t;
        return 0;
}

static void task_detach(Task *t) {
        Pool *p = t->pool;
        Manager *m = p->manager;

        t->timeout_source = sd_event_source_disable_unref(t->timeout_source);

        if (t->in_queue) {
                task_queue_unlink(&p->queue, t);
                t->in_queue = false;
                p->queued_bytes -= t->payload_size;
                m->n_queued--;
        } else if (t->worker) {
                g_queue_unlink(&t->worker->in_flight, &t->worker_link);
                if (t->started)
                        t->worker->n_started--;
                t->started = false;
                t->worker = NULL;
                p->n_running--;
                m->n_running--;
        }
}

void task_finish(Task *t, bool ok, const void *data, size_t size) {
        Pool *p = t->pool;
        Manager *m = p->manager;

        task_detach(t);
        if (t->source_token) {
                /* Pulled from a shared pool: its end goes back to the engine, for its submitter. */
                if (p->source)
                        source_task_ended(p->source, t, ok, data, size);
                g_hash_table_remove(m->tasks, &t->id);
                task_free(t);
                return;
        }
        /* Its reply, its TaskFinished or its place in a RunBatch reply: the edge's to send. */
        if (m->observer.task_finished)
                ok = m->observer.task_finished(t, ok, data, size);

        if (ok) {
                p->n_done++;
                m->n_done++;
        } else {
                p->n_failed++;
                m->n_failed++;
                LogContext ctx = { .pool = p->config->name, .slot = -1 };
                /* At most a line's worth: a result that its RunBatch reply had no room for ends
                 * failed with its own (binary, big) data here. */
                log_ctx(LOG_DEBUG, &ctx, "Task %" PRIu64 " failed: %.*s", t->id, (int) MIN(size, (size_t) 200),
                        (const char *) data);
        }

        g_hash_table_remove(m->tasks, &t->id);
        task_free(t);
}

void task_reject(Task *t, TaskRejection why, const char *message) {
        Pool *p = t->pool;
        Manager *m = p->manager;

        task_detach(t);
        if (m->observer.task_rejected)
                m->observer.task_rejected(t, why, message);
        /* Never stored: it never existed. Stored: it ends elsewhere, and is counted there. */
        if (why == TASK_REJECT_UNAVAILABLE || why == TASK_REJECT_TOO_LARGE) {
                p->n_submitted--;
                m->n_submitted--;
        }
        g_hash_table_remove(m->tasks, &t->id);
        task_free(t);
}

void task_fail(Task *t, const char *reason) {
        task_finish(t, false, reason, strlen(reason));
}

void task_failf(Task *t, const char *format, ...) {
        _cleanup_(freep) char *s = NULL;
        va_list ap;
        int k;

        va_start(ap, format);
        k = vasprintf(&s, format, ap);
        va_end(ap);
        task_fail(t, k < 0 ? "failed (out of memory describing why)" : s);
}

Task *task_free(Task *t) {
        if (!t)
                return NULL;
        if (t->caller) {
                t->caller->bytes -= t->payload_size;
                if (--t->caller->n == 0)
                        g_hash_table_remove(t->pool->manager->caller_tasks, GUINT_TO_POINTER(t->caller->uid));
        }
        sd_event_source_disable_unref(t->timeout_source);
        if (t->source_link.data && t->pool->source)
                source_forget(t->pool->source, t);
        free(t->source_id);
        free(t->source_token);
        free(t->source_reply);
        sd_bus_message_unref(t->payload_message);
        sd_bus_message_unref(t->reply_to);
        sd_bus_unref(t->notify_bus);
        free(t->last_loss);
        free(t->submitter);
        free(t);
        return NULL;
}
