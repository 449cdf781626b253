/* SPDX-License-Identifier: MIT */
/*
 * apiary-exporter: apiaryd's metrics in the Prometheus text format (version 0.0.4) over HTTP, so
 * that apiaryd itself listens on no network socket. Each GET /metrics reads the bus API (the
 * manager's properties and every pool's, with their histograms) and writes what it read; nothing
 * is kept between scrapes. Socket-activated by apiary-exporter.socket (off by default), or
 * listening on --listen=ADDRESS:PORT itself. libmicrohttpd does HTTP; sd-event is the loop: MHD's
 * epoll fd is one of its sources, so the process stays single-threaded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "build-config.h"
#include "util/macro.h"
#include "util/time-util.h"

#define BUS_NAME "org.apiary.Apiary1"
#define OBJECT_PATH "/org/apiary/Apiary1"
#define MANAGER_INTERFACE "org.apiary.Apiary1.Manager"
#define POOL_INTERFACE "org.apiary.Apiary1.Pool"

static const char *arg_bus = "system";
static const char *arg_listen = NULL;

typedef struct Exporter {
        sd_event *event;
        struct MHD_Daemon *httpd;
        sd_event_source *httpd_io, *httpd_timer;
} Exporter;

/* ---- the metrics ---- */

/* A label value: \\, \" and \n escaped, as the text format wants. */
static void append_label(GString *s, const char *value) {
        for (const char *p = value; *p; p++)
                switch (*p) {
                case '\\':
                        g_string_append(s, "\\\\");
                        break;
                case '"':
                        g_string_append(s, "\\\"");
                        break;
                case '\n':
                        g_string_append(s, "\\n");
                        break;
                default:
                        g_string_append_c(s, *p);
                }
}

typedef struct PoolMetrics {
        char *name;
        char *state;
        uint64_t submitted, queued, running, done, failed, restarts, planned_restarts;
        uint64_t scale_ups, scale_downs, memory_recycles, age_recycles;
        uint64_t queued_by_priority[10];
        uint32_t ready, wanted, workers_min, workers_max;
        int paused;
        GArray *run_buckets, *wait_buckets;     /* of uint64_t pairs: bound, cumulative count */
        uint64_t run_sum, wait_sum;
} PoolMetrics;

static void pool_metrics_free(gpointer p) {
        PoolMetrics *m = p;

        g_free(m->name);
        g_free(m->state);
        if (m->run_buckets)
                g_array_unref(m->run_buckets);
        if (m->wait_buckets)
                g_array_unref(m->wait_buckets);
        g_free(m);
}

static int read_buckets(sd_bus_message *m, GArray **ret) {
        GArray *a = g_array_new(false, false, sizeof(uint64_t));
        uint64_t le, count;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "(tt)");
        while (r >= 0 && (r = sd_bus_message_read(m, "(tt)", &le, &count)) > 0) {
                g_array_append_val(a, le);
                g_array_append_val(a, count);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0) {
                g_array_unref(a);
                return r;
        }
        if (*ret)
                g_array_unref(*ret);
        *ret = a;
        return 0;
}

/* One pool's a{sv} of properties. */
static int read_pool(sd_bus_message *m, PoolMetrics *p) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *name, *contents = NULL, *s;
                uint64_t *t = NULL;
                uint32_t *u = NULL;

                r = sd_bus_message_read(m, "s", &name);
                if (r >= 0)
                        r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        break;
                r = sd_bus_message_enter_container(m, 'v', contents);
                if (r < 0)
                        break;
                if (streq(name, "Name") || streq(name, "State")) {
                        char **field = streq(name, "Name") ? &p->name : &p->state;

                        r = sd_bus_message_read(m, "s", &s);
                        if (r >= 0) {
                                g_free(*field);
                                *field = g_strdup(s);
                        }
                } else if (streq(name, "TaskRunTimeBuckets"))
                        r = read_buckets(m, &p->run_buckets);
                else if (streq(name, "QueueWaitBuckets"))
                        r = read_buckets(m, &p->wait_buckets);
                else if (streq(name, "Paused"))
                        r = sd_bus_message_read(m, "b", &p->paused);
                else if (streq(name, "QueuedByPriority") && streq(contents, "at")) {
                        const uint64_t *v;
                        size_t size;

                        r = sd_bus_message_read_array(m, 't', (const void **) &v, &size);
                        if (r >= 0)
                                memcpy(p->queued_by_priority, v, MIN(size, sizeof(p->queued_by_priority)));
                }
                else {
                        if (streq(name, "TasksSubmitted"))
                                t = &p->submitted;
                        else if (streq(name, "TasksQueued"))
                                t = &p->queued;
                        else if (streq(name, "TasksRunning"))
                                t = &p->running;
                        else if (streq(name, "TasksDone"))
                                t = &p->done;
                        else if (streq(name, "TasksFailed"))
                                t = &p->failed;
                        else if (streq(name, "Restarts"))
                                t = &p->restarts;
                        else if (streq(name, "PlannedRestarts"))
                                t = &p->planned_restarts;
                        else if (streq(name, "TaskRunTimeSumUSec"))
                                t = &p->run_sum;
                        else if (streq(name, "QueueWaitSumUSec"))
                                t = &p->wait_sum;
                        else if (streq(name, "WorkersReady"))
                                u = &p->ready;
                        else if (streq(name, "WorkersWanted"))
                                u = &p->wanted;
                        else if (streq(name, "WorkersMin"))
                                u = &p->workers_min;
                        else if (streq(name, "WorkersMax"))
                                u = &p->workers_max;
                        else if (streq(name, "ScaleUps"))
                                t = &p->scale_ups;
                        else if (streq(name, "ScaleDowns"))
                                t = &p->scale_downs;
                        else if (streq(name, "MemoryRecycles"))
                                t = &p->memory_recycles;
                        else if (streq(name, "AgeRecycles"))
                                t = &p->age_recycles;
                        if (t && streq(contents, "t"))
                                r = sd_bus_message_read(m, "t", t);
                        else if (u && streq(contents, "u"))
                                r = sd_bus_message_read(m, "u", u);
                        else
                                r = sd_bus_message_skip(m, contents);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        return r;
}

/* Every pool, from ObjectManager.GetManagedObjects, in the order the bus gives them. */
static int read_pools(sd_bus *bus, GPtrArray *pools, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &call, BUS_NAME, OBJECT_PATH, "org.freedesktop.DBus.ObjectManager",
                                           "GetManagedObjects");
        if (r >= 0)
                r = sd_bus_message_set_auto_start(call, false);
        if (r >= 0)
                r = sd_bus_call(bus, call, 5 * USEC_PER_SEC, error, &reply);
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                const char *path;

                r = sd_bus_message_read(reply, "o", &path);
                if (r >= 0)
                        r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
                while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sa{sv}")) > 0) {
                        const char *interface;

                        r = sd_bus_message_read(reply, "s", &interface);
                        if (r >= 0 && streq(interface, POOL_INTERFACE)) {
                                PoolMetrics *p = g_new0(PoolMetrics, 1);

                                g_ptr_array_add(pools, p);
                                r = read_pool(reply, p);
                        } else if (r >= 0)
                                r = sd_bus_message_skip(reply, "a{sv}");
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        return r < 0 ? r : 0;
}

static void metric_header(GString *s, const char *name, const char *type, const char *help) {
        g_string_append_printf(s, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void append_pool_u64(GString *s, const char *name, const char *type, const char *help, GPtrArray *pools,
                            size_t offset, bool is_u32) {
        metric_header(s, name, type, help);
        for (guint i = 0; i < pools->len; i++) {
                const PoolMetrics *p = pools->pdata[i];
                const char *field = (const char *) p + offset;

                g_string_append_printf(s, "%s{pool=\"", name);
                append_label(s, strempty(p->name));
                g_string_append_printf(s, "\"} %" PRIu64 "\n",
                                       is_u32 ? (uint64_t) *(const uint32_t *) field : *(const uint64_t *) field);
        }
}

/* A counter with one label of two values, A and B, from two uint64_t fields. */
static void append_pool_pair(GString *s, const char *name, const char *help, const char *label, const char *a,
                             const char *b, GPtrArray *pools, size_t offset_a, size_t offset_b) {
        metric_header(s, name, "counter", help);
        for (guint i = 0; i < pools->len; i++) {
                const PoolMetrics *p = pools->pdata[i];

                for (int k = 0; k < 2; k++) {
                        g_string_append_printf(s, "%s{pool=\"", name);
                        append_label(s, strempty(p->name));
                        g_string_append_printf(s, "\",%s=\"%s\"} %" PRIu64 "\n", label, k == 0 ? a : b,
                                               *(const uint64_t *) ((const char *) p + (k == 0 ? offset_a : offset_b)));
                }
        }
}

static void append_le(GString *s, uint64_t bound_usec) {
        if (bound_usec == UINT64_MAX)
                g_string_append(s, "+Inf");
        else
                g_string_append_printf(s, "%g", (double) bound_usec / USEC_PER_SEC);
}

static void append_histogram(GString *s, const char *name, const char *help, GPtrArray *pools, bool run) {
        metric_header(s, name, "histogram", help);
        for (guint i = 0; i < pools->len; i++) {
                const PoolMetrics *p = pools->pdata[i];
                const GArray *b = run ? p->run_buckets : p->wait_buckets;
                uint64_t total = 0;

                if (!b)
                        continue;
                for (guint k = 0; k + 1 < b->len; k += 2) {
                        g_string_append_printf(s, "%s_bucket{pool=\"", name);
                        append_label(s, strempty(p->name));
                        g_string_append(s, "\",le=\"");
                        append_le(s, g_array_index(b, uint64_t, k));
                        total = g_array_index(b, uint64_t, k + 1);
                        g_string_append_printf(s, "\"} %" PRIu64 "\n", total);
                }
                g_string_append_printf(s, "%s_sum{pool=\"", name);
                append_label(s, strempty(p->name));
                g_string_append_printf(s, "\"} %.6f\n", (double) (run ? p->run_sum : p->wait_sum) / USEC_PER_SEC);
                g_string_append_printf(s, "%s_count{pool=\"", name);
                append_label(s, strempty(p->name));
                g_string_append_printf(s, "\"} %" PRIu64 "\n", total);
        }
}

static int open_bus(sd_bus **ret);

/* The whole page. apiary_up says whether apiaryd answered; without it, that is all there is. A
 * connection of its own each time: a scrape is rare, and a bus that restarted meanwhile (or an
 * apiaryd that did) costs nothing. */
static char *render(void) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        g_autoptr(GPtrArray) pools = g_ptr_array_new_with_free_func(pool_metrics_free);
        GString *s = g_string_new(NULL);
        int r;

        r = open_bus(&bus);
        if (r < 0)
                sd_bus_error_set_errno(&error, r);
        else
                r = read_pools(bus, pools, &error);
        metric_header(s, "apiary_up", "gauge", "Whether apiaryd answered on the bus (1) or not (0).");
        g_string_append_printf(s, "apiary_up %d\n", r >= 0);
        if (r < 0) {
                fprintf(stderr, "apiary-exporter: cannot read apiaryd's pools: %s\n",
                        error.message ?: strerror(-r));
                return g_string_free(s, false);
        }

        metric_header(s, "apiary_pool_info", "gauge", "1 for each pool, with its state as a label.");
        for (guint i = 0; i < pools->len; i++) {
                const PoolMetrics *p = pools->pdata[i];

                g_string_append(s, "apiary_pool_info{pool=\"");
                append_label(s, strempty(p->name));
                g_string_append(s, "\",state=\"");
                append_label(s, strempty(p->state));
                g_string_append_printf(s, "\",paused=\"%s\"} 1\n", p->paused ? "yes" : "no");
        }
        append_pool_u64(s, "apiary_tasks_submitted_total", "counter", "Tasks accepted since apiaryd started.", pools,
                        offsetof(PoolMetrics, submitted), false);
        metric_header(s, "apiary_tasks_ended_total", "counter",
                      "Tasks that ended since apiaryd started, by outcome: done (a result) or failed.");
        for (guint i = 0; i < pools->len; i++) {
                const PoolMetrics *p = pools->pdata[i];

                for (int k = 0; k < 2; k++) {
                        g_string_append(s, "apiary_tasks_ended_total{pool=\"");
                        append_label(s, strempty(p->name));
                        g_string_append_printf(s, "\",outcome=\"%s\"} %" PRIu64 "\n", k == 0 ? "done" : "failed",
                                               k == 0 ? p->done : p->failed);
                }
        }
        append_pool_u64(s, "apiary_tasks_queued", "gauge", "Tasks queued now, not yet dispatched.", pools,
                        offsetof(PoolMetrics, queued), false);
        metric_header(s, "apiary_tasks_queued_by_priority", "gauge",
                      "Tasks queued now, by their priority option (0 to 9).");
        for (guint i = 0; i < pools->len; i++) {
                const PoolMetrics *p = pools->pdata[i];

                for (unsigned k = 0; k < 10; k++) {
                        g_string_append(s, "apiary_tasks_queued_by_priority{pool=\"");
                        append_label(s, strempty(p->name));
                        g_string_append_printf(s, "\",priority=\"%u\"} %" PRIu64 "\n", k, p->queued_by_priority[k]);
                }
        }
        append_pool_u64(s, "apiary_tasks_running", "gauge", "Tasks dispatched to a worker and not ended.", pools,
                        offsetof(PoolMetrics, running), false);
        append_pool_u64(s, "apiary_workers_ready", "gauge", "Workers ready or busy.", pools,
                        offsetof(PoolMetrics, ready), true);
        append_pool_u64(s, "apiary_workers_wanted", "gauge", "Worker slots the pool has.", pools,
                        offsetof(PoolMetrics, wanted), true);
        append_pool_u64(s, "apiary_workers_min", "gauge", "Workers=MIN..MAX: the fewest workers (Workers= if fixed).",
                        pools, offsetof(PoolMetrics, workers_min), true);
        append_pool_u64(s, "apiary_workers_max", "gauge", "Workers=MIN..MAX: the most workers (Workers= if fixed).",
                        pools, offsetof(PoolMetrics, workers_max), true);
        append_pool_pair(s, "apiary_pool_scale_steps_total", "The autoscaler's steps, up (one worker) and down.",
                         "direction", "up", "down", pools, offsetof(PoolMetrics, scale_ups),
                         offsetof(PoolMetrics, scale_downs));
        append_pool_pair(s, "apiary_worker_recycles_total",
                         "Workers recycled for MaxMemoryPerWorker= (memory) and MaxWorkerAgeSec= (age).", "reason",
                         "memory", "age", pools, offsetof(PoolMetrics, memory_recycles),
                         offsetof(PoolMetrics, age_recycles));
        append_pool_u64(s, "apiary_worker_restarts_total", "counter", "Workers replaced after they failed.", pools,
                        offsetof(PoolMetrics, restarts), false);
        append_pool_u64(s, "apiary_worker_planned_restarts_total", "counter",
                        "Workers replaced as planned (Restart(), a reload, MaxTasksPerWorker=, MaxMemoryPerWorker=, "
                        "MaxWorkerAgeSec=).", pools,
                        offsetof(PoolMetrics, planned_restarts), false);
        append_histogram(s, "apiary_task_run_seconds",
                         "How long tasks ran, as their worker measured, of those that ended with its answer.", pools,
                         true);
        append_histogram(s, "apiary_task_queue_wait_seconds",
                         "How long those tasks waited, from first queued to the start of the run that answered.",
                         pools, false);
        return g_string_free(s, false);
}

/* ---- HTTP ---- */

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, char *body, const char *type) {
        struct MHD_Response *response;
        enum MHD_Result ret;

        response = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (!response) {
                free(body);
                return MHD_NO;
        }
        (void) MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        ret = MHD_queue_response(c, status, response);
        MHD_destroy_response(response);
        return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        if (!streq(method, MHD_HTTP_METHOD_GET) && !streq(method, MHD_HTTP_METHOD_HEAD))
                return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, strdup("Only GET and HEAD.\n"), "text/plain");
        if (streq(url, "/metrics"))
                return reply_text(c, MHD_HTTP_OK, render(), "text/plain; version=0.0.4; charset=utf-8");
        if (streq(url, "/"))
                return reply_text(c, MHD_HTTP_OK, strdup("apiary-exporter: the metrics are at /metrics\n"),
                                  "text/plain");
        return reply_text(c, MHD_HTTP_NOT_FOUND, strdup("Not found: the metrics are at /metrics\n"), "text/plain");
}

static int rearm_timer(Exporter *e);

static int on_httpd_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Exporter *e = userdata;

        (void) MHD_run(e->httpd);
        return rearm_timer(e);
}

static int on_httpd_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Exporter *e = userdata;

        (void) MHD_run(e->httpd);
        return rearm_timer(e);
}

/* MHD's own timeouts (idle connections) as an sd-event timer. */
static int rearm_timer(Exporter *e) {
        MHD_UNSIGNED_LONG_LONG ms;
        uint64_t now;

        if (MHD_get_timeout(e->httpd, &ms) != MHD_YES)
                return sd_event_source_set_enabled(e->httpd_timer, SD_EVENT_OFF);
        (void) sd_event_now(e->event, CLOCK_MONOTONIC, &now);
        (void) sd_event_source_set_time(e->httpd_timer, now + (uint64_t) ms * USEC_PER_MSEC);
        return sd_event_source_set_enabled(e->httpd_timer, SD_EVENT_ONESHOT);
}

/* --listen=ADDRESS:PORT (IPv4). */
static int listen_on(const char *spec) {
        struct sockaddr_in sa = { .sin_family = AF_INET };
        g_autofree char *host = NULL;
        const char *colon = strrchr(spec, ':');
        char *end;
        unsigned long port;
        int fd, one = 1;

        if (!colon)
                return -EINVAL;
        host = g_strndup(spec, (gsize) (colon - spec));
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (errno || *end || port == 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
                return -EINVAL;
        sa.sin_port = htons((uint16_t) port);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
                int r = -errno;

                close(fd);
                return r;
        }
        return fd;
}

static int open_bus(sd_bus **ret) {
        sd_bus *bus = NULL;
        int r;

        if (streq(arg_bus, "system"))
                return sd_bus_open_system(ret);
        if (streq(arg_bus, "session") || streq(arg_bus, "user"))
                return sd_bus_open_user(ret);
        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, arg_bus);
        if (r >= 0)
                r = sd_bus_set_bus_client(bus, true);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r < 0) {
                sd_bus_unref(bus);
                return r;
        }
        *ret = bus;
        return 0;
}

static void help(void) {
        printf("apiary-exporter [OPTIONS...]\n\n"
               "Serve apiaryd's metrics in the Prometheus text format at http://ADDRESS/metrics.\n"
               "Started by apiary-exporter.socket, or listening itself with --listen=.\n\n"
               "  -h --help              Show this help\n"
               "     --version           Show the version\n"
               "     --bus=BUS           system (default), session, or a D-Bus address\n"
               "     --listen=ADDR:PORT  Listen here (IPv4) instead of on the socket systemd passes\n");
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { "bus", required_argument, NULL, 'b' },
                { "listen", required_argument, NULL, 'l' },
                {}
        };
        Exporter e = {};
        int c, fd, r, epoll_fd;
        const union MHD_DaemonInfo *info;
        sigset_t mask;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case 'V':
                        printf("apiary-exporter %s\n", APIARY_VERSION);
                        return EXIT_SUCCESS;
                case 'b':
                        arg_bus = optarg;
                        break;
                case 'l':
                        arg_listen = optarg;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (optind < argc) {
                fprintf(stderr, "apiary-exporter takes no arguments.\n");
                return EXIT_FAILURE;
        }

        if (arg_listen) {
                fd = listen_on(arg_listen);
                if (fd < 0) {
                        fprintf(stderr, "apiary-exporter: cannot listen on %s: %s\n", arg_listen, strerror(-fd));
                        return EXIT_FAILURE;
                }
        } else {
                r = sd_listen_fds(true);
                if (r != 1) {
                        fprintf(stderr, "apiary-exporter: expected one socket from systemd (apiary-exporter.socket), "
                                        "got %d; or give --listen=ADDRESS:PORT.\n", r < 0 ? 0 : r);
                        return EXIT_FAILURE;
                }
                fd = SD_LISTEN_FDS_START;
        }

        e.httpd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, NULL,
                                   MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, 16u,
                                   MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
        if (!e.httpd) {
                fprintf(stderr, "apiary-exporter: cannot start the HTTP server\n");
                return EXIT_FAILURE;
        }
        info = MHD_get_daemon_info(e.httpd, MHD_DAEMON_INFO_EPOLL_FD);
        epoll_fd = info ? info->epoll_fd : -1;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        (void) sigprocmask(SIG_BLOCK, &mask, NULL);
        r = sd_event_default(&e.event);
        if (r >= 0)
                r = sd_event_add_signal(e.event, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(e.event, NULL, SIGINT, NULL, NULL);
        if (r >= 0)
                r = epoll_fd >= 0 ? sd_event_add_io(e.event, &e.httpd_io, epoll_fd, EPOLLIN, on_httpd_io, &e) : -EIO;
        if (r >= 0)
                r = sd_event_add_time(e.event, &e.httpd_timer, CLOCK_MONOTONIC, UINT64_MAX, 0, on_httpd_timer, &e);
        if (r >= 0)
                r = rearm_timer(&e);
        if (r >= 0)
                r = sd_event_loop(e.event);
        if (r < 0)
                fprintf(stderr, "apiary-exporter: %s\n", strerror(-r));

        sd_event_source_disable_unref(e.httpd_io);
        sd_event_source_disable_unref(e.httpd_timer);
        MHD_stop_daemon(e.httpd);
        sd_event_unref(e.event);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
