/* SPDX-License-Identifier: MIT */
/*
 * apiary-source: the engine client of one shared pool. apiaryd spawns it with its end of a
 * private D-Bus connection as fd 3, as it does a worker; it asks apiaryd for the pool's source
 * settings (Hello), connects to NATS JetStream, and from then on carries writes one way and
 * pulled tasks and results the other (docs/source-protocol.md). It keeps no task state: apiaryd
 * holds every ack token, so a restarted helper carries on where the last one stopped. libnats
 * and its threads live here, never in apiaryd.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include <glib.h>
#include <nats/nats.h>

#include "ipc/link.h"
#include "ipc/protocol.h"
#include "ipc/source-protocol.h"
#include "source/engine.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/time-util.h"

/* A Tasks or Results message is sent once its payloads reach this many bytes, or at the end of
 * what arrived in one go. */
#define BATCH_BYTES_MAX (1024u * 1024u)

typedef struct Helper {
        sd_event *event;
        sd_bus *link;
        Engine *engine;
        int bus_fd;
        pid_t supervisor;
        char *pool;

        sd_bus_message *tasks;          /* being filled: Tasks(a(ssstuay)) */
        size_t tasks_bytes;
        sd_bus_message *results;        /* ... Results(a(sbay)) */
        size_t results_bytes;
        char *last_state, *last_error;  /* as last sent */
} Helper;

/* One Publish, Finish or Release call: answered once each of its items is. */
typedef struct Batch {
        Helper *helper;
        sd_bus_message *call;
        unsigned n, left;
        char **names, **messages;       /* per item: NULL when it went well */
} Batch;

typedef struct BatchItem {
        Batch *batch;
        unsigned index;
} BatchItem;

static void batch_reply(Batch *b) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        bool with_outcomes = !streq(sd_bus_message_get_member(b->call), "Release");
        int r;

        r = sd_bus_message_new_method_return(b->call, &reply);
        if (r >= 0 && with_outcomes) {
                r = sd_bus_message_open_container(reply, 'a', "(" SOURCE_OUTCOME ")");
                for (unsigned i = 0; r >= 0 && i < b->n; i++)
                        r = sd_bus_message_append(reply, "(" SOURCE_OUTCOME ")", strempty(b->names[i]),
                                                  strempty(b->messages[i]));
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        }
        if (r >= 0)
                r = sd_bus_send(b->helper->link, reply, NULL);
        if (r < 0)
                log_error_errno(r, "Failed to answer %s(): %m", sd_bus_message_get_member(b->call));

        for (unsigned i = 0; i < b->n; i++) {
                free(b->names[i]);
                free(b->messages[i]);
        }
        free(b->names);
        free(b->messages);
        sd_bus_message_unref(b->call);
        free(b);
}

static void batch_item_done(const char *error_name, const char *message, void *userdata) {
        BatchItem *item = userdata;
        Batch *b = item->batch;

        /* An error, or a note on success ("duplicate": a result stored before). */
        if (error_name)
                b->names[item->index] = strdup(error_name);
        if (error_name || message)
                b->messages[item->index] = strdup(strempty(message));
        free(item);
        if (--b->left == 0)
                batch_reply(b);
}

static Batch *batch_new(Helper *h, sd_bus_message *call, unsigned n) {
        Batch *b = calloc(1, sizeof(*b));

        if (!b)
                return NULL;
        b->helper = h;
        b->call = sd_bus_message_ref(call);
        b->n = n;
        b->left = n + 1;        /* one more until every item has been started */
        b->names = calloc(n + 1, sizeof(char *));
        b->messages = calloc(n + 1, sizeof(char *));
        if (!b->names || !b->messages) {
                free(b->names);
                free(b->messages);
                sd_bus_message_unref(b->call);
                free(b);
                return NULL;
        }
        return b;
}

static BatchItem *batch_item(Batch *b, unsigned index) {
        BatchItem *item = malloc(sizeof(*item));

        if (item)
                *item = (BatchItem) { .batch = b, .index = index };
        return item;
}

/* Counts the elements of the array at M's read position, and leaves M where it was. */
static int count_items(sd_bus_message *m, const char *contents, unsigned *ret) {
        unsigned n = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', contents);
        if (r < 0)
                return r;
        while ((r = sd_bus_message_skip(m, contents)) > 0)
                n++;
        if (r < 0)
                return r;
        r = sd_bus_message_rewind(m, true);
        if (r < 0)
                return r;
        *ret = n;
        return 0;
}

/* Reads the rest of one item of an array (its struct entered) and starts it, answered to ITEM. */
typedef int (*item_start_fn)(Helper *h, sd_bus_message *m, BatchItem *item);

/* Publish and Finish: an array of items of ITEM_SIGNATURE, each started by START; the call is
 * answered once every one is done, one outcome each. */
static int serve_batch(Helper *h, sd_bus_message *m, const char *item_signature, item_start_fn start) {
        g_autofree char *contents = g_strdup_printf("(%s)", item_signature);
        unsigned n, i = 0;
        Batch *b;
        int r;

        r = count_items(m, contents, &n);
        if (r < 0)
                return r;
        b = batch_new(h, m, n);
        if (!b)
                return -ENOMEM;
        r = sd_bus_message_enter_container(m, 'a', contents);
        while (r >= 0 && i < n) {
                BatchItem *item;

                r = sd_bus_message_enter_container(m, 'r', item_signature);
                if (r <= 0)
                        break;
                item = batch_item(b, i);
                if (!item) {
                        r = -ENOMEM;
                        break;
                }
                r = start(h, m, item);
                if (r < 0) {
                        free(item);
                        break;
                }
                i++;
        }
        /* A malformed rest of the array: those items are answered as not done. */
        for (; i < n; i++) {
                b->names[i] = strdup(SOURCE_ERROR_UNAVAILABLE);
                b->messages[i] = strdup("malformed item");
                b->left--;
        }
        if (--b->left == 0)
                batch_reply(b);
        return 1;
}

static int start_publish(Helper *h, sd_bus_message *m, BatchItem *item) {
        const char *id;
        uint64_t timeout;
        const void *payload;
        size_t size;
        int r;

        r = sd_bus_message_read(m, "st", &id, &timeout);
        if (r >= 0)
                r = sd_bus_message_read_array(m, 'y', &payload, &size);
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        engine_publish(h->engine, id, timeout, payload, size, batch_item_done, item);
        return 0;
}

static int start_finish(Helper *h, sd_bus_message *m, BatchItem *item) {
        const char *token, *reply, *id;
        int ok, term;
        const void *data;
        size_t size;
        int r;

        r = sd_bus_message_read(m, "sssbb", &token, &reply, &id, &ok, &term);
        if (r >= 0)
                r = sd_bus_message_read_array(m, 'y', &data, &size);
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        engine_finish(h->engine, token, reply, id, ok, term, data, size, batch_item_done, item);
        return 0;
}

static int method_publish(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return serve_batch(userdata, m, SOURCE_PUBLISH_ITEM, start_publish);
}

static int method_finish(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return serve_batch(userdata, m, SOURCE_FINISH_ITEM, start_finish);
}

static int method_release(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Helper *h = userdata;
        g_auto(GStrv) tokens = NULL;
        unsigned n;
        Batch *b;
        int r;

        r = sd_bus_message_read_strv(m, &tokens);
        if (r < 0)
                return r;
        n = tokens ? g_strv_length(tokens) : 0;
        b = batch_new(h, m, n);
        if (!b)
                return -ENOMEM;
        for (unsigned i = 0; i < n; i++) {
                BatchItem *item = batch_item(b, i);

                if (!item) {
                        b->left--;
                        continue;
                }
                engine_release(h->engine, tokens[i], batch_item_done, item);
        }
        if (--b->left == 0)
                batch_reply(b);
        return 1;
}

static int method_renew(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Helper *h = userdata;
        const char *token;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "s");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(m, "s", &token)) > 0)
                engine_renew(h->engine, token);
        return r < 0 ? r : 1;
}

static int method_want(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Helper *h = userdata;
        uint32_t want;
        uint64_t received;
        int awaiting;
        int r;

        r = sd_bus_message_read(m, SOURCE_WANT_IN, &want, &received, &awaiting);
        if (r < 0)
                return r;
        engine_want(h->engine, want, received, awaiting);
        return 1;
}

static const sd_bus_vtable source_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_NAMES("Publish", SOURCE_PUBLISH_IN, SD_BUS_PARAM(tasks),
                                 SOURCE_PUBLISH_OUT, SD_BUS_PARAM(outcomes), method_publish, 0),
        SD_BUS_METHOD_WITH_NAMES("Finish", SOURCE_FINISH_IN, SD_BUS_PARAM(tasks),
                                 SOURCE_FINISH_OUT, SD_BUS_PARAM(outcomes), method_finish, 0),
        SD_BUS_METHOD_WITH_NAMES("Release", SOURCE_TOKENS_IN, SD_BUS_PARAM(tokens), NULL,, method_release, 0),
        SD_BUS_METHOD_WITH_NAMES("Renew", SOURCE_TOKENS_IN, SD_BUS_PARAM(tokens), NULL,, method_renew,
                                 SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_METHOD_WITH_NAMES("Want", SOURCE_WANT_IN, SD_BUS_PARAM(places) SD_BUS_PARAM(received)
                                 SD_BUS_PARAM(awaiting), NULL,,
                                 method_want, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

/* ---- the engine's side: to apiaryd ---- */

static int new_call(Helper *h, const char *member, sd_bus_message **ret) {
        int r;

        r = sd_bus_message_new_method_call(h->link, ret, NULL, SOURCE_SUPERVISOR_OBJECT_PATH,
                                           SOURCE_SUPERVISOR_INTERFACE, member);
        if (r >= 0)
                r = sd_bus_message_set_expect_reply(*ret, false);
        return r;
}

static void send_batch(Helper *h, sd_bus_message **m, size_t *bytes) {
        int r;

        if (!*m)
                return;
        r = sd_bus_message_close_container(*m);
        if (r >= 0)
                r = sd_bus_send(h->link, *m, NULL);
        if (r < 0)
                /* The engine delivers what apiaryd never saw again after the lease. */
                log_error_errno(r, "Failed to send %s to apiaryd: %m", sd_bus_message_get_member(*m));
        *m = sd_bus_message_unref(*m);
        *bytes = 0;
}

static void on_engine_state(void *userdata, const char *state, const char *error) {
        Helper *h = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        /* Retries say the same again and again: logged once, and each change. */
        if (*error && !(streq(strempty(h->last_state), state) && streq(strempty(h->last_error), error)))
                log_warning("Source %s: %s", state, error);
        free(h->last_state);
        free(h->last_error);
        h->last_state = strdup(state);
        h->last_error = strdup(error);
        r = new_call(h, "State", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, SOURCE_STATE_IN, state, error);
        if (r >= 0)
                r = sd_bus_send(h->link, m, NULL);
        if (r < 0)
                log_error_errno(r, "Failed to send the source state: %m");
}

static void on_engine_task(void *userdata, const char *token, const char *id, const char *reply,
                           uint64_t timeout_usec, unsigned deliveries, const void *payload, size_t size) {
        Helper *h = userdata;
        int r = 0;

        if (!h->tasks) {
                r = new_call(h, "Tasks", &h->tasks);
                if (r >= 0)
                        r = sd_bus_message_open_container(h->tasks, 'a', "(" SOURCE_TASK ")");
        }
        if (r >= 0)
                r = sd_bus_message_open_container(h->tasks, 'r', SOURCE_TASK);
        if (r >= 0)
                r = sd_bus_message_append(h->tasks, "ssstu", token, id, reply, timeout_usec, deliveries);
        if (r >= 0)
                r = sd_bus_message_append_array(h->tasks, 'y', payload, size);
        if (r >= 0)
                r = sd_bus_message_close_container(h->tasks);
        if (r < 0) {
                log_error_errno(r, "Failed to pass task %s on: %m", id);
                h->tasks = sd_bus_message_unref(h->tasks);
                return;
        }
        h->tasks_bytes += size;
        if (h->tasks_bytes >= BATCH_BYTES_MAX)
                send_batch(h, &h->tasks, &h->tasks_bytes);
}

static void on_engine_result(void *userdata, const char *id, bool ok, const void *data, size_t size) {
        Helper *h = userdata;
        int r = 0;

        if (!h->results) {
                r = new_call(h, "Results", &h->results);
                if (r >= 0)
                        r = sd_bus_message_open_container(h->results, 'a', "(" SOURCE_RESULT ")");
        }
        if (r >= 0)
                r = sd_bus_message_open_container(h->results, 'r', SOURCE_RESULT);
        if (r >= 0)
                r = sd_bus_message_append(h->results, "sb", id, ok);
        if (r >= 0)
                r = sd_bus_message_append_array(h->results, 'y', data, size);
        if (r >= 0)
                r = sd_bus_message_close_container(h->results);
        if (r < 0) {
                log_error_errno(r, "Failed to pass the result of %s on: %m", id);
                h->results = sd_bus_message_unref(h->results);
                return;
        }
        h->results_bytes += size;
        if (h->results_bytes >= BATCH_BYTES_MAX)
                send_batch(h, &h->results, &h->results_bytes);
}

static void on_engine_flush(void *userdata) {
        Helper *h = userdata;

        send_batch(h, &h->tasks, &h->tasks_bytes);
        send_batch(h, &h->results, &h->results_bytes);
}

static void on_engine_stats(void *userdata, uint64_t pending, uint64_t ack_pending, uint64_t redelivered,
                            uint64_t waiting) {
        Helper *h = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = new_call(h, "Stats", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, SOURCE_STATS_IN, pending, ack_pending, redelivered, waiting);
        if (r >= 0)
                r = sd_bus_send(h->link, m, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to send the stream's counts: %m");
}

static const EngineOps engine_ops = {
        .state = on_engine_state,
        .task = on_engine_task,
        .result = on_engine_result,
        .flush = on_engine_flush,
        .stats = on_engine_stats,
};

/* ---- start-up ---- */

/* Hello: the settings of the pool's source, from apiaryd. */
static int helper_hello(Helper *h, GHashTable *settings) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *key, *value;
        int r;

        r = sd_bus_call_method(h->link, NULL, SOURCE_SUPERVISOR_OBJECT_PATH, SOURCE_SUPERVISOR_INTERFACE, "Hello",
                               &error, &reply, SOURCE_HELLO_IN, SOURCE_PROTOCOL_VERSION);
        if (r < 0)
                return log_error_errno(r, "Hello to apiaryd failed: %s", error.message ?: strerror(-r));
        r = sd_bus_message_enter_container(reply, 'a', "(ss)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(ss)", &key, &value)) > 0)
                g_hash_table_insert(settings, g_strdup(key), g_strdup(value));
        if (r < 0)
                return log_error_errno(r, "Malformed Hello reply: %m");
        return 0;
}

static int on_link_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Helper *h = userdata;

        log_warning("The link to apiaryd closed, exiting.");
        return sd_event_exit(h->event, WORKER_EXIT_LINK);
}

static int parse_argv(Helper *h, int argc, char *argv[]) {
        enum { ARG_BUS_FD = 0x100, ARG_POOL, ARG_SUPERVISOR_PID, ARG_LOG_LEVEL };
        static const struct option options[] = {
                { "bus-fd", required_argument, NULL, ARG_BUS_FD },
                { "pool", required_argument, NULL, ARG_POOL },
                { "supervisor-pid", required_argument, NULL, ARG_SUPERVISOR_PID },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                {}
        };
        int opt;

        h->bus_fd = -1;
        while ((opt = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                char *end;
                long v;

                switch (opt) {
                case ARG_BUS_FD:
                case ARG_SUPERVISOR_PID:
                        errno = 0;
                        v = strtol(optarg, &end, 10);
                        if (errno != 0 || *end != '\0' || v < 0 || v > INT32_MAX) {
                                fprintf(stderr, "apiary-source: invalid number \"%s\".\n", optarg);
                                return -EINVAL;
                        }
                        if (opt == ARG_BUS_FD)
                                h->bus_fd = (int) v;
                        else
                                h->supervisor = (pid_t) v;
                        break;
                case ARG_LOG_LEVEL: {
                        int level = log_level_from_string(optarg);

                        if (level < 0) {
                                fprintf(stderr, "apiary-source: invalid log level \"%s\".\n", optarg);
                                return -EINVAL;
                        }
                        log_set_max_level(level);
                        break;
                }
                case ARG_POOL:
                        free(h->pool);
                        h->pool = strdup(optarg);
                        if (!h->pool)
                                return -ENOMEM;
                        break;
                default:
                        return -EINVAL;
                }
        }
        if (h->bus_fd < 0 || !h->pool || h->supervisor <= 0) {
                fprintf(stderr, "apiary-source is started by apiaryd for a shared pool: --bus-fd=, --pool= and "
                                "--supervisor-pid= are required.\n");
                return -EINVAL;
        }
        return 0;
}

static unsigned setting_unsigned(GHashTable *s, const char *key, unsigned def) {
        const char *v = g_hash_table_lookup(s, key);

        return v ? (unsigned) g_ascii_strtoull(v, NULL, 10) : def;
}

static usec_t setting_usec(GHashTable *s, const char *key, usec_t def) {
        const char *v = g_hash_table_lookup(s, key);

        return v ? (usec_t) g_ascii_strtoull(v, NULL, 10) : def;
}

static int helper_run(Helper *h) {
        g_autoptr(GHashTable) settings = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        EngineSettings es;
        sigset_t mask;
        int r;

        /* Dies with apiaryd, even if it is SIGKILLed: its tasks come back after their lease. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != h->supervisor)
                return log_error_errno(ESRCH, "apiaryd (PID %i) is gone.", (int) h->supervisor);

        /* Blocked before libnats starts a thread: its threads inherit the mask, and SIGTERM comes
         * to the loop, not to one of them (which would end the process on the spot). */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        /* The subscriptions' messages go through one thread of libnats' (UseGlobalMessageDelivery). */
        (void) nats_SetMessageDeliveryPoolSize(1);
        r = sd_event_new(&h->event);
        if (r >= 0)
                r = sd_event_add_signal(h->event, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(h->event, NULL, SIGINT, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the event loop: %m");

        r = link_client_new(&h->link, TAKE_FD(h->bus_fd), h->event, "apiaryd");
        if (r < 0)
                return log_error_errno(r, "Failed to connect to apiaryd: %m");
        r = sd_bus_add_object_vtable(h->link, NULL, SOURCE_OBJECT_PATH, SOURCE_INTERFACE, source_vtable, h);
        if (r >= 0)
                r = sd_bus_match_signal(h->link, NULL, "org.freedesktop.DBus.Local", NULL, "org.freedesktop.DBus.Local",
                                        "Disconnected", on_link_disconnected, h);
        if (r < 0)
                return log_error_errno(r, "Failed to serve the link: %m");

        r = helper_hello(h, settings);
        if (r < 0)
                return r;

        es = (EngineSettings) {
                .servers = g_hash_table_lookup(settings, SOURCE_SETTING_SERVERS),
                .pool = h->pool,
                .host = g_hash_table_lookup(settings, SOURCE_SETTING_HOST),
                .replicas = setting_unsigned(settings, SOURCE_SETTING_REPLICAS, 1),
                .lease_usec = setting_usec(settings, SOURCE_SETTING_LEASE_USEC, 30 * USEC_PER_SEC),
                .credentials = g_hash_table_lookup(settings, SOURCE_SETTING_CREDENTIALS),
                .tls_ca = g_hash_table_lookup(settings, SOURCE_SETTING_TLS_CA),
                .timeout_usec = setting_usec(settings, SOURCE_SETTING_TIMEOUT_USEC, 5 * USEC_PER_SEC),
        };
        if (!es.servers || !es.host)
                return log_error_errno(EINVAL, "apiaryd's Hello named no %s.",
                                       !es.servers ? SOURCE_SETTING_SERVERS : SOURCE_SETTING_HOST);

        r = engine_new(&h->engine, &es, h->event, &engine_ops, h);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the engine client: %m");
        engine_start(h->engine);

        return sd_event_loop(h->event);
}

int main(int argc, char *argv[]) {
        Helper h = {};
        int r;

        log_setup("apiary-source");
        r = parse_argv(&h, argc, argv);
        if (r < 0)
                return WORKER_EXIT_USAGE;

        r = helper_run(&h);

        /* Before the link goes: a last flush of what arrived, then the engine's connection. */
        if (h.engine)
                on_engine_flush(&h);
        h.engine = engine_free(h.engine);
        h.tasks = sd_bus_message_unref(h.tasks);
        h.results = sd_bus_message_unref(h.results);
        h.link = sd_bus_flush_close_unref(h.link);
        h.event = sd_event_unref(h.event);
        free(h.pool);
        free(h.last_state);
        free(h.last_error);
        nats_Close();
        return r < 0 ? WORKER_EXIT_FAILURE : r;
}
