/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "apiary/plugin.h"

/*
 * The worker's side of the plugin ABI: loading a plugin, checking it, and the host table it calls
 * back into. Nothing here logs on behalf of the caller: failures come back as a message in
 * PluginHost.error, which the caller reports to apiaryd and the journal.
 */

struct apiary_task {
        const void *payload;
        size_t payload_size;
        bool done;
        bool ok;
        void *result;           /* malloc()ed; the result, or the error text when !ok */
        size_t result_size;
};

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

        char *error;                    /* last set_error() message, or a load failure */
} PluginHost;

/* Fills the host table. KEYS/VALUES are copied. */
int plugin_host_init(PluginHost *h, const char *pool, unsigned slot, const char *path,
                     char *const *keys, char *const *values, size_t n);

/* dlopen()s and checks the plugin. Returns 0, or a negative errno with h->error set. */
int plugin_host_load(PluginHost *h);

/* Calls the plugin's init(). Returns 0, or a negative errno with h->error set. */
int plugin_host_start(PluginHost *h);

/* Calls run() for TASK and makes sure it ended with a result or an error. */
void plugin_host_run(PluginHost *h, struct apiary_task *task);

/* Calls fini() if init() succeeded, unloads, and frees everything. */
void plugin_host_deinit(PluginHost *h);

void apiary_task_deinit(struct apiary_task *t);
