/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "peer.h"

typedef struct Caller {
        uid_t euid;
        gid_t egid;
        gid_t *groups;
        size_t n_groups;
} Caller;

void auth_caller_free(Caller *c) {
        if (!c)
                return;
        free(c->groups);
        free(c);
}

static void caller_free(gpointer p) {
        auth_caller_free(p);
}

static int on_name_owner_changed(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(msg, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        if (name[0] == ':' && new_owner[0] == '\0')
                g_hash_table_remove(m->callers, name);
        return 0;
}

int auth_setup(Manager *m) {
        m->callers = g_hash_table_new_full(g_str_hash, g_str_equal, free, caller_free);
        /* Unique names are never reused: an entry is right until its owner disconnects. */
        return sd_bus_match_signal_async(m->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                         "org.freedesktop.DBus", "NameOwnerChanged", on_name_owner_changed, NULL,
                                         m);
}

void auth_done(Manager *m) {
        if (m->callers)
                g_hash_table_destroy(m->callers);
        m->callers = NULL;
}

static int caller_get(Manager *m, sd_bus_message *msg, Caller **ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const char *sender = sd_bus_message_get_sender(msg);
        Peer *peer = NULL;
        const gid_t *gids;
        Caller *c;
        int r, n;

        if (sender) {
                c = g_hash_table_lookup(m->callers, sender);
                if (c) {
                        *ret = c;
                        return 0;
                }
        } else {
                /* A connection to the private socket: one peer, whose credentials never change. */
                peer = peer_find(m, sd_bus_message_get_bus(msg));
                if (peer && peer->caller) {
                        *ret = peer->caller;
                        return 0;
                }
        }

        /* dbus-daemon gives the UID, a peer's socket its SO_PEERCRED; the groups come from
         * /proc/PID/status (AUGMENT). */
        r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID | SD_BUS_CREDS_EGID | SD_BUS_CREDS_SUPPLEMENTARY_GIDS |
                                      SD_BUS_CREDS_PID | SD_BUS_CREDS_AUGMENT, &creds);
        if (r < 0)
                return r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        r = sd_bus_creds_get_euid(creds, &c->euid);
        if (r < 0) {
                free(c);
                return r;
        }
        if (sd_bus_creds_get_egid(creds, &c->egid) < 0)
                c->egid = (gid_t) -1;
        n = sd_bus_creds_get_supplementary_gids(creds, &gids);
        if (n > 0) {
                c->groups = malloc(sizeof(gid_t) * (size_t) n);
                if (!c->groups) {
                        free(c);
                        return -ENOMEM;
                }
                memcpy(c->groups, gids, sizeof(gid_t) * (size_t) n);
                c->n_groups = (size_t) n;
        }

        if (sender)
                g_hash_table_replace(m->callers, strdup(sender), c);
        else if (peer)
                peer->caller = c;
        else {
                *ret = c;
                return 1;       /* not cached, the caller frees it */
        }
        *ret = c;
        return 0;
}

static bool caller_allowed(const Caller *c, const IdList *users, const IdList *groups) {
        if (c->euid == 0 || c->euid == geteuid())
                return true;
        if (id_list_contains(users, c->euid))
                return true;
        if (c->egid != (gid_t) -1 && id_list_contains(groups, c->egid))
                return true;
        for (size_t i = 0; i < c->n_groups; i++)
                if (id_list_contains(groups, c->groups[i]))
                        return true;
        return false;
}

int auth_check(Manager *m, sd_bus_message *msg, AccessKind kind, sd_bus_error *error) {
        const Config *cfg = m->config;
        Caller *c;
        bool allowed;
        int r;

        r = caller_get(m, msg, &c);
        if (r < 0) {
                log_warning_errno(r, "Failed to get the credentials of %s, denying: %m",
                                  sd_bus_message_get_sender(msg) ?: "a private connection");
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "Could not determine the caller's credentials.");
                return -EACCES;
        }

        if (kind == ACCESS_CONTROL)
                allowed = caller_allowed(c, &cfg->control_users, &cfg->control_groups);
        else
                allowed = caller_allowed(c, &cfg->submit_users, &cfg->submit_groups);
        if (!allowed)
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                  "User %u may not call %s(): not root and not in %s= or %s=.", (unsigned) c->euid,
                                  sd_bus_message_get_member(msg),
                                  kind == ACCESS_CONTROL ? "ControlUsers" : "SubmitUsers",
                                  kind == ACCESS_CONTROL ? "ControlGroups" : "SubmitGroups");
        if (r > 0)
                caller_free(c);
        return allowed ? 0 : -EACCES;
}

int auth_caller_uid(Manager *m, sd_bus_message *msg, uid_t *ret) {
        Caller *c;
        int r;

        r = caller_get(m, msg, &c);
        if (r < 0)
                return r;
        *ret = c->euid;
        if (r > 0)
                caller_free(c);
        return 0;
}

int auth_check_cancel(Manager *m, sd_bus_message *msg, uid_t owner, sd_bus_error *error) {
        uid_t uid;
        int r;

        r = auth_caller_uid(m, msg, &uid);
        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "Could not determine the caller's credentials.");
        if (uid == owner)
                return 0;
        /* Someone else's task: only those who may steer apiaryd may cancel it. */
        r = auth_check(m, msg, ACCESS_CONTROL, error);
        if (r < 0) {
                sd_bus_error_free(error);
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "User %u may not cancel a task of user %u: not root and not in "
                                         "ControlUsers= or ControlGroups=.", (unsigned) uid, (unsigned) owner);
        }
        return 0;
}
