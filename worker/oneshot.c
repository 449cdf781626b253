/* SPDX-License-Identifier: MIT */
/*
 * apiary-worker --oneshot: one task of one plugin, with no apiaryd and no bus. The plugin is
 * loaded, checked and initialized exactly as for a worker of a pool (plugin-host.c), with the
 * --set pairs as its [Pool NAME Plugin] group; the payload is the whole of stdin, the result goes
 * to stdout and the reason of a failed task to stderr. Asynchronous plugins run on the same kind
 * of sd-event loop as in a worker, until their task is completed. host->submit() has no apiaryd
 * to talk to and fails with -ENOTCONN.
 *
 * Exit statuses: 0 the task succeeded, 1 it failed (or anything else went wrong), 2 bad command
 * line, 3 the plugin cannot be loaded, 4 its init() failed: the WORKER_EXIT_* of a worker.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "ipc/protocol.h"
#include "util/log.h"
#include "util/macro.h"
#include "worker/oneshot.h"
#include "worker/plugin-host.h"

#define ONESHOT_POOL_DEFAULT "oneshot"

typedef struct Oneshot {
        const char *plugin;             /* as given, from argv */
        char *path;                     /* what we dlopen(): PLUGIN, made relative to "." */
        const char *pool;
        unsigned slot;
        char **keys, **values;          /* --set, in order of first appearance, last value wins */
        size_t n_config;

        int result_fd;                  /* the original stdout; fd 1 is stderr while plugins run */
        sd_event *event;
        PluginHost host;
        bool host_set;

        bool finished;
        bool ok;
        int write_error;
} Oneshot;

static void oneshot_done(Oneshot *o) {
        if (o->host_set)
                plugin_host_deinit(&o->host);
        o->event = sd_event_unref(o->event);
        o->result_fd = safe_close(o->result_fd);
        for (size_t i = 0; i < o->n_config; i++) {
                free(o->keys[i]);
                free(o->values[i]);
        }
        free(o->keys);
        free(o->values);
        free(o->path);
}

bool oneshot_requested(int argc, char *argv[]) {
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--"))
                        break;
                if (streq(argv[i], "--oneshot") || strncmp(argv[i], "--oneshot=", 10) == 0)
                        return true;
        }
        return false;
}

static void usage(FILE *f) {
        fprintf(f,
                "Usage: apiary-worker --oneshot PLUGIN [--set KEY=VALUE]... [--pool NAME] [--slot N]\n"
                "                     [--log-level LEVEL] <PAYLOAD >RESULT\n"
                "Runs one task of PLUGIN (a path) without apiaryd: the payload is stdin, the result\n"
                "goes to stdout. Exit 0 if the task succeeded, 1 if it failed (the reason is on\n"
                "stderr), 3 if the plugin cannot be loaded, 4 if its init() failed.\n");
}

/* KEY=VALUE into the plugin's configuration: a key given again keeps its place and takes the new
 * value, as with a drop-in that overrides a key. */
static int config_set(Oneshot *o, const char *assignment) {
        const char *eq = strchr(assignment, '=');
        char *key, *value, **k, **v;

        if (!eq || eq == assignment) {
                fprintf(stderr, "apiary-worker: --set expects KEY=VALUE, got \"%s\".\n", assignment);
                return -EINVAL;
        }
        key = strndup(assignment, (size_t) (eq - assignment));
        value = strdup(eq + 1);
        if (!key || !value) {
                free(key);
                free(value);
                return -ENOMEM;
        }

        for (size_t i = 0; i < o->n_config; i++)
                if (streq(o->keys[i], key)) {
                        free(key);
                        free(o->values[i]);
                        o->values[i] = value;
                        return 0;
                }

        k = reallocarray(o->keys, o->n_config + 1, sizeof(char *));
        if (k)
                o->keys = k;
        v = reallocarray(o->values, o->n_config + 1, sizeof(char *));
        if (v)
                o->values = v;
        if (!k || !v) {
                free(key);
                free(value);
                return -ENOMEM;
        }
        o->keys[o->n_config] = key;
        o->values[o->n_config] = value;
        o->n_config++;
        return 0;
}

static int parse_argv(Oneshot *o, int argc, char *argv[]) {
        enum { ARG_ONESHOT = 0x100, ARG_SET, ARG_POOL, ARG_SLOT, ARG_LOG_LEVEL };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "oneshot", required_argument, NULL, ARG_ONESHOT },
                { "set", required_argument, NULL, ARG_SET },
                { "pool", required_argument, NULL, ARG_POOL },
                { "slot", required_argument, NULL, ARG_SLOT },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                {}
        };
        int opt, r;

        while ((opt = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (opt) {
                case 'h':
                        usage(stdout);
                        return 0;
                case ARG_ONESHOT:
                        o->plugin = optarg;
                        break;
                case ARG_SET:
                        r = config_set(o, optarg);
                        if (r < 0)
                                return r;
                        break;
                case ARG_POOL:
                        o->pool = optarg;
                        break;
                case ARG_SLOT: {
                        char *end;
                        long v;

                        errno = 0;
                        v = strtol(optarg, &end, 10);
                        if (errno != 0 || *end != '\0' || end == optarg || v < 0 || v > INT32_MAX) {
                                fprintf(stderr, "apiary-worker: invalid slot \"%s\".\n", optarg);
                                return -EINVAL;
                        }
                        o->slot = (unsigned) v;
                        break;
                }
                case ARG_LOG_LEVEL: {
                        int level = log_level_from_string(optarg);

                        if (level < 0) {
                                fprintf(stderr, "apiary-worker: invalid log level \"%s\".\n", optarg);
                                return -EINVAL;
                        }
                        log_set_max_level(level);
                        break;
                }
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "apiary-worker: unexpected argument \"%s\"; the payload is read from stdin.\n",
                        argv[optind]);
                return -EINVAL;
        }
        if (!o->plugin || o->plugin[0] == '\0') {
                fprintf(stderr, "apiary-worker: --oneshot needs the path of a plugin.\n");
                return -EINVAL;
        }

        /* A path, as the user sees it: dlopen() would look a bare "x.so" up in the library path. */
        if (strchr(o->plugin, '/'))
                o->path = strdup(o->plugin);
        else if (asprintf(&o->path, "./%s", o->plugin) < 0)
                o->path = NULL;
        if (!o->path)
                return -ENOMEM;
        return 1;
}

static int read_all(int fd, char **ret, size_t *ret_size) {
        _cleanup_(freep) char *buf = NULL;
        size_t size = 0, allocated = 0;

        for (;;) {
                ssize_t n;

                if (allocated - size < 65536) {
                        size_t a = allocated * 2 + 65536;
                        char *b = realloc(buf, a);

                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        allocated = a;
                }
                n = read(fd, buf + size, allocated - size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                size += (size_t) n;
        }
        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

static int write_all(int fd, const void *data, size_t size) {
        const char *p = data;

        while (size > 0) {
                ssize_t n = write(fd, p, size);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                size -= (size_t) n;
        }
        return 0;
}

/* What the plugin header promises authors is what the worker enforces. */
_Static_assert(RESULT_BYTES_MAX == APIARY_RESULT_SIZE_MAX, "RESULT_BYTES_MAX is APIARY_RESULT_SIZE_MAX");

static void on_task_done(bool ok, const void *data, size_t size, void *userdata) {
        Oneshot *o = userdata;
        char reason[RESULT_TOO_LARGE_MAX];

        /* The same limit as in a pool (task-link.c): what passes here passes there. */
        plugin_result_limit(&ok, &data, &size, reason);
        o->finished = true;
        o->ok = ok;
        if (ok) {
                int r = write_all(o->result_fd, data, size);

                if (r < 0)
                        o->write_error = r;
        } else {
                /* The reason alone, on a line of its own: what a caller of Run would get. */
                fflush(stderr);
                (void) write_all(STDERR_FILENO, data, size);
                (void) write_all(STDERR_FILENO, "\n", 1);
        }
        (void) sd_event_exit(o->event, 0);
}

/* The result gets the real stdout to itself: whatever the plugin prints goes to stderr. */
static int divert_stdout(Oneshot *o) {
        o->result_fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        if (o->result_fd < 0)
                return -errno;
        if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
                return -errno;
        return 0;
}

/* Stdin as a worker has it, now that the payload is read: /dev/null. */
static void stdin_devnull(void) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return;
        (void) dup2(fd, STDIN_FILENO);
        if (fd != STDIN_FILENO)
                safe_close(fd);
}

int oneshot_main(int argc, char *argv[]) {
        /* Freed after the host: a task the plugin never completed still points into it. */
        _cleanup_(freep) char *payload = NULL;
        _cleanup_(oneshot_done) Oneshot o = { .pool = ONESHOT_POOL_DEFAULT, .result_fd = -1 };
        size_t size = 0;
        int r;

        log_setup("apiary-worker");

        r = parse_argv(&o, argc, argv);
        if (r == -ENOMEM) {
                log_oom();
                return WORKER_EXIT_FAILURE;
        }
        if (r <= 0)
                return r < 0 ? WORKER_EXIT_USAGE : WORKER_EXIT_OK;

        r = divert_stdout(&o);
        if (r < 0) {
                log_error_errno(r, "Failed to set up stdout for the result: %m");
                return WORKER_EXIT_FAILURE;
        }

        r = sd_event_new(&o.event);
        if (r < 0) {
                log_error_errno(r, "Failed to allocate the event loop: %m");
                return WORKER_EXIT_FAILURE;
        }

        r = plugin_host_init(&o.host, o.pool, o.slot, o.path, o.keys, o.values, o.n_config, o.event, NULL);
        o.host_set = true;
        if (r < 0) {
                log_oom();
                return WORKER_EXIT_FAILURE;
        }

        r = plugin_host_load(&o.host);
        if (r < 0) {
                log_error("%s", o.host.error ?: "cannot load the plugin");
                return WORKER_EXIT_LOAD;
        }

        /* Before init(): the plugin gets /dev/null on stdin, as in a worker, never the payload. */
        r = read_all(STDIN_FILENO, &payload, &size);
        if (r < 0) {
                log_error_errno(r, "Failed to read the payload from stdin: %m");
                return WORKER_EXIT_FAILURE;
        }
        stdin_devnull();

        r = plugin_host_start(&o.host);
        if (r < 0) {
                log_error("plugin %s: init failed: %s", o.host.plugin->name ?: o.plugin, strempty(o.host.error));
                return WORKER_EXIT_INIT;
        }

        r = plugin_host_run_task(&o.host, payload, size, on_task_done, NULL, &o);
        if (r < 0) {
                log_error_errno(r, "Failed to run the task: %m");
                return WORKER_EXIT_FAILURE;
        }
        if (!o.finished) {
                /* Asynchronous: the plugin's sources run until on_task_done() leaves the loop, or
                 * SIGINT/SIGTERM (Ctrl-C on a task that never ends) does: then the plugin's fini()
                 * runs, which may still complete it. */
                sigset_t mask;

                sigemptyset(&mask);
                sigaddset(&mask, SIGINT);
                sigaddset(&mask, SIGTERM);
                if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
                    sd_event_add_signal(o.event, NULL, SIGINT, NULL, NULL) < 0 ||
                    sd_event_add_signal(o.event, NULL, SIGTERM, NULL, NULL) < 0)
                        log_warning("Cannot watch SIGINT and SIGTERM: they end the worker at once.");
                r = sd_event_loop(o.event);
                if (r < 0) {
                        log_error_errno(r, "Event loop failed: %m");
                        return WORKER_EXIT_FAILURE;
                }
        }
        if (!o.finished)
                /* Stopped: fini() may complete the task (it is the plugin's to say how). */
                plugin_host_fini(&o.host);
        if (!o.finished) {
                log_error("The event loop ended before the task was completed.");
                return WORKER_EXIT_FAILURE;
        }
        if (o.write_error < 0) {
                log_error_errno(o.write_error, "Failed to write the result to stdout: %m");
                return WORKER_EXIT_FAILURE;
        }
        return o.ok ? WORKER_EXIT_OK : WORKER_EXIT_FAILURE;
}
