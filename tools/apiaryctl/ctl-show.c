/* SPDX-License-Identifier: MIT */
/* status, pools and workers: the state of apiaryd, as text for people or as JSON. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tools/apiaryctl/ctl-format.h"
#include "tools/apiaryctl/ctl-state.h"
#include "tools/apiaryctl/ctl.h"

static int load(sd_bus *bus, Snapshot **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = snapshot_load(bus, ret, &error);
        if (r < 0)
                return ctl_bus_error(r, &error, "Failed to read the state of apiaryd");
        return CTL_EXIT_SUCCESS;
}

/* The pools named in ARGV[1…], or all if none is; an unknown name is an error (exit status 4). */
static int select_pools(const Snapshot *s, int argc, char **argv, GPtrArray **ret) {
        g_autoptr(GPtrArray) pools = g_ptr_array_new();

        if (argc <= 1) {
                for (guint i = 0; i < s->pools->len; i++)
                        g_ptr_array_add(pools, g_ptr_array_index(s->pools, i));
        } else
                for (int i = 1; i < argc; i++) {
                        PoolInfo *p = snapshot_find_pool(s, argv[i]);

                        if (!p) {
                                ctl_error("No pool named \"%s\".", argv[i]);
                                return CTL_EXIT_NOT_FOUND;
                        }
                        g_ptr_array_add(pools, p);
                }

        *ret = g_steal_pointer(&pools);
        return CTL_EXIT_SUCCESS;
}

static void print_json(GString *s) {
        if (arg_json == JSON_PRETTY) {
                g_autofree char *pretty = json_pretty(s->str);

                puts(pretty);
        } else
                puts(s->str);
}

/* ---- JSON: keys are the D-Bus property names, plus "Path" (and "PoolName" for a worker) ---- */

static void json_key(GString *s, const char *key) {
        if (s->len > 0 && !strchr("{[", s->str[s->len - 1]))
                g_string_append_c(s, ',');
        json_append_string(s, key);
        g_string_append_c(s, ':');
}

static void json_str(GString *s, const char *key, const char *value) {
        json_key(s, key);
        json_append_string(s, strempty(value));
}

static void json_u64(GString *s, const char *key, uint64_t value) {
        json_key(s, key);
        g_string_append_printf(s, "%" PRIu64, value);
}

static void json_worker(GString *s, const WorkerInfo *w) {
        g_string_append_c(s, '{');
        json_str(s, "Path", w->path);
        json_str(s, "Pool", w->pool_path);
        json_str(s, "PoolName", w->pool_name);
        json_u64(s, "Slot", w->slot);
        json_u64(s, "PID", w->pid);
        json_str(s, "State", w->state);
        json_u64(s, "Restarts", w->restarts);
        json_u64(s, "PlannedRestarts", w->planned_restarts);
        json_u64(s, "StartedAt", w->started_at);
        json_str(s, "LastExit", w->last_exit);
        json_u64(s, "TasksDispatched", w->tasks_dispatched);
        json_u64(s, "CPUUsageNSec", w->cpu_nsec);
        json_u64(s, "MemoryRSS", w->rss_bytes);
        g_string_append_c(s, '}');
}

static void json_pool(GString *s, const PoolInfo *p) {
        g_string_append_c(s, '{');
        json_str(s, "Path", p->path);
        json_str(s, "Name", p->name);
        json_str(s, "Plugin", p->plugin);
        json_str(s, "Kind", p->kind);
        json_str(s, "State", p->state);
        json_str(s, "FailureReason", p->failure_reason);
        json_u64(s, "WorkersWanted", p->workers_wanted);
        json_u64(s, "WorkersReady", p->workers_ready);
        json_key(s, "Paused");
        g_string_append(s, p->paused ? "true" : "false");
        json_u64(s, "Restarts", p->restarts);
        json_u64(s, "PlannedRestarts", p->planned_restarts);
        json_u64(s, "TasksSubmitted", p->tasks_submitted);
        json_u64(s, "TasksQueued", p->tasks_queued);
        json_u64(s, "TasksRunning", p->tasks_running);
        json_u64(s, "TasksDone", p->tasks_done);
        json_u64(s, "TasksFailed", p->tasks_failed);
        json_u64(s, "QueueLimit", p->queue_limit);
        json_u64(s, "Concurrency", p->concurrency);
        json_str(s, "Source", p->source);
        json_str(s, "SourceState", p->source_state);
        json_str(s, "SourceError", p->source_error);
        json_u64(s, "SourceHeld", p->source_held);
        json_u64(s, "SourceAwaiting", p->source_awaiting);
        json_u64(s, "SourcePulled", p->source_pulled);
        json_u64(s, "SourceRan", p->source_ran);
        json_u64(s, "SourceReleased", p->source_released);
        json_u64(s, "SourceDuplicates", p->source_duplicates);
        json_u64(s, "SourcePending", p->source_pending);
        json_u64(s, "SourceAckPending", p->source_ack_pending);
        json_u64(s, "SourceRedelivered", p->source_redelivered);
        /* The worker objects themselves, not just their paths. */
        json_key(s, "Workers");
        g_string_append_c(s, '[');
        for (guint i = 0; i < p->workers->len; i++) {
                if (i > 0)
                        g_string_append_c(s, ',');
                json_worker(s, g_ptr_array_index(p->workers, i));
        }
        g_string_append(s, "]}");
}

static void json_pools(GString *s, GPtrArray *pools) {
        g_string_append_c(s, '[');
        for (guint i = 0; i < pools->len; i++) {
                if (i > 0)
                        g_string_append_c(s, ',');
                json_pool(s, g_ptr_array_index(pools, i));
        }
        g_string_append_c(s, ']');
}

/* ---- text ---- */

static const char *const worker_columns[] = { "SLOT", "PID", "STATE", "RESTARTS", "STARTED", "UPTIME", "CPU",
                                               "RSS", "LAST EXIT", NULL };

static void add_worker_row(Table *t, const WorkerInfo *w, bool with_pool) {
        char ts[FORMAT_TIMESTAMP_MAX], span[FORMAT_TIMESPAN_MAX], cpu[FORMAT_TIMESPAN_MAX], rss[FORMAT_SIZE_MAX];
        usec_t now = now_usec(CLOCK_REALTIME);
        bool alive = w->pid > 0;

        if (with_pool)
                table_add(t, NULL, w->pool_name);
        table_addf(t, NULL, "%" PRIu32, w->slot);
        if (w->pid > 0)
                table_addf(t, NULL, "%" PRIu32, w->pid);
        else
                table_add(t, NULL, "-");
        table_add(t, state_color(w->state), strempty(w->state));
        table_addf(t, NULL, "%" PRIu32, w->restarts);
        table_add(t, NULL, format_timestamp(ts, sizeof(ts), w->started_at));
        table_add(t, NULL, format_span_short(span, sizeof(span),
                                             alive && w->started_at > 0 && now > w->started_at ?
                                             now - w->started_at : USEC_INFINITY));
        table_add(t, NULL, format_span_short(cpu, sizeof(cpu),
                                             alive && w->cpu_nsec != UINT64_MAX ? w->cpu_nsec / 1000 : USEC_INFINITY));
        table_add(t, NULL, format_bytes_short(rss, sizeof(rss), alive ? w->rss_bytes : UINT64_MAX));
        table_add(t, NULL, w->last_exit && w->last_exit[0] ? w->last_exit : "-");
}

static void print_tasks_line(const char *label, uint64_t submitted, uint64_t queued, uint64_t running,
                             uint64_t done, uint64_t failed) {
        printf("%10s: %" PRIu64 " submitted, %" PRIu64 " queued, %" PRIu64 " running, %" PRIu64 " done, ",
               label, submitted, queued, running, done);
        printf("%s%" PRIu64 " failed%s\n", failed > 0 ? ansi(ANSI_RED) : "", failed, failed > 0 ? ansi(ANSI_NORMAL) : "");
}

/* A shared pool: its engine, what this host holds and waits for, and the stream's counts. */
static void print_source(const PoolInfo *p) {
        bool ready = streq(strempty(p->source_state), "ready");

        printf("%10s: %s, %s%s%s", "Source", p->source, ready ? ansi(ANSI_GREEN) : ansi(ANSI_RED),
               strempty(p->source_state), ansi(ANSI_NORMAL));
        if (p->source_error && p->source_error[0])
                printf(": %s", p->source_error);
        putchar('\n');
        printf("%10s: %" PRIu64 " held, %" PRIu64 " awaiting their result; %" PRIu64 " pulled, %" PRIu64
               " ran, %" PRIu64 " released, %" PRIu64 " duplicates\n", "Here", p->source_held, p->source_awaiting,
               p->source_pulled, p->source_ran, p->source_released, p->source_duplicates);
        printf("%10s: %" PRIu64 " pending, %" PRIu64 " ack pending, %" PRIu64 " redelivered\n", "Stream",
               p->source_pending, p->source_ack_pending, p->source_redelivered);
}

/* "Queued: 3 at priority 9, 120 at 0", when a task above priority 0 waits. */
static void print_priorities(const PoolInfo *p) {
        const char *sep = "";

        if (p->tasks_queued == p->queued_by_priority[0])
                return;
        printf("%10s: ", "Queued");
        for (int i = 9; i >= 0; i--) {
                if (p->queued_by_priority[i] == 0)
                        continue;
                printf("%s%" PRIu64 " at %s%d", sep, p->queued_by_priority[i], *sep ? "" : "priority ", i);
                sep = ", ";
        }
        putchar('\n');
}

static void print_pool_status(const PoolInfo *p) {
        const char *color = state_color(p->state), *normal = color[0] ? ANSI_NORMAL : "";

        printf("%s%s%s %s: %s%s%s, %" PRIu32 "/%" PRIu32 " workers ready", color, glyph_bullet(), normal,
               strempty(p->name), color, strempty(p->state), normal, p->workers_ready, p->workers_wanted);
        if (p->paused)
                printf(", %spaused%s", ansi(ANSI_YELLOW), ansi(ANSI_NORMAL));
        putchar('\n');
        /* A failed pool's reason, or a degraded one's (a reload's settings rolled back). */
        if (p->failure_reason && p->failure_reason[0])
                printf("%10s: %s%s%s\n", streq(strempty(p->state), "failed") ? "Failed" : "Reason",
                       ansi(ANSI_RED), p->failure_reason, ansi(ANSI_NORMAL));
        if (p->memory_warning && p->memory_warning[0])
                printf("%10s: %s%s%s\n", "Warning", ansi(ANSI_YELLOW), p->memory_warning, ansi(ANSI_NORMAL));
        printf("%10s: %s\n", "Kind", strempty(p->kind));
        printf("%10s: %s\n", "Plugin", strempty(p->plugin));
        print_tasks_line("Tasks", p->tasks_submitted, p->tasks_queued, p->tasks_running, p->tasks_done,
                         p->tasks_failed);
        print_priorities(p);
        printf("%10s: limit %" PRIu32 ", concurrency %" PRIu32 "\n", "Queue", p->queue_limit, p->concurrency);
        if (p->workers_max > p->workers_min)
                printf("%10s: %" PRIu32 "..%" PRIu32 " workers, %" PRIu64 " up, %" PRIu64 " down\n", "Scale",
                       p->workers_min, p->workers_max, p->scale_ups, p->scale_downs);
        if (p->source && p->source[0])
                print_source(p);
        printf("%10s: %" PRIu64 " after failures, %" PRIu64 " planned\n", "Restarts", p->restarts,
               p->planned_restarts);

        if (p->workers->len == 0) {
                printf("%10s: none\n", "Workers");
                return;
        }
        _cleanup_(table_freep) Table *t = table_new(worker_columns);
        for (guint i = 0; i < p->workers->len; i++)
                add_worker_row(t, g_ptr_array_index(p->workers, i), false);
        table_print(t, stdout, "   Workers: ", "            ", arg_legend);
}

int verb_status(sd_bus *bus, int argc, char **argv) {
        _cleanup_(snapshot_freep) Snapshot *s = NULL;
        g_autoptr(GPtrArray) pools = NULL;
        const char *color, *normal;
        int r;

        r = load(bus, &s);
        if (r != 0)
                return r;
        r = select_pools(s, argc, argv, &pools);
        if (r != 0)
                return r;

        if (arg_json != JSON_OFF) {
                g_autoptr(GString) j = g_string_new("{");

                json_str(j, "Version", s->manager.version);
                json_str(j, "State", s->manager.state);
                json_str(j, "HostId", s->manager.host_id);
                json_u64(j, "PID", s->manager.pid);
                json_u64(j, "StartedAt", s->manager.started_at);
                json_str(j, "ConfigPath", s->manager.config_path);
                json_str(j, "Bus", s->manager.bus);
                json_u64(j, "TasksSubmitted", s->manager.tasks_submitted);
                json_u64(j, "TasksQueued", s->manager.tasks_queued);
                json_u64(j, "TasksRunning", s->manager.tasks_running);
                json_u64(j, "TasksDone", s->manager.tasks_done);
                json_u64(j, "TasksFailed", s->manager.tasks_failed);
                json_key(j, "Pools");
                json_pools(j, pools);
                g_string_append_c(j, '}');
                print_json(j);
                return CTL_EXIT_SUCCESS;
        }

        color = state_color(s->manager.state);
        normal = color[0] ? ANSI_NORMAL : "";
        printf("%s%s%s apiaryd %s\n", color, glyph_bullet(), normal, strempty(s->manager.version));
        printf("%10s: %s%s%s", "State", color, strempty(s->manager.state), normal);
        if (s->manager.started_at > 0) {
                char ts[FORMAT_TIMESTAMP_MAX], span[FORMAT_TIMESPAN_MAX];
                usec_t now = now_usec(CLOCK_REALTIME);

                printf(" since %s; %s ago", format_timestamp(ts, sizeof(ts), s->manager.started_at),
                       format_span_short(span, sizeof(span),
                                         now > s->manager.started_at ? now - s->manager.started_at : 0));
        }
        putchar('\n');
        /* As systemctl status: which process, which file, which bus. An older apiaryd says nothing. */
        if (s->manager.pid > 0)
                printf("%10s: %" PRIu32 "\n", "Main PID", s->manager.pid);
        if (s->manager.config_path && s->manager.config_path[0])
                printf("%10s: %s\n", "Config", s->manager.config_path);
        if (s->manager.bus && s->manager.bus[0])
                printf("%10s: %s%s\n", "Bus", s->manager.bus, ctl_bus_is_private() ? " (here through its private socket)" : "");
        if (s->manager.host_id && s->manager.host_id[0])
                printf("%10s: %s\n", "Host", s->manager.host_id);
        print_tasks_line("Tasks", s->manager.tasks_submitted, s->manager.tasks_queued, s->manager.tasks_running,
                         s->manager.tasks_done, s->manager.tasks_failed);
        printf("%10s: %u\n", "Pools", s->pools->len);

        for (guint i = 0; i < pools->len; i++) {
                putchar('\n');
                const PoolInfo *p = g_ptr_array_index(pools, i);

                print_pool_status(p);
                /* A pool named gets its last journal lines, as systemctl status UNIT shows. */
                if (argc > 1 && arg_lines != 0)
                        ctl_print_pool_log_tail(p->name, arg_lines == UINT_MAX ? 10 : arg_lines);
        }
        return CTL_EXIT_SUCCESS;
}

int verb_pools(sd_bus *bus, int argc, char **argv) {
        _cleanup_(snapshot_freep) Snapshot *s = NULL;
        _cleanup_(table_freep) Table *t = NULL;
        int r;

        r = load(bus, &s);
        if (r != 0)
                return r;

        if (arg_json != JSON_OFF) {
                g_autoptr(GString) j = g_string_new(NULL);

                json_pools(j, s->pools);
                print_json(j);
                return CTL_EXIT_SUCCESS;
        }

        t = table_new((const char *const[]) { "POOL", "STATE", "READY", "KIND", "PAUSED", "QUEUED", "RUNNING", "DONE",
                                              "FAILED", "RESTARTS", NULL });
        for (guint i = 0; i < s->pools->len; i++) {
                const PoolInfo *p = g_ptr_array_index(s->pools, i);

                table_add(t, NULL, strempty(p->name));
                table_add(t, state_color(p->state), strempty(p->state));
                table_addf(t, NULL, "%" PRIu32 "/%" PRIu32, p->workers_ready, p->workers_wanted);
                table_add(t, NULL, strempty(p->kind));
                table_add(t, p->paused ? ansi(ANSI_YELLOW) : NULL, p->paused ? "yes" : "no");
                table_addf(t, NULL, "%" PRIu64, p->tasks_queued);
                table_addf(t, NULL, "%" PRIu64, p->tasks_running);
                table_addf(t, NULL, "%" PRIu64, p->tasks_done);
                table_addf(t, p->tasks_failed > 0 ? ansi(ANSI_RED) : NULL, "%" PRIu64, p->tasks_failed);
                table_addf(t, NULL, "%" PRIu64, p->restarts);
        }
        table_print(t, stdout, NULL, NULL, arg_legend);
        if (arg_legend)
                printf("\n%zu pool%s listed.\n", table_n_rows(t), table_n_rows(t) == 1 ? "" : "s");
        return CTL_EXIT_SUCCESS;
}

int verb_workers(sd_bus *bus, int argc, char **argv) {
        _cleanup_(snapshot_freep) Snapshot *s = NULL;
        _cleanup_(table_freep) Table *t = NULL;
        g_autoptr(GPtrArray) pools = NULL;
        int r;

        r = load(bus, &s);
        if (r != 0)
                return r;
        r = select_pools(s, argc, argv, &pools);
        if (r != 0)
                return r;

        if (arg_json != JSON_OFF) {
                g_autoptr(GString) j = g_string_new("[");

                for (guint i = 0; i < pools->len; i++) {
                        const PoolInfo *p = g_ptr_array_index(pools, i);

                        for (guint k = 0; k < p->workers->len; k++) {
                                if (j->len > 1)
                                        g_string_append_c(j, ',');
                                json_worker(j, g_ptr_array_index(p->workers, k));
                        }
                }
                g_string_append_c(j, ']');
                print_json(j);
                return CTL_EXIT_SUCCESS;
        }

        {
                g_autofree const char **columns = g_new0(const char *, G_N_ELEMENTS(worker_columns) + 1);

                columns[0] = "POOL";
                memcpy(columns + 1, worker_columns, sizeof(worker_columns));
                t = table_new(columns);
        }
        for (guint i = 0; i < pools->len; i++) {
                const PoolInfo *p = g_ptr_array_index(pools, i);

                for (guint k = 0; k < p->workers->len; k++)
                        add_worker_row(t, g_ptr_array_index(p->workers, k), true);
        }
        table_print(t, stdout, NULL, NULL, arg_legend);
        if (arg_legend)
                printf("\n%zu worker%s listed.\n", table_n_rows(t), table_n_rows(t) == 1 ? "" : "s");
        return CTL_EXIT_SUCCESS;
}
