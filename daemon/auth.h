/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

typedef struct Manager Manager;

typedef enum AccessKind {
        ACCESS_SUBMIT,          /* Submit, Run, SubmitBatch, Cancel */
        ACCESS_CONTROL,         /* Reload, and every Pool and Worker method */
        _ACCESS_KIND_MAX,
        _ACCESS_KIND_INVALID = -EINVAL,
} AccessKind;

/*
 * Who is calling, as of the moment it connected: on the bus, what dbus-daemon recorded then
 * (GetConnectionCredentials: SO_PEERCRED and SO_PEERGROUPS at its connect()); on the private
 * socket, SO_PEERCRED and SO_PEERGROUPS of the accepted socket. Never /proc, which tells what the
 * process is now (it may have exec()ed a setgid binary since), and never a header field: which of
 * the two a message is depends only on the connection it came in on.
 */
typedef struct Caller {
        uid_t uid;
        pid_t pid;
        gid_t *gids;            /* primary and supplementary */
        size_t n_gids;
        char *label;            /* for log lines: ":1.7 (UID 1000, PID 4242, apiaryctl)",
                                 * "private connection 3 (UID 0, PID 4250, python3)" */
} Caller;

Caller *auth_caller_free(Caller *c);
/* The credentials of the peer on the connected socket FD, for the private socket. */
int auth_caller_from_socket(int fd, uint64_t connection_id, Caller **ret);

/*
 * Authorization, decided here from the caller's credentials whatever the bus: root and apiaryd's
 * own user may do everything; others need to be listed in SubmitUsers=/SubmitGroups= or
 * ControlUsers=/ControlGroups=. Reading properties and introspection are open to all.
 *
 * Returns 0 if allowed, or sets org.freedesktop.DBus.Error.AccessDenied in ERROR and returns
 * -EACCES. Bus credentials are cached per unique name until it leaves the bus.
 */
int auth_check(Manager *m, sd_bus_message *msg, AccessKind kind, sd_bus_error *error);

/* The caller of MSG (cached like auth_check()'s), or a negative errno. */
int auth_caller(Manager *m, sd_bus_message *msg, const Caller **ret);
/* Whether C has control rights (root, apiaryd's user, ControlUsers=, ControlGroups=): such a
 * caller is never locked out by the limits others share (peer.c). */
bool auth_caller_may_control(Manager *m, const Caller *c);
/* Whether C may submit tasks (root, apiaryd's user, SubmitUsers=, SubmitGroups=). */
bool auth_caller_may_submit(Manager *m, const Caller *c);
/* What log lines call the caller of MSG. */
const char *auth_caller_label(Manager *m, sd_bus_message *msg);

/* Cancel of a task submitted by OWNER: its owner may, and whoever has control rights. */
int auth_check_cancel(Manager *m, sd_bus_message *msg, uid_t owner, sd_bus_error *error);

/* Watches for callers leaving the bus, to drop their cached credentials (m->callers, which the
 * manager frees with itself). */
int auth_setup(Manager *m);
