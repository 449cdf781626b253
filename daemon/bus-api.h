/* SPDX-License-Identifier: MIT */
#pragma once

#include "daemon/manager.h"
#include "daemon/objects.h"

/*
 * The public API on the bus from Bus=: org.apiary.Apiary1 on /org/apiary/Apiary1, with a Pool
 * object per pool and a Worker object per slot below it (their names: objects.h), and the errors
 * its methods answer. See docs/dbus-api.md.
 */

#define APIARY_ERROR_NO_SUCH_POOL "org.apiary.Apiary1.Error.NoSuchPool"
#define APIARY_ERROR_NO_SUCH_TASK "org.apiary.Apiary1.Error.NoSuchTask"
#define APIARY_ERROR_QUEUE_FULL "org.apiary.Apiary1.Error.QueueFull"
#define APIARY_ERROR_POOL_FAILED "org.apiary.Apiary1.Error.PoolFailed"
#define APIARY_ERROR_INVALID_OPTION "org.apiary.Apiary1.Error.InvalidOption"
#define APIARY_ERROR_TASK_FAILED "org.apiary.Apiary1.Error.TaskFailed"
#define APIARY_ERROR_STOPPING "org.apiary.Apiary1.Error.Stopping"
#define APIARY_ERROR_POOL_STOPPED "org.apiary.Apiary1.Error.PoolStopped"
#define APIARY_ERROR_TOO_MANY_TASKS "org.apiary.Apiary1.Error.TooManyTasks"
#define APIARY_ERROR_BUSY "org.apiary.Apiary1.Error.Busy"
#define APIARY_ERROR_INVALID_CONFIG "org.apiary.Apiary1.Error.InvalidConfig"
#define APIARY_ERROR_NOT_RUNNING "org.apiary.Apiary1.Error.NotRunning"
#define APIARY_ERROR_ROLLED_BACK "org.apiary.Apiary1.Error.RolledBack"
/* Shared pools: the same names as the engine helper's (ipc/source-protocol.h). */
#define APIARY_ERROR_SOURCE_UNAVAILABLE "org.apiary.Apiary1.Error.SourceUnavailable"
#define APIARY_ERROR_TOO_LARGE "org.apiary.Apiary1.Error.TooLarge"

/* Serves the objects on BUS: the public bus, or a connection to the private socket. */
int bus_api_register(Manager *m, sd_bus *bus);

/* The signals of the objects, on every bus we serve; the core's changes come here through
 * ManagerObserver (changes.h), once per turn of the loop. */
void bus_emit_properties_changed_strv(Manager *m, const char *path, const char *interface, const char *const *names);
void bus_emit_object_added(Manager *m, const char *path);
void bus_emit_object_removed(Manager *m, const char *path);
