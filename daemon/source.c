/* SPDX-License-Identifier: MIT */
/*
 * A shared pool's source: apiaryd's side of apiary-source (docs/source-protocol.md). The helper
 * carries writes to the engine and pulled tasks and results back; every task's state is here.
 *
 *   submitted here:  PUBLISHING → (stored) STORED → its result arrives (Results) → task_finish()
 *   pulled here:     Tasks → the pool's queue → a worker → task_finish() → Finish (result stored,
 *                    then acked); a worker lost under it → Release (or it fails, past
 *                    TaskRetries= deliveries); stopping → Release
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/manager.h"
#include "daemon/objects.h"
#include "daemon/pool.h"
#include "daemon/source.h"
#include "daemon/task.h"
#include "daemon/worker.h"
#include "ipc/link.h"
#include "ipc/protocol.h"
#include "ipc/source-protocol.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/signal-util.h"

/* How long the engine may take to store a write before SourceUnavailable. */
#define SOURCE_TIMEOUT_USEC (5 * USEC_PER_SEC)
/* A call on the link waits this much longer: the helper answers its own timeouts first. */
#define SOURCE_CALL_TIMEOUT_USEC (SOURCE_TIMEOUT_USEC + 5 * USEC_PER_SEC)
/* A helper that exited is restarted after this, doubling up to the max while it keeps exiting. */
#define SOURCE_RESTART_MIN_USEC (100 * USEC_PER_MSEC)
#define SOURCE_RESTART_MAX_USEC (10 * USEC_PER_SEC)
/* A Finish the engine did not confirm is sent again after this. */
#define SOURCE_RETRY_USEC USEC_PER_SEC
/* A Publish or Finish call carries tasks until their bytes reach this much (one more is always
 * carried): one call stays well below D-Bus's message limit, whatever a turn gathered. */
#define SOURCE_CALL_BYTES_MAX (1024u * 1024u)
/* A stopping helper gets this long for what it still carries, then SIGKILL. */
#define SOURCE_STOP_TIMEOUT_USEC (SOURCE_CALL_TIMEOUT_USEC + 5 * USEC_PER_SEC)

#define log_source(level, s, ...)                                                               \
        ({                                                                                      \
                LogContext _ctx = { .pool = (s)->pool->config->name, .slot = -1, .pid = (s)->pid }; \
                log_ctx((level), &_ctx, __VA_ARGS__);                                           \
        })

/* The end of a task pulled here, on its way to the engine. */
typedef struct FinishItem {
        char *token, *reply, *id;
        bool ok, term;
        void *data;
        size_t size;
        GList link;                     /* in to_finish, or in its call's items */
} FinishItem;

typedef enum CallKind {
        CALL_PUBLISH,
        CALL_FINISH,
        CALL_RELEASE,
} CallKind;

/* A call to the helper not answered yet. */
typedef struct SourceCall {
        Source *source;
        CallKind kind;
        sd_bus_slot *slot;
        GArray *ids;                    /* CALL_PUBLISH: the task ids, in order */
        GQueue items;                   /* CALL_FINISH: the FinishItems, in order */
        GList link;                     /* in source->calls */
} SourceCall;

static void source_schedule(Source *s);
static int source_spawn(Source *s);

static Manager *source_manager(const Source *s) {
        return s->pool->manager;
}

static void source_mark_changed(Source *s) {
        manager_mark_changed(source_manager(s), s->pool->object_path, APIARY_POOL_INTERFACE, "SourceState",
                             "SourceError");
}

static void source_set_state(Source *s, const char *state, const char *error) {
        if (streq(strempty(s->state), state) && streq(strempty(s->error), strempty(error)))
                return;
        free(s->state);
        free(s->error);
        s->state = strdup(state);
        s->error = strdup(strempty(error));
        source_mark_changed(s);
}

bool source_is_ready(const Source *s, const char **ret_why) {
        if (s->stopping) {
                *ret_why = "the pool's source is stopping";
                return false;
        }
        if (s->link && s->state && streq(s->state, SOURCE_STATE_READY))
                return true;
        *ret_why = s->error && *s->error ? s->error : "the engine is not connected yet";
        return false;
}

bool source_is_stopped(const Source *s) {
        return s->stopping && s->pid == 0;
}

/* ---- the tasks pulled here ---- */

static void finish_item_free(FinishItem *f) {
        free(f->token);
        free(f->reply);
        free(f->id);
        free(f->data);
        free(f);
}

void source_forget(Source *s, Task *t) {
        if (!t->source_token || !t->source_link.data)
                return;
        g_queue_unlink(&s->held, &t->source_link);
        t->source_link.data = NULL;
}

void source_task_ended(Source *s, Task *t, bool ok, const void *data, size_t size) {
        FinishItem *f = calloc(1, sizeof(*f));

        if (f) {
                f->token = strdup(t->source_token);
                f->reply = strdup(t->source_reply);
                f->id = strdup(t->source_id);
                f->data = size > 0 ? malloc(size) : NULL;
        }
        if (!f || !f->token || !f->reply || !f->id || (size > 0 && !f->data)) {
                /* Its lease lapses and it runs again somewhere: nothing is lost but the work. */
                log_source(LOG_ERR, s, "Out of memory keeping the result of task %s, it will run again.", t->source_id);
                if (f)
                        finish_item_free(f);
                return;
        }
        if (size > 0)
                memcpy(f->data, data, size);
        f->size = size;
        f->ok = ok;
        f->link.data = f;
        g_queue_push_tail_link(&s->to_finish, &f->link);
        s->n_finishing++;
        source_schedule(s);
}

static int on_release_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error);
static SourceCall *source_call_new(Source *s, CallKind kind);
static void source_call_free(SourceCall *c);

void source_release(Source *s, Task *t) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        SourceCall *c;
        int r = -ENOTCONN;

        s->n_released++;
        if (s->link && sd_bus_is_open(s->link) > 0) {
                c = source_call_new(s, CALL_RELEASE);
                r = c ? sd_bus_message_new_method_call(s->link, &m, NULL, SOURCE_OBJECT_PATH, SOURCE_INTERFACE,
                                                       "Release") : -ENOMEM;
                if (r >= 0)
                        r = sd_bus_message_append(m, "as", 1, t->source_token);
                if (r >= 0)
                        r = sd_bus_call_async(s->link, &c->slot, m, on_release_reply, c, SOURCE_CALL_TIMEOUT_USEC);
                if (r < 0 && c)
                        source_call_free(c);
        }
        if (r < 0)
                /* The engine delivers it again after its lease instead. */
                log_source(LOG_DEBUG, s, "Could not release task %s, it comes back after its lease: %s",
                           t->source_id, strerror(-r));

        source_forget(s, t);
        g_hash_table_remove(source_manager(s)->tasks, &t->id);
        task_free(t);
        source_check_stop(s);
}

/* ---- calls to the helper, and their answers ---- */

static SourceCall *source_call_new(Source *s, CallKind kind) {
        SourceCall *c = calloc(1, sizeof(*c));

        if (!c)
                return NULL;
        c->source = s;
        c->kind = kind;
        c->link.data = c;
        g_queue_push_tail_link(&s->calls, &c->link);
        return c;
}

static void source_call_free(SourceCall *c) {
        GList *l;

        g_queue_unlink(&c->source->calls, &c->link);
        sd_bus_slot_unref(c->slot);
        if (c->ids)
                g_array_unref(c->ids);
        while ((l = g_queue_pop_head_link(&c->items))) {
                c->source->n_finishing--;
                finish_item_free(l->data);
        }
        free(c);
}

static TaskRejection rejection_from_error(const char *name) {
        return name && streq(name, SOURCE_ERROR_TOO_LARGE) ? TASK_REJECT_TOO_LARGE : TASK_REJECT_UNAVAILABLE;
}

/* The task ID's publish ended: stored if ERROR_NAME is NULL. */
static void source_published(Source *s, uint64_t id, const char *error_name, const char *message) {
        Manager *m = source_manager(s);
        Task *t = g_hash_table_lookup(m->tasks, &id);

        if (!t || t->pool != s->pool || t->state != TASK_PUBLISHING)
                return;         /* its result came first, or apiaryd is going */
        if (error_name) {
                log_source(LOG_DEBUG, s, "Task %" PRIu64 " not stored: %s", id, strempty(message));
                task_reject(t, rejection_from_error(error_name), message);
                return;
        }
        t->state = TASK_STORED;
        if (s->n_awaiting++ == 0)
                source_schedule(s);     /* the helper audits the results stream while we wait */
        /* The engine holds the payload now: its bytes no longer count against the caller. */
        if (t->caller)
                t->caller->bytes -= t->payload_size;
        t->payload_size = 0;
        t->payload = NULL;
        t->payload_message = sd_bus_message_unref(t->payload_message);
        if (m->observer.task_stored)
                m->observer.task_stored(t);
}

/* Reads an a(ss) of outcomes, one per item; calls FN for each. NULL REPLY: all failed with
 * MESSAGE. Returns how many outcomes it read. */
typedef void (*outcome_fn)(SourceCall *c, unsigned i, const char *error_name, const char *message);

static unsigned read_outcomes(SourceCall *c, sd_bus_message *reply, unsigned n, outcome_fn fn) {
        const sd_bus_error *e = reply ? sd_bus_message_get_error(reply) : NULL;
        const char *name, *message;
        unsigned i = 0;
        int r;

        if (reply && !e) {
                r = sd_bus_message_enter_container(reply, 'a', "(" SOURCE_OUTCOME ")");
                while (r > 0 && i < n && (r = sd_bus_message_read(reply, "(" SOURCE_OUTCOME ")", &name, &message)) > 0) {
                        fn(c, i, *name ? name : NULL, message);
                        i++;
                }
        }
        /* The rest (a failed call, or a short answer): not done. */
        for (; i < n; i++)
                fn(c, i, SOURCE_ERROR_UNAVAILABLE,
                   e ? e->message : !reply ? "apiary-source exited" : "apiary-source gave no answer for it");
        return n;
}

static void publish_outcome(SourceCall *c, unsigned i, const char *error_name, const char *message) {
        source_published(c->source, g_array_index(c->ids, uint64_t, i), error_name, message);
}

static int on_publish_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        SourceCall *c = userdata;
        Source *s = c->source;

        (void) read_outcomes(c, reply, c->ids->len, publish_outcome);
        source_call_free(c);
        source_check_stop(s);
        return 0;
}

static int on_retry(sd_event_source *es, uint64_t usec, void *userdata) {
        Source *s = userdata;

        source_schedule(s);
        return 0;
}

static void finish_outcome(SourceCall *c, unsigned i, const char *error_name, const char *message) {
        Source *s = c->source;
        GList *l = g_queue_pop_head_link(&c->items);
        FinishItem *f;

        if (!l)
                return;
        f = l->data;
        if (!error_name) {
                /* Its end is in the engine; "duplicate": the first one was another run's, and
                 * the engine dropped this one. */
                if (message && streq(message, "duplicate"))
                        s->n_duplicates++;
                else
                        s->n_ran++;
                s->n_finishing--;
                finish_item_free(f);
                return;
        }
        if (s->stopping && !s->link) {
                log_source(LOG_WARNING, s, "The result of task %s was not stored (%s); it runs again elsewhere.",
                           f->id, strempty(message));
                s->n_finishing--;
                finish_item_free(f);
                return;
        }
        /* Kept, its lease renewed, and sent again in a while: the result is not thrown away. */
        log_source(LOG_DEBUG, s, "The result of task %s was not stored yet (%s), trying again.", f->id,
                   strempty(message));
        g_queue_push_tail_link(&s->to_finish, &f->link);
        if (!s->retry_source)
                (void) sd_event_add_time_relative(source_manager(s)->event, &s->retry_source, CLOCK_MONOTONIC,
                                                  SOURCE_RETRY_USEC, 0, on_retry, s);
        else {
                (void) sd_event_source_set_time_relative(s->retry_source, SOURCE_RETRY_USEC);
                (void) sd_event_source_set_enabled(s->retry_source, SD_EVENT_ONESHOT);
        }
}

static int on_finish_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        SourceCall *c = userdata;
        Source *s = c->source;

        (void) read_outcomes(c, reply, c->items.length, finish_outcome);
        source_call_free(c);
        source_check_stop(s);
        return 0;
}

static int on_release_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        SourceCall *c = userdata;
        Source *s = c->source;

        if (sd_bus_message_is_method_error(reply, NULL))
                log_source(LOG_DEBUG, s, "A release was not confirmed (%s); the task comes back after its lease.",
                           sd_bus_message_get_error(reply)->message);
        source_call_free(c);
        source_check_stop(s);
        return 0;
}

/* The helper is gone: every call it had not answered ends as not done. */
static void source_fail_calls(Source *s) {
        SourceCall *c;

        while ((c = g_queue_peek_head(&s->calls))) {
                c->slot = sd_bus_slot_unref(c->slot);
                if (c->kind == CALL_PUBLISH)
                        (void) read_outcomes(c, NULL, c->ids->len, publish_outcome);
                else if (c->kind == CALL_FINISH)
                        (void) read_outcomes(c, NULL, c->items.length, finish_outcome);
                source_call_free(c);
        }
}

/* ---- once a turn: Want, Publish, Finish ---- */

/* One Publish call of the tasks in IDS from *I on, until their payloads reach
 * SOURCE_CALL_BYTES_MAX; *I moves past them. The call's ids are exactly the tasks it carries. */
static void source_send_publish_one(Source *s, GArray *ids, guint *i) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        Manager *mgr = source_manager(s);
        g_autoptr(GArray) sent = g_array_new(false, false, sizeof(uint64_t));
        SourceCall *c = NULL;
        size_t bytes = 0;
        int r;

        r = sd_bus_message_new_method_call(s->link, &m, NULL, SOURCE_OBJECT_PATH, SOURCE_INTERFACE, "Publish");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(" SOURCE_PUBLISH_ITEM ")");
        for (; r >= 0 && *i < ids->len && (sent->len == 0 || bytes < SOURCE_CALL_BYTES_MAX); (*i)++) {
                uint64_t id = g_array_index(ids, uint64_t, *i);
                Task *t = g_hash_table_lookup(mgr->tasks, &id);

                if (!t || t->state != TASK_PUBLISHING)
                        continue;
                g_array_append_val(sent, id);
                bytes += t->payload_size;
                r = sd_bus_message_open_container(m, 'r', SOURCE_PUBLISH_ITEM);
                if (r >= 0)
                        r = sd_bus_message_append(m, "st", t->source_id,
                                                  t->timeout_usec == USEC_INFINITY ? (uint64_t) 0 : t->timeout_usec);
                if (r >= 0)
                        r = sd_bus_message_append_array(m, 'y', t->payload, t->payload_size);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        if (sent->len == 0)
                return;
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0) {
                c = source_call_new(s, CALL_PUBLISH);
                r = c ? sd_bus_call_async(s->link, &c->slot, m, on_publish_reply, c, SOURCE_CALL_TIMEOUT_USEC) : -ENOMEM;
        }
        if (r < 0) {
                g_autofree char *why = g_strdup_printf("could not pass the tasks to apiary-source: %s", strerror(-r));

                if (c)
                        source_call_free(c);
                for (guint k = 0; k < sent->len; k++)
                        source_published(s, g_array_index(sent, uint64_t, k), SOURCE_ERROR_UNAVAILABLE, why);
                return;
        }
        c->ids = g_steal_pointer(&sent);
}

static void source_send_publish(Source *s) {
        g_autoptr(GArray) ids = g_steal_pointer(&s->to_publish);
        guint i = 0;

        s->to_publish = g_array_new(false, false, sizeof(uint64_t));
        while (ids && i < ids->len)
                source_send_publish_one(s, ids, &i);
}

/* One Finish call of the ends waiting in to_finish, until their data reach SOURCE_CALL_BYTES_MAX.
 * Returns false when there is nothing more to send now. */
static bool source_send_finish_one(Source *s) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        size_t bytes = 0;
        SourceCall *c;
        FinishItem *f;
        int r;

        if (s->to_finish.length == 0)
                return false;
        c = source_call_new(s, CALL_FINISH);
        if (!c)
                return false;
        r = sd_bus_message_new_method_call(s->link, &m, NULL, SOURCE_OBJECT_PATH, SOURCE_INTERFACE, "Finish");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(" SOURCE_FINISH_ITEM ")");
        while (r >= 0 && (c->items.length == 0 || bytes < SOURCE_CALL_BYTES_MAX) &&
               (f = g_queue_peek_head(&s->to_finish))) {
                r = sd_bus_message_open_container(m, 'r', SOURCE_FINISH_ITEM);
                if (r >= 0)
                        r = sd_bus_message_append(m, "sssbb", f->token, f->reply, f->id, f->ok, f->term);
                if (r >= 0)
                        r = sd_bus_message_append_array(m, 'y', f->data, f->size);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r < 0)
                        break;
                bytes += f->size;
                g_queue_unlink(&s->to_finish, &f->link);
                g_queue_push_tail_link(&c->items, &f->link);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_call_async(s->link, &c->slot, m, on_finish_reply, c, SOURCE_CALL_TIMEOUT_USEC);
        if (r < 0) {
                /* Back to be sent again (with the next turn, or the retry timer). */
                GList *l;

                while ((l = g_queue_pop_tail_link(&c->items)))
                        g_queue_push_head_link(&s->to_finish, l);
                source_call_free(c);
                log_source(LOG_WARNING, s, "Could not pass results to apiary-source: %s", strerror(-r));
                return false;
        }
        return true;
}

static void source_send_finish(Source *s) {
        while (source_send_finish_one(s))
                ;
}

/* What the pool can take now: the free places of its workers, less what waits in its queue. */
static unsigned source_places(Source *s) {
        Pool *p = s->pool;
        uint64_t places = 0;

        if (s->stopping || !pool_is_active(p) || p->paused || p->manager->state == MANAGER_STOPPING)
                return 0;
        for (unsigned i = 0; i < p->n_workers; i++)
                places += worker_room(p->workers[i]);
        return places > task_queue_length(&p->queue) ?
                (unsigned) MIN(places - task_queue_length(&p->queue), (uint64_t) UINT32_MAX) : 0;
}

static void source_send_want(Source *s) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        unsigned places = source_places(s);
        bool awaiting = s->n_awaiting > 0;
        int r;

        if (s->want_sent_valid && places == s->want_sent && s->received == s->received_sent &&
            awaiting == s->awaiting_sent)
                return;
        r = sd_bus_message_new_method_call(s->link, &m, NULL, SOURCE_OBJECT_PATH, SOURCE_INTERFACE, "Want");
        if (r >= 0)
                r = sd_bus_message_append(m, SOURCE_WANT_IN, places, s->received, awaiting);
        if (r >= 0)
                r = sd_bus_message_set_expect_reply(m, false);
        if (r >= 0)
                r = sd_bus_send(s->link, m, NULL);
        if (r < 0) {
                log_source(LOG_WARNING, s, "Could not send Want to apiary-source: %s", strerror(-r));
                return;
        }
        s->want_sent = places;
        s->received_sent = s->received;
        s->awaiting_sent = awaiting;
        s->want_sent_valid = true;
}

static int on_defer(sd_event_source *es, void *userdata) {
        Source *s = userdata;

        if (!s->link || sd_bus_is_open(s->link) <= 0)
                return 0;       /* kept until the next helper says Hello */
        source_send_publish(s);
        source_send_finish(s);
        source_send_want(s);
        return 0;
}

static void source_schedule(Source *s) {
        if (s->defer_source)
                (void) sd_event_source_set_enabled(s->defer_source, SD_EVENT_ONESHOT);
}

void source_places_changed(Source *s) {
        source_schedule(s);
}

void source_publish(Source *s, Task *t) {
        Manager *m = source_manager(s);

        t->state = TASK_PUBLISHING;
        t->source_id = g_strdup_printf("%s%" PRIu64, m->source_id_prefix, t->id);
        g_array_append_val(s->to_publish, t->id);
        source_schedule(s);
}

/* ---- leases ---- */

static usec_t source_renew_interval(const Source *s) {
        return MAX(s->pool->config->source_lease_usec / 3, 100 * USEC_PER_MSEC);
}

static int on_renew(sd_event_source *es, uint64_t usec, void *userdata) {
        Source *s = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (s->held.length == 0 && s->n_finishing == 0) {
                (void) sd_event_source_set_enabled(es, SD_EVENT_OFF);
                return 0;
        }
        (void) sd_event_source_set_time_relative(es, source_renew_interval(s));
        if (!s->link || sd_bus_is_open(s->link) <= 0)
                return 0;

        r = sd_bus_message_new_method_call(s->link, &m, NULL, SOURCE_OBJECT_PATH, SOURCE_INTERFACE, "Renew");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "s");
        for (GList *l = s->held.head; r >= 0 && l; l = l->next)
                r = sd_bus_message_append(m, "s", ((Task *) l->data)->source_token);
        for (GList *l = s->to_finish.head; r >= 0 && l; l = l->next)
                r = sd_bus_message_append(m, "s", ((FinishItem *) l->data)->token);
        for (GList *cl = s->calls.head; r >= 0 && cl; cl = cl->next)
                for (GList *l = ((SourceCall *) cl->data)->items.head; r >= 0 && l; l = l->next)
                        r = sd_bus_message_append(m, "s", ((FinishItem *) l->data)->token);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_set_expect_reply(m, false);
        if (r >= 0)
                r = sd_bus_send(s->link, m, NULL);
        if (r < 0)
                log_source(LOG_WARNING, s, "Could not renew leases: %s", strerror(-r));
        return 0;
}

static void source_arm_renew(Source *s) {
        int enabled = SD_EVENT_OFF;

        if (!s->renew_source) {
                if (sd_event_add_time_relative(source_manager(s)->event, &s->renew_source, CLOCK_MONOTONIC,
                                               source_renew_interval(s), 10 * USEC_PER_MSEC, on_renew, s) >= 0)
                        (void) sd_event_source_set_enabled(s->renew_source, SD_EVENT_ON);
                return;
        }
        (void) sd_event_source_get_enabled(s->renew_source, &enabled);
        if (enabled == SD_EVENT_OFF) {
                (void) sd_event_source_set_time_relative(s->renew_source, source_renew_interval(s));
                (void) sd_event_source_set_enabled(s->renew_source, SD_EVENT_ON);
        }
}

/* ---- what the helper sends ---- */

static int method_hello(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Source *s = userdata;
        const PoolConfig *c = s->pool->config;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        char replicas[16], lease[32], timeout[32];
        uint32_t version;
        int r;

        r = sd_bus_message_read(msg, SOURCE_HELLO_IN, &version);
        if (r < 0)
                return r;
        if (version != SOURCE_PROTOCOL_VERSION)
                return sd_bus_error_setf(error, SD_BUS_ERROR_NOT_SUPPORTED,
                                         "apiary-source speaks source protocol %u, apiaryd %u: install matching versions.",
                                         version, SOURCE_PROTOCOL_VERSION);
        snprintf(replicas, sizeof(replicas), "%u", c->source_replicas);
        snprintf(lease, sizeof(lease), "%" PRIu64, c->source_lease_usec);
        snprintf(timeout, sizeof(timeout), "%" PRIu64, (uint64_t) SOURCE_TIMEOUT_USEC);

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, SOURCE_HELLO_OUT, 7,
                                          SOURCE_SETTING_SERVERS, c->source,
                                          SOURCE_SETTING_HOST, s->pool->manager->config->host_id,
                                          SOURCE_SETTING_REPLICAS, replicas,
                                          SOURCE_SETTING_LEASE_USEC, lease,
                                          SOURCE_SETTING_TIMEOUT_USEC, timeout,
                                          SOURCE_SETTING_CREDENTIALS, strempty(c->source_credentials),
                                          SOURCE_SETTING_TLS_CA, strempty(c->source_tls_ca));
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        return r;
}

static int method_state(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Source *s = userdata;
        const char *state, *err;
        bool was_ready;
        int r;

        r = sd_bus_message_read(msg, SOURCE_STATE_IN, &state, &err);
        if (r < 0)
                return r;
        if (!streq(state, SOURCE_STATE_CONNECTING) && !streq(state, SOURCE_STATE_READY) &&
            !streq(state, SOURCE_STATE_UNAVAILABLE) && !streq(state, SOURCE_STATE_FAILED))
                return 0;
        was_ready = s->state && streq(s->state, SOURCE_STATE_READY);
        if (streq(state, SOURCE_STATE_READY) && !was_ready) {
                log_source(LOG_INFO, s, "Source ready: %s.", s->pool->config->source);
                s->restart_usec = 0;
        } else if (!streq(state, SOURCE_STATE_READY) && *err)
                log_source(was_ready ? LOG_WARNING : LOG_DEBUG, s, "Source %s: %s", state, err);
        source_set_state(s, state, err);
        /* A new connection: the pull starts anew, from what the pool can take. */
        s->want_sent_valid = false;
        source_schedule(s);
        return 0;
}

/* A pulled task's timeout: its submitter's "timeout" option (0: none), never past this host's
 * TaskTimeoutSec=, nor past what a timer can be armed for. Whoever can publish to the stream
 * could put anything there. */
static usec_t pulled_timeout(const Pool *p, uint64_t option) {
        usec_t bound = p->config->task_timeout_usec;

        if (option == 0 || option >= (UINT64_C(1) << 62))
                return USEC_INFINITY;
        return bound != USEC_INFINITY && option > bound ? bound : option;
}

static int method_tasks(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Source *s = userdata;
        Pool *p = s->pool;
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "(" SOURCE_TASK ")");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'r', SOURCE_TASK)) > 0) {
                const char *token, *id, *reply;
                uint64_t timeout;
                uint32_t deliveries;
                const void *payload;
                size_t size;
                Task *t;

                r = sd_bus_message_read(msg, "ssstu", &token, &id, &reply, &timeout, &deliveries);
                if (r >= 0)
                        r = sd_bus_message_read_array(msg, 'y', &payload, &size);
                if (r >= 0)
                        r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
                s->received++;
                s->n_pulled++;

                r = task_new_pulled(&t, p, msg, payload, size, pulled_timeout(p, timeout));
                if (r >= 0) {
                        t->source_token = strdup(token);
                        t->source_id = strdup(id);
                        t->source_reply = strdup(reply);
                        t->deliveries = deliveries;
                        if (!t->source_token || !t->source_id || !t->source_reply) {
                                g_hash_table_remove(source_manager(s)->tasks, &t->id);
                                task_free(t);
                                r = -ENOMEM;
                        }
                }
                if (r < 0) {
                        log_source(LOG_ERR, s, "Could not take task %s, it comes back after its lease: %s", id,
                                   strerror(-r));
                        continue;
                }
                t->source_link.data = t;
                g_queue_push_tail_link(&s->held, &t->source_link);
                /* Pulled while the pool stopped taking tasks: back at once, for another host. */
                if (s->stopping || !pool_is_active(p)) {
                        source_release(s, t);
                        continue;
                }
                pool_enqueue(p, t);
        }
        if (r < 0)
                return r;
        if (s->held.length > 0)
                source_arm_renew(s);
        pool_dispatch(p);
        source_schedule(s);
        return 0;
}

static int method_results(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Source *s = userdata;
        Manager *m = source_manager(s);
        size_t prefix = strlen(m->source_id_prefix);
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "(" SOURCE_RESULT ")");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'r', SOURCE_RESULT)) > 0) {
                const char *id;
                int ok;
                const void *data;
                size_t size;
                uint64_t n;
                Task *t = NULL;

                r = sd_bus_message_read(msg, "sb", &id, &ok);
                if (r >= 0)
                        r = sd_bus_message_read_array(msg, 'y', &data, &size);
                if (r >= 0)
                        r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;

                if (strncmp(id, m->source_id_prefix, prefix) == 0) {
                        n = g_ascii_strtoull(id + prefix, NULL, 10);
                        t = g_hash_table_lookup(m->tasks, &n);
                }
                if (!t || t->pool != s->pool || !IN_SET(t->state, TASK_PUBLISHING, TASK_STORED)) {
                        /* Ended already (the first result won), or submitted by an earlier run
                         * of apiaryd here, whose callers are gone with it. */
                        s->n_duplicates++;
                        log_source(LOG_DEBUG, s, "Dropped a result for %s: no task of ours waits for it.", id);
                        continue;
                }
                if (t->state == TASK_PUBLISHING)
                        /* The result came before the engine's word that it was stored. */
                        source_published(s, t->id, NULL, NULL);
                if (--s->n_awaiting == 0)
                        source_schedule(s);
                if (ok)
                        task_finish(t, true, data, size);
                else {
                        g_autofree char *reason = g_utf8_make_valid(data, (gssize) size);

                        task_fail(t, reason);
                }
        }
        return r < 0 ? r : 0;
}

static int method_stats(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Source *s = userdata;
        int r;

        r = sd_bus_message_read(msg, SOURCE_STATS_IN, &s->pending, &s->ack_pending, &s->redelivered, &s->waiting);
        return r < 0 ? r : 0;
}

static const sd_bus_vtable source_supervisor_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Hello", SOURCE_HELLO_IN, SOURCE_HELLO_OUT, method_hello, 0),
        SD_BUS_METHOD("State", SOURCE_STATE_IN, NULL, method_state, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_METHOD("Tasks", SOURCE_TASKS_IN, NULL, method_tasks, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_METHOD("Results", SOURCE_RESULTS_IN, NULL, method_results, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_METHOD("Stats", SOURCE_STATS_IN, NULL, method_stats, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

/* ---- the helper process ---- */

static int on_restart(sd_event_source *es, uint64_t usec, void *userdata) {
        Source *s = userdata;

        s->restart_source = sd_event_source_disable_unref(s->restart_source);
        if (!s->stopping)
                (void) source_spawn(s);
        return 0;
}

static void source_drop_link(Source *s) {
        source_fail_calls(s);
        s->link = sd_bus_flush_close_unref(s->link);
        s->want_sent_valid = false;
        s->received = s->received_sent = 0;
}

static int on_helper_exit(sd_event_source *es, const siginfo_t *si, void *userdata) {
        Source *s = userdata;
        g_autofree char *how = NULL;
        bool expected = s->helper_stopping;

        if (si->si_code == CLD_EXITED)
                how = g_strdup_printf("exited with status %i", si->si_status);
        else
                how = g_strdup_printf("was killed by signal %s", signal_to_string(si->si_status,
                                                                                (char[SIGNAL_NAME_MAX]) {}));
        s->child_source = sd_event_source_disable_unref(s->child_source);
        s->kill_source = sd_event_source_disable_unref(s->kill_source);
        s->pid = 0;
        s->helper_stopping = false;
        source_drop_link(s);

        if (s->stopping) {
                log_source(LOG_DEBUG, s, "apiary-source %s.", how);
                manager_pool_changed(s->pool->manager, s->pool);
                return 0;
        }
        if (!expected) {
                g_autofree char *error = NULL;

                s->restart_usec = s->restart_usec ? MIN(s->restart_usec * 2, (usec_t) SOURCE_RESTART_MAX_USEC)
                                                  : SOURCE_RESTART_MIN_USEC;
                error = g_strdup_printf("apiary-source %s; restarting it in %s", how,
                                        format_timespan((char[FORMAT_TIMESPAN_MAX]) {}, FORMAT_TIMESPAN_MAX,
                                                        s->restart_usec));
                log_source(LOG_ERR, s, "%s.", error);
                source_set_state(s, SOURCE_STATE_FAILED, error);
        }
        (void) sd_event_add_time_relative(source_manager(s)->event, &s->restart_source, CLOCK_MONOTONIC,
                                          expected ? 0 : s->restart_usec, USEC_PER_MSEC, on_restart, s);
        return 0;
}

static int source_spawn(Source *s) {
        Manager *m = source_manager(s);
        _cleanup_(closep) int fd_helper = -1, fd_supervisor = -1;
        g_autofree char *arg_pool = NULL, *description = NULL;
        char arg_fd[32], arg_supervisor[32], arg_log[48];
        char *argv[8];
        int sv[2], r;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return log_source(LOG_ERR, s, "Failed to make the link for apiary-source: %m"), -errno;
        fd_supervisor = sv[0];
        fd_helper = sv[1];

        arg_pool = g_strdup_printf("--pool=%s", s->pool->config->name);
        snprintf(arg_fd, sizeof(arg_fd), "--bus-fd=%i", WORKER_BUS_FD);
        snprintf(arg_supervisor, sizeof(arg_supervisor), "--supervisor-pid=%i", (int) getpid());
        snprintf(arg_log, sizeof(arg_log), "--log-level=%s", log_level_to_string(log_get_max_level()) ?: "info");
        argv[0] = (char *) "apiary-source";
        argv[1] = arg_pool;
        argv[2] = arg_fd;
        argv[3] = arg_supervisor;
        argv[4] = arg_log;
        argv[5] = NULL;

        r = spawn_with_link(m, m->source_path, argv, fd_helper, &s->pid);
        if (r < 0) {
                g_autofree char *error = g_strdup_printf("failed to spawn %s: %s", m->source_path, strerror(-r));

                log_source(LOG_ERR, s, "%s", error);
                source_set_state(s, SOURCE_STATE_FAILED, error);
                s->pid = 0;
                s->restart_usec = SOURCE_RESTART_MAX_USEC;
                return sd_event_add_time_relative(m->event, &s->restart_source, CLOCK_MONOTONIC, s->restart_usec,
                                                  USEC_PER_MSEC, on_restart, s);
        }
        r = sd_event_add_child(m->event, &s->child_source, s->pid, WEXITED, on_helper_exit, s);
        if (r < 0) {
                (void) kill(s->pid, SIGKILL);
                s->pid = 0;
                return log_source(LOG_ERR, s, "Failed to watch apiary-source: %s", strerror(-r)), r;
        }

        description = g_strdup_printf("source-%s", s->pool->config->name);
        r = link_server_new(&s->link, TAKE_FD(fd_supervisor), m->link_id, m->event, description);
        if (r >= 0)
                r = sd_bus_add_object_vtable(s->link, NULL, SOURCE_SUPERVISOR_OBJECT_PATH, SOURCE_SUPERVISOR_INTERFACE,
                                             source_supervisor_vtable, s);
        if (r < 0) {
                log_source(LOG_ERR, s, "Failed to set up the link to apiary-source, killing it: %s", strerror(-r));
                (void) kill(s->pid, SIGKILL);
                return 0;
        }
        if (!s->state || !streq(s->state, SOURCE_STATE_FAILED))
                source_set_state(s, SOURCE_STATE_CONNECTING, NULL);
        log_source(LOG_DEBUG, s, "Spawned apiary-source.");
        return 0;
}

void source_restart_helper(Source *s) {
        if (s->pid <= 0 || s->stopping)
                return;
        log_source(LOG_INFO, s, "Restarting apiary-source with the new settings.");
        s->helper_stopping = true;
        (void) kill(s->pid, SIGTERM);
}

static int on_stop_timeout(sd_event_source *es, uint64_t usec, void *userdata) {
        Source *s = userdata;

        log_source(LOG_WARNING, s, "apiary-source did not finish within %s, killing it: what it held comes back "
                   "after its lease.", format_timespan((char[FORMAT_TIMESPAN_MAX]) {}, FORMAT_TIMESPAN_MAX,
                                                       SOURCE_STOP_TIMEOUT_USEC));
        if (s->pid > 0)
                (void) kill(s->pid, SIGKILL);
        return 0;
}

void source_stop(Source *s, TaskRejection why, const char *reason) {
        Manager *m = source_manager(s);
        GHashTableIter it;
        gpointer value;
        GPtrArray *awaiting = g_ptr_array_new();

        if (s->stopping) {
                g_ptr_array_unref(awaiting);
                return;
        }
        s->stopping = true;
        s->restart_source = sd_event_source_disable_unref(s->restart_source);
        source_schedule(s);     /* Want(0) */

        /* Submitted here and still to end: stored, they run elsewhere, but their callers hear now. */
        g_hash_table_iter_init(&it, m->tasks);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                Task *t = value;

                if (t->pool == s->pool && IN_SET(t->state, TASK_PUBLISHING, TASK_STORED))
                        g_ptr_array_add(awaiting, t);
        }
        for (guint i = 0; i < awaiting->len; i++) {
                Task *t = awaiting->pdata[i];

                if (t->state == TASK_STORED)
                        s->n_awaiting--;
                task_reject(t, t->state == TASK_STORED ? why : TASK_REJECT_UNAVAILABLE, reason);
        }
        g_ptr_array_unref(awaiting);
        g_array_set_size(s->to_publish, 0);

        if (s->pid > 0)
                (void) sd_event_add_time_relative(m->event, &s->kill_source, CLOCK_MONOTONIC, SOURCE_STOP_TIMEOUT_USEC,
                                                  USEC_PER_MSEC, on_stop_timeout, s);
        source_check_stop(s);
}

void source_check_stop(Source *s) {
        if (!s->stopping || s->pid <= 0 || s->helper_stopping)
                return;
        if (!pool_is_idle(s->pool) || s->held.length > 0 || s->n_finishing > 0 || s->calls.length > 0)
                return;
        log_source(LOG_DEBUG, s, "Nothing left for the engine, stopping apiary-source.");
        s->helper_stopping = true;
        (void) kill(s->pid, SIGTERM);
}

int source_new(Source **ret, Pool *p) {
        Source *s;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->pool = p;
        s->to_publish = g_array_new(false, false, sizeof(uint64_t));
        s->state = strdup(SOURCE_STATE_CONNECTING);
        s->error = strdup("");
        r = sd_event_add_defer(p->manager->event, &s->defer_source, on_defer, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->defer_source, SD_EVENT_OFF);
        if (r >= 0)
                r = source_spawn(s);
        if (r < 0) {
                source_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

Source *source_free(Source *s) {
        GList *l;

        if (!s)
                return NULL;
        if (s->pid > 0) {
                /* apiaryd is going without a stop: what the helper held comes back after its lease. */
                (void) kill(s->pid, SIGKILL);
        }
        s->child_source = sd_event_source_disable_unref(s->child_source);
        while (s->calls.length > 0) {
                SourceCall *c = g_queue_peek_head(&s->calls);

                source_call_free(c);
        }
        s->link = sd_bus_flush_close_unref(s->link);
        while ((l = g_queue_pop_head_link(&s->to_finish)))
                finish_item_free(l->data);
        /* The tasks held are the manager's to free; they just leave our list. */
        while ((l = g_queue_pop_head_link(&s->held)))
                ((Task *) l->data)->source_link.data = NULL;
        g_array_unref(s->to_publish);
        sd_event_source_disable_unref(s->defer_source);
        sd_event_source_disable_unref(s->renew_source);
        sd_event_source_disable_unref(s->retry_source);
        sd_event_source_disable_unref(s->restart_source);
        sd_event_source_disable_unref(s->kill_source);
        free(s->state);
        free(s->error);
        free(s);
        return NULL;
}
