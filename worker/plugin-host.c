/* SPDX-License-Identifier: MIT */
#include <dlfcn.h>
#include <glib.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/link-calls.h"
#include "ipc/protocol.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/time-util.h"
#include "worker/plugin-host.h"

struct apiary_task {
        PluginHost *host;
        struct apiary_task *pending_next, *pending_prev;      /* in host->pending while pending */
        const void *payload;            /* the caller's, e.g. inside the Worker1.Run call */
        size_t payload_size;
        plugin_task_done_fn on_done;    /* where the result goes */
        void (*destroy)(void *userdata);
        void *userdata;
        bool in_run;                    /* run() has not returned yet: it frees the task */
        bool pending;                   /* run() returned APIARY_TASK_PENDING */
        bool done;
};

struct apiary_source {
        PluginHost *host;
        sd_event_source *source;
        apiary_io_fn io;
        apiary_timer_fn timer;
        void *userdata;
        bool firing;                    /* inside the timer's callback, which frees it afterwards */
};

typedef struct SubmitRequest {
        apiary_result_fn callback;
        void *userdata;
} SubmitRequest;

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

/* ---- tasks ---- */

static const void *host_task_payload(apiary_task *task, size_t *ret_size) {
        if (!task || task->done)
                return NULL;
        if (ret_size)
                *ret_size = task->payload_size;
        return task->payload;
}

static void pending_unlink(PluginHost *h, apiary_task *task) {
        if (task->pending_prev)
                task->pending_prev->pending_next = task->pending_next;
        else
                h->pending = task->pending_next;
        if (task->pending_next)
                task->pending_next->pending_prev = task->pending_prev;
        task->pending_next = task->pending_prev = NULL;
}

static void task_free(apiary_task *task) {
        if (task->destroy)
                task->destroy(task->userdata);
        free(task);
}

/* Hands the plugin's own buffer (no copy of ours) to the task's owner, and ends the task. */
static int task_complete(apiary_task *task, bool ok, const void *data, size_t size) {
        PluginHost *h;

        if (!task || (!data && size > 0))
                return -EINVAL;
        if (task->done)
                return -EALREADY;
        h = task->host;

        task->on_done(ok, data, size, task->userdata);

        task->done = true;
        if (task->pending) {
                pending_unlink(h, task);
                h->n_pending--;
        }
        if (!task->in_run)
                task_free(task);
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

int plugin_host_run_task(PluginHost *h, const void *payload, size_t size, plugin_task_done_fn done,
                         void (*destroy)(void *userdata), void *userdata) {
        apiary_task *task;
        int r;

        if (!done || (!payload && size > 0))
                return -EINVAL;
        task = calloc(1, sizeof(*task));
        if (!task)
                return -ENOMEM;
        *task = (apiary_task) {
                .host = h,
                .payload = payload,
                .payload_size = size,
                .on_done = done,
                .destroy = destroy,
                .userdata = userdata,
                .in_run = true,
        };

        r = h->plugin->run(h->state, task);

        if (task->done) {
                task_free(task);
                return 0;
        }
        if (r == APIARY_TASK_PENDING) {
                task->in_run = false;
                task->pending = true;
                task->pending_next = h->pending;
                if (h->pending)
                        h->pending->pending_prev = task;
                h->pending = task;
                h->n_pending++;
                return 0;
        }

        /* The plugin did not say how the task ended: supply a reason, as fwupd's runner does. */
        if (r < 0)
                (void) host_task_fail(task, "%s", strerror(-r));
        else
                (void) host_task_fail(task, "plugin %s returned %i without completing the task",
                                      h->plugin->name ?: h->path, r);
        task_free(task);
        return 0;
}

/* ---- the event loop ---- */

static int source_io_cb(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        apiary_source *src = userdata;

        src->io(src, fd, revents, src->userdata);
        return 0;
}

static int source_timer_cb(sd_event_source *s, uint64_t usec, void *userdata) {
        apiary_source *src = userdata;

        src->firing = true;
        src->timer(src, src->userdata);
        src->firing = false;
        /* One-shot: the source goes away after its callback, whether or not it was freed in it. */
        sd_event_source_disable_unref(src->source);
        return 0;
}

static void source_destroy(void *userdata) {
        free(userdata);
}

static int source_new(PluginHost *h, void *userdata, apiary_source **ret) {
        apiary_source *src = calloc(1, sizeof(*src));

        if (!src)
                return -ENOMEM;
        src->host = h;
        src->userdata = userdata;
        *ret = src;
        return 0;
}

static int host_io_add(const struct apiary_host *host, int fd, uint32_t events, apiary_io_fn callback,
                       void *userdata, apiary_source **ret_source) {
        PluginHost *h = host_of(host);
        apiary_source *src;
        int r;

        if (fd < 0 || !callback)
                return -EINVAL;
        r = source_new(h, userdata, &src);
        if (r < 0)
                return r;
        src->io = callback;
        r = sd_event_add_io(h->event, &src->source, fd, events, source_io_cb, src);
        if (r < 0) {
                free(src);
                return r;
        }
        (void) sd_event_source_set_destroy_callback(src->source, source_destroy);
        if (ret_source)
                *ret_source = src;
        return 0;
}

static int host_timer_add(const struct apiary_host *host, uint64_t usec, apiary_timer_fn callback, void *userdata,
                          apiary_source **ret_source) {
        PluginHost *h = host_of(host);
        apiary_source *src;
        int r;

        if (!callback)
                return -EINVAL;
        r = source_new(h, userdata, &src);
        if (r < 0)
                return r;
        src->timer = callback;
        r = sd_event_add_time_relative(h->event, &src->source, CLOCK_MONOTONIC, usec, 1, source_timer_cb, src);
        if (r < 0) {
                free(src);
                return r;
        }
        (void) sd_event_source_set_destroy_callback(src->source, source_destroy);
        if (ret_source)
                *ret_source = src;
        return 0;
}

static void host_source_free(apiary_source *src) {
        if (!src)
                return;
        if (src->firing)
                return;         /* source_timer_cb() drops it once the callback returns */
        sd_event_source_disable_unref(src->source);
}

static uint64_t host_now_usec(const struct apiary_host *host) {
        return now_usec(CLOCK_MONOTONIC);
}

/* ---- submitting tasks to other pools ---- */

static int submit_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        SubmitRequest *req = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        const void *data = NULL;
        size_t size = 0;
        int r;

        if (e) {
                const char *text = e->message ?: e->name;

                req->callback(0, text, strlen(text), req->userdata);
        } else {
                r = link_read_submit_reply(reply, &data, &size);
                if (r < 0) {
                        static const char bad[] = "malformed reply from apiaryd";
                        req->callback(0, bad, sizeof(bad) - 1, req->userdata);
                } else
                        req->callback(1, data, size, req->userdata);
        }
        free(req);
        return 0;
}

static int host_submit(const struct apiary_host *host, const char *pool, const void *payload, size_t size,
                       apiary_result_fn callback, void *userdata) {
        PluginHost *h = host_of(host);
        SubmitRequest *req;
        int r;

        if (!pool || !callback || (!payload && size > 0))
                return -EINVAL;
        if (!h->link)
                return -ENOTCONN;       /* apiary-worker --oneshot: no apiaryd to submit to */

        req = malloc(sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (SubmitRequest) { .callback = callback, .userdata = userdata };

        r = link_call_submit(h->link, pool, payload, size, submit_reply, req);
        if (r < 0) {
                free(req);
                return r;
        }
        return 0;
}

/* ---- loading ---- */

int plugin_host_init(PluginHost *h, const char *pool, unsigned slot, const char *path,
                     char *const *keys, char *const *values, size_t n, sd_event *event, sd_bus *link) {
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
                        .io_add = host_io_add,
                        .timer_add = host_timer_add,
                        .source_free = host_source_free,
                        .now_usec = host_now_usec,
                        .submit = host_submit,
                },
                .event = event,
                .link = link,
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

uint64_t plugin_host_flags(const PluginHost *h) {
        const struct apiary_plugin *p = h->plugin;

        if (p->struct_size < offsetof(struct apiary_plugin, flags) + sizeof(p->flags))
                return 0;
        return p->flags;
}

int plugin_host_start(PluginHost *h) {
        int r;

        /* Without init(), run() gets the host table as its state: it can complete its tasks. */
        if (!h->plugin->init) {
                h->state = (void *) &h->host;
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

void plugin_result_limit(bool *ok, const void **data, size_t *size, char buf[static RESULT_TOO_LARGE_MAX]) {
        int k;

        if (*size <= RESULT_BYTES_MAX)
                return;
        k = snprintf(buf, RESULT_TOO_LARGE_MAX, "result too large: %zu bytes (at most %u)", *size, RESULT_BYTES_MAX);
        *ok = false;
        *data = buf;
        *size = (size_t) k;
}

void plugin_host_fini(PluginHost *h) {
        if (h->initialized && h->plugin->fini)
                h->plugin->fini(h->state);
        h->initialized = false;
}

void plugin_host_deinit(PluginHost *h) {
        plugin_host_fini(h);

        /* Tasks still pending go unanswered: apiaryd sees the worker exit and re-queues them. */
        while (h->pending) {
                apiary_task *t = h->pending;

                pending_unlink(h, t);
                task_free(t);
        }
        h->initialized = false;
        h->plugin = NULL;
        /* The object stays mapped: sources or callbacks the plugin left behind may still point
         * into it until the loop is freed, and valgrind needs it to name the plugin's frames. */
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
