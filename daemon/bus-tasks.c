/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/auth.h"
#include "daemon/bus-api.h"
#include "daemon/bus-tasks.h"
#include "daemon/finished-batch.h"
#include "daemon/manager.h"
#include "daemon/pool.h"
#include "daemon/source.h"
#include "daemon/task.h"
#include "ipc/protocol.h"
#include "util/log.h"
#include "util/macro.h"

/* 2⁶³ µs, some 292,000 years: now plus this never overflows the monotonic clock. */
#define TASK_TIMEOUT_MAX_USEC (UINT64_C(1) << 63)

typedef struct TaskOptions {
        usec_t timeout_usec;
        bool batch_results;
        uint8_t priority;
} TaskOptions;

/* The "priority" option: any integer type (Python's dbus sends an int as i, busctl as what it is
 * told), 0 to TASK_PRIORITY_MAX. */
static int read_priority(sd_bus_message *m, uint8_t *ret, sd_bus_error *error) {
        const char *contents = NULL;
        int64_t v = -1;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (type != 'v' || !contents || strlen(contents) != 1 || !strchr("yqunixt", contents[0]))
                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                         "Option \"priority\" takes an integer from 0 to %u (e.g. a byte, y).",
                                         TASK_PRIORITY_MAX);
        r = sd_bus_message_enter_container(m, 'v', contents);
        if (r < 0)
                return r;
        switch (contents[0]) {
        case 'y': { uint8_t x; r = sd_bus_message_read_basic(m, 'y', &x); v = x; break; }
        case 'q': { uint16_t x; r = sd_bus_message_read_basic(m, 'q', &x); v = x; break; }
        case 'n': { int16_t x; r = sd_bus_message_read_basic(m, 'n', &x); v = x; break; }
        case 'u': { uint32_t x; r = sd_bus_message_read_basic(m, 'u', &x); v = x; break; }
        case 'i': { int32_t x; r = sd_bus_message_read_basic(m, 'i', &x); v = x; break; }
        case 'x': { int64_t x; r = sd_bus_message_read_basic(m, 'x', &x); v = x; break; }
        default: { uint64_t x; r = sd_bus_message_read_basic(m, 't', &x); v = x > INT64_MAX ? -1 : (int64_t) x; break; }
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (v < 0 || v > (int64_t) TASK_PRIORITY_MAX)
                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                         "Option \"priority\" is %" PRId64 ": expected 0 (the lowest, the default) "
                                         "to %u (the highest).", v, TASK_PRIORITY_MAX);
        *ret = (uint8_t) v;
        return 0;
}

/* a{sv}: "timeout" (t, µs, > 0), "priority" (an integer, 0-9), and for Submit and SubmitBatch
 * "batch-results" (b). Anything else is refused: a typo must not pass silently. */
static int read_options(sd_bus_message *m, TaskOptions *ret, sd_bus_error *error) {
        TaskOptions o = { .timeout_usec = USEC_INFINITY };
        const char *member = sd_bus_message_get_member(m);
        bool replies = streq(member, "Run") || streq(member, "RunBatch");
        const char *key;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;

                if (streq(key, "timeout")) {
                        uint64_t t;

                        if (sd_bus_message_verify_type(m, 'v', "t") <= 0)
                                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                                         "Option \"timeout\" takes a uint64 (t) of microseconds.");
                        r = sd_bus_message_read(m, "v", "t", &t);
                        if (r < 0)
                                return r;
                        if (t == 0)
                                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                                         "Option \"timeout\" must be positive, got 0.");
                        o.timeout_usec = t;
                } else if (streq(key, "priority")) {
                        r = read_priority(m, &o.priority, error);
                        if (r < 0 || sd_bus_error_is_set(error))
                                return r;
                } else if (streq(key, "batch-results") && !replies) {
                        int b;

                        if (sd_bus_message_verify_type(m, 'v', "b") <= 0)
                                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                                         "Option \"batch-results\" takes a boolean (b).");
                        r = sd_bus_message_read(m, "v", "b", &b);
                        if (r < 0)
                                return r;
                        o.batch_results = b;
                } else if (streq(key, "batch-results"))
                        return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                                 "Option \"batch-results\" is for Submit and SubmitBatch: %s "
                                                 "answers with the results.", member);
                else
                        return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                                 "Unknown option \"%s\"; known options: timeout, priority%s.", key,
                                                 replies ? "" : ", batch-results");

                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;

        *ret = o;
        return 0;
}

/* The "timeout" option may shorten the pool's TaskTimeoutSec=, never lengthen it: that is the
 * operator's bound on every submitter's task. Without one, any span that can be armed goes. A
 * shared pool's tasks wait in the engine's stream, in order: no priority there. */
static int check_options(const Pool *p, const TaskOptions *o, sd_bus_error *error) {
        usec_t bound = p->config->task_timeout_usec;
        char a[FORMAT_TIMESPAN_MAX], b[FORMAT_TIMESPAN_MAX];

        if (o->priority > 0 && p->source)
                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                         "Option \"priority\" is not for pool \"%s\": it is shared, and its tasks "
                                         "wait in the engine's stream in the order they came.", p->config->name);
        if (o->timeout_usec == USEC_INFINITY)
                return 0;
        if (bound != USEC_INFINITY && o->timeout_usec > bound)
                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                         "Option \"timeout\" is %s, longer than pool \"%s\"'s TaskTimeoutSec=%s: "
                                         "it may only shorten it.", format_timespan(a, sizeof(a), o->timeout_usec),
                                         p->config->name, format_timespan(b, sizeof(b), bound));
        if (o->timeout_usec > TASK_TIMEOUT_MAX_USEC)
                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_OPTION,
                                         "Option \"timeout\" is %" PRIu64 " µs, more than the %" PRIu64
                                         " µs a timer can be armed for; give no timeout instead.",
                                         o->timeout_usec, (uint64_t) TASK_TIMEOUT_MAX_USEC);
        return 0;
}

/* The pool NAME, if it takes N more tasks of BYTES payload bytes in all now; otherwise a named
 * error. */
static int find_pool_for(Manager *m, const char *name, unsigned n, uint64_t bytes, Pool **ret,
                         sd_bus_error *error) {
        Pool *p = manager_find_pool(m, name);
        char l[FORMAT_SIZE_MAX];

        if (!p)
                return sd_bus_error_setf(error, APIARY_ERROR_NO_SUCH_POOL, "No pool named \"%s\".", name);
        switch (pool_check_tasks(p, n, bytes)) {
        case POOL_TAKES_TASKS:
                break;
        case POOL_REFUSAL_STOPPING:
                return sd_bus_error_setf(error, APIARY_ERROR_STOPPING, "apiaryd is stopping.");
        case POOL_REFUSAL_FAILED:
                return sd_bus_error_setf(error, APIARY_ERROR_POOL_FAILED, "Pool \"%s\" has failed: %s", name,
                                         strempty(p->failure_reason));
        case POOL_REFUSAL_STOPPED:
                return sd_bus_error_setf(error, APIARY_ERROR_POOL_STOPPED, "Pool \"%s\" is %s.", name,
                                         p->life.phase == POOL_PHASE_STOPPING ? "stopping" : "stopped");
        case POOL_REFUSAL_QUEUE_FULL:
                return sd_bus_error_setf(error, APIARY_ERROR_QUEUE_FULL,
                                         "Pool \"%s\" has room for %u more task%s (QueueLimit=%u), %u asked.",
                                         name, pool_queue_room(p), pool_queue_room(p) == 1 ? "" : "s",
                                         p->config->queue_limit, n);
        case POOL_REFUSAL_SOURCE_UNAVAILABLE: {
                const char *why = "";

                (void) source_is_ready(p->source, &why);
                return sd_bus_error_setf(error, APIARY_ERROR_SOURCE_UNAVAILABLE,
                                         "Pool \"%s\" is shared and its engine (%s) is not available: %s", name,
                                         p->config->source, why);
        }
        case POOL_REFUSAL_QUEUE_BYTES:
                return sd_bus_error_setf(error, APIARY_ERROR_QUEUE_FULL,
                                         "Pool \"%s\"'s queued tasks hold %" PRIu64 " bytes and this call brings "
                                         "%" PRIu64 " more (QueueBytesLimit=%s).", name, p->queued_bytes, bytes,
                                         format_size(l, sizeof(l), p->config->queue_bytes_limit));
        }
        *ret = p;
        return 0;
}

/* Whether WHO may have N more tasks of BYTES payload bytes in all: returns 0 with its entry in
 * *RET (count each task with task_set_caller()), or sets org.apiary.Apiary1.Error.TooManyTasks,
 * naming the limit, in ERROR. */
static int caller_tasks_check(Manager *m, const Caller *who, unsigned n, uint64_t bytes, CallerTasks **ret,
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

static void caller_tasks_forget_unused(Manager *m, CallerTasks *c) {
        if (c && c->n == 0)
                g_hash_table_remove(m->caller_tasks, GUINT_TO_POINTER(c->uid));
}

/* ---- the ends of tasks: replies, TaskFinished, and RunBatch's one reply ---- */

typedef struct TaskBatchResult {
        bool ok;
        void *data;                     /* the result, or the failure reason */
        size_t size;
} TaskBatchResult;

struct TaskBatch {
        sd_bus_message *call;
        unsigned n, remaining;
        TaskBatchResult *results;       /* in the order of the payloads */
        size_t bytes;                   /* what the reply's body will hold, against BATCH_REPLY_BYTES_MAX */
};

/* RunBatch's one reply must fit in one message on the bus (32 MiB on the system bus, or the bus
 * drops apiaryd): its results and reasons, 16 bytes of framing each, get the room of one largest
 * result and a little. A result that would leave no room for the short failures of the tasks
 * still to end goes out as one such failure itself; a batch too big for even those is refused. */
#define BATCH_REPLY_BYTES_MAX ((size_t) RESULT_BYTES_MAX + 4096u)
#define BATCH_ITEM_FRAMING 16u
#define BATCH_FULL_REASON "result not sent: the RunBatch reply is full"
#define BATCH_ITEM_MIN (BATCH_ITEM_FRAMING + sizeof(BATCH_FULL_REASON) - 1)
#define BATCH_TASKS_MAX ((unsigned) (BATCH_REPLY_BYTES_MAX / BATCH_ITEM_MIN))

static int task_batch_new(TaskBatch **ret, sd_bus_message *call, unsigned n) {
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

static void task_batch_free(TaskBatch *b) {
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
 * the batch goes away with its last task. Returns whether it was kept as a result. */
static bool task_batch_store(TaskBatch *b, unsigned i, bool ok, const void *data, size_t size) {
        /* What the tasks still to end need at least: a short failure each. */
        size_t reserve = (size_t) (b->remaining - 1) * BATCH_ITEM_MIN;
        int r;

        if (b->bytes + size + BATCH_ITEM_FRAMING + reserve > BATCH_REPLY_BYTES_MAX) {
                ok = false;
                data = BATCH_FULL_REASON;
                size = strlen(BATCH_FULL_REASON);
        }
        b->bytes += size + BATCH_ITEM_FRAMING;
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

        ok = b->results[i].ok;
        if (--b->remaining > 0)
                return ok;
        r = task_batch_reply(b);
        if (r < 0)
                log_debug_errno(r, "Failed to send a RunBatch reply, ignoring: %m");
        task_batch_free(b);
        return ok;
}

bool bus_task_finished(Task *t, bool ok, const void *data, size_t size) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        int r;

        if (t->batch) {
                ok = task_batch_store(t->batch, t->batch_index, ok, data, size);
                t->batch = NULL;
                return ok;
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
                return ok;
        }

        if (!t->notify_bus)
                return ok;
        if (t->batch_results) {
                r = finished_batches_add(t->pool->manager->finished_batches, t->notify_bus, t->submitter, t->id,
                                         t->pool->config->name, ok, data, size);
                if (r < 0)
                        log_warning_errno(r, "Failed to add task %" PRIu64 " to TasksFinished, ignoring: %m", t->id);
                return ok;
        }
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
        return ok;
}

/* ---- shared pools: Submit() and SubmitBatch() answered once the engine stored the tasks ---- */

struct TaskAccept {
        sd_bus_message *call;
        bool batch;                     /* SubmitBatch: answers at, else t */
        unsigned n, remaining, n_rejected;
        uint64_t *ids;
        char *error_name, *error_message;       /* the first rejection */
};

static int task_accept_new(TaskAccept **ret, sd_bus_message *call, bool batch, unsigned n) {
        TaskAccept *a = calloc(1, sizeof(*a));

        if (!a)
                return -ENOMEM;
        a->ids = calloc(MAX(n, 1u), sizeof(uint64_t));
        if (!a->ids) {
                free(a);
                return -ENOMEM;
        }
        a->call = sd_bus_message_ref(call);
        a->batch = batch;
        a->n = a->remaining = n;
        *ret = a;
        return 0;
}

static void task_accept_free(TaskAccept *a) {
        sd_bus_message_unref(a->call);
        free(a->ids);
        free(a->error_name);
        free(a->error_message);
        free(a);
}

static const char *rejection_error_name(TaskRejection why) {
        switch (why) {
        case TASK_REJECT_TOO_LARGE:
                return APIARY_ERROR_TOO_LARGE;
        case TASK_REJECT_STOPPING:
                return APIARY_ERROR_STOPPING;
        case TASK_REJECT_POOL_REMOVED:
                return APIARY_ERROR_POOL_STOPPED;
        default:
                return APIARY_ERROR_SOURCE_UNAVAILABLE;
        }
}

/* One of A's tasks is settled: stored (ERROR_NAME NULL) or not. The last one answers the call:
 * its ids if all were stored, else the first error (for a batch, saying how many were stored:
 * those run, and their TaskFinished comes). */
static void task_accept_settle(TaskAccept *a, unsigned index, uint64_t id, const char *error_name,
                               const char *message) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        a->ids[index] = error_name ? 0 : id;
        if (error_name) {
                if (a->n_rejected++ == 0) {
                        a->error_name = strdup(error_name);
                        a->error_message = strdup(strempty(message));
                }
        }
        if (--a->remaining > 0)
                return;

        if (a->n_rejected > 0 && (!a->batch || a->n_rejected == a->n))
                r = sd_bus_reply_method_errorf(a->call, a->error_name ?: APIARY_ERROR_SOURCE_UNAVAILABLE,
                                               "%s not stored: %s", a->batch ? "The tasks were" : "The task was",
                                               strempty(a->error_message));
        else {
                /* Some of a batch stored, some not: the ids of those stored, 0 for the others. */
                r = sd_bus_message_new_method_return(a->call, &reply);
                if (r >= 0 && a->batch)
                        r = sd_bus_message_append_array(reply, 't', a->ids, a->n * sizeof(uint64_t));
                else if (r >= 0)
                        r = sd_bus_message_append(reply, "t", a->ids[0]);
                if (r >= 0)
                        r = sd_bus_send(NULL, reply, NULL);
        }
        if (r < 0)
                log_debug_errno(r, "Failed to answer %s(), ignoring: %m", sd_bus_message_get_member(a->call));
        task_accept_free(a);
}

void bus_task_stored(Task *t) {
        if (!t->accept)
                return;
        task_accept_settle(t->accept, t->accept_index, t->id, NULL, NULL);
        t->accept = NULL;
}

void bus_task_rejected(Task *t, TaskRejection why, const char *message) {
        const char *name = rejection_error_name(why);
        g_autofree char *text = g_strdup_printf("%s: %s", name, strempty(message));
        int r;

        if (t->accept) {
                task_accept_settle(t->accept, t->accept_index, t->id, name, message);
                t->accept = NULL;
                return;
        }
        if (t->reply_to && !t->batch) {
                r = sd_bus_reply_method_errorf(t->reply_to, name, "%s", strempty(message));
                if (r < 0)
                        log_debug_errno(r, "Failed to reply for task %" PRIu64 ", ignoring: %m", t->id);
                return;
        }
        /* A slot of a RunBatch, or a stored Submit(): its end as this host sees it, with the
         * error's name in front. */
        (void) bus_task_finished(t, false, text, strlen(text));
}

/* Submit and Run: (s pool, ay payload, a{sv} options); Run replies when the task is done. A
 * plugin's Submit through its worker's link is a Run without options, and needs no check: the
 * worker is ours. */
static int submit_one(sd_bus_message *m, Manager *mgr, bool wait, const char *from_pool, sd_bus_error *error) {
        bool from_worker = from_pool;
        TaskOptions o = { .timeout_usec = USEC_INFINITY };
        CallerTasks *caller = NULL;
        uid_t owner = geteuid();        /* a plugin's tasks are apiaryd's own */
        const Caller *who = NULL;
        const char *name;
        const void *payload;
        size_t size;
        Pool *p;
        Task *t;
        int r;

        if (!from_worker) {
                r = auth_check(mgr, m, ACCESS_SUBMIT, error);
                if (r < 0)
                        return r;
                r = auth_caller(mgr, m, &who);
                if (r < 0)
                        return r;
                owner = who->uid;
        }

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(m, 'y', &payload, &size);
        if (r < 0)
                return r;
        if (!from_worker) {
                r = read_options(m, &o, error);
                if (r < 0 || sd_bus_error_is_set(error))
                        return r;
        }
        r = find_pool_for(mgr, name, 1, size, &p, error);
        if (r < 0)
                return r;
        r = check_options(p, &o, error);
        if (r < 0)
                return r;
        /* A plugin is not a user: what it may feed is the operator's choice, not its user's rights. */
        if (from_worker && !pool_config_accepts_from(p->config, from_pool))
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "Pool \"%s\" takes no tasks from the plugin of pool \"%s\" "
                                         "(SubmitFrom= of [Pool %s]).", name, from_pool, name);
        if (!from_worker) {
                r = caller_tasks_check(mgr, who, 1, size, &caller, error);
                if (r < 0)
                        return r;
        }

        r = task_new(&t, p, m, payload, size, o.timeout_usec, wait ? m : NULL);
        if (r < 0) {
                caller_tasks_forget_unused(mgr, caller);
                return r;
        }
        t->owner = owner;
        t->priority = o.priority;
        t->batch_results = o.batch_results;
        if (caller)
                task_set_caller(t, caller);

        if (p->source) {
                /* Shared: accepted once stored in the engine. Submit is answered then. */
                if (!wait) {
                        r = task_accept_new(&t->accept, m, false, 1);
                        if (r < 0) {
                                g_hash_table_remove(mgr->tasks, &t->id);
                                p->n_submitted--;
                                mgr->n_submitted--;
                                task_free(t);
                                return r;
                        }
                }
                source_publish(p->source, t);
                return 1;
        }
        pool_enqueue(p, t);

        if (!wait) {
                r = sd_bus_reply_method_return(m, "t", t->id);
                if (r < 0)
                        return r;
        }
        pool_dispatch(p);
        return 1;
}

int bus_method_submit(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return submit_one(m, userdata, false, NULL, error);
}

int bus_method_run(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return submit_one(m, userdata, true, NULL, error);
}

typedef struct Payload {
        const void *data;
        size_t size;
} Payload;

/* The common part of SubmitBatch and RunBatch: (s pool, aay payloads, a{sv} options), checked
 * all or nothing against the pool, so that the caller knows exactly which tasks exist. Returns 0
 * with the payloads (pointing into M), options and pool, or a negative errno with ERROR set. */
static int read_batch(sd_bus_message *m, Manager *mgr, GArray *payloads, TaskOptions *ret_options, Pool **ret_pool,
                      uid_t *ret_owner, CallerTasks **ret_caller, sd_bus_error *error) {
        const Caller *who;
        const char *name;
        uint64_t bytes = 0;
        Payload pl;
        int r;

        r = auth_check(mgr, m, ACCESS_SUBMIT, error);
        if (r < 0)
                return r;
        r = auth_caller(mgr, m, &who);
        if (r < 0)
                return r;
        *ret_owner = who->uid;
        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'a', "ay");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read_array(m, 'y', &pl.data, &pl.size)) > 0) {
                g_array_append_val(payloads, pl);
                bytes += pl.size;       /* no overflow: they are all in one message */
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        r = read_options(m, ret_options, error);
        if (r < 0)
                return r;
        if (sd_bus_error_is_set(error))
                return -EINVAL;
        r = find_pool_for(mgr, name, payloads->len, bytes, ret_pool, error);
        if (r < 0)
                return r;
        r = check_options(*ret_pool, ret_options, error);
        if (r < 0)
                return r;
        return caller_tasks_check(mgr, who, payloads->len, bytes, ret_caller, error);
}

/* SubmitBatch to a shared pool: answered once the engine stored them all (task_accept_settle()). */
static int submit_batch_shared(sd_bus_message *m, Manager *mgr, Pool *p, GArray *payloads, const TaskOptions *o,
                               uid_t owner, CallerTasks *caller) {
        TaskAccept *accept;
        int r;

        r = task_accept_new(&accept, m, true, payloads->len);
        if (r < 0) {
                caller_tasks_forget_unused(mgr, caller);
                return r;
        }
        for (guint i = 0; i < payloads->len; i++) {
                Payload *e = &g_array_index(payloads, Payload, i);
                Task *t;

                r = task_new(&t, p, m, e->data, e->size, o->timeout_usec, NULL);
                if (r < 0) {
                        /* Out of memory halfway: those not made count as not stored. */
                        for (guint j = i; j < payloads->len; j++)
                                task_accept_settle(accept, j, 0, APIARY_ERROR_SOURCE_UNAVAILABLE, "out of memory");
                        caller_tasks_forget_unused(mgr, caller);
                        return 1;
                }
                t->owner = owner;
                t->priority = o->priority;
                t->batch_results = o->batch_results;
                task_set_caller(t, caller);
                t->accept = accept;
                t->accept_index = i;
                source_publish(p->source, t);
        }
        return 1;
}

int bus_method_submit_batch(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(GArray) payloads = g_array_new(false, false, sizeof(Payload));
        Manager *mgr = userdata;
        CallerTasks *caller;
        TaskOptions o;
        uid_t owner;
        Pool *p;
        int r;

        r = read_batch(m, mgr, payloads, &o, &p, &owner, &caller, error);
        if (r < 0)
                return r;

        if (p->source && payloads->len > 0)
                return submit_batch_shared(m, mgr, p, payloads, &o, owner, caller);

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "t");
        if (r < 0)
                return r;
        for (guint i = 0; i < payloads->len; i++) {
                Payload *e = &g_array_index(payloads, Payload, i);
                Task *t;

                r = task_new(&t, p, m, e->data, e->size, o.timeout_usec, NULL);
                if (r < 0) {
                        caller_tasks_forget_unused(mgr, caller);
                        return r;
                }
                t->owner = owner;
                t->priority = o.priority;
                t->batch_results = o.batch_results;
                task_set_caller(t, caller);
                pool_enqueue(p, t);
                r = sd_bus_message_append(reply, "t", t->id);
                if (r < 0)
                        return r;
        }
        caller_tasks_forget_unused(mgr, caller);         /* an empty batch */
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        r = sd_bus_send(NULL, reply, NULL);
        if (r < 0)
                return r;

        pool_dispatch(p);
        return 1;
}

int bus_method_run_batch(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        g_autoptr(GArray) payloads = g_array_new(false, false, sizeof(Payload));
        Manager *mgr = userdata;
        TaskBatch *batch;
        CallerTasks *caller;
        TaskOptions o;
        uid_t owner;
        Pool *p;
        int r;

        r = read_batch(m, mgr, payloads, &o, &p, &owner, &caller, error);
        if (r < 0)
                return r;

        if (payloads->len == 0) {
                caller_tasks_forget_unused(mgr, caller);
                return sd_bus_reply_method_return(m, "a(bay)", 0);
        }

        /* One reply for all of them, when the last one ends: no signal per task. It must fit in
         * one message, each task's end taking some room even as a failure. */
        if (payloads->len > BATCH_TASKS_MAX) {
                caller_tasks_forget_unused(mgr, caller);
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "A RunBatch of %u tasks would not fit in one reply on the bus: at most %u; "
                                         "use SubmitBatch for more.", payloads->len, BATCH_TASKS_MAX);
        }
        r = task_batch_new(&batch, m, payloads->len);
        if (r < 0) {
                caller_tasks_forget_unused(mgr, caller);
                return r;
        }
        for (guint i = 0; i < payloads->len; i++) {
                Payload *e = &g_array_index(payloads, Payload, i);
                Task *t;

                r = task_new(&t, p, m, e->data, e->size, o.timeout_usec, NULL);
                if (r < 0 && i == 0) {
                        task_batch_free(batch);
                        caller_tasks_forget_unused(mgr, caller);
                        return r;
                }
                if (r < 0) {
                        /* Out of memory halfway: the rest fail, the reply comes with the others. */
                        batch->remaining -= payloads->len - i;
                        for (guint j = i; j < payloads->len; j++) {
                                batch->results[j].data = strdup("out of memory");
                                batch->results[j].size = batch->results[j].data ? strlen(batch->results[j].data) : 0;
                        }
                        break;
                }
                free(t->submitter);
                t->submitter = NULL;
                t->notify_bus = sd_bus_unref(t->notify_bus);
                t->batch = batch;
                t->batch_index = i;
                t->owner = owner;
                t->priority = o.priority;
                task_set_caller(t, caller);
                if (p->source)
                        source_publish(p->source, t);
                else
                        pool_enqueue(p, t);
        }
        pool_dispatch(p);
        return 1;
}

int bus_method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Manager *mgr = userdata;
        uint64_t id;
        Task *t;
        int r;

        r = auth_check(mgr, m, ACCESS_SUBMIT, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "t", &id);
        if (r < 0)
                return r;

        t = g_hash_table_lookup(mgr->tasks, &id);
        if (!t)
                return sd_bus_error_setf(error, APIARY_ERROR_NO_SUCH_TASK,
                                         "No task %" PRIu64 " (it never existed or has finished).", id);
        r = auth_check_cancel(mgr, m, t->owner, error);
        if (r < 0)
                return r;

        /* Like concurrent.futures: a task that has started runs to its end. */
        if (t->state != TASK_QUEUED)
                return sd_bus_reply_method_return(m, "b", false);

        /* Reply first, so that the caller sees (false→true) before the TaskFinished it causes. */
        r = sd_bus_reply_method_return(m, "b", true);
        task_fail(t, "cancelled");
        return r;
}

int link_method_submit(sd_bus_message *m, Manager *mgr, const char *from, sd_bus_error *error) {
        return submit_one(m, mgr, true, from, error);
}
