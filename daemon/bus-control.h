/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>

#include "daemon/manager.h"

/* The control methods of org.apiary.Apiary1.Pool and .Worker (vtables in bus-api.c). Every one
 * needs ControlUsers=/ControlGroups= (or root). */

/* Reload() is answered once the reload has ended: bus_reload_finished(), the core's
 * ManagerObserver.reload_finished, answers every call that waits. */
int bus_manager_method_reload(sd_bus_message *m, void *userdata, sd_bus_error *error);
void bus_reload_finished(Manager *m, ReloadResult result, const char *message);
/* PlanReload() → a(sssss) (pool, kind, key, old, new): what Reload() would change now. */
int bus_manager_method_plan_reload(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_pool_method_start(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_pool_method_stop(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_pool_method_pause(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_pool_method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_pool_method_restart(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_pool_method_scale(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_worker_method_restart(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_worker_method_kill(sd_bus_message *m, void *userdata, sd_bus_error *error);
