/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-config.h"
#include "config/config.h"
#include "daemon/bus-api.h"
#include "daemon/bus-connect.h"
#include "daemon/bus-control.h"
#include "daemon/bus-tasks.h"
#include "daemon/manager.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/time-util.h"

static const char *arg_config = APIARY_CONFIG_FILE;
static const char *arg_bus = NULL;
static const char *arg_worker_path = NULL;
static int arg_log_level = -1;
static bool arg_check_config = false;

static void help(void) {
        printf("%s [OPTIONS...]\n\n"
               "Supervises pools of plugin workers and queues their tasks over D-Bus.\n\n"
               "  -h --help                Show this help\n"
               "     --version             Show the version\n"
               "  -c --config=PATH         Read PATH and PATH.d/*.conf (default: %s)\n"
               "     --check-config        Validate the configuration and exit: 0 if valid, 1 if not\n"
               "     --bus=BUS             Serve on BUS: system, session or a D-Bus address (overrides Bus=)\n"
               "     --log-level=LEVEL     err, warning, notice, info or debug (overrides LogLevel=)\n"
               "     --worker-path=PATH    The apiary-worker binary (default: %s, or $APIARY_WORKER_PATH)\n"
               "\nSee apiary.conf(5) in docs/apiary.conf.md for the configuration.\n",
               program_invocation_short_name, APIARY_CONFIG_FILE, APIARY_WORKER_PATH);
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_CHECK_CONFIG,
                ARG_BUS,
                ARG_LOG_LEVEL,
                ARG_WORKER_PATH,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
                { "bus", required_argument, NULL, ARG_BUS },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "worker-path", required_argument, NULL, ARG_WORKER_PATH },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "hc:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("apiaryd %s\n", APIARY_VERSION);
                        return 0;
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        arg_check_config = true;
                        break;
                case ARG_BUS:
                        arg_bus = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        arg_log_level = log_level_from_string(optarg);
                        if (arg_log_level < 0) {
                                fprintf(stderr, "Invalid log level \"%s\": expected err, warning, notice, info or debug.\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_WORKER_PATH:
                        arg_worker_path = optarg;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }

        if (optind < argc) {
                fprintf(stderr, "%s takes no arguments.\n", program_invocation_short_name);
                return -EINVAL;
        }
        return 1;
}

static int apply_bus_override(Config *c) {
        if (!arg_bus)
                return 0;
        free(c->bus_address);
        c->bus_address = NULL;
        if (streq(arg_bus, "system"))
                c->bus = BUS_KIND_SYSTEM;
        else if (streq(arg_bus, "session"))
                c->bus = BUS_KIND_SESSION;
        else if (strchr(arg_bus, ':') && strchr(arg_bus, '=')) {
                c->bus = BUS_KIND_ADDRESS;
                c->bus_address = strdup(arg_bus);
                if (!c->bus_address)
                        return -ENOMEM;
        } else {
                fprintf(stderr, "Invalid --bus=%s: expected system, session or a D-Bus address such as unix:path=/run/x.\n",
                        arg_bus);
                return -EINVAL;
        }
        return 0;
}

static int check_config(Config *c) {
        g_auto(GStrv) problems = NULL;
        int n;

        n = config_check_plugins(c, &problems);
        for (size_t i = 0; problems && problems[i]; i++)
                fprintf(stderr, "%s\n", problems[i]);
        return n == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int run(int argc, char *argv[]) {
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_(config_freep) Config *config = NULL;
        _cleanup_(freep) char *error = NULL;
        const char *worker_path;
        long n_cpus;
        sigset_t mask;
        int r;

        log_setup("apiaryd");
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
        r = config_load(arg_config, n_cpus > 0 ? (unsigned) n_cpus : 1, &config, &error);
        if (r < 0) {
                if (arg_check_config)
                        fprintf(stderr, "%s\n", error ?: strerror(-r));
                else if (!error)
                        log_error("Invalid configuration: %s", strerror(-r));
                else {
                        /* One journal entry per problem: each names its file, line and key. */
                        g_auto(GStrv) lines = g_strsplit(error, "\n", -1);

                        for (char **l = lines; *l; l++)
                                log_error("Invalid configuration: %s", *l);
                }
                return EXIT_FAILURE;
        }
        if (apply_bus_override(config) < 0)
                return EXIT_FAILURE;
        if (arg_check_config)
                return check_config(config);

        log_set_max_level(arg_log_level >= 0 ? arg_log_level : config->log_level);
        /* For the restart jitter: workers of two apiaryd must not come back in lockstep either. */
        srandom((unsigned) (now_usec(CLOCK_MONOTONIC) ^ ((usec_t) getpid() << 16)));

        worker_path = arg_worker_path ?: getenv("APIARY_WORKER_PATH") ?: APIARY_WORKER_PATH;
        if (access(worker_path, X_OK) < 0) {
                log_error_errno(errno, "Cannot run the worker host %s: %m", worker_path);
                return EXIT_FAILURE;
        }

        /* Everything is an event source: the signals we handle are blocked and come via signalfd,
         * and SIGCHLD must be blocked before sd-event can watch children. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m"), EXIT_FAILURE;
        /* A worker that dies while we write to its link must not take us down with SIGPIPE. */
        (void) signal(SIGPIPE, SIG_IGN);

        r = manager_new(&m, TAKE_PTR(config), worker_path);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the supervisor: %m"), EXIT_FAILURE;
        /* Shared pools' engine client, next to apiary-worker; checked when one is spawned. */
        m->source_path = getenv("APIARY_SOURCE_PATH") ?: APIARY_SOURCE_PATH;

        m->log_level_override = arg_log_level;

        m->observer = (ManagerObserver) {
                .task_finished = bus_task_finished,
                .task_stored = bus_task_stored,
                .task_rejected = bus_task_rejected,
                .properties_changed = bus_emit_properties_changed_strv,
                .object_added = bus_emit_object_added,
                .object_removed = bus_emit_object_removed,
                .worker_submit = link_method_submit,
                .reload_finished = bus_reload_finished,
                .closing = bus_close_peers,
        };
        r = bus_connect(m);
        if (r < 0)
                return EXIT_FAILURE;

        r = manager_start(m);
        if (r < 0)
                return EXIT_FAILURE;

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), EXIT_FAILURE;
        return r;
}

int main(int argc, char *argv[]) {
        return run(argc, argv);
}
