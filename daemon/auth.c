/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/auth.h"
#include "daemon/manager.h"
#include "daemon/peer.h"
#include "util/log.h"
#include "util/macro.h"

Caller *auth_caller_free(Caller *c) {
        if (!c)
                return NULL;
        free(c->gids);
        free(c->label);
        free(c);
        return NULL;
}

static void caller_free(gpointer p) {
        auth_caller_free(p);
}

/* "PID 4242, apiaryctl": the process's own name for itself, for log lines only (it chooses it, and
 * it may have exec()ed something else since: nothing is decided by it). */
static char *describe_process(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%i/comm", (int) pid), *comm = NULL;

        if (pid <= 0)
                return g_strdup("PID unknown");
        if (!g_file_get_contents(path, &comm, NULL, NULL))
                return g_strdup_printf("PID %i", (int) pid);
        g_strchomp(comm);
        return g_strdup_printf("PID %i, %s", (int) pid, comm);
}

static int caller_add_gid(Caller *c, gid_t gid) {
        gid_t *n;

        for (size_t i = 0; i < c->n_gids; i++)
                if (c->gids[i] == gid)
                        return 0;
        n = reallocarray(c->gids, c->n_gids + 1, sizeof(gid_t));
        if (!n)
                return -ENOMEM;
        c->gids = n;
        c->gids[c->n_gids++] = gid;
        return 0;
}

int auth_caller_from_socket(int fd, uint64_t connection_id, Caller **ret) {
        struct ucred ucred = {};
        socklen_t len = sizeof(ucred);
        _cleanup_(freep) gid_t *groups = NULL;
        Caller *c;
        int r;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &ucred, &len) < 0)
                return -errno;
        if (len != sizeof(ucred) || ucred.uid == (uid_t) -1)
                return -EIO;

        /* The peer's supplementary groups as of its connect(), kept by the kernel with the socket. */
        len = 0;
        for (;;) {
                r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
                if (r >= 0)
                        break;
                if (errno != ERANGE)
                        return -errno;
                free(groups);
                groups = malloc(MAX(len, (socklen_t) sizeof(gid_t)));
                if (!groups)
                        return -ENOMEM;
        }

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->uid = ucred.uid;
        c->pid = ucred.pid;
        r = caller_add_gid(c, ucred.gid);
        for (size_t i = 0; r >= 0 && i < len / sizeof(gid_t); i++)
                r = caller_add_gid(c, groups[i]);
        if (r >= 0) {
                g_autofree char *process = describe_process(c->pid);

                if (asprintf(&c->label, "private connection %" PRIu64 " (UID %u, %s)", connection_id,
                             (unsigned) c->uid, process) < 0)
                        r = -ENOMEM;
        }
        if (r < 0) {
                auth_caller_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

/* GetConnectionCredentials: what dbus-daemon learnt of SENDER when it connected. */
static int caller_from_bus(sd_bus *bus, const char *sender, Caller **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        bool have_uid = false;
        const char *key;
        Caller *c;
        int r;

        r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "GetConnectionCredentials", &error, &reply, "s", sender);
        if (r < 0)
                return r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        break;
                if (streq(key, "UnixUserID") && sd_bus_message_verify_type(reply, 'v', "u") > 0) {
                        uint32_t u;

                        r = sd_bus_message_read(reply, "v", "u", &u);
                        c->uid = (uid_t) u;
                        have_uid = r >= 0;
                } else if (streq(key, "ProcessID") && sd_bus_message_verify_type(reply, 'v', "u") > 0) {
                        uint32_t u;

                        r = sd_bus_message_read(reply, "v", "u", &u);
                        c->pid = (pid_t) u;
                } else if (streq(key, "UnixGroupIDs") && sd_bus_message_verify_type(reply, 'v', "au") > 0) {
                        const uint32_t *gids;
                        size_t size;

                        r = sd_bus_message_enter_container(reply, 'v', "au");
                        if (r >= 0)
                                r = sd_bus_message_read_array(reply, 'u', (const void **) &gids, &size);
                        for (size_t i = 0; r >= 0 && i < size / sizeof(uint32_t); i++)
                                r = caller_add_gid(c, (gid_t) gids[i]);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                } else
                        r = sd_bus_message_skip(reply, "v");
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r >= 0 && !have_uid)
                r = -ENODATA;
        if (r >= 0) {
                g_autofree char *process = describe_process(c->pid);

                if (asprintf(&c->label, "%s (UID %u, %s)", sender, (unsigned) c->uid, process) < 0)
                        r = -ENOMEM;
        }
        if (r < 0) {
                auth_caller_free(c);
                return r;
        }
        *ret = c;
        return 0;
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

int auth_caller(Manager *m, sd_bus_message *msg, const Caller **ret) {
        sd_bus *bus = sd_bus_message_get_bus(msg);
        const char *sender;
        Caller *c;
        int r;

        if (bus != m->bus) {
                /* A private connection: one peer, its credentials taken when it connected. The
                 * message's SENDER field there is whatever the peer wrote: it means nothing. */
                Peer *p = peer_find(m, bus);

                if (!p || !p->caller)
                        return -EPERM;
                *ret = p->caller;
                return 0;
        }

        /* On the bus, dbus-daemon writes SENDER itself: it names the connection. */
        sender = sd_bus_message_get_sender(msg);
        if (!sender || sender[0] != ':')
                return -EBADMSG;
        c = g_hash_table_lookup(m->callers, sender);
        if (!c) {
                r = caller_from_bus(m->bus, sender, &c);
                if (r < 0)
                        return r;
                char *key = strdup(sender);

                if (!key) {
                        auth_caller_free(c);
                        return -ENOMEM;
                }
                g_hash_table_insert(m->callers, key, c);
        }
        *ret = c;
        return 0;
}

const char *auth_caller_label(Manager *m, sd_bus_message *msg) {
        const Caller *c;

        return auth_caller(m, msg, &c) >= 0 ? c->label : "a caller of unknown credentials";
}

static bool caller_allowed(const Caller *c, const IdList *users, const IdList *groups) {
        if (c->uid == 0 || c->uid == geteuid())
                return true;
        if (id_list_contains(users, c->uid))
                return true;
        for (size_t i = 0; i < c->n_gids; i++)
                if (id_list_contains(groups, c->gids[i]))
                        return true;
        return false;
}

bool auth_caller_may_control(Manager *m, const Caller *c) {
        return caller_allowed(c, &m->config->control_users, &m->config->control_groups);
}

bool auth_caller_may_submit(Manager *m, const Caller *c) {
        return caller_allowed(c, &m->config->submit_users, &m->config->submit_groups);
}

int auth_check(Manager *m, sd_bus_message *msg, AccessKind kind, sd_bus_error *error) {
        const Config *cfg = m->config;
        const Caller *c;
        bool allowed;
        int r;

        r = auth_caller(m, msg, &c);
        if (r < 0) {
                log_warning_errno(r, "Failed to get the credentials of the caller of %s(), denying: %m",
                                  sd_bus_message_get_member(msg) ?: "?");
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "Could not determine the caller's credentials.");
                return -EACCES;
        }

        if (kind == ACCESS_CONTROL)
                allowed = caller_allowed(c, &cfg->control_users, &cfg->control_groups);
        else
                allowed = caller_allowed(c, &cfg->submit_users, &cfg->submit_groups);
        if (!allowed) {
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                  "User %u may not call %s(): not root and not in %s= or %s=.", (unsigned) c->uid,
                                  sd_bus_message_get_member(msg),
                                  kind == ACCESS_CONTROL ? "ControlUsers" : "SubmitUsers",
                                  kind == ACCESS_CONTROL ? "ControlGroups" : "SubmitGroups");
                return -EACCES;
        }
        return 0;
}

int auth_check_cancel(Manager *m, sd_bus_message *msg, uid_t owner, sd_bus_error *error) {
        const Caller *c;
        int r;

        r = auth_caller(m, msg, &c);
        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "Could not determine the caller's credentials.");
        if (c->uid == owner)
                return 0;
        /* Someone else's task: only those who may steer apiaryd may cancel it. */
        r = auth_check(m, msg, ACCESS_CONTROL, error);
        if (r < 0) {
                sd_bus_error_free(error);
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "User %u may not cancel a task of user %u: not root and not in "
                                         "ControlUsers= or ControlGroups=.", (unsigned) c->uid, (unsigned) owner);
        }
        return 0;
}
