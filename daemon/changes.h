/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>
#include <systemd/sd-event.h>

typedef struct Manager Manager;

/*
 * Property changes of the objects apiaryd shows, marked dirty by the core as they happen and
 * flushed once per turn of the loop, as systemd's unit_add_to_dbus_queue(): an object whose
 * state moves twice in one turn is signalled once, with what it is now. The flush goes to the
 * D-Bus edge through ManagerObserver (manager.h); the core builds no message.
 */
typedef struct Changes {
        GHashTable *by_key;             /* "interface path" → Change, those not flushed yet */
        GQueue order;                   /* of Change, in the order they were first marked */
        sd_event_source *flush_source;  /* a defer source, enabled while some are marked */
} Changes;

int changes_init(Manager *m);
void changes_done(Manager *m);

/* Marks NAMES (static strings, NULL-terminated) of PATH's INTERFACE as changed. */
void manager_mark_changed_strv(Manager *m, const char *path, const char *interface, const char *const *names);
#define manager_mark_changed(m, path, interface, ...) \
        manager_mark_changed_strv(m, path, interface, (const char *const[]) { __VA_ARGS__, NULL })

void manager_object_added(Manager *m, const char *path);
/* PATH, showing INTERFACE, is gone: its marked changes are dropped, no signal speaks of it again. */
void manager_object_removed(Manager *m, const char *path, const char *interface);

/* Signals every marked change now: before the loop exits, or where order matters. */
void manager_flush_changes(Manager *m);
