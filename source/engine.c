/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>

#include <glib.h>

#include "ipc/source-protocol.h"
#include "source/engine.h"
#include "util/log.h"
#include "util/macro.h"

/* A pull request waits this long for tasks before the engine ends it (status 408) and we ask
 * again: also how soon a pull lost with a failed engine node is noticed. */
#define PULL_EXPIRES_USEC (5 * USEC_PER_SEC)
#define PULL_LOST_USEC (PULL_EXPIRES_USEC + 2 * USEC_PER_SEC)
/* A pull, or a publish, that found no stream (between leaders) is tried again after this. */
#define PULL_HOLD_USEC (250 * USEC_PER_MSEC)
#define PUBLISH_RETRY_USEC (250 * USEC_PER_MSEC)
/* At most this many tasks or results are asked for in one pull. */
#define PULL_BATCH_MAX 256u
/* Results are pulled ahead, to be handed on as they come: this many at a time. */
#define RESULTS_WINDOW 256u
/* Retries of a connection or a stream setup that failed: the first after this, doubling. */
#define RETRY_MIN_USEC (250 * USEC_PER_MSEC)
#define RETRY_MAX_USEC (5 * USEC_PER_SEC)
/* The stream's counts are asked for at most this often, and only while something happens. */
#define STATS_INTERVAL_USEC USEC_PER_SEC
/* How long results wait for a submitter that does not come back. */
#define RESULTS_MAX_AGE_USEC (24 * 3600 * USEC_PER_SEC)
/* While apiaryd awaits results, the results stream is audited this often (engine_audit()), and
 * at most this many stranded results are read back per audit. */
#define AUDIT_INTERVAL_USEC (5 * USEC_PER_SEC)
#define AUDIT_RECOVER_MAX 64u

typedef enum EventType {
        EVENT_TASK,             /* a message on the task pull inbox */
        EVENT_RESULT,           /* ... on the results pull inbox */
        EVENT_REPLY,            /* a reply to one of our requests */
        EVENT_DISCONNECTED,
        EVENT_RECONNECTED,
} EventType;

/* What a libnats thread hands to the loop. */
typedef struct Event {
        struct Event *next;
        EventType type;
        natsMsg *msg;
} Event;

typedef enum RequestType {
        REQUEST_PUBLISH,        /* a task stored: fn */
        REQUEST_RESULT,         /* a result stored, then the ack below */
        REQUEST_ACK,            /* +ACK / +TERM / -NAK confirmed: fn */
        REQUEST_STATS,          /* consumer info */
        REQUEST_STREAM_CHECK,   /* a result had no stream: is it gone, or between leaders? */
        REQUEST_AUDIT_STREAM,   /* the results stream's info, for the audit */
        REQUEST_AUDIT_CONSUMER, /* ... then its consumer's */
        REQUEST_RECOVER,        /* a stranded result, read by its sequence */
        REQUEST_DELETE,         /* ... and deleted once handed on */
} RequestType;

typedef struct Request {
        uint64_t id;
        RequestType type;
        usec_t deadline;        /* CLOCK_MONOTONIC */
        bool done;
        engine_done_fn fn;
        void *userdata;
        char *token;            /* REQUEST_RESULT, _STREAM_CHECK: what to ack once stored */
        bool term;
        uint64_t seq;           /* REQUEST_RECOVER, _DELETE: the message's in the results stream */
        uint64_t first, last;   /* REQUEST_AUDIT_CONSUMER, _RECOVER, _DELETE: the range looked at */
        bool duplicate;         /* REQUEST_ACK: the result was stored before, by another run */
        char *reply;            /* REQUEST_RESULT: the subject it went to */
        natsMsg *msg;           /* REQUEST_PUBLISH: kept to be sent again while no stream answers */
} Request;

typedef struct Puller {
        Engine *engine;
        const char *what;       /* for messages */
        char *request_subject;  /* $JS.API.CONSUMER.MSG.NEXT.STREAM.CONSUMER */
        char *inbox;            /* where its messages come */
        natsSubscription *sub;
        uint64_t outstanding;   /* asked for in live pull requests, not yet delivered */
        /* Fires PULL_LOST_USEC after the last pull request: every request ends within
         * PULL_EXPIRES_USEC, with a 408 if nothing else, so what is still outstanding then was
         * lost with an engine node (a leader that died holding it). */
        sd_event_source *lost_source;
        bool hold;              /* a pull just failed: the next one waits for lost_source */
} Puller;

struct Engine {
        sd_event *event;
        const EngineOps *ops;
        void *userdata;

        char *servers_text;
        char **servers;         /* nats://HOST:PORT each */
        char *pool, *host, *credentials, *tls_ca;
        unsigned replicas;
        usec_t lease_usec, timeout_usec;

        char *task_stream, *task_subject;
        char *result_stream, *result_subject;

        natsOptions *opts;
        natsConnection *nc;
        jsCtx *js;
        char *inbox;            /* a fresh _INBOX subject: our requests' replies come to INBOX.q.ID */
        natsSubscription *reply_sub;
        Puller tasks, results;
        bool ready;             /* connected, streams and consumers in place */
        bool connected;
        usec_t retry_usec;
        sd_event_source *retry_source;

        /* apiaryd's side of the task pull: what it can take. */
        unsigned want;
        uint64_t received;      /* by apiaryd, as it last said */
        uint64_t sent;          /* to apiaryd */

        uint64_t next_request;
        GHashTable *requests;   /* id → Request */
        GQueue deadlines;       /* of Request, in order of deadline (they all wait as long) */
        sd_event_source *deadline_source;

        GQueue publish_retries; /* of Request, to be sent again */
        sd_event_source *publish_retry_source;

        bool activity;          /* since the stats were last asked for */
        sd_event_source *stats_source;

        /* The audit of the results stream, while apiaryd awaits results (engine_audit()). */
        bool awaiting;
        bool auditing;                          /* an audit's request is out */
        sd_event_source *audit_source;
        uint64_t audit_stranded;                /* the first sequence found stranded last time */
        uint64_t audit_handed;                  /* the last sequence read back and handed on */

        /* From libnats' threads. */
        pthread_mutex_t lock;
        Event *head, *tail;
        int efd;
        bool closed;            /* the connection's closed callback came */
        pthread_cond_t closed_cond;
        sd_event_source *efd_source;
};

/* ---- from libnats' threads ---- */

static void engine_post(Engine *e, EventType type, natsMsg *msg) {
        Event *ev = malloc(sizeof(*ev));
        bool was_empty;

        if (!ev) {
                /* Nothing to be done on a thread that is not ours: the engine redelivers what we drop. */
                natsMsg_Destroy(msg);
                return;
        }
        *ev = (Event) { .type = type, .msg = msg };

        pthread_mutex_lock(&e->lock);
        was_empty = !e->head;
        if (e->tail)
                e->tail->next = ev;
        else
                e->head = ev;
        e->tail = ev;
        pthread_mutex_unlock(&e->lock);

        if (was_empty)
                (void) eventfd_write(e->efd, 1);
}

static void on_task_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
        engine_post(closure, EVENT_TASK, msg);
}

static void on_result_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
        engine_post(closure, EVENT_RESULT, msg);
}

static void on_reply_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
        engine_post(closure, EVENT_REPLY, msg);
}

static void on_disconnected(natsConnection *nc, void *closure) {
        engine_post(closure, EVENT_DISCONNECTED, NULL);
}

static void on_reconnected(natsConnection *nc, void *closure) {
        engine_post(closure, EVENT_RECONNECTED, NULL);
}

/* The last callback libnats makes for a connection: after it, none of its threads touches us. */
static void on_closed(natsConnection *nc, void *closure) {
        Engine *e = closure;

        pthread_mutex_lock(&e->lock);
        e->closed = true;
        pthread_cond_signal(&e->closed_cond);
        pthread_mutex_unlock(&e->lock);
}

/* ---- small helpers ---- */

static const char *nats_error(natsStatus s) {
        const char *last = nats_GetLastError(NULL);

        return last && *last ? last : natsStatus_GetText(s);
}

/* The value of "KEY": NUMBER in a JSON text, or 0. Enough for the engine's fixed answers. */
static uint64_t json_u64(const char *json, int len, const char *key) {
        g_autofree char *text = g_strndup(json, len);
        g_autofree char *pattern = g_strdup_printf("\"%s\":", key);
        const char *p = strstr(text, pattern);

        if (!p)
                return 0;
        p += strlen(pattern);
        while (*p == ' ')
                p++;
        return g_ascii_strtoull(p, NULL, 10);
}

/* The value of "KEY": NUMBER after the first "SECTION": in a JSON text, or 0. */
static uint64_t json_u64_in(const char *json, int len, const char *section, const char *key) {
        g_autofree char *text = g_strndup(json, len);
        g_autofree char *pattern = g_strdup_printf("\"%s\":", section);
        const char *p = strstr(text, pattern);

        return p ? json_u64(p, strlen(p), key) : 0;
}

/* The value of "KEY":"TEXT" in a JSON text, or NULL: only for texts without escapes (base64). */
static char *json_plain_string(const char *json, int len, const char *key) {
        g_autofree char *text = g_strndup(json, len);
        g_autofree char *pattern = g_strdup_printf("\"%s\":\"", key);
        const char *p = strstr(text, pattern), *end;

        if (!p)
                return NULL;
        p += strlen(pattern);
        end = strchr(p, '"');
        return end ? g_strndup(p, end - p) : NULL;
}

/* The value of KEY in a NATS header block ("NATS/1.0\r\nKey: Value\r\n..."), or NULL. */
static char *headers_get(const char *block, size_t size, const char *key) {
        g_autofree char *text = g_strndup(block, size);
        g_auto(GStrv) lines = g_strsplit(text, "\r\n", -1);
        size_t n = strlen(key);

        for (size_t i = 1; lines[0] && lines[i]; i++)
                if (g_ascii_strncasecmp(lines[i], key, n) == 0 && lines[i][n] == ':')
                        return g_strdup(g_strstrip(lines[i] + n + 1));
        return NULL;
}

/* An engine's error answer ({"error":{"code":...,"description":"..."}}), as text, or NULL. */
static char *json_error(const char *json, int len) {
        g_autofree char *text = g_strndup(json, len);
        const char *p, *end;

        if (!strstr(text, "\"error\""))
                return NULL;
        p = strstr(text, "\"description\":");
        if (!p)
                return g_strdup(text);
        p = strchr(p + strlen("\"description\":"), '"');
        if (!p)
                return g_strdup(text);
        p++;
        end = strchr(p, '"');
        return end ? g_strndup(p, end - p) : g_strdup(p);
}

/* The Status header of a status message (no payload, no reply subject), or NULL. */
static const char *msg_status(natsMsg *msg) {
        const char *v = NULL;

        if (natsMsgHeader_Get(msg, "Status", &v) != NATS_OK)
                return NULL;
        return v;
}

static const char *msg_header(natsMsg *msg, const char *key) {
        const char *v = NULL;

        if (natsMsgHeader_Get(msg, key, &v) != NATS_OK)
                return NULL;
        return v;
}

unsigned engine_token_deliveries(const char *token) {
        g_auto(GStrv) parts = NULL;
        guint n;

        /* $JS.ACK.STREAM.CONSUMER.DELIVERED.SSEQ.CSEQ.TS.PENDING, or with a domain and an
         * account hash after ACK (and a random token at the end). */
        if (!token || !g_str_has_prefix(token, "$JS.ACK."))
                return 0;
        parts = g_strsplit(token, ".", -1);
        n = g_strv_length(parts);
        if (n == 9)
                return (unsigned) g_ascii_strtoull(parts[4], NULL, 10);
        if (n >= 11)
                return (unsigned) g_ascii_strtoull(parts[6], NULL, 10);
        return 0;
}

/* ---- requests: a write and its confirmation ---- */

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata);

static void request_free(Request *q) {
        if (!q)
                return;
        natsMsg_Destroy(q->msg);
        free(q->token);
        free(q->reply);
        free(q);
}

static void engine_arm_deadline(Engine *e) {
        Request *head;

        while ((head = g_queue_peek_head(&e->deadlines)) && head->done) {
                g_queue_pop_head(&e->deadlines);
                request_free(head);
        }
        if (!head) {
                (void) sd_event_source_set_enabled(e->deadline_source, SD_EVENT_OFF);
                return;
        }
        if (!e->deadline_source) {
                if (sd_event_add_time(e->event, &e->deadline_source, CLOCK_MONOTONIC, head->deadline, 0,
                                      on_deadline, e) < 0)
                        log_oom();
                return;
        }
        (void) sd_event_source_set_time(e->deadline_source, head->deadline);
        (void) sd_event_source_set_enabled(e->deadline_source, SD_EVENT_ONESHOT);
}

static Request *request_new(Engine *e, RequestType type, engine_done_fn fn, void *userdata) {
        Request *q = malloc(sizeof(*q));

        if (!q)
                return NULL;
        *q = (Request) {
                .id = ++e->next_request,
                .type = type,
                .deadline = now_usec(CLOCK_MONOTONIC) + e->timeout_usec,
                .fn = fn,
                .userdata = userdata,
        };
        g_hash_table_insert(e->requests, &q->id, q);
        g_queue_push_tail(&e->deadlines, q);
        if (g_queue_get_length(&e->deadlines) == 1)
                engine_arm_deadline(e);
        return q;
}

/* Ends Q: it leaves the table now and the deadline queue when it reaches the head. */
static void request_end(Engine *e, Request *q, const char *error_name, const char *message) {
        if (q->type == REQUEST_PUBLISH)
                (void) g_queue_remove(&e->publish_retries, q);  /* it is freed once done */
        g_hash_table_remove(e->requests, &q->id);
        q->done = true;
        if (q->fn)
                q->fn(error_name, message, q->userdata);
        q->fn = NULL;
}

static char *request_reply_subject(Engine *e, const Request *q) {
        return g_strdup_printf("%s.q.%" PRIu64, e->inbox, q->id);
}

/* Sends MSG (taken) with Q's reply subject; on failure ends Q at once. */
static void request_send(Engine *e, Request *q, natsMsg *msg) {
        natsStatus s = msg ? natsConnection_PublishMsg(e->nc, msg) : NATS_NO_MEMORY;

        if (q->type == REQUEST_PUBLISH && s == NATS_OK)
                q->msg = msg;   /* for a second try, should the stream have no leader now */
        else
                natsMsg_Destroy(msg);
        if (s == NATS_MAX_PAYLOAD) {
                request_end(e, q, SOURCE_ERROR_TOO_LARGE, "larger than the engine's max_payload");
                return;
        }
        if (s != NATS_OK) {
                g_autofree char *m = g_strdup_printf("the engine cannot be reached: %s", nats_error(s));

                request_end(e, q, SOURCE_ERROR_UNAVAILABLE, m);
        }
}

static natsMsg *request_msg(Engine *e, Request *q, const char *subject, const void *data, size_t size) {
        g_autofree char *reply = request_reply_subject(e, q);
        natsMsg *msg = NULL;

        if (!e->nc || size > INT_MAX || natsMsg_Create(&msg, subject, reply, data, (int) size) != NATS_OK)
                return NULL;
        return msg;
}

static void engine_mark_activity(Engine *e);

static void engine_ack(Engine *e, const char *token, const char *verb, bool duplicate, engine_done_fn fn,
                       void *userdata) {
        Request *q = request_new(e, REQUEST_ACK, fn, userdata);

        if (!q) {
                if (fn)
                        fn(SOURCE_ERROR_UNAVAILABLE, "out of memory", userdata);
                return;
        }
        q->duplicate = duplicate;
        if (!e->nc) {
                request_end(e, q, SOURCE_ERROR_UNAVAILABLE, "not connected to the engine");
                return;
        }
        request_send(e, q, request_msg(e, q, token, verb, strlen(verb)));
        engine_mark_activity(e);
}

void engine_publish(Engine *e, const char *id, uint64_t timeout_usec, const void *payload, size_t size,
                    engine_done_fn fn, void *userdata) {
        Request *q = request_new(e, REQUEST_PUBLISH, fn, userdata);
        natsMsg *msg;

        if (!q) {
                fn(SOURCE_ERROR_UNAVAILABLE, "out of memory", userdata);
                return;
        }
        if (!e->ready) {
                request_end(e, q, SOURCE_ERROR_UNAVAILABLE, "the engine is not ready");
                return;
        }
        msg = request_msg(e, q, e->task_subject, payload, size);
        if (msg) {
                char t[32];

                (void) natsMsgHeader_Set(msg, SOURCE_HEADER_ID, id);
                (void) natsMsgHeader_Set(msg, SOURCE_HEADER_REPLY, e->result_subject);
                if (timeout_usec > 0) {
                        snprintf(t, sizeof(t), "%" PRIu64, timeout_usec);
                        (void) natsMsgHeader_Set(msg, SOURCE_HEADER_TIMEOUT, t);
                }
        }
        request_send(e, q, msg);
        engine_mark_activity(e);
}

void engine_finish(Engine *e, const char *token, const char *reply, const char *id, bool ok, bool term,
                   const void *data, size_t size, engine_done_fn fn, void *userdata) {
        Request *q = request_new(e, REQUEST_RESULT, fn, userdata);
        g_autofree char *too_large = NULL;
        natsMsg *msg;

        if (!q) {
                fn(SOURCE_ERROR_UNAVAILABLE, "out of memory", userdata);
                return;
        }
        q->token = strdup(token);
        q->reply = strdup(reply);
        q->term = term;
        if (!q->token || !q->reply || !e->nc) {
                request_end(e, q, SOURCE_ERROR_UNAVAILABLE, "not connected to the engine");
                return;
        }
        /* A result the engine cannot carry ends the task as failed, with that as its reason. */
        if ((int64_t) size + 1024 > natsConnection_GetMaxPayload(e->nc)) {
                too_large = g_strdup_printf("its result of %zu bytes is larger than the engine carries "
                                            "(max_payload %" PRId64 " bytes)",
                                            size, natsConnection_GetMaxPayload(e->nc));
                ok = false;
                data = too_large;
                size = strlen(too_large);
        }
        msg = request_msg(e, q, reply, data, size);
        if (msg) {
                (void) natsMsgHeader_Set(msg, SOURCE_HEADER_ID, id);
                (void) natsMsgHeader_Set(msg, SOURCE_HEADER_OK, ok ? "1" : "0");
        }
        request_send(e, q, msg);
        engine_mark_activity(e);
}

void engine_release(Engine *e, const char *token, engine_done_fn fn, void *userdata) {
        engine_ack(e, token, "-NAK", false, fn, userdata);
}

void engine_renew(Engine *e, const char *token) {
        if (e->nc)
                (void) natsConnection_PublishString(e->nc, token, "+WPI");
}

/* A pub ack: {"stream":"S","seq":N} (with "duplicate":true for a repeated id), an error, or a
 * 503 status: no stream takes the subject. NULL if it was stored; else the error's text. */
static char *publish_outcome(natsMsg *msg) {
        const char *status = msg_status(msg);

        if (status && streq(status, "503"))
                return strdup("no stream takes its subject");
        if (status)
                return g_strdup_printf("status %s", status);
        return json_error(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
}

/* The result of Q found no stream for its subject: asks the engine whether that stream exists.
 * Q ends; the check carries on with its caller and token. */
static void engine_check_stream(Engine *e, Request *q) {
        const char *reply = q->reply ? q->reply : "";
        g_auto(GStrv) parts = g_strsplit(reply, ".", -1);
        g_autofree char *subject = NULL;
        Request *check;

        check = request_new(e, REQUEST_STREAM_CHECK, q->fn, q->userdata);
        q->fn = NULL;
        request_end(e, q, NULL, NULL);
        if (!check)
                return;
        check->token = TAKE_PTR(q->token);
        check->term = q->term;
        /* apiary.POOL.r.HOST → APIARY_POOL_R_HOST */
        if (g_strv_length(parts) != 4) {
                request_end(e, check, SOURCE_ERROR_UNAVAILABLE, "no stream takes the result's subject");
                return;
        }
        subject = g_strdup_printf("$JS.API.STREAM.INFO.APIARY_%s_R_%s", parts[1], parts[3]);
        request_send(e, check, request_msg(e, check, subject, NULL, 0));
}

static int on_publish_retry(sd_event_source *es, uint64_t usec, void *userdata) {
        Engine *e = userdata;
        Request *q;

        while ((q = g_queue_pop_head(&e->publish_retries))) {
                if (natsConnection_PublishMsg(e->nc, q->msg) != NATS_OK)
                        request_end(e, q, SOURCE_ERROR_UNAVAILABLE, "the engine cannot be reached");
        }
        return 0;
}

/* Sends Q's message again in a while. */
static void engine_retry_publish(Engine *e, Request *q) {
        g_queue_push_tail(&e->publish_retries, q);
        if (!e->publish_retry_source) {
                if (sd_event_add_time_relative(e->event, &e->publish_retry_source, CLOCK_MONOTONIC, PUBLISH_RETRY_USEC,
                                               10 * USEC_PER_MSEC, on_publish_retry, e) < 0)
                        log_oom();
                return;
        }
        (void) sd_event_source_set_time_relative(e->publish_retry_source, PUBLISH_RETRY_USEC);
        (void) sd_event_source_set_enabled(e->publish_retry_source, SD_EVENT_ONESHOT);
}

/* ---- the audit of the results stream ----
 *
 * A result the results stream holds but its consumer will never deliver. The engine has been
 * seen to lose a consumer's record of a message across leader changes (nats-server 2.9: the
 * stream kept the message, the consumer counted it delivered and acked), and then nothing else
 * would ever hand that result on: its task would wait for good. So while apiaryd waits for
 * results, the stream's first message is compared with its consumer's state. It is stranded if
 * the consumer says it acked it (at or below its ack floor: in a work-queue stream an acked
 * message is removed), or if the consumer has delivered before and now sees nothing pending and
 * nothing awaiting an ack while the stream holds messages (then all of them are). Found
 * so by two audits AUDIT_INTERVAL_USEC apart (not an ack whose removal is on its way), the
 * stranded messages are read by sequence, one at a time, handed on like any result (apiaryd
 * drops one it has had), and deleted. A consumer answer without its state (around a leader
 * change) says 0 for each: nothing is stranded then. */

static int on_audit_timer(sd_event_source *es, uint64_t usec, void *userdata);

static void engine_arm_audit(Engine *e) {
        int enabled = SD_EVENT_OFF;

        if (!e->audit_source) {
                if (sd_event_add_time_relative(e->event, &e->audit_source, CLOCK_MONOTONIC, AUDIT_INTERVAL_USEC,
                                               USEC_PER_SEC / 2, on_audit_timer, e) < 0)
                        log_oom();
                return;
        }
        (void) sd_event_source_get_enabled(e->audit_source, &enabled);
        if (enabled == SD_EVENT_OFF) {
                (void) sd_event_source_set_time_relative(e->audit_source, AUDIT_INTERVAL_USEC);
                (void) sd_event_source_set_enabled(e->audit_source, SD_EVENT_ONESHOT);
        }
}

/* Every request of an audit ends here, answered or not: the next audit may start. */
static void on_audit_request_end(const char *error_name, const char *message, void *userdata) {
        Engine *e = userdata;

        e->auditing = false;
}

/* Asks SUBJECT (with {"seq":SEQ} if SEQ) for the audit; FIRST and LAST go with the request. */
static void engine_audit_ask(Engine *e, RequestType type, const char *subject, uint64_t seq, uint64_t first,
                             uint64_t last) {
        Request *q = request_new(e, type, on_audit_request_end, e);
        g_autofree char *body = NULL;

        if (!q)
                return;
        e->auditing = true;
        q->seq = seq;
        q->first = first;
        q->last = last;
        if (type == REQUEST_DELETE)
                body = g_strdup_printf("{\"seq\":%" PRIu64 ",\"no_erase\":true}", seq);
        else if (seq > 0)
                body = g_strdup_printf("{\"seq\":%" PRIu64 "}", seq);
        request_send(e, q, request_msg(e, q, subject, body, body ? strlen(body) : 0));
}

static void engine_audit_get(Engine *e, uint64_t seq, uint64_t last) {
        g_autofree char *subject = g_strdup_printf("$JS.API.STREAM.MSG.GET.%s", e->result_stream);

        engine_audit_ask(e, REQUEST_RECOVER, subject, seq, seq, last);
}

static int on_audit_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        Engine *e = userdata;
        g_autofree char *subject = NULL;

        if (!e->awaiting) {
                e->audit_stranded = 0;
                return 0;
        }
        engine_arm_audit(e);
        if (!e->ready || !e->connected || e->auditing)
                return 0;
        subject = g_strdup_printf("$JS.API.STREAM.INFO.%s", e->result_stream);
        engine_audit_ask(e, REQUEST_AUDIT_STREAM, subject, 0, 0, 0);
        return 0;
}

static void engine_handle_audit_stream(Engine *e, natsMsg *msg) {
        const char *d = natsMsg_GetData(msg);
        int n = natsMsg_GetDataLength(msg);
        g_autofree char *error = json_error(d, n), *subject = NULL;
        uint64_t first, last;

        if (msg_status(msg) || error || !strstr(strempty(d), "\"state\":")) {
                log_debug("Results stream %s: no info (%s).", e->result_stream, strempty(error));
                return;
        }
        if (json_u64_in(d, n, "state", "messages") == 0) {
                e->audit_stranded = 0;
                return;
        }
        first = json_u64_in(d, n, "state", "first_seq");
        last = json_u64_in(d, n, "state", "last_seq");
        if (first == 0 || last < first)
                return;
        subject = g_strdup_printf("$JS.API.CONSUMER.INFO.%s.submitter", e->result_stream);
        engine_audit_ask(e, REQUEST_AUDIT_CONSUMER, subject, 0, first, last);
}

static void engine_handle_audit_consumer(Engine *e, natsMsg *msg, uint64_t first, uint64_t last) {
        const char *d = natsMsg_GetData(msg);
        int n = natsMsg_GetDataLength(msg);
        g_autofree char *error = json_error(d, n);
        uint64_t acked, delivered, upto = 0;

        if (msg_status(msg) || error || !strstr(strempty(d), "\"ack_floor\":"))
                return;
        acked = json_u64_in(d, n, "ack_floor", "stream_seq");
        delivered = json_u64_in(d, n, "delivered", "stream_seq");
        if (acked >= first)
                upto = acked;   /* acked, says the consumer, and still there */
        else if (delivered > 0 && json_u64(d, n, "num_pending") == 0 && json_u64(d, n, "num_ack_pending") == 0)
                /* A consumer with a state (it delivered something) that sees nothing to deliver
                 * and nothing unacked, while the stream holds messages: all of them. */
                upto = last;
        if (upto == 0) {
                e->audit_stranded = 0;
                return;
        }
        if (e->audit_stranded != first) {
                /* Perhaps between an ack and the message's removal: looked at again next time. */
                e->audit_stranded = first;
                return;
        }
        e->audit_stranded = 0;
        last = MIN(MIN(last, upto), first + AUDIT_RECOVER_MAX - 1);
        log_notice("Results stream %s holds results its consumer will not deliver (sequence %" PRIu64 " to %" PRIu64
                   "): reading them back.", e->result_stream, first, last);
        engine_audit_get(e, first, last);
}

/* {"message":{"subject":"...","seq":N,"hdrs":"BASE64","data":"BASE64","time":"..."}} (hdrs and
 * data left out when empty), or an error (404: no message there, removed meanwhile). Then the
 * next sequence, up to LAST. */
static void engine_handle_recover(Engine *e, natsMsg *msg, uint64_t seq, uint64_t last) {
        const char *d = natsMsg_GetData(msg);
        int n = natsMsg_GetDataLength(msg);
        g_autofree char *error = json_error(d, n), *hdrs64 = NULL, *data64 = NULL, *id = NULL, *ok = NULL;
        g_autofree char *subject = NULL;
        g_autofree guchar *hdrs = NULL, *data = NULL;
        gsize hdrs_size = 0, data_size = 0;

        if (msg_status(msg) || error) {
                log_debug("Results stream %s, sequence %" PRIu64 ": %s", e->result_stream, seq,
                          strempty(error ? error : msg_status(msg)));
                goto next;
        }
        hdrs64 = json_plain_string(d, n, "hdrs");
        data64 = json_plain_string(d, n, "data");
        if (hdrs64)
                hdrs = g_base64_decode(hdrs64, &hdrs_size);
        if (data64)
                data = g_base64_decode(data64, &data_size);
        if (hdrs) {
                id = headers_get((const char *) hdrs, hdrs_size, SOURCE_HEADER_ID);
                ok = headers_get((const char *) hdrs, hdrs_size, SOURCE_HEADER_OK);
        }
        if (id && seq > e->audit_handed) {
                log_notice("Result of task %s read back from stream %s (sequence %" PRIu64 ").", id,
                           e->result_stream, seq);
                e->ops->result(e->userdata, id, ok && streq(ok, "1"), data ? data : (guchar *) "", data_size);
                e->audit_handed = seq;
        }
        /* Handed on (now, or by an audit whose delete failed; or not one of ours): it must not
         * be read back again. */
        subject = g_strdup_printf("$JS.API.STREAM.MSG.DELETE.%s", e->result_stream);
        engine_audit_ask(e, REQUEST_DELETE, subject, seq, seq, last);
        return;
next:
        if (seq < last)
                engine_audit_get(e, seq + 1, last);
}

/* ---- replies ---- */

static void engine_handle_stats(Engine *e, natsMsg *msg) {
        const char *d = natsMsg_GetData(msg);
        int n = natsMsg_GetDataLength(msg);
        g_autofree char *error = json_error(d, n);

        if (error) {
                log_debug("Stream counts not available: %s", error);
                return;
        }
        e->ops->stats(e->userdata, json_u64(d, n, "num_pending"), json_u64(d, n, "num_ack_pending"),
                      json_u64(d, n, "num_redelivered"), json_u64(d, n, "num_waiting"));
}

static void engine_handle_reply(Engine *e, natsMsg *msg) {
        const char *subject = natsMsg_GetSubject(msg), *dot;
        g_autofree char *error = NULL;
        uint64_t id;
        Request *q;

        dot = strrchr(subject, '.');
        if (!dot)
                return;
        id = g_ascii_strtoull(dot + 1, NULL, 10);
        q = g_hash_table_lookup(e->requests, &id);
        if (!q)
                return;         /* late: it timed out */

        switch (q->type) {
        case REQUEST_PUBLISH: {
                const char *status = msg_status(msg);

                /* No stream takes the subject now: between two leaders, most likely. The same
                 * message again (the same id: stored once) until the deadline says no. */
                if (status && streq(status, "503") && q->msg &&
                    now_usec(CLOCK_MONOTONIC) + PUBLISH_RETRY_USEC < q->deadline) {
                        engine_retry_publish(e, q);
                        break;
                }
                error = publish_outcome(msg);
                request_end(e, q, error ? SOURCE_ERROR_UNAVAILABLE : NULL, error);
                break;
        }
        case REQUEST_RESULT: {
                const char *status = msg_status(msg);

                error = publish_outcome(msg);
                if (!error) {
                        /* Stored, or stored before (a late run's result: the first one won).
                         * Either way the task is done with: acked. */
                        bool duplicate = strstr(strempty(natsMsg_GetData(msg)), "\"duplicate\"");
                        engine_done_fn fn = q->fn;
                        void *userdata = q->userdata;
                        g_autofree char *token = TAKE_PTR(q->token);

                        q->fn = NULL;
                        request_end(e, q, NULL, NULL);
                        engine_ack(e, token, q->term ? "+TERM" : "+ACK", duplicate, fn, userdata);
                } else if (status && streq(status, "503"))
                        /* No stream takes the subject: its submitter's stream was deleted, or the
                         * engine is between leaders. Asked before the result is given up. */
                        engine_check_stream(e, q);
                else
                        /* Not stored: the task is not acked, and comes back after its lease. */
                        request_end(e, q, SOURCE_ERROR_UNAVAILABLE, error);
                break;
        }
        case REQUEST_STREAM_CHECK: {
                g_autofree char *answer = json_error(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
                engine_done_fn fn = q->fn;
                void *userdata = q->userdata;
                g_autofree char *token = TAKE_PTR(q->token);

                if (!answer || !strstr(strempty(natsMsg_GetData(msg)), "\"code\":404")) {
                        request_end(e, q, SOURCE_ERROR_UNAVAILABLE, "no stream takes the result's subject now");
                        break;
                }
                /* Gone for good: nobody waits for the result. Acked, so that it does not run
                 * again and again. */
                log_notice("Result dropped: its submitter's result stream is gone (%s).", answer);
                q->fn = NULL;
                request_end(e, q, NULL, NULL);
                engine_ack(e, token, q->term ? "+TERM" : "+ACK", false, fn, userdata);
                break;
        }
        case REQUEST_ACK:
                request_end(e, q, NULL, q->duplicate ? "duplicate" : NULL);
                break;
        case REQUEST_STATS:
                engine_handle_stats(e, msg);
                request_end(e, q, NULL, NULL);
                break;
        /* The audit's: each ends its request first (the audit is idle), then may ask the next. */
        case REQUEST_AUDIT_STREAM:
                request_end(e, q, NULL, NULL);
                engine_handle_audit_stream(e, msg);
                break;
        case REQUEST_AUDIT_CONSUMER:
                request_end(e, q, NULL, NULL);
                engine_handle_audit_consumer(e, msg, q->first, q->last);
                break;
        case REQUEST_RECOVER:
                request_end(e, q, NULL, NULL);
                engine_handle_recover(e, msg, q->seq, q->last);
                break;
        case REQUEST_DELETE:
                error = json_error(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
                if (error)
                        log_debug("Results stream %s, sequence %" PRIu64 " not deleted: %s", e->result_stream,
                                  q->seq, error);
                request_end(e, q, NULL, NULL);
                if (q->seq < q->last)
                        engine_audit_get(e, q->seq + 1, q->last);
                break;
        }
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        Engine *e = userdata;
        usec_t now = now_usec(CLOCK_MONOTONIC);
        Request *q;

        while ((q = g_queue_peek_head(&e->deadlines)) && (q->done || q->deadline <= now)) {
                g_queue_pop_head(&e->deadlines);
                if (!q->done) {
                        char buf[FORMAT_TIMESPAN_MAX];
                        g_autofree char *m = g_strdup_printf("the engine did not confirm it within %s",
                                                             format_timespan(buf, sizeof(buf), e->timeout_usec));

                        request_end(e, q, SOURCE_ERROR_UNAVAILABLE, m);
                }
                request_free(q);
        }
        engine_arm_deadline(e);
        return 0;
}

/* ---- pulls ---- */

static void engine_pull(Engine *e);

static int on_pull_lost(sd_event_source *es, uint64_t usec, void *userdata);

/* Moved on with every request: fires only if none came for PULL_LOST_USEC. */
static void puller_watch(Puller *p) {
        if (!p->lost_source) {
                if (sd_event_add_time_relative(p->engine->event, &p->lost_source, CLOCK_MONOTONIC, PULL_LOST_USEC,
                                               USEC_PER_SEC, on_pull_lost, p) < 0)
                        log_oom();
                return;
        }
        (void) sd_event_source_set_time_relative(p->lost_source, PULL_LOST_USEC);
        (void) sd_event_source_set_enabled(p->lost_source, SD_EVENT_ONESHOT);
}

static int on_pull_lost(sd_event_source *es, uint64_t usec, void *userdata) {
        Puller *p = userdata;

        if (p->hold) {
                p->hold = false;
                engine_pull(p->engine);
                /* The hold used this timer: if nothing was asked just now (what is outstanding
                 * still covers the window), it watches that again, or a pull lost with the old
                 * leader would stop this puller for good. */
                if (p->outstanding > 0 && !p->hold)
                        puller_watch(p);
                return 0;
        }
        if (p->outstanding > 0) {
                log_debug("Pull of %s: %" PRIu64 " asked for and never answered, asking again.", p->what,
                          p->outstanding);
                p->outstanding = 0;
                engine_pull(p->engine);
        }
        return 0;
}

static void puller_ask(Engine *e, Puller *p, uint64_t n) {
        char body[96];

        if (n == 0 || !e->ready || p->hold)
                return;
        n = MIN(n, (uint64_t) PULL_BATCH_MAX);
        snprintf(body, sizeof(body), "{\"batch\":%" PRIu64 ",\"expires\":%" PRIu64 "}", n,
                 (uint64_t) PULL_EXPIRES_USEC * 1000);
        if (natsConnection_PublishRequestString(e->nc, p->request_subject, p->inbox, body) != NATS_OK) {
                log_debug("Pull of %s failed: %s", p->what, nats_GetLastError(NULL));
                return;
        }
        p->outstanding += n;
        puller_watch(p);
}

static void engine_pull(Engine *e) {
        uint64_t in_flight = e->sent - MIN(e->received, e->sent);
        uint64_t covered = in_flight + e->tasks.outstanding;

        if (!e->ready)
                return;
        if (e->want > covered)
                puller_ask(e, &e->tasks, e->want - covered);
        if (e->results.outstanding < RESULTS_WINDOW / 2)
                puller_ask(e, &e->results, RESULTS_WINDOW - e->results.outstanding);
}

void engine_want(Engine *e, unsigned want, uint64_t received, bool awaiting) {
        e->want = want;
        e->received = received;
        e->awaiting = awaiting;
        if (awaiting)
                engine_arm_audit(e);
        engine_pull(e);
}

/* A status message on a pull inbox: the request it answers ended with its remainder. */
static void puller_status(Puller *p, natsMsg *msg, const char *status) {
        const char *pending = msg_header(msg, "Nats-Pending-Messages");
        const char *description = msg_header(msg, "Description");

        if (streq(status, "100"))
                return;         /* a heartbeat */
        if (pending) {
                uint64_t n = g_ascii_strtoull(pending, NULL, 10);

                p->outstanding -= MIN(n, p->outstanding);
        } else
                /* Not said how many: ask anew for all, at worst a few more than fit. */
                p->outstanding = 0;
        if (streq(status, "408"))
                return;
        /* 409 (a leader change), 503 (no leader yet), ...: asked again after a pause, not in a
         * tight loop while the engine elects. */
        log_debug("Pull of %s ended: %s %s", p->what, status, strempty(description));
        p->hold = true;
        if (p->lost_source) {
                (void) sd_event_source_set_time_relative(p->lost_source, PULL_HOLD_USEC);
                (void) sd_event_source_set_enabled(p->lost_source, SD_EVENT_ONESHOT);
        } else if (sd_event_add_time_relative(p->engine->event, &p->lost_source, CLOCK_MONOTONIC, PULL_HOLD_USEC,
                                              10 * USEC_PER_MSEC, on_pull_lost, p) < 0)
                p->hold = false;
}

/* Whether SUBJECT is apiary.POOL.r.HOST for our pool and some host name ([A-Za-z0-9_-]). */
static bool result_subject_is_valid(Engine *e, const char *subject) {
        g_autofree char *prefix = g_strdup_printf("apiary.%s.r.", e->pool);
        const char *host;

        if (!g_str_has_prefix(subject, prefix))
                return false;
        host = subject + strlen(prefix);
        if (*host == '\0' || strlen(host) > 64)
                return false;
        for (; *host; host++)
                if (!g_ascii_isalnum(*host) && *host != '_' && *host != '-')
                        return false;
        return true;
}

/* Returns whether MSG was a task (not a status of the pull). */
static bool engine_handle_task(Engine *e, natsMsg *msg) {
        const char *status = msg_status(msg), *token = natsMsg_GetReply(msg), *id, *reply, *timeout;

        if (status && !token) {
                puller_status(&e->tasks, msg, status);
                return false;
        }
        if (e->tasks.outstanding > 0)
                e->tasks.outstanding--;
        id = msg_header(msg, SOURCE_HEADER_ID);
        reply = msg_header(msg, SOURCE_HEADER_REPLY);
        timeout = msg_header(msg, SOURCE_HEADER_TIMEOUT);
        if (!token || !id || !reply || !result_subject_is_valid(e, reply)) {
                /* Not one of ours: nobody can run it, and it must not come back. Nor may a
                 * message make us publish a result anywhere but to one of the pool's result
                 * streams. */
                log_warning("Dropping a message %s in the task stream %s.",
                            !token ? "without an ack token" : !id ? "without " SOURCE_HEADER_ID :
                            !reply ? "without " SOURCE_HEADER_REPLY : "whose " SOURCE_HEADER_REPLY " is not a result subject",
                            e->task_stream);
                if (token)
                        (void) natsConnection_PublishString(e->nc, token, "+TERM");
                return true;
        }
        e->sent++;
        e->ops->task(e->userdata, token, id, reply, timeout ? g_ascii_strtoull(timeout, NULL, 10) : 0,
                     engine_token_deliveries(token), natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
        return true;
}

static void engine_handle_result(Engine *e, natsMsg *msg) {
        const char *status = msg_status(msg), *token = natsMsg_GetReply(msg), *id, *ok;

        if (status && !token) {
                puller_status(&e->results, msg, status);
                return;
        }
        if (e->results.outstanding > 0)
                e->results.outstanding--;
        id = msg_header(msg, SOURCE_HEADER_ID);
        ok = msg_header(msg, SOURCE_HEADER_OK);
        if (id)
                e->ops->result(e->userdata, id, ok && streq(ok, "1"), natsMsg_GetData(msg),
                               natsMsg_GetDataLength(msg));
        /* Handed on: apiaryd answers its caller or, if it no longer knows the id, drops it. */
        if (token)
                (void) natsConnection_PublishString(e->nc, token, "+ACK");
}

/* ---- the stream's counts ---- */

static int on_stats_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Engine *e = userdata;
        g_autofree char *subject = NULL;
        Request *q;

        if (!e->activity || !e->ready)
                return 0;
        e->activity = false;
        (void) sd_event_source_set_time_relative(s, STATS_INTERVAL_USEC);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);

        q = request_new(e, REQUEST_STATS, NULL, NULL);
        if (!q)
                return 0;
        subject = g_strdup_printf("$JS.API.CONSUMER.INFO.%s.workers", e->task_stream);
        request_send(e, q, request_msg(e, q, subject, NULL, 0));
        return 0;
}

/* Something happened: the stream's counts are asked for within STATS_INTERVAL_USEC, and once
 * more after the last thing that happened. */
static void engine_mark_activity(Engine *e) {
        int enabled = SD_EVENT_OFF;

        e->activity = true;
        if (!e->stats_source) {
                if (sd_event_add_time_relative(e->event, &e->stats_source, CLOCK_MONOTONIC, 0, 0, on_stats_timer,
                                               e) < 0)
                        log_oom();
                return;
        }
        (void) sd_event_source_get_enabled(e->stats_source, &enabled);
        if (enabled == SD_EVENT_OFF) {
                (void) sd_event_source_set_time_relative(e->stats_source, 0);
                (void) sd_event_source_set_enabled(e->stats_source, SD_EVENT_ONESHOT);
        }
}

/* ---- connecting ---- */

static void engine_set_state(Engine *e, const char *state, const char *error) {
        e->ops->state(e->userdata, state, error ?: "");
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata);

static void engine_retry_later(Engine *e) {
        e->retry_usec = e->retry_usec ? MIN(e->retry_usec * 2, (usec_t) RETRY_MAX_USEC) : RETRY_MIN_USEC;
        if (!e->retry_source) {
                if (sd_event_add_time_relative(e->event, &e->retry_source, CLOCK_MONOTONIC, e->retry_usec, 0,
                                               on_retry, e) < 0)
                        log_oom();
                return;
        }
        (void) sd_event_source_set_time_relative(e->retry_source, e->retry_usec);
        (void) sd_event_source_set_enabled(e->retry_source, SD_EVENT_ONESHOT);
}

static natsStatus engine_make_options(Engine *e) {
        natsStatus s;

        s = natsOptions_Create(&e->opts);
        if (s == NATS_OK)
                s = natsOptions_SetServers(e->opts, (const char **) e->servers, (int) g_strv_length(e->servers));
        if (s == NATS_OK) {
                g_autofree char *name = g_strdup_printf("apiary-source %s %s", e->host, e->pool);

                s = natsOptions_SetName(e->opts, name);
        }
        if (s == NATS_OK)
                s = natsOptions_SetTimeout(e->opts, 2000);

        /* One delivery thread for all three subscriptions, not one each: what arrives together
         * reaches the loop in one wakeup. */
        if (s == NATS_OK)
                s = natsOptions_UseGlobalMessageDelivery(e->opts, true);
        if (s == NATS_OK)
                s = natsOptions_SetMaxReconnect(e->opts, -1);
        if (s == NATS_OK)
                s = natsOptions_SetReconnectWait(e->opts, 250);
        if (s == NATS_OK)
                s = natsOptions_SetDisconnectedCB(e->opts, on_disconnected, e);
        if (s == NATS_OK)
                s = natsOptions_SetReconnectedCB(e->opts, on_reconnected, e);
        if (s == NATS_OK)
                s = natsOptions_SetClosedCB(e->opts, on_closed, e);
        if (s == NATS_OK && e->credentials)
                s = natsOptions_SetUserCredentialsFromFiles(e->opts, e->credentials, NULL);
        if (s == NATS_OK && e->tls_ca) {
                s = natsOptions_SetSecure(e->opts, true);
                if (s == NATS_OK)
                        s = natsOptions_LoadCATrustedCertificates(e->opts, e->tls_ca);
        }
        return s;
}

/* Creates the stream NAME on SUBJECT if it does not exist, and sets its replicas if it does. */
static int engine_ensure_stream(Engine *e, const char *name, const char *subject, int64_t max_age_ns,
                                char **ret_error) {
        const char *subjects[] = { subject };
        jsStreamInfo *si = NULL;
        jsStreamConfig sc;
        jsErrCode jerr = 0;
        natsStatus s;

        jsStreamConfig_Init(&sc);
        sc.Name = name;
        sc.Subjects = subjects;
        sc.SubjectsLen = 1;
        sc.Retention = js_WorkQueuePolicy;
        sc.Storage = js_FileStorage;
        sc.Replicas = e->replicas;
        sc.MaxAge = max_age_ns;

        s = js_GetStreamInfo(&si, e->js, name, NULL, &jerr);
        if (s == NATS_NOT_FOUND)
                s = js_AddStream(&si, e->js, &sc, NULL, &jerr);
        else if (s == NATS_OK && si->Config->Replicas != (int64_t) e->replicas) {
                log_info("Stream %s has %" PRId64 " replicas, SourceReplicas= asks for %u: updating it.", name,
                         si->Config->Replicas, e->replicas);
                jsStreamInfo_Destroy(si);
                si = NULL;
                s = js_UpdateStream(&si, e->js, &sc, NULL, &jerr);
        }
        jsStreamInfo_Destroy(si);
        if (s != NATS_OK) {
                *ret_error = g_strdup_printf("stream %s: %s", name, nats_error(s));
                return -EIO;
        }
        return 0;
}

static int engine_ensure_consumer(Engine *e, const char *stream, const char *durable, usec_t ack_wait,
                                  char **ret_error) {
        jsConsumerInfo *ci = NULL;
        jsConsumerConfig cc;
        jsErrCode jerr = 0;
        natsStatus s;

        jsConsumerConfig_Init(&cc);
        cc.Durable = durable;
        cc.AckPolicy = js_AckExplicit;
        cc.AckWait = (int64_t) ack_wait * 1000;
        cc.MaxDeliver = -1;             /* TaskRetries= is counted by apiaryd, which terminates */
        /* Each host pulls only what it has room for: no cap of the engine's own (libnats leaves
         * out -1, and the server's default is 1,000 in flight over all hosts). */
        cc.MaxAckPending = 1 << 20;
        cc.Replicas = e->replicas;

        s = js_GetConsumerInfo(&ci, e->js, stream, durable, NULL, &jerr);
        if (s == NATS_NOT_FOUND)
                s = js_AddConsumer(&ci, e->js, stream, &cc, NULL, &jerr);
        else if (s == NATS_OK && (ci->Config->AckWait != cc.AckWait || ci->Config->MaxAckPending != cc.MaxAckPending)) {
                jsConsumerInfo_Destroy(ci);
                ci = NULL;
                s = js_UpdateConsumer(&ci, e->js, stream, &cc, NULL, &jerr);
        }
        jsConsumerInfo_Destroy(ci);
        if (s != NATS_OK) {
                *ret_error = g_strdup_printf("consumer %s of stream %s: %s", durable, stream, nats_error(s));
                return -EIO;
        }
        return 0;
}

static int puller_init(Engine *e, Puller *p, const char *what, const char *stream, const char *durable,
                       const char *suffix, natsMsgHandler handler) {
        p->engine = e;
        p->what = what;
        p->request_subject = g_strdup_printf("$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream, durable);
        p->inbox = g_strdup_printf("%s.%s", e->inbox, suffix);
        return natsConnection_Subscribe(&p->sub, e->nc, p->inbox, handler, e) == NATS_OK ? 0 : -EIO;
}

/* One attempt: connect if not connected, then set up what is missing. Blocks for at most a few
 * seconds (the connect timeout per server, the JetStream API's). */
static int engine_try(Engine *e) {
        g_autofree char *error = NULL;
        g_autofree char *replies = NULL;
        natsStatus s;

        if (!e->nc) {
                s = natsConnection_Connect(&e->nc, e->opts);
                if (s != NATS_OK) {
                        g_autofree char *m = g_strdup_printf("cannot connect to %s: %s", e->servers_text,
                                                             nats_error(s));

                        e->nc = NULL;
                        engine_set_state(e, SOURCE_STATE_UNAVAILABLE, m);
                        return -EIO;
                }
                e->connected = true;
                replies = g_strdup_printf("%s.q.*", e->inbox);
                if (natsConnection_JetStream(&e->js, e->nc, NULL) != NATS_OK ||
                    natsConnection_Subscribe(&e->reply_sub, e->nc, replies, on_reply_msg, e) != NATS_OK ||
                    puller_init(e, &e->tasks, "tasks", e->task_stream, "workers", "t", on_task_msg) < 0 ||
                    puller_init(e, &e->results, "results", e->result_stream, "submitter", "r", on_result_msg) < 0) {
                        engine_set_state(e, SOURCE_STATE_FAILED, nats_error(NATS_ERR));
                        return -EIO;
                }
        }

        if (engine_ensure_stream(e, e->task_stream, e->task_subject, 0, &error) < 0 ||
            engine_ensure_consumer(e, e->task_stream, "workers", e->lease_usec, &error) < 0 ||
            engine_ensure_stream(e, e->result_stream, e->result_subject, (int64_t) RESULTS_MAX_AGE_USEC * 1000,
                                 &error) < 0 ||
            engine_ensure_consumer(e, e->result_stream, "submitter", 30 * USEC_PER_SEC, &error) < 0) {
                engine_set_state(e, SOURCE_STATE_UNAVAILABLE, error);
                return -EIO;
        }

        e->ready = true;
        e->retry_usec = 0;
        log_info("Connected to %s: stream %s ready.", e->servers_text, e->task_stream);
        engine_set_state(e, SOURCE_STATE_READY, NULL);
        engine_pull(e);
        return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Engine *e = userdata;

        if (engine_try(e) < 0)
                engine_retry_later(e);
        return 0;
}

int engine_start(Engine *e) {
        engine_set_state(e, SOURCE_STATE_CONNECTING, NULL);
        if (engine_try(e) < 0)
                engine_retry_later(e);
        return 0;
}

/* ---- the loop's side of the queue ---- */

static int on_efd(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Engine *e = userdata;
        eventfd_t v;
        Event *list;

        (void) eventfd_read(fd, &v);
        pthread_mutex_lock(&e->lock);
        list = e->head;
        e->head = e->tail = NULL;
        pthread_mutex_unlock(&e->lock);

        while (list) {
                Event *ev = list;

                list = ev->next;
                switch (ev->type) {
                case EVENT_TASK:
                        /* A pull that expired (408, every PULL_EXPIRES_USEC while idle) is not
                         * something happening: the stream's counts are not asked for again. */
                        if (engine_handle_task(e, ev->msg))
                                engine_mark_activity(e);
                        break;
                case EVENT_RESULT:
                        engine_handle_result(e, ev->msg);
                        break;
                case EVENT_REPLY:
                        engine_handle_reply(e, ev->msg);
                        break;
                case EVENT_DISCONNECTED:
                        e->connected = false;
                        e->audit_stranded = 0;  /* two audits in a row of one connection */
                        if (e->ready)
                                engine_set_state(e, SOURCE_STATE_UNAVAILABLE,
                                                 "disconnected from the engine, reconnecting");
                        break;
                case EVENT_RECONNECTED:
                        e->connected = true;
                        e->audit_stranded = 0;
                        /* Pulls made before may be gone with the server: ask anew. */
                        e->tasks.outstanding = e->results.outstanding = 0;
                        if (e->ready)
                                engine_set_state(e, SOURCE_STATE_READY, NULL);
                        break;
                }
                natsMsg_Destroy(ev->msg);
                free(ev);
        }
        e->ops->flush(e->userdata);
        engine_pull(e);
        return 0;
}

/* "nats://a:1,b:2" or "a:1,b:2" → { "nats://a:1", "nats://b:2" }; tls:// is kept. */
static char **split_servers(const char *text) {
        g_auto(GStrv) parts = g_strsplit(text, ",", -1);
        GPtrArray *out = g_ptr_array_new();

        for (char **p = parts; *p; p++) {
                g_autofree char *s = g_strstrip(g_strdup(*p));

                if (!*s)
                        continue;
                g_ptr_array_add(out, strstr(s, "://") ? g_strdup(s) : g_strconcat("nats://", s, NULL));
        }
        g_ptr_array_add(out, NULL);
        return (char **) g_ptr_array_free(out, false);
}

static guint id_hash(gconstpointer p) {
        return g_int64_hash(p);
}

static gboolean id_equal(gconstpointer a, gconstpointer b) {
        return g_int64_equal(a, b);
}

int engine_new(Engine **ret, const EngineSettings *s, sd_event *event, const EngineOps *ops, void *userdata) {
        Engine *e;
        natsStatus ns;
        int r;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->event = sd_event_ref(event);
        e->ops = ops;
        e->userdata = userdata;
        e->efd = -1;
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->closed_cond, NULL);
        e->servers_text = g_strdup(s->servers);
        e->servers = split_servers(s->servers);
        e->pool = g_strdup(s->pool);
        e->host = g_strdup(s->host);
        e->credentials = s->credentials && *s->credentials ? g_strdup(s->credentials) : NULL;
        e->tls_ca = s->tls_ca && *s->tls_ca ? g_strdup(s->tls_ca) : NULL;
        e->replicas = s->replicas;
        e->lease_usec = s->lease_usec;
        e->timeout_usec = s->timeout_usec;
        e->task_stream = g_strdup_printf("APIARY_%s", s->pool);
        e->task_subject = g_strdup_printf("apiary.%s.t", s->pool);
        e->result_stream = g_strdup_printf("APIARY_%s_R_%s", s->pool, s->host);
        e->result_subject = g_strdup_printf("apiary.%s.r.%s", s->pool, s->host);
        e->requests = g_hash_table_new(id_hash, id_equal);
        g_queue_init(&e->deadlines);

        ns = natsInbox_Create((natsInbox **) &e->inbox);
        if (ns != NATS_OK) {
                e->inbox = NULL;
                engine_free(e);
                return -ENOMEM;
        }
        ns = engine_make_options(e);
        if (ns != NATS_OK) {
                log_error("Bad engine settings: %s", nats_error(ns));
                engine_free(e);
                return -EINVAL;
        }

        e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (e->efd < 0) {
                r = -errno;
                engine_free(e);
                return r;
        }
        r = sd_event_add_io(event, &e->efd_source, e->efd, EPOLLIN, on_efd, e);
        if (r < 0) {
                engine_free(e);
                return r;
        }
        *ret = e;
        return 0;
}

static void puller_done(Puller *p) {
        sd_event_source_disable_unref(p->lost_source);
        natsSubscription_Destroy(p->sub);
        g_free(p->request_subject);
        g_free(p->inbox);
}

Engine *engine_free(Engine *e) {
        Request *q;

        if (!e)
                return NULL;
        /* Closed first, and its closed callback waited for (bounded): no libnats thread posts
         * after this. */
        if (e->nc) {
                struct timespec until;

                (void) natsConnection_FlushTimeout(e->nc, 1000);
                natsConnection_Close(e->nc);
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += 5;
                pthread_mutex_lock(&e->lock);
                while (!e->closed)
                        if (pthread_cond_timedwait(&e->closed_cond, &e->lock, &until) != 0)
                                break;
                pthread_mutex_unlock(&e->lock);
                if (!e->closed) {
                        /* A thread of libnats may still post to us: left as it is, the process
                         * exits next. */
                        log_warning("The engine connection did not close within 5s.");
                        return NULL;
                }
        }
        puller_done(&e->tasks);
        puller_done(&e->results);
        natsSubscription_Destroy(e->reply_sub);
        jsCtx_Destroy(e->js);
        natsConnection_Destroy(e->nc);
        natsOptions_Destroy(e->opts);

        while (e->head) {
                Event *ev = e->head;

                e->head = ev->next;
                natsMsg_Destroy(ev->msg);
                free(ev);
        }
        g_queue_clear(&e->publish_retries);
        sd_event_source_disable_unref(e->publish_retry_source);
        while ((q = g_queue_pop_head(&e->deadlines))) {
                if (!q->done && q->fn)
                        q->fn(SOURCE_ERROR_UNAVAILABLE, "apiary-source is stopping", q->userdata);
                request_free(q);
        }
        g_hash_table_unref(e->requests);
        sd_event_source_disable_unref(e->efd_source);
        sd_event_source_disable_unref(e->deadline_source);
        sd_event_source_disable_unref(e->stats_source);
        sd_event_source_disable_unref(e->audit_source);
        sd_event_source_disable_unref(e->retry_source);
        safe_close(e->efd);
        pthread_mutex_destroy(&e->lock);
        pthread_cond_destroy(&e->closed_cond);
        sd_event_unref(e->event);
        natsInbox_Destroy((natsInbox *) e->inbox);
        g_strfreev(e->servers);
        g_free(e->servers_text);
        g_free(e->pool);
        g_free(e->host);
        g_free(e->credentials);
        g_free(e->tls_ca);
        g_free(e->task_stream);
        g_free(e->task_subject);
        g_free(e->result_stream);
        g_free(e->result_subject);
        free(e);
        return NULL;
}
