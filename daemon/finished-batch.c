/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon/objects.h"
#include "daemon/finished-batch.h"
#include "util/log.h"
#include "util/macro.h"

/* One signal's worth of payload bytes, as Supervisor1.Results: then it goes, and another starts. */
#define FINISHED_BATCH_BYTES_MAX (1024u * 1024u)

typedef struct Pending {
        sd_bus *bus;
        char *submitter;
        sd_bus_message *signal;         /* its a(tsbay) open */
        size_t bytes;
} Pending;

struct FinishedBatches {
        GHashTable *pending;            /* "BUS SUBMITTER" → Pending */
        Pending *last;                  /* the one added to last: most ends go to the same */
        sd_event_source *flush_source;  /* one-shot defer: sends them all at the end of the turn */
};

static void pending_send(Pending *p) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = TAKE_PTR(p->signal);
        int r;

        p->bytes = 0;
        r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_send(p->bus, m, NULL);
        if (r < 0)
                /* A submitter gone meanwhile just does not get them, as with TaskFinished. */
                log_debug_errno(r, "Failed to emit TasksFinished, ignoring: %m");
}

static void pending_free(void *userdata) {
        Pending *p = userdata;

        if (p->signal)
                pending_send(p);
        sd_bus_unref(p->bus);
        free(p->submitter);
        free(p);
}

void finished_batches_flush(FinishedBatches *b) {
        if (!b)
                return;
        b->last = NULL;
        g_hash_table_remove_all(b->pending);
}

static int on_flush(sd_event_source *s, void *userdata) {
        finished_batches_flush(userdata);
        return 0;
}

int finished_batches_new(FinishedBatches **ret, sd_event *event) {
        FinishedBatches *b = calloc(1, sizeof(*b));
        int r;

        if (!b)
                return -ENOMEM;
        b->pending = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, pending_free);
        /* At the priority of the links' fds: it became pending first, so it runs before their next
         * messages, and cannot starve behind them. */
        r = sd_event_add_defer(event, &b->flush_source, on_flush, b);
        if (r >= 0)
                r = sd_event_source_set_enabled(b->flush_source, SD_EVENT_OFF);
        if (r < 0) {
                finished_batches_free(b);
                return r;
        }
        *ret = b;
        return 0;
}

FinishedBatches *finished_batches_free(FinishedBatches *b) {
        if (!b)
                return NULL;
        g_hash_table_destroy(b->pending);
        sd_event_source_disable_unref(b->flush_source);
        free(b);
        return NULL;
}

static int pending_open(Pending *p) {
        int r;

        r = sd_bus_message_new_signal(p->bus, &p->signal, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE,
                                      "TasksFinished");
        /* To the submitter only, as TaskFinished. */
        if (r >= 0 && p->submitter)
                r = sd_bus_message_set_destination(p->signal, p->submitter);
        if (r >= 0)
                r = sd_bus_message_open_container(p->signal, 'a', "(tsbay)");
        if (r < 0)
                p->signal = sd_bus_message_unref(p->signal);
        return r;
}

static Pending *pending_find(FinishedBatches *b, sd_bus *bus, const char *submitter, char **ret_key) {
        Pending *p = b->last;

        if (p && p->bus == bus && streq_ptr(p->submitter, submitter))
                return p;
        *ret_key = g_strdup_printf("%p %s", (void *) bus, strempty(submitter));
        return g_hash_table_lookup(b->pending, *ret_key);
}

int finished_batches_add(FinishedBatches *b, sd_bus *bus, const char *submitter, uint64_t id, const char *pool,
                         bool ok, const void *data, size_t size) {
        g_autofree char *key = NULL;
        Pending *p = pending_find(b, bus, submitter, &key);
        int r;

        if (!p) {
                p = calloc(1, sizeof(*p));
                if (!p)
                        return -ENOMEM;
                p->bus = sd_bus_ref(bus);
                p->submitter = submitter ? strdup(submitter) : NULL;
                if (submitter && !p->submitter) {
                        pending_free(p);
                        return -ENOMEM;
                }
                g_hash_table_insert(b->pending, g_steal_pointer(&key), p);
        }
        b->last = p;
        if (p->signal && p->bytes + size > FINISHED_BATCH_BYTES_MAX)
                pending_send(p);
        if (!p->signal) {
                r = pending_open(p);
                if (r < 0)
                        return r;
        }

        r = sd_bus_message_open_container(p->signal, 'r', "tsbay");
        if (r >= 0)
                r = sd_bus_message_append(p->signal, "tsb", id, pool, (int) ok);
        if (r >= 0)
                r = sd_bus_message_append_array(p->signal, 'y', data, size);
        if (r >= 0)
                r = sd_bus_message_close_container(p->signal);
        if (r < 0)
                return r;
        p->bytes += size;
        return sd_event_source_set_enabled(b->flush_source, SD_EVENT_ONESHOT);
}
