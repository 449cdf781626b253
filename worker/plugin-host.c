/* SPDX-License-Identifier: MIT */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "plugin-host.h"

static PluginHost *host_of(const struct apiary_host *host) {
        /* struct apiary_host is PluginHost's first member. */
        return (PluginHost *) host;
}

static void set_errorv(PluginHost *h, const char *format, va_list ap) {
        char *s = NULL;

        if (vasprintf(&s, format, ap) < 0)
                s = NULL;
        free(h->error);
        h->error = s;
}

static _printf_(2, 3) void set_error(PluginHost *h, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        set_errorv(h, format, ap);
        va_end(ap);
}

static const char *host_config_get(const struct apiary_host *host, const char *key) {
        PluginHost *h = host_of(host);

        if (!key)
                return NULL;
        for (size_t i = 0; i < h->n_config; i++)
                if (strcmp(h->config[i].key, key) == 0)
                        return h->config[i].value;
        return NULL;
}

static void host_log(const struct apiary_host *host, int priority, const char *format, ...) {
        PluginHost *h = host_of(host);
        LogContext ctx = { .pool = h->pool, .slot = (int) host->slot, .pid = (int) getpid() };
        va_list ap;

        if (priority < LOG_EMERG || priority > LOG_DEBUG)
                priority = LOG_INFO;
        va_start(ap, format);
        (void) log_internalv(priority, 0, &ctx, "plugin", 0, h->plugin && h->plugin->name ? h->plugin->name : "plugin",
                             format, ap);
        va_end(ap);
}

static void host_set_error(const struct apiary_host *host, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        set_errorv(host_of(host), format, ap);
        va_end(ap);
}

static const void *host_task_payload(apiary_task *task, size_t *ret_size) {
        if (!task)
                return NULL;
        if (ret_size)
                *ret_size = task->payload_size;
        return task->payload;
}

static int task_complete(apiary_task *task, bool ok, const void *data, size_t size) {
        void *copy = NULL;

        if (!task || (!data && size > 0))
                return -EINVAL;
        if (task->done)
                return -EALREADY;

        /* One byte more than asked, so that an error text is always NUL-terminated. */
        copy = malloc(size + 1);
        if (!copy)
                return -ENOMEM;
        if (size > 0)
                memcpy(copy, data, size);
        ((char *) copy)[size] = '\0';

        task->result = copy;
        task->result_size = size;
        task->ok = ok;
        task->done = true;
        return 0;
}

static int host_task_return(apiary_task *task, const void *result, size_t size) {
        return task_complete(task, true, result, size);
}

static int host_task_fail(apiary_task *task, const char *format, ...) {
        _cleanup_(freep) char *s = NULL;
        va_list ap;
        int k;

        va_start(ap, format);
        k = vasprintf(&s, format ?: "failed", ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        return task_complete(task, false, s, (size_t) k);
}

int plugin_host_init(PluginHost *h, const char *pool, unsigned slot, const char *path,
                     char *const *keys, char *const *values, size_t n) {
        *h = (PluginHost) {
                .host = {
                        .abi_version = APIARY_PLUGIN_ABI_VERSION,
                        .struct_size = sizeof(struct apiary_host),
                        .slot = slot,
                        .config_get = host_config_get,
                        .log = host_log,
                        .set_error = host_set_error,
                        .task_payload = host_task_payload,
                        .task_return = host_task_return,
                        .task_fail = host_task_fail,
                },
        };

        h->pool = strdup(pool);
        h->path = strdup(path);
        h->config = calloc(n + 1, sizeof(struct apiary_config_entry));
        if (!h->pool || !h->path || !h->config)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                h->config[i].key = strdup(keys[i]);
                h->config[i].value = strdup(values[i]);
                h->n_config++;
                if (!h->config[i].key || !h->config[i].value)
                        return -ENOMEM;
        }

        h->host.pool = h->pool;
        h->host.config = h->config;
        h->host.n_config = h->n_config;
        return 0;
}

int plugin_host_load(PluginHost *h) {
        const struct apiary_plugin *p;

        h->dl = dlopen(h->path, RTLD_NOW | RTLD_LOCAL);
        if (!h->dl) {
                set_error(h, "cannot load %s: %s", h->path, dlerror());
                return -ENOENT;
        }

        p = dlsym(h->dl, APIARY_PLUGIN_SYMBOL);
        if (!p) {
                set_error(h, "%s is not an Apiary plugin: it does not export \"%s\"", h->path, APIARY_PLUGIN_SYMBOL);
                return -ENOEXEC;
        }
        if (p->abi_version != APIARY_PLUGIN_ABI_VERSION) {
                set_error(h, "%s was built for plugin ABI version %u, but this apiary-worker speaks version %u",
                          h->path, p->abi_version, APIARY_PLUGIN_ABI_VERSION);
                return -EPROTO;
        }
        if (p->struct_size < offsetof(struct apiary_plugin, fini) + sizeof(p->fini)) {
                set_error(h, "%s has a plugin descriptor of %u bytes, smaller than ABI version %u's %zu bytes",
                          h->path, p->struct_size, APIARY_PLUGIN_ABI_VERSION,
                          offsetof(struct apiary_plugin, fini) + sizeof(p->fini));
                return -EPROTO;
        }
        if (!p->run) {
                set_error(h, "%s has no run() function", h->path);
                return -ENOEXEC;
        }

        h->plugin = p;
        return 0;
}

int plugin_host_start(PluginHost *h) {
        int r;

        if (!h->plugin->init) {
                h->initialized = true;
                return 0;
        }

        r = h->plugin->init(&h->host, &h->state);
        if (r < 0) {
                if (!h->error)
                        set_error(h, "%s", strerror(-r));
                return r;
        }
        if (r > 0) {
                if (!h->error)
                        set_error(h, "init() returned %i, expected 0 or a negative errno", r);
                return -EPROTO;
        }

        h->initialized = true;
        return 0;
}

void plugin_host_run(PluginHost *h, struct apiary_task *task) {
        int r;

        free(h->error);
        h->error = NULL;

        r = h->plugin->run(h->state, task);
        if (task->done)
                return;

        /* The plugin did not say how the task ended: supply a reason, as fwupd's runner does. */
        if (r < 0)
                (void) host_task_fail(task, "%s", h->error ?: strerror(-r));
        else
                (void) host_task_fail(task, "plugin %s returned without completing the task",
                                      h->plugin->name ?: h->path);
}

void plugin_host_deinit(PluginHost *h) {
        if (h->initialized && h->plugin->fini)
                h->plugin->fini(h->state);
        h->initialized = false;
        h->plugin = NULL;
        if (h->dl)
                dlclose(h->dl);
        h->dl = NULL;

        for (size_t i = 0; i < h->n_config; i++) {
                free((char *) h->config[i].key);
                free((char *) h->config[i].value);
        }
        free(h->config);
        free(h->pool);
        free(h->path);
        free(h->error);
        *h = (PluginHost) {};
}

void apiary_task_deinit(struct apiary_task *t) {
        free(t->result);
        *t = (struct apiary_task) {};
}
