/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-config.h"
#include "daemon/bus-api.h"
#include "daemon/source.h"
#include "daemon/bus-control.h"
#include "daemon/bus-tasks.h"
#include "daemon/peer.h"
#include "daemon/recycle.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/proc-usage.h"

/* ---- Manager ---- */

static int property_get_manager_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;

        return sd_bus_message_append(reply, "s", manager_state_to_string(m->state));
}

static int property_get_pools(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        for (size_t i = 0; i < m->n_pools; i++) {
                r = sd_bus_message_append(reply, "o", m->pools[i]->object_path);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

/* Task counters change with every task: they are read, not signalled (introspection says so). */
static int property_get_manager_host_id(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        Manager *m = userdata;

        return sd_bus_message_append(reply, "s", strempty(m->config->host_id));
}

static int property_get_manager_pid(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "u", (uint32_t) getpid());
}

static int property_get_manager_config(sd_bus *bus, const char *path, const char *interface, const char *property,
                                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;

        return sd_bus_message_append(reply, "s", strempty(m->config->path));
}

/* "system", "session", or the address of Bus=: what apiaryd serves its API on. */
static int property_get_manager_bus(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;

        switch (m->config->bus) {
        case BUS_KIND_SYSTEM:
                return sd_bus_message_append(reply, "s", "system");
        case BUS_KIND_SESSION:
                return sd_bus_message_append(reply, "s", "session");
        default:
                return sd_bus_message_append(reply, "s", strempty(m->config->bus_address));
        }
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", NULL, offsetof(Manager, version), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_manager_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Pools", "ao", property_get_pools, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TasksSubmitted", "t", NULL, offsetof(Manager, n_submitted), 0),
        SD_BUS_PROPERTY("TasksQueued", "t", NULL, offsetof(Manager, n_queued), 0),
        SD_BUS_PROPERTY("TasksRunning", "t", NULL, offsetof(Manager, n_running), 0),
        SD_BUS_PROPERTY("TasksDone", "t", NULL, offsetof(Manager, n_done), 0),
        SD_BUS_PROPERTY("TasksFailed", "t", NULL, offsetof(Manager, n_failed), 0),
        SD_BUS_PROPERTY("HostId", "s", property_get_manager_host_id, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PID", "u", property_get_manager_pid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("StartedAt", "t", NULL, offsetof(Manager, started_at), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ConfigPath", "s", property_get_manager_config, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Bus", "s", property_get_manager_bus, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("Submit",
                                SD_BUS_ARGS("s", pool, "ay", payload, "a{sv}", options),
                                SD_BUS_RESULT("t", id),
                                bus_method_submit, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Run",
                                SD_BUS_ARGS("s", pool, "ay", payload, "a{sv}", options),
                                SD_BUS_RESULT("ay", result),
                                bus_method_run, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SubmitBatch",
                                SD_BUS_ARGS("s", pool, "aay", payloads, "a{sv}", options),
                                SD_BUS_RESULT("at", ids),
                                bus_method_submit_batch, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RunBatch",
                                SD_BUS_ARGS("s", pool, "aay", payloads, "a{sv}", options),
                                SD_BUS_RESULT("a(bay)", results),
                                bus_method_run_batch, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Cancel",
                                SD_BUS_ARGS("t", id),
                                SD_BUS_RESULT("b", cancelled),
                                bus_method_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Reload", NULL, NULL, bus_manager_method_reload, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("PlanReload",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(sssss)", changes),
                                bus_manager_method_plan_reload, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Subscribe", NULL, NULL, bus_method_subscribe, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Unsubscribe", NULL, NULL, bus_method_unsubscribe, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("TaskFinished",
                                SD_BUS_ARGS("t", id, "s", pool, "b", ok, "ay", result), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TasksFinished", SD_BUS_ARGS("a(tsbay)", results), 0),
        SD_BUS_VTABLE_END
};

/* ---- Pool ---- */

static int pool_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                            void **ret_found, sd_bus_error *error) {
        _cleanup_(freep) char *name = NULL;
        Manager *m = userdata;
        Pool *p;
        int r;

        r = sd_bus_path_decode(path, APIARY_POOL_PREFIX, &name);
        if (r <= 0)
                return r;
        p = manager_find_pool(m, name);
        if (!p)
                return 0;
        *ret_found = p;
        return 1;
}

static int property_get_pool_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;

        return sd_bus_message_append(reply, "s", pool_state_to_string(p->state));
}

static int property_get_pool_config_string(sd_bus *bus, const char *path, const char *interface,
                                           const char *property, sd_bus_message *reply, void *userdata,
                                           sd_bus_error *error) {
        Pool *p = userdata;

        if (streq(property, "Name"))
                return sd_bus_message_append(reply, "s", p->config->name);
        if (streq(property, "Plugin"))
                return sd_bus_message_append(reply, "s", p->config->plugin_path);
        if (streq(property, "Kind"))
                return sd_bus_message_append(reply, "s", pool_kind_to_string(p->config->kind));
        return -EINVAL;
}

static int property_get_pool_workers(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        for (unsigned i = 0; i < p->n_workers; i++) {
                r = sd_bus_message_append(reply, "o", p->workers[i]->object_path);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int property_get_pool_counts(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;

        if (streq(property, "WorkersWanted"))
                return sd_bus_message_append(reply, "u", p->n_wanted);
        if (streq(property, "WorkersReady"))
                return sd_bus_message_append(reply, "u", pool_workers_ready(p));
        return -EINVAL;
}

static int property_get_pool_failure(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;

        /* Why it failed; else why a reload's settings were rolled back, if they were. */
        return sd_bus_message_append(reply, "s", strempty(p->failure_reason ?: p->rollback_reason));
}

static int property_get_pool_queued(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;

        return sd_bus_message_append(reply, "t", (uint64_t) task_queue_length(&p->queue));
}

/* Workers=MIN..MAX; for a fixed count, both are WorkersWanted's Workers=. */
static int property_get_pool_bounds(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        const Pool *p = userdata;

        return sd_bus_message_append(reply, "u",
                                     streq(property, "WorkersMin") ? p->config->workers : p->config->workers_max);
}

static int property_get_pool_memory_warning(sd_bus *bus, const char *path, const char *interface,
                                            const char *property, sd_bus_message *reply, void *userdata,
                                            sd_bus_error *error) {
        g_autofree char *warning = recycle_memory_warning(userdata);

        return sd_bus_message_append(reply, "s", strempty(warning));
}

/* at: how many tasks wait at each priority, 0 to TASK_PRIORITY_MAX. */
static int property_get_pool_queued_by_priority(sd_bus *bus, const char *path, const char *interface,
                                                const char *property, sd_bus_message *reply, void *userdata,
                                                sd_bus_error *error) {
        Pool *p = userdata;
        uint64_t n[TASK_PRIORITY_LEVELS];

        for (unsigned i = 0; i < TASK_PRIORITY_LEVELS; i++)
                n[i] = task_queue_level_length(&p->queue, i);
        return sd_bus_message_append_array(reply, 't', n, sizeof(n));
}

static int property_get_pool_queue_limit(sd_bus *bus, const char *path, const char *interface,
                                         const char *property, sd_bus_message *reply, void *userdata,
                                         sd_bus_error *error) {
        Pool *p = userdata;

        return sd_bus_message_append(reply, "u", p->config->queue_limit);
}

static int property_get_pool_queue_bytes_limit(sd_bus *bus, const char *path, const char *interface,
                                               const char *property, sd_bus_message *reply, void *userdata,
                                               sd_bus_error *error) {
        Pool *p = userdata;

        return sd_bus_message_append(reply, "t", p->config->queue_bytes_limit);
}

static int property_get_pool_concurrency(sd_bus *bus, const char *path, const char *interface,
                                         const char *property, sd_bus_message *reply, void *userdata,
                                         sd_bus_error *error) {
        Pool *p = userdata;

        return sd_bus_message_append(reply, "u", p->config->concurrency);
}

static int property_get_pool_paused(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;

        return sd_bus_message_append(reply, "b", (int) p->paused);
}

static int property_get_pool_zygote_pid(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        Pool *p = userdata;

        return sd_bus_message_append(reply, "u",
                                     (uint32_t) (p->zygote && p->zygote->state == ZYGOTE_READY ? p->zygote->pid : 0));
}

/* A shared pool's source; empty strings and zeros for a local pool. */
static int property_get_pool_source(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        const Source *s = p->source;

        if (streq(property, "Source"))
                return sd_bus_message_append(reply, "s", strempty(p->config->source));
        if (streq(property, "SourceState"))
                return sd_bus_message_append(reply, "s", s ? strempty(s->state) : "");
        if (streq(property, "SourceError"))
                return sd_bus_message_append(reply, "s", s ? strempty(s->error) : "");
        if (streq(property, "SourceHeld"))
                return sd_bus_message_append(reply, "t", s ? (uint64_t) s->held.length : UINT64_C(0));
        if (streq(property, "SourceAwaiting"))
                return sd_bus_message_append(reply, "t", s ? s->n_awaiting : UINT64_C(0));
        if (streq(property, "SourcePulled"))
                return sd_bus_message_append(reply, "t", s ? s->n_pulled : UINT64_C(0));
        if (streq(property, "SourceRan"))
                return sd_bus_message_append(reply, "t", s ? s->n_ran : UINT64_C(0));
        if (streq(property, "SourceReleased"))
                return sd_bus_message_append(reply, "t", s ? s->n_released : UINT64_C(0));
        if (streq(property, "SourceDuplicates"))
                return sd_bus_message_append(reply, "t", s ? s->n_duplicates : UINT64_C(0));
        if (streq(property, "SourcePending"))
                return sd_bus_message_append(reply, "t", s ? s->pending : UINT64_C(0));
        if (streq(property, "SourceAckPending"))
                return sd_bus_message_append(reply, "t", s ? s->ack_pending : UINT64_C(0));
        if (streq(property, "SourceRedelivered"))
                return sd_bus_message_append(reply, "t", s ? s->redelivered : UINT64_C(0));
        return -EINVAL;
}

/* Read, not signalled: they change with every task, as the counters. */
static int property_get_pool_histogram(sd_bus *bus, const char *path, const char *interface, const char *property,
                                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;

        if (streq(property, "TaskRunTimeBuckets"))
                return histogram_append(reply, &p->run_time);
        if (streq(property, "QueueWaitBuckets"))
                return histogram_append(reply, &p->queue_wait);
        return sd_bus_message_append(reply, "t",
                                     streq(property, "TaskRunTimeSumUSec") ? p->run_time.sum_usec :
                                                                            p->queue_wait.sum_usec);
}

static const sd_bus_vtable pool_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", property_get_pool_config_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Plugin", "s", property_get_pool_config_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Kind", "s", property_get_pool_config_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_pool_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("FailureReason", "s", property_get_pool_failure, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Workers", "ao", property_get_pool_workers, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("WorkersWanted", "u", property_get_pool_counts, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Paused", "b", property_get_pool_paused, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("WorkersReady", "u", property_get_pool_counts, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Restarts", "t", NULL, offsetof(Pool, restarts), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PlannedRestarts", "t", NULL, offsetof(Pool, planned_restarts),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("WorkersMin", "u", property_get_pool_bounds, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("WorkersMax", "u", property_get_pool_bounds, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ScaleUps", "t", NULL, offsetof(Pool, scale_ups), 0),
        SD_BUS_PROPERTY("ScaleDowns", "t", NULL, offsetof(Pool, scale_downs), 0),
        SD_BUS_PROPERTY("MemoryRecycles", "t", NULL, offsetof(Pool, memory_recycles), 0),
        SD_BUS_PROPERTY("AgeRecycles", "t", NULL, offsetof(Pool, age_recycles), 0),
        SD_BUS_PROPERTY("MemoryWarning", "s", property_get_pool_memory_warning, 0, 0),
        SD_BUS_PROPERTY("TasksSubmitted", "t", NULL, offsetof(Pool, n_submitted), 0),
        SD_BUS_PROPERTY("TasksQueued", "t", property_get_pool_queued, 0, 0),
        SD_BUS_PROPERTY("QueuedByPriority", "at", property_get_pool_queued_by_priority, 0, 0),
        SD_BUS_PROPERTY("TasksRunning", "t", NULL, offsetof(Pool, n_running), 0),
        SD_BUS_PROPERTY("TasksDone", "t", NULL, offsetof(Pool, n_done), 0),
        SD_BUS_PROPERTY("TasksFailed", "t", NULL, offsetof(Pool, n_failed), 0),
        SD_BUS_PROPERTY("QueuedBytes", "t", NULL, offsetof(Pool, queued_bytes), 0),
        SD_BUS_PROPERTY("TaskRunTimeBuckets", "a(tt)", property_get_pool_histogram, 0, 0),
        SD_BUS_PROPERTY("TaskRunTimeSumUSec", "t", property_get_pool_histogram, 0, 0),
        SD_BUS_PROPERTY("QueueWaitBuckets", "a(tt)", property_get_pool_histogram, 0, 0),
        SD_BUS_PROPERTY("QueueWaitSumUSec", "t", property_get_pool_histogram, 0, 0),
        SD_BUS_PROPERTY("QueueLimit", "u", property_get_pool_queue_limit, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("QueueBytesLimit", "t", property_get_pool_queue_bytes_limit, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Concurrency", "u", property_get_pool_concurrency, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ZygotePID", "u", property_get_pool_zygote_pid, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Source", "s", property_get_pool_source, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SourceState", "s", property_get_pool_source, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SourceError", "s", property_get_pool_source, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SourceHeld", "t", property_get_pool_source, 0, 0),
        SD_BUS_PROPERTY("SourceAwaiting", "t", property_get_pool_source, 0, 0),
        SD_BUS_PROPERTY("SourcePulled", "t", property_get_pool_source, 0, 0),
        SD_BUS_PROPERTY("SourceRan", "t", property_get_pool_source, 0, 0),
        SD_BUS_PROPERTY("SourceReleased", "t", property_get_pool_source, 0, 0),
        SD_BUS_PROPERTY("SourceDuplicates", "t", property_get_pool_source, 0, 0),
        SD_BUS_PROPERTY("SourcePending", "t", property_get_pool_source, 0, 0),
        SD_BUS_PROPERTY("SourceAckPending", "t", property_get_pool_source, 0, 0),
        SD_BUS_PROPERTY("SourceRedelivered", "t", property_get_pool_source, 0, 0),
        SD_BUS_METHOD("Start", NULL, NULL, bus_pool_method_start, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Stop", NULL, NULL, bus_pool_method_stop, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Pause", NULL, NULL, bus_pool_method_pause, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Resume", NULL, NULL, bus_pool_method_resume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Restart", NULL, NULL, bus_pool_method_restart, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Scale", SD_BUS_ARGS("u", workers), SD_BUS_NO_RESULT, bus_pool_method_scale,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

/* ---- Worker ---- */

static int worker_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                              void **ret_found, sd_bus_error *error) {
        _cleanup_(freep) char *pool_path = NULL, *name = NULL;
        Manager *m = userdata;
        const char *slash;
        char *end;
        unsigned long slot;
        Pool *p;
        int r;

        slash = strrchr(path, '/');
        if (!slash || slash[1] == '\0')
                return 0;
        pool_path = strndup(path, (size_t) (slash - path));
        if (!pool_path)
                return -ENOMEM;
        r = sd_bus_path_decode(pool_path, APIARY_POOL_PREFIX, &name);
        if (r <= 0)
                return r;
        p = manager_find_pool(m, name);
        if (!p)
                return 0;

        errno = 0;
        slot = strtoul(slash + 1, &end, 10);
        if (errno != 0 || *end != '\0' || slash[1] == '+' || slash[1] == '-' || slot >= p->n_workers)
                return 0;
        *ret_found = p->workers[slot];
        return 1;
}

static int property_get_worker_pool(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;

        return sd_bus_message_append(reply, "o", w->pool->object_path);
}

static int property_get_worker_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;

        return sd_bus_message_append(reply, "s", worker_state_to_string(w->state));
}

static int property_get_worker_pid(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;

        return sd_bus_message_append(reply, "u", (uint32_t) (w->pid > 0 ? w->pid : 0));
}

static int property_get_worker_last_exit(sd_bus *bus, const char *path, const char *interface,
                                         const char *property, sd_bus_message *reply, void *userdata,
                                         sd_bus_error *error) {
        Worker *w = userdata;

        return sd_bus_message_append(reply, "s", strempty(w->last_exit));
}

/* Read from /proc when asked, not signalled: UINT64_MAX when there is no process. */
static int property_get_worker_usage(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;

        return sd_bus_message_append(reply, "t", streq(property, "CPUUsageNSec") ? proc_cpu_nsec(w->pid) :
                                                                                   proc_rss_bytes(w->pid));
}

static const sd_bus_vtable worker_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Pool", "o", property_get_worker_pool, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Slot", "u", NULL, offsetof(Worker, slot), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("PID", "u", property_get_worker_pid, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_worker_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Restarts", "u", NULL, offsetof(Worker, restarts), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PlannedRestarts", "u", NULL, offsetof(Worker, planned_restarts),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StartedAt", "t", NULL, offsetof(Worker, started_at), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastExit", "s", property_get_worker_last_exit, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TasksDispatched", "t", NULL, offsetof(Worker, n_dispatched), 0),
        SD_BUS_PROPERTY("CPUUsageNSec", "t", property_get_worker_usage, 0, 0),
        SD_BUS_PROPERTY("MemoryRSS", "t", property_get_worker_usage, 0, 0),
        SD_BUS_METHOD("Restart", NULL, NULL, bus_worker_method_restart, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Kill", SD_BUS_ARGS("i", signal), SD_BUS_NO_RESULT, bus_worker_method_kill,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

static int pool_nodes_enumerate(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes,
                                sd_bus_error *error) {
        Manager *m = userdata;
        size_t n = 0, total = 0;
        char **nodes;

        for (size_t i = 0; i < m->n_pools; i++)
                total += 1 + m->pools[i]->n_workers;
        nodes = calloc(total + 1, sizeof(char *));
        if (!nodes)
                return -ENOMEM;

        for (size_t i = 0; i < m->n_pools; i++) {
                Pool *p = m->pools[i];

                nodes[n] = strdup(p->object_path);
                if (!nodes[n])
                        goto oom;
                n++;
                for (unsigned j = 0; j < p->n_workers; j++) {
                        nodes[n] = strdup(p->workers[j]->object_path);
                        if (!nodes[n])
                                goto oom;
                        n++;
                }
        }
        *ret_nodes = nodes;
        return 0;

oom:
        for (size_t i = 0; i < n; i++)
                free(nodes[i]);
        free(nodes);
        return -ENOMEM;
}

int bus_api_register(Manager *m, sd_bus *bus) {
        int r;

        r = sd_bus_add_object_vtable(bus, NULL, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE, manager_vtable, m);
        if (r < 0)
                return r;
        r = sd_bus_add_fallback_vtable(bus, NULL, APIARY_POOL_PREFIX, APIARY_POOL_INTERFACE, pool_vtable,
                                       pool_object_find, m);
        if (r < 0)
                return r;
        r = sd_bus_add_fallback_vtable(bus, NULL, APIARY_POOL_PREFIX, APIARY_WORKER_INTERFACE, worker_vtable,
                                       worker_object_find, m);
        if (r < 0)
                return r;
        r = sd_bus_add_node_enumerator(bus, NULL, APIARY_POOL_PREFIX, pool_nodes_enumerate, m);
        if (r < 0)
                return r;
        return sd_bus_add_object_manager(bus, NULL, APIARY_OBJECT_PATH);
}

/* The connections that see signals, one per call: the bus, then each subscribed private
 * connection; NULL at the end. Emitting does not change the set (a peer that hangs up is removed
 * later, from the event loop), so no copy of it is needed. */
typedef struct BusIter {
        GHashTableIter peers;
        bool started;
} BusIter;

static sd_bus *bus_next(Manager *m, BusIter *it) {
        gpointer key, value;

        if (!it->started) {
                it->started = true;
                if (m->peers)
                        g_hash_table_iter_init(&it->peers, m->peers);
                if (m->bus)
                        return m->bus;
        }
        if (!m->peers)
                return NULL;
        while (g_hash_table_iter_next(&it->peers, &key, &value))
                if (((Peer *) value)->subscribed)
                        return key;
        return NULL;
}

static const sd_bus_vtable *interface_vtable(const char *interface) {
        if (streq(interface, APIARY_MANAGER_INTERFACE))
                return manager_vtable;
        if (streq(interface, APIARY_POOL_INTERFACE))
                return pool_vtable;
        if (streq(interface, APIARY_WORKER_INTERFACE))
                return worker_vtable;
        return NULL;
}

static bool names_contain(const char *const *names, const char *name) {
        for (; *names; names++)
                if (streq(*names, name))
                        return true;
        return false;
}

void bus_emit_properties_changed_strv(Manager *m, const char *path, const char *interface, const char *const *names) {
        const sd_bus_vtable *vt = interface_vtable(interface);
        const char *ordered[64];
        size_t n = 0;
        BusIter it = {};

        /* In the order of the interface, whatever order they changed in: a signal reads the same
         * each time (State first), as the documented examples show it. */
        for (; vt && vt->type != _SD_BUS_VTABLE_END && n < ELEMENTSOF(ordered) - 1; vt++)
                if ((vt->type == _SD_BUS_VTABLE_PROPERTY || vt->type == _SD_BUS_VTABLE_WRITABLE_PROPERTY) &&
                    names_contain(names, vt->x.property.member))
                        ordered[n++] = vt->x.property.member;
        ordered[n] = NULL;
        if (vt)
                names = ordered;
        if (!names[0])
                return;

        for (sd_bus *bus; (bus = bus_next(m, &it));)
                (void) sd_bus_emit_properties_changed_strv(bus, path, interface, (char **) names);
}

void bus_emit_object_added(Manager *m, const char *path) {
        BusIter it = {};

        for (sd_bus *bus; (bus = bus_next(m, &it));)
                (void) sd_bus_emit_object_added(bus, path);
}

void bus_emit_object_removed(Manager *m, const char *path) {
        BusIter it = {};

        for (sd_bus *bus; (bus = bus_next(m, &it));)
                (void) sd_bus_emit_object_removed(bus, path);
}
