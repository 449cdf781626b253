/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/changes.h"
#include "daemon/manager.h"
#include "util/log.h"
#include "util/macro.h"

#define CHANGE_NAMES_MAX 16

typedef struct Change {
        GList link;                     /* in Changes.order */
        char *key;                      /* "interface path" */
        const char *path;               /* into KEY */
        const char *interface;          /* static */
        const char *names[CHANGE_NAMES_MAX + 1];
        size_t n_names;
} Change;

static void change_free(Change *c) {
        free(c->key);
        free(c);
}

static int on_flush(sd_event_source *s, void *userdata) {
        manager_flush_changes(userdata);
        return 0;
}

int changes_init(Manager *m) {
        Changes *ch = &m->changes;
        int r;

        ch->by_key = g_hash_table_new(g_str_hash, g_str_equal);
        g_queue_init(&ch->order);
        r = sd_event_add_defer(m->event, &ch->flush_source, on_flush, m);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(ch->flush_source, SD_EVENT_OFF);
}

void changes_done(Manager *m) {
        Changes *ch = &m->changes;
        GList *l;

        while ((l = g_queue_pop_head_link(&ch->order)))
                change_free(l->data);
        if (ch->by_key)
                g_hash_table_destroy(ch->by_key);
        ch->by_key = NULL;
        ch->flush_source = sd_event_source_disable_unref(ch->flush_source);
}

/* "interface path" in BUF if it fits (the common case: no allocation on the way of every task),
 * else in *RET_ALLOC. */
static const char *change_key(char buf[static 256], char **ret_alloc, const char *path, const char *interface) {
        int n = snprintf(buf, 256, "%s %s", interface, path);

        *ret_alloc = NULL;
        if (n >= 0 && n < 256)
                return buf;
        if (asprintf(ret_alloc, "%s %s", interface, path) < 0)
                return NULL;
        return *ret_alloc;
}

static Change *change_get(Changes *ch, const char *path, const char *interface) {
        _cleanup_(freep) char *alloc = NULL;
        const char *key;
        char buf[256];
        Change *c;

        key = change_key(buf, &alloc, path, interface);
        if (!key)
                return NULL;
        c = g_hash_table_lookup(ch->by_key, key);
        if (c)
                return c;

        c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->key = alloc ? TAKE_PTR(alloc) : strdup(key);
        if (!c->key) {
                free(c);
                return NULL;
        }
        c->path = c->key + strlen(interface) + 1;
        c->interface = interface;
        c->link.data = c;
        g_hash_table_insert(ch->by_key, c->key, c);
        g_queue_push_tail_link(&ch->order, &c->link);
        if (ch->flush_source)
                (void) sd_event_source_set_enabled(ch->flush_source, SD_EVENT_ONESHOT);
        return c;
}

void manager_mark_changed_strv(Manager *m, const char *path, const char *interface, const char *const *names) {
        Change *c = change_get(&m->changes, path, interface);

        if (!c) {
                log_oom();
                return;
        }
        for (; *names; names++) {
                size_t i;

                for (i = 0; i < c->n_names; i++)
                        if (streq(c->names[i], *names))
                                break;
                if (i < c->n_names)
                        continue;
                if (c->n_names >= CHANGE_NAMES_MAX) {
                        /* More than an interface has: a bug of ours, but no reason to write past the array. */
                        log_warning("Too many changed properties of %s, not signalling %s.", c->path, *names);
                        continue;
                }
                c->names[c->n_names++] = *names;
        }
}

void manager_object_added(Manager *m, const char *path) {
        if (m->observer.object_added)
                m->observer.object_added(m, path);
}

void manager_object_removed(Manager *m, const char *path, const char *interface) {
        Changes *ch = &m->changes;
        _cleanup_(freep) char *alloc = NULL;
        const char *key;
        char buf[256];
        Change *c;

        key = change_key(buf, &alloc, path, interface);
        if (key && (c = g_hash_table_lookup(ch->by_key, key))) {
                g_hash_table_remove(ch->by_key, c->key);
                g_queue_unlink(&ch->order, &c->link);
                change_free(c);
        }
        if (m->observer.object_removed)
                m->observer.object_removed(m, path);
}

void manager_flush_changes(Manager *m) {
        Changes *ch = &m->changes;
        GList *l;

        if (ch->flush_source)
                (void) sd_event_source_set_enabled(ch->flush_source, SD_EVENT_OFF);
        while ((l = g_queue_pop_head_link(&ch->order))) {
                Change *c = l->data;

                g_hash_table_remove(ch->by_key, c->key);
                if (m->observer.properties_changed)
                        m->observer.properties_changed(m, c->path, c->interface, c->names);
                change_free(c);
        }
}
