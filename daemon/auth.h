/* SPDX-License-Identifier: MIT */
#pragma once

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
 * Authorization, decided here from the caller's credentials whatever the bus: root and apiaryd's
 * own user may do everything; others need to be listed in SubmitUsers=/SubmitGroups= or
 * ControlUsers=/ControlGroups=. Reading properties and introspection are open to all.
 *
 * Returns 0 if allowed, or sets org.freedesktop.DBus.Error.AccessDenied in ERROR and returns
 * -EACCES. Credentials are cached per unique bus name until it leaves the bus.
 */
int auth_check(Manager *m, sd_bus_message *msg, AccessKind kind, sd_bus_error *error);

/* The caller's effective UID (cached like auth_check()'s credentials). */
int auth_caller_uid(Manager *m, sd_bus_message *msg, uid_t *ret);

/* Cancel of a task submitted by OWNER: its owner may, and whoever has control rights. */
int auth_check_cancel(Manager *m, sd_bus_message *msg, uid_t owner, sd_bus_error *error);

typedef struct Caller Caller;
void auth_caller_free(Caller *c);

/* Watches for callers leaving the bus, to drop their cached credentials. */
int auth_setup(Manager *m);
void auth_done(Manager *m);
