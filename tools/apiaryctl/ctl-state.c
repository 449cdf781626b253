/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tools/apiaryctl/ctl-state.h"
#include "tools/apiaryctl/ctl.h"

/* Which property goes where: the value is read only if its signature matches. */
typedef struct PropertyMap {
        const char *name;
        const char *signature;          /* "s", "o", "u", "t", "b", "ao" or "at" (into uint64_t[10]) */
        size_t offset;
} PropertyMap;

static const PropertyMap manager_map[] = {
        { "Version", "s", offsetof(ManagerInfo, version) },
        { "State", "s", offsetof(ManagerInfo, state) },
        { "Pools", "ao", offsetof(ManagerInfo, pool_paths) },
        { "TasksSubmitted", "t", offsetof(ManagerInfo, tasks_submitted) },
        { "TasksQueued", "t", offsetof(ManagerInfo, tasks_queued) },
        { "TasksRunning", "t", offsetof(ManagerInfo, tasks_running) },
        { "TasksDone", "t", offsetof(ManagerInfo, tasks_done) },
        { "TasksFailed", "t", offsetof(ManagerInfo, tasks_failed) },
        { "HostId", "s", offsetof(ManagerInfo, host_id) },
        { "PID", "u", offsetof(ManagerInfo, pid) },
        { "StartedAt", "t", offsetof(ManagerInfo, started_at) },
        { "ConfigPath", "s", offsetof(ManagerInfo, config_path) },
        { "Bus", "s", offsetof(ManagerInfo, bus) },
        {}
};

static const PropertyMap pool_map[] = {
        { "Name", "s", offsetof(PoolInfo, name) },
        { "Plugin", "s", offsetof(PoolInfo, plugin) },
        { "Kind", "s", offsetof(PoolInfo, kind) },
        { "State", "s", offsetof(PoolInfo, state) },
        { "FailureReason", "s", offsetof(PoolInfo, failure_reason) },
        { "Workers", "ao", offsetof(PoolInfo, worker_paths) },
        { "WorkersWanted", "u", offsetof(PoolInfo, workers_wanted) },
        { "WorkersReady", "u", offsetof(PoolInfo, workers_ready) },
        { "Paused", "b", offsetof(PoolInfo, paused) },
        { "Restarts", "t", offsetof(PoolInfo, restarts) },
        { "PlannedRestarts", "t", offsetof(PoolInfo, planned_restarts) },
        { "TasksSubmitted", "t", offsetof(PoolInfo, tasks_submitted) },
        { "TasksQueued", "t", offsetof(PoolInfo, tasks_queued) },
        { "QueuedByPriority", "at", offsetof(PoolInfo, queued_by_priority) },
        { "MemoryWarning", "s", offsetof(PoolInfo, memory_warning) },
        { "WorkersMin", "u", offsetof(PoolInfo, workers_min) },
        { "WorkersMax", "u", offsetof(PoolInfo, workers_max) },
        { "ScaleUps", "t", offsetof(PoolInfo, scale_ups) },
        { "ScaleDowns", "t", offsetof(PoolInfo, scale_downs) },
        { "TasksRunning", "t", offsetof(PoolInfo, tasks_running) },
        { "TasksDone", "t", offsetof(PoolInfo, tasks_done) },
        { "TasksFailed", "t", offsetof(PoolInfo, tasks_failed) },
        { "QueueLimit", "u", offsetof(PoolInfo, queue_limit) },
        { "Concurrency", "u", offsetof(PoolInfo, concurrency) },
        { "Source", "s", offsetof(PoolInfo, source) },
        { "SourceState", "s", offsetof(PoolInfo, source_state) },
        { "SourceError", "s", offsetof(PoolInfo, source_error) },
        { "SourceHeld", "t", offsetof(PoolInfo, source_held) },
        { "SourceAwaiting", "t", offsetof(PoolInfo, source_awaiting) },
        { "SourcePulled", "t", offsetof(PoolInfo, source_pulled) },
        { "SourceRan", "t", offsetof(PoolInfo, source_ran) },
        { "SourceReleased", "t", offsetof(PoolInfo, source_released) },
        { "SourceDuplicates", "t", offsetof(PoolInfo, source_duplicates) },
        { "SourcePending", "t", offsetof(PoolInfo, source_pending) },
        { "SourceAckPending", "t", offsetof(PoolInfo, source_ack_pending) },
        { "SourceRedelivered", "t", offsetof(PoolInfo, source_redelivered) },
        {}
};

static const PropertyMap worker_map[] = {
        { "Pool", "o", offsetof(WorkerInfo, pool_path) },
        { "Slot", "u", offsetof(WorkerInfo, slot) },
        { "PID", "u", offsetof(WorkerInfo, pid) },
        { "State", "s", offsetof(WorkerInfo, state) },
        { "Restarts", "u", offsetof(WorkerInfo, restarts) },
        { "PlannedRestarts", "u", offsetof(WorkerInfo, planned_restarts) },
        { "StartedAt", "t", offsetof(WorkerInfo, started_at) },
        { "LastExit", "s", offsetof(WorkerInfo, last_exit) },
        { "TasksDispatched", "t", offsetof(WorkerInfo, tasks_dispatched) },
        { "CPUUsageNSec", "t", offsetof(WorkerInfo, cpu_nsec) },
        { "MemoryRSS", "t", offsetof(WorkerInfo, rss_bytes) },
        {}
};

static void strv_free(char **l) {
        if (!l)
                return;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
}

static int read_one(sd_bus_message *m, const PropertyMap *p, void *userdata) {
        void *field = (uint8_t *) userdata + p->offset;
        const char *s;
        int r;

        switch (p->signature[0]) {
        case 's':
        case 'o': {
                char *copy;

                r = sd_bus_message_read_basic(m, p->signature[0], &s);
                if (r < 0)
                        return r;
                copy = strdup(s);
                if (!copy)
                        return -ENOMEM;
                free(*(char **) field);
                *(char **) field = copy;
                return 0;
        }
        case 'a': {
                char **l = NULL;

                if (p->signature[1] == 't') {
                        const uint64_t *v;
                        size_t size;

                        r = sd_bus_message_read_array(m, 't', (const void **) &v, &size);
                        if (r < 0)
                                return r;
                        memset(field, 0, 10 * sizeof(uint64_t));
                        memcpy(field, v, MIN(size, 10 * sizeof(uint64_t)));
                        return 0;
                }

                r = sd_bus_message_read_strv(m, &l);
                if (r < 0)
                        return r;
                strv_free(*(char ***) field);
                *(char ***) field = l;
                return 0;
        }
        default:
                /* u, t and b: b reads into an int, the others into their own width. */
                return sd_bus_message_read_basic(m, p->signature[0], field);
        }
}

/* Reads an a{sv} of properties into USERDATA as MAP says; skips what MAP does not know. */
static int map_properties(sd_bus_message *m, const PropertyMap *map, void *userdata) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const PropertyMap *p = NULL;
                const char *name, *contents;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                for (const PropertyMap *i = map; i->name; i++)
                        if (streq(i->name, name)) {
                                p = i;
                                break;
                        }
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        return r;

                /* A property of another type than we expect (a newer apiaryd?) is skipped. */
                if (p && streq(contents, p->signature)) {
                        r = sd_bus_message_enter_container(m, 'v', contents);
                        if (r < 0)
                                return r;
                        r = read_one(m, p, userdata);
                        if (r < 0)
                                return r;
                        r = sd_bus_message_exit_container(m);
                } else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;

                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static void worker_info_free(gpointer p) {
        WorkerInfo *w = p;

        free(w->path);
        free(w->pool_path);
        free(w->state);
        free(w->last_exit);
        free(w);
}

static void pool_info_free(gpointer p) {
        PoolInfo *pool = p;

        free(pool->path);
        free(pool->name);
        free(pool->plugin);
        free(pool->kind);
        free(pool->state);
        free(pool->failure_reason);
        free(pool->memory_warning);
        free(pool->source);
        free(pool->source_state);
        free(pool->source_error);
        strv_free(pool->worker_paths);
        if (pool->workers)
                g_ptr_array_free(pool->workers, true);
        free(pool);
}

Snapshot *snapshot_free(Snapshot *s) {
        if (!s)
                return NULL;
        free(s->manager.version);
        free(s->manager.state);
        free(s->manager.host_id);
        free(s->manager.config_path);
        free(s->manager.bus);
        strv_free(s->manager.pool_paths);
        if (s->pools)
                g_ptr_array_free(s->pools, true);
        free(s);
        return NULL;
}

/* Every pool and worker object below the manager, into POOLS and WORKERS (path → info). */
static int read_managed_objects(sd_bus_message *m, GHashTable *pools, GHashTable *workers) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{oa{sa{sv}}}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "oa{sa{sv}}")) > 0) {
                const char *path;

                r = sd_bus_message_read(m, "o", &path);
                if (r < 0)
                        return r;
                r = sd_bus_message_enter_container(m, 'a', "{sa{sv}}");
                if (r < 0)
                        return r;
                while ((r = sd_bus_message_enter_container(m, 'e', "sa{sv}")) > 0) {
                        const char *interface;

                        r = sd_bus_message_read(m, "s", &interface);
                        if (r < 0)
                                return r;

                        if (streq(interface, APIARY_POOL_INTERFACE)) {
                                PoolInfo *p = calloc(1, sizeof(PoolInfo));

                                if (!p)
                                        return -ENOMEM;
                                p->path = strdup(path);
                                if (!p->path) {
                                        free(p);
                                        return -ENOMEM;
                                }
                                g_hash_table_replace(pools, p->path, p);
                                r = map_properties(m, pool_map, p);
                        } else if (streq(interface, APIARY_WORKER_INTERFACE)) {
                                WorkerInfo *w = calloc(1, sizeof(WorkerInfo));

                                if (!w)
                                        return -ENOMEM;
                                /* Unknown unless apiaryd says (an older one does not). */
                                w->cpu_nsec = w->rss_bytes = w->tasks_dispatched = UINT64_MAX;
                                w->path = strdup(path);
                                if (!w->path) {
                                        free(w);
                                        return -ENOMEM;
                                }
                                g_hash_table_replace(workers, w->path, w);
                                r = map_properties(m, worker_map, w);
                        } else
                                r = sd_bus_message_skip(m, "a{sv}");
                        if (r < 0)
                                return r;

                        r = sd_bus_message_exit_container(m);
                        if (r < 0)
                                return r;
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int ctl_call_looking(sd_bus *bus, const char *path, const char *interface, const char *member, sd_bus_error *error,
                     sd_bus_message **ret_reply, const char *types, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        va_list ap;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, APIARY_BUS_NAME, path, interface, member);
        if (r < 0)
                return r;
        r = sd_bus_message_set_auto_start(m, false);
        if (r < 0)
                return r;
        if (types) {
                va_start(ap, types);
                r = sd_bus_message_appendv(m, types, ap);
                va_end(ap);
                if (r < 0)
                        return r;
        }
        return sd_bus_call(bus, m, 0, error, ret_reply);
}

int snapshot_load(sd_bus *bus, Snapshot **ret, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(snapshot_freep) Snapshot *s = NULL;
        g_autoptr(GHashTable) pools = NULL, workers = NULL;
        int r;

        s = calloc(1, sizeof(Snapshot));
        if (!s)
                return -ENOMEM;
        s->pools = g_ptr_array_new_with_free_func(pool_info_free);

        r = ctl_call_looking(bus, APIARY_OBJECT_PATH, "org.freedesktop.DBus.Properties", "GetAll", error, &reply, "s",
                             APIARY_MANAGER_INTERFACE);
        if (r < 0)
                return r;
        r = map_properties(reply, manager_map, &s->manager);
        if (r < 0)
                return r;
        reply = sd_bus_message_unref(reply);

        r = ctl_call_looking(bus, APIARY_OBJECT_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", error,
                             &reply, NULL);
        if (r < 0)
                return r;

        /* The hash tables own the paths through the infos: keys are freed with the values. */
        pools = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, pool_info_free);
        workers = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, worker_info_free);
        r = read_managed_objects(reply, pools, workers);
        if (r < 0)
                return r;

        for (char **i = s->manager.pool_paths; i && *i; i++) {
                PoolInfo *p;

                if (!g_hash_table_steal_extended(pools, *i, NULL, (gpointer *) &p))
                        continue;
                g_ptr_array_add(s->pools, p);

                p->workers = g_ptr_array_new_with_free_func(worker_info_free);
                for (char **j = p->worker_paths; j && *j; j++) {
                        WorkerInfo *w;

                        if (!g_hash_table_steal_extended(workers, *j, NULL, (gpointer *) &w))
                                continue;
                        w->pool_name = strempty(p->name);
                        g_ptr_array_add(p->workers, w);
                }
        }

        *ret = TAKE_PTR(s);
        return 0;
}

PoolInfo *snapshot_find_pool(const Snapshot *s, const char *name) {
        for (guint i = 0; i < s->pools->len; i++) {
                PoolInfo *p = g_ptr_array_index(s->pools, i);

                if (streq(strempty(p->name), name))
                        return p;
        }
        return NULL;
}
