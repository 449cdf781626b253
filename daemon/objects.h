/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The names of Apiary's objects, which the core marks changed (changes.h) and the D-Bus edge
 * (bus-api.c) serves: org.apiary.Apiary1 on /org/apiary/Apiary1, a Pool object per pool and a
 * Worker object per slot below it. Names only: nothing here speaks D-Bus. See docs/dbus-api.md.
 */

#define APIARY_BUS_NAME "org.apiary.Apiary1"
#define APIARY_OBJECT_PATH "/org/apiary/Apiary1"
#define APIARY_POOL_PREFIX "/org/apiary/Apiary1/pool"
#define APIARY_MANAGER_INTERFACE "org.apiary.Apiary1.Manager"
#define APIARY_POOL_INTERFACE "org.apiary.Apiary1.Pool"
#define APIARY_WORKER_INTERFACE "org.apiary.Apiary1.Worker"

/* The object path of the pool NAME (escaped as sd_bus_path_encode() does), and of its slot. */
int object_pool_path(const char *name, char **ret);
int object_worker_path(const char *pool_name, unsigned slot, char **ret);
