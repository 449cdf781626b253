/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/auth.h"
#include "daemon/bus-api.h"
#include "daemon/manager.h"
#include "daemon/pool.h"
#include "daemon/task.h"
#include "util/log.h"
#include "util/macro.h"

int caller_tasks_check(Manager *m, const Caller *who, unsigned n, uint64_t bytes, CallerTasks **ret,
                       sd_bus_error *error) {
        unsigned limit = m->config->max_tasks_per_caller;
        uint64_t byte_limit = m->config->max_bytes_per_caller;
        char l[FORMAT_SIZE_MAX];
        CallerTasks *c;
        uint64_t held;

        if (!m->caller_tasks)
                m->caller_tasks = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, free);

        c = g_hash_table_lookup(m->caller_tasks, GUINT_TO_POINTER(who->uid));
        if (limit > 0 && c && (c->n > limit || n > limit - c->n))
                return sd_bus_error_setf(error, APIARY_ERROR_TOO_MANY_TASKS,
                                         "UID %u has %u unfinished task%s and asked for %u more; "
                                         "MaxTasksPerCaller=%u.", (unsigned) who->uid, c->n,
                                         c->n == 1 ? "" : "s", n, limit);
        if (limit > 0 && n > limit)
                return sd_bus_error_setf(error, APIARY_ERROR_TOO_MANY_TASKS,
                                         "UID %u has no unfinished task and asked for %u; "
                                         "MaxTasksPerCaller=%u.", (unsigned) who->uid, n, limit);
        held = c ? c->bytes : 0;
        if (byte_limit != UINT64_MAX && (held > byte_limit || bytes > byte_limit - held))
                return sd_bus_error_setf(error, APIARY_ERROR_TOO_MANY_TASKS,
                                         "UID %u's unfinished tasks hold %" PRIu64 " bytes and this "
                                         "call brings %" PRIu64 " more; MaxBytesPerCaller=%s.", (unsigned) who->uid,
                                         held, bytes, format_size(l, sizeof(l), byte_limit));
        if (!c) {
                c = calloc(1, sizeof(*c));
                if (!c)
                        return -ENOMEM;
                c->uid = who->uid;
                g_hash_table_insert(m->caller_tasks, GUINT_TO_POINTER(c->uid), c);
        }
        *ret = c;
        return 0;
}

void caller_tasks_forget_unused(Manager *m, CallerTasks *c) {
        if (c && c->n == 0)
                g_hash_table_remove(m->caller_tasks, GUINT_TO_POINTER(c->uid));
}

void task_set_caller(Task *t, CallerTasks *c) {
        t->caller = c;
        c->n++;
        c->bytes += t->payload_size;
}

int task_new(Task **ret, Pool *pool, sd_bus_message *payload_message, const void *payload, size_t size,
             usec_t timeout_usec, sd_bus_message *reply_to) {
        Manager *m = pool->manager;
        Task *t;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->id = ++m->next_task_id;
        t->pool = pool;
        t->state = TASK_QUEUED;
        t->payload_message = sd_bus_message_ref(payload_message);
        t->payload = payload;
        t->payload_size = size;
        t->timeout_usec = timeout_usec;
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
        t->queue_link.data = t;
        t->worker_link.data = t;

        g_hash_table_insert(m->tasks, &t->id, t);
        pool->n_submitted++;
        m->n_submitted++;
        *ret = t;
        return 0;
}

static void task_detach(Task *t) {
        Pool *p = t->pool;
        Manager *m = p->manager;

        t->timeout_source = sd_event_source_disable_unref(t->timeout_source);

        if (t->in_queue) {
                g_queue_unlink(&p->queue, &t->queue_link);
                t->in_queue = false;
                p->queued_bytes -= t->payload_size;
                m->n_queued--;
        } else if (t->worker) {
                g_queue_unlink(&t->worker->in_flight, &t->worker_link);
                t->worker = NULL;
                p->n_running--;
                m->n_running--;
        }
}

int task_batch_new(TaskBatch **ret, sd_bus_message *call, unsigned n) {
        TaskBatch *b;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->results = calloc(n, sizeof(TaskBatchResult));
        if (!b->results && n > 0) {
                free(b);
                return -ENOMEM;
        }
        b->call = sd_bus_message_ref(call);
        b->n = b->remaining = n;
        *ret = b;
        return 0;
}

void task_batch_free(TaskBatch *b) {
        for (unsigned i = 0; i < b->n; i++)
                free(b->results[i].data);
        free(b->results);
        sd_bus_message_unref(b->call);
        free(b);
}

/* Sends RunBatch's reply, a(bay): per task in order, ok and its result (or its reason). */
static int task_batch_reply(TaskBatch *b) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(b->call, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(bay)");
        if (r < 0)
                return r;
        for (unsigned i = 0; i < b->n; i++) {
                r = sd_bus_message_open_container(reply, 'r', "bay");
                if (r >= 0)
                        r = sd_bus_message_append(reply, "b", (int) b->results[i].ok);
                if (r >= 0)
                        r = sd_bus_message_append_array(reply, 'y', b->results[i].data, b->results[i].size);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* Keeps one task's end in its batch; the last one sends the reply. Whatever the reply's fate,
 * the batch goes away with its last task. */
static void task_batch_store(TaskBatch *b, unsigned i, bool ok, const void *data, size_t size) {
        int r;

        b->results[i].ok = ok;
        b->results[i].size = size;
        b->results[i].data = size > 0 ? malloc(size) : NULL;
        if (size > 0 && b->results[i].data)
                memcpy(b->results[i].data, data, size);
        else if (size > 0) {
                static const char oom[] = "out of memory keeping the result";
                b->results[i].ok = false;
                b->results[i].data = strdup(oom);
                b->results[i].size = b->results[i].data ? sizeof(oom) - 1 : 0;
        }

        if (--b->remaining > 0)
                return;
        r = task_batch_reply(b);
        if (r < 0)
                log_debug_errno(r, "Failed to send a RunBatch reply, ignoring: %m");
        task_batch_free(b);
}

static void task_reply(Task *t, bool ok, const void *data, size_t size) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        int r;

        if (t->batch) {
                task_batch_store(t->batch, t->batch_index, ok, data, size);
                t->batch = NULL;
                return;
        }

        if (t->reply_to) {
                /* A caller that went away meanwhile just does not get its reply. */
                if (ok) {
                        r = sd_bus_message_new_method_return(t->reply_to, &msg);
                        if (r >= 0)
                                r = sd_bus_message_append_array(msg, 'y', data, size);
                        if (r >= 0)
                                r = sd_bus_send(NULL, msg, NULL);
                } else
                        r = sd_bus_reply_method_errorf(t->reply_to, APIARY_ERROR_TASK_FAILED, "%.*s", (int) size,
                                                       (const char *) data);
                if (r < 0)
                        log_debug_errno(r, "Failed to reply for task %" PRIu64 ", ignoring: %m", t->id);
                return;
        }

        if (!t->notify_bus)
                return;
        r = sd_bus_message_new_signal(t->notify_bus, &msg, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE,
                                      "TaskFinished");
        /* To the submitter only: a result is its business, not every local user's. */
        if (r >= 0 && t->submitter)
                r = sd_bus_message_set_destination(msg, t->submitter);
        if (r >= 0)
                r = sd_bus_message_append(msg, "tsb", t->id, t->pool->config->name, (int) ok);
        if (r >= 0)
                r = sd_bus_message_append_array(msg, 'y', data, size);
        if (r >= 0)
                r = sd_bus_send(NULL, msg, NULL);
        if (r < 0)
                log_warning_errno(r, "Failed to emit TaskFinished for task %" PRIu64 ", ignoring: %m", t->id);
}

void task_finish(Task *t, bool ok, const void *data, size_t size) {
        Pool *p = t->pool;
        Manager *m = p->manager;

        task_detach(t);
        task_reply(t, ok, data, size);

        if (ok) {
                p->n_done++;
                m->n_done++;
        } else {
                p->n_failed++;
                m->n_failed++;
                LogContext ctx = { .pool = p->config->name, .slot = -1 };
                log_ctx(LOG_DEBUG, &ctx, "Task %" PRIu64 " failed: %.*s", t->id, (int) size, (const char *) data);
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
        sd_bus_message_unref(t->payload_message);
        sd_bus_message_unref(t->reply_to);
        sd_bus_unref(t->notify_bus);
        free(t->last_loss);
        free(t->submitter);
        free(t);
        return NULL;
}
