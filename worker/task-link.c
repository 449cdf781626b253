/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/protocol.h"
#include "ipc/task-codec.h"
#include "util/log.h"
#include "util/macro.h"
#include "worker/task-link.h"

typedef struct LinkTask {
        TaskLink *link;
        uint64_t id;
        sd_bus_message *dispatch;       /* holds the payload */
} LinkTask;

static int results_send(TaskLink *l) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = TAKE_PTR(l->results);
        int r;

        l->results_bytes = 0;
        l->n_results = 0;
        if (!m)
                return 0;
        r = task_codec_close(m);
        if (r < 0)
                return r;
        return sd_bus_send(l->link, m, NULL);
}

static int on_flush(sd_event_source *s, void *userdata) {
        TaskLink *l = userdata;
        int r;

        r = results_send(l);
        if (r < 0)
                /* The link is gone (we exit when we notice) or broken: either way apiaryd sees us
                 * exit and runs the tasks elsewhere. */
                log_debug_errno(r, "Failed to send results to apiaryd: %m");
        return 0;
}

static int results_append(TaskLink *l, uint64_t id, bool ok, const void *data, size_t size) {
        int r;

        /* Keep messages moderate: start a new one before a big result. */
        if (l->results && l->results_bytes + size > RESULTS_BYTES_MAX) {
                r = results_send(l);
                if (r < 0)
                        return r;
        }
        if (!l->results) {
                r = task_codec_new_results(l->link, &l->results);
                if (r < 0)
                        return r;
        }

        r = task_codec_add_result(l->results, id, ok, data, size);
        if (r < 0)
                return r;
        l->results_bytes += size;
        l->n_results++;
        return sd_event_source_set_enabled(l->flush_source, SD_EVENT_ONESHOT);
}

static void link_task_done(bool ok, const void *data, size_t size, void *userdata) {
        LinkTask *t = userdata;
        char reason[128];
        int r;

        if (size > RESULT_BYTES_MAX) {
                int k = snprintf(reason, sizeof(reason), "result too large: %zu bytes (at most %u)", size,
                                 RESULT_BYTES_MAX);

                ok = false;
                data = reason;
                size = (size_t) k;
        }
        r = results_append(t->link, t->id, ok, data, size);
        if (r < 0) {
                /* A result that cannot be sent must not be lost quietly: exiting makes apiaryd
                 * take back every task we hold and run it again. */
                log_error_errno(r, "Cannot send the result of task %" PRIu64 " to apiaryd, exiting: %m", t->id);
                _exit(1);
        }
}

static void link_task_free(void *userdata) {
        LinkTask *t = userdata;

        sd_bus_message_unref(t->dispatch);
        free(t);
}

typedef struct DispatchContext {
        TaskLink *link;
        sd_bus_message *msg;
} DispatchContext;

static int on_task(uint64_t id, const void *payload, size_t size, void *userdata) {
        DispatchContext *d = userdata;
        TaskLink *l = d->link;
        LinkTask *t;
        int r;

        t = malloc(sizeof(*t));
        if (!t)
                return results_append(l, id, false, "out of memory", strlen("out of memory"));
        *t = (LinkTask) { .link = l, .id = id, .dispatch = sd_bus_message_ref(d->msg) };
        /* The payload points into the message, which the task holds until it is freed. */
        r = plugin_host_run_task(l->host, payload, size, link_task_done, link_task_free, t);
        if (r < 0) {
                link_task_free(t);
                return results_append(l, id, false, "could not start the task", strlen("could not start the task"));
        }
        return 0;
}

/* Worker1.Dispatch(a(tay)): runs each task; synchronous plugins complete them right here, and
 * their results go back together at the end of this turn of the loop. */
static int method_dispatch(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        DispatchContext d = { .link = userdata, .msg = msg };
        int r;

        r = task_codec_read_dispatch(msg, on_task, &d);
        if (r < 0) {
                /* apiaryd sent what we cannot read: exiting gives every task we hold back to it. */
                log_error_errno(r, "Malformed Dispatch from apiaryd, exiting: %m");
                _exit(WORKER_EXIT_LINK);
        }
        return 1;
}

static const sd_bus_vtable worker_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_NAMES("Dispatch", LINK_DISPATCH_IN, SD_BUS_PARAM(tasks), NULL,,
                                 method_dispatch, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

int task_link_init(TaskLink *l, PluginHost *host, sd_bus *link, sd_event *event) {
        int r;

        *l = (TaskLink) { .host = host, .link = link };
        r = sd_event_add_defer(event, &l->flush_source, on_flush, l);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(l->flush_source, SD_EVENT_OFF);
        if (r < 0)
                return r;
        return sd_bus_add_object_vtable(link, NULL, WORKER_OBJECT_PATH, WORKER_INTERFACE, worker_vtable, l);
}

void task_link_done(TaskLink *l) {
        if (l->link && l->results)
                (void) results_send(l);
        l->results = sd_bus_message_unref(l->results);
        l->flush_source = sd_event_source_disable_unref(l->flush_source);
}
