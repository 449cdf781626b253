/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "apiary/plugin.h"

/*
 * The worker's side of the plugin ABI: loading a plugin, checking it, the host table it calls
 * back into, and the tasks it runs. Nothing here logs on behalf of the caller: load and init
 * failures come back as a message in PluginHost.error, which the caller reports to apiaryd.
 */

typedef struct PluginHost {
        struct apiary_host host;        /* first, so the plugin's host pointer is the PluginHost */

        char *pool;
        char *path;
        void *dl;
        const struct apiary_plugin *plugin;
        void *state;
        bool initialized;

        struct apiary_config_entry *config;
        size_t n_config;

        sd_event *event;                /* the worker's loop, for io_add()/timer_add() */
        sd_bus *link;                   /* the link to apiaryd, for submit(); NULL in --oneshot */
        struct apiary_task *pending;    /* asynchronous tasks not completed yet */
        unsigned n_pending;

        char *error;                    /* last set_error() message, or a load failure */
} PluginHost;

/* Fills the host table. KEYS/VALUES are copied; EVENT and LINK are borrowed. Without a LINK,
 * host->submit() fails with -ENOTCONN. */
int plugin_host_init(PluginHost *h, const char *pool, unsigned slot, const char *path,
                     char *const *keys, char *const *values, size_t n, sd_event *event, sd_bus *link);

/* dlopen()s and checks the plugin. Returns 0, or a negative errno with h->error set. */
int plugin_host_load(PluginHost *h);
/* The loaded plugin's APIARY_PLUGIN_* flags; 0 for a descriptor older than the field. */
uint64_t plugin_host_flags(const PluginHost *h);

/* Calls the plugin's init(). Returns 0, or a negative errno with h->error set. */
int plugin_host_start(PluginHost *h);

/*
 * How a task ended: OK with its result, or not with the reason (a NUL-terminated text of SIZE
 * bytes). DATA is valid only during the call.
 */
typedef void (*plugin_task_done_fn)(bool ok, const void *data, size_t size, void *userdata);

/*
 * Runs one task with PAYLOAD, which must stay valid until the task is freed. DONE is called
 * exactly once when the task ends, maybe before this returns: completed by the plugin, or failed
 * by the host if run() returned without completing it. A task still pending at
 * plugin_host_deinit() gets no DONE call. DESTROY, if not NULL, is called with USERDATA when
 * the task is freed, in both cases. Returns 0, or a negative errno if the task could not be
 * started (then neither is called).
 */
int plugin_host_run_task(PluginHost *h, const void *payload, size_t size, plugin_task_done_fn done,
                         void (*destroy)(void *userdata), void *userdata);

/* A result above RESULT_BYTES_MAX (APIARY_RESULT_SIZE_MAX) becomes the failure that says so, in
 * BUF: *OK, *DATA and *SIZE are changed. The same in a pool and in --oneshot. */
#define RESULT_TOO_LARGE_MAX 96
void plugin_result_limit(bool *ok, const void **data, size_t *size, char buf[static RESULT_TOO_LARGE_MAX]);

/* Calls fini() if init() succeeded and it was not called yet. What fini() completes ends as any
 * completion does (DONE); the tasks still pending after it are left to plugin_host_deinit(). */
void plugin_host_fini(PluginHost *h);
/* Calls fini() if init() succeeded and plugin_host_fini() did not, unloads, and frees everything. */
void plugin_host_deinit(PluginHost *h);
