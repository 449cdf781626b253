/* SPDX-License-Identifier: MIT */
#include <assert.h>
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
#include "util/time-util.h"
#include "worker/task-link.h"

struct LinkTask {
        TaskLink *link;
        LinkTask *next;                 /* in link->waiting while it waits */
        uint64_t id;
        uint32_t number;                /* in the order apiaryd sent them: what it claims by */
        sd_bus_message *dispatch;       /* holds the payload */
        const void *payload;
        size_t size;
        usec_t started;                 /* CLOCK_MONOTONIC */
};

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

static int results_append(TaskLink *l, uint64_t id, bool ok, usec_t run_usec, const void *data, size_t size) {
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

        r = task_codec_add_result(l->results, id, ok, run_usec, data, size);
        if (r < 0)
                return r;
        l->results_bytes += size;
        l->n_results++;
        r = sd_event_source_set_enabled(l->flush_source, SD_EVENT_ONESHOT);
        /* The loop has ended (a task completed in fini()): task_link_done() sends it. */
        return r == -ESTALE ? 0 : r;
}

static void link_task_done(bool ok, const void *data, size_t size, void *userdata) {
        LinkTask *t = userdata;
        TaskLink *l = t->link;
        usec_t now = now_usec(CLOCK_MONOTONIC);
        char reason[RESULT_TOO_LARGE_MAX];
        int r;

        l->n_running--;
        /* Ended from a callback of an asynchronous plugin: the next one starts in the next turn. */
        if (!l->starting && l->waiting_head)
                (void) sd_event_source_set_enabled(l->run_source, SD_EVENT_ONESHOT);

        plugin_result_limit(&ok, &data, &size, reason);
        r = results_append(l, t->id, ok, now > t->started ? now - t->started : 0, data, size);
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

static void waiting_push(TaskLink *l, LinkTask *t) {
        t->next = NULL;
        if (l->waiting_tail)
                l->waiting_tail->next = t;
        else
                l->waiting_head = t;
        l->waiting_tail = t;
}

static LinkTask *waiting_pop(TaskLink *l) {
        LinkTask *t = l->waiting_head;

        if (t) {
                l->waiting_head = t->next;
                if (!l->waiting_head)
                        l->waiting_tail = NULL;
                t->next = NULL;
        }
        return t;
}

/* Starts what waits, in order, while fewer than max_running run. A synchronous plugin ends each
 * task inside run(), so one turn may run many; after LINK_TURN_BUDGET_USEC the ends so far go out, and
 * the rest waits for the next turn. */
static void link_run_waiting(TaskLink *l) {
        usec_t turn_start = 0;
        int r;

        if (l->starting)
                return;
        l->starting = true;
        while (l->waiting_head && l->n_running < l->max_running) {
                usec_t now = now_usec(CLOCK_MONOTONIC);
                LinkTask *t;

                if (turn_start == 0)
                        turn_start = now;
                else if (now - turn_start >= LINK_TURN_BUDGET_USEC) {
                        r = results_send(l);
                        if (r < 0)
                                log_debug_errno(r, "Failed to send results to apiaryd: %m");
                        (void) sd_event_source_set_enabled(l->run_source, SD_EVENT_ONESHOT);
                        break;
                }

                t = waiting_pop(l);
                if (!link_claim_start(l->claim, t->number)) {
                        /* apiaryd took it back to run elsewhere: not ours any more. */
                        link_task_free(t);
                        continue;
                }
                t->started = now;
                l->n_running++;
                /* The payload points into the message, which the task holds until it is freed. */
                r = plugin_host_run_task(l->host, t->payload, t->size, link_task_done, link_task_free, t);
                if (r < 0) {
                        uint64_t id = t->id;

                        l->n_running--;
                        link_task_free(t);
                        r = results_append(l, id, false, 0, "could not start the task", strlen("could not start the task"));
                        if (r < 0) {
                                log_error_errno(r, "Cannot send the result of task %" PRIu64 " to apiaryd, exiting: %m", id);
                                _exit(1);
                        }
                }
        }
        l->starting = false;
}

static int on_run(sd_event_source *s, void *userdata) {
        link_run_waiting(userdata);
        return 0;
}

typedef struct DispatchContext {
        TaskLink *link;
        sd_bus_message *msg;
} DispatchContext;

static int on_task(uint64_t id, const void *payload, size_t size, void *userdata) {
        DispatchContext *d = userdata;
        TaskLink *l = d->link;
        LinkTask *t;

        t = malloc(sizeof(*t));
        if (!t) {
                /* Its number would go unclaimed, and the claims of all after it fail: exiting
                 * gives every task we hold back to apiaryd. */
                log_error("Out of memory for task %" PRIu64 ", exiting.", id);
                _exit(WORKER_EXIT_FAILURE);
        }
        *t = (LinkTask) {
                .link = l,
                .id = id,
                .number = l->n_received++,
                .dispatch = sd_bus_message_ref(d->msg),
                .payload = payload,
                .size = size,
        };
        waiting_push(l, t);
        return 0;
}

/* Worker1.Dispatch(ua(tay)): queues the tasks behind those that wait, and starts what may start. */
static int method_dispatch(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        DispatchContext d = { .link = userdata, .msg = msg };
        uint32_t max_running = 0;
        int r;

        r = task_codec_read_dispatch(msg, &max_running, on_task, &d);
        if (r < 0) {
                /* apiaryd sent what we cannot read: exiting gives every task we hold back to it. */
                log_error_errno(r, "Malformed Dispatch from apiaryd, exiting: %m");
                _exit(WORKER_EXIT_LINK);
        }
        d.link->max_running = max_running > 0 ? max_running : 1;
        link_run_waiting(d.link);
        return 1;
}

static const sd_bus_vtable worker_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_NAMES("Dispatch", LINK_DISPATCH_IN, SD_BUS_PARAM(max_running) SD_BUS_PARAM(tasks), NULL,,
                                 method_dispatch, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

int task_link_init(TaskLink *l, PluginHost *host, sd_bus *link, sd_event *event, LinkClaim *claim) {
        int r;

        assert(claim);
        *l = (TaskLink) { .host = host, .link = link, .max_running = 1, .claim = claim };
        r = sd_event_add_defer(event, &l->flush_source, on_flush, l);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(l->flush_source, SD_EVENT_OFF);
        if (r < 0)
                return r;
        r = sd_event_add_defer(event, &l->run_source, on_run, l);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(l->run_source, SD_EVENT_OFF);
        if (r < 0)
                return r;
        return sd_bus_add_object_vtable(link, NULL, WORKER_OBJECT_PATH, WORKER_INTERFACE, worker_vtable, l);
}

void task_link_flush(TaskLink *l) {
        if (l->link && l->results)
                (void) results_send(l);
}

void task_link_done(TaskLink *l) {
        LinkTask *t;

        /* What never started goes back to apiaryd with our exit. */
        while ((t = waiting_pop(l)))
                link_task_free(t);
        if (l->link && l->results)
                (void) results_send(l);
        l->results = sd_bus_message_unref(l->results);
        l->flush_source = sd_event_source_disable_unref(l->flush_source);
        l->run_source = sd_event_source_disable_unref(l->run_source);
}
