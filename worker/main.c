/* SPDX-License-Identifier: MIT */
/*
 * apiary-worker: the host process of one worker. apiaryd spawns it with its end of a private
 * D-Bus connection as fd 3; it asks apiaryd what to run (Hello), loads the plugin, runs its
 * init(), reports Ready, and then serves tasks until it is told to stop (SIGTERM) or apiaryd
 * goes away. Plugin code runs here, never in apiaryd. With --oneshot it runs one task of a plugin
 * by hand instead (oneshot.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "ipc/link-calls.h"
#include "ipc/link.h"
#include "ipc/protocol.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/time-util.h"
#include "worker/oneshot.h"
#include "worker/output-prefix.h"
#include "worker/plugin-host.h"
#include "worker/task-link.h"
#include "worker/worker-context.h"
#include "worker/zygote.h"

void context_done(Context *c) {
        /* on_loop_exit() ran fini() while the link was up, if the loop ran; else it runs now. */
        if (c->tasks_set)
                task_link_done(&c->tasks);
        if (c->plugin_set)
                plugin_host_deinit(&c->plugin);
        c->exit_source = sd_event_source_unref(c->exit_source);
        c->bus = sd_bus_flush_close_unref(c->bus);
        c->event = sd_event_unref(c->event);
        free(c->pool);
}

static int parse_argv(Context *c, int argc, char *argv[]) {
        enum { ARG_BUS_FD = 0x100, ARG_POOL, ARG_SLOT, ARG_SUPERVISOR_PID, ARG_LOG_LEVEL, ARG_ZYGOTE, ARG_UID, ARG_GID,
               ARG_LIMIT_DATA };
        static const struct option options[] = {
                { "uid", required_argument, NULL, ARG_UID },
                { "gid", required_argument, NULL, ARG_GID },
                { "zygote", optional_argument, NULL, ARG_ZYGOTE },
                { "bus-fd", required_argument, NULL, ARG_BUS_FD },
                { "pool", required_argument, NULL, ARG_POOL },
                { "slot", required_argument, NULL, ARG_SLOT },
                { "supervisor-pid", required_argument, NULL, ARG_SUPERVISOR_PID },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "limit-data", required_argument, NULL, ARG_LIMIT_DATA },
                {}
        };
        int opt;

        c->bus_fd = -1;
        c->uid = (uid_t) -1;
        c->gid = (gid_t) -1;
        c->limit_data = UINT64_MAX;
        while ((opt = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                char *end;
                long v;

                switch (opt) {
                case ARG_BUS_FD:
                case ARG_SLOT:
                case ARG_SUPERVISOR_PID:
                case ARG_UID:
                case ARG_GID:
                        errno = 0;
                        v = strtol(optarg, &end, 10);
                        if (errno != 0 || *end != '\0' || v < 0 || v > INT32_MAX) {
                                fprintf(stderr, "apiary-worker: invalid number \"%s\".\n", optarg);
                                return -EINVAL;
                        }
                        if (opt == ARG_BUS_FD)
                                c->bus_fd = (int) v;
                        else if (opt == ARG_SLOT)
                                c->slot = (unsigned) v;
                        else if (opt == ARG_UID)
                                c->uid = (uid_t) v;
                        else if (opt == ARG_GID)
                                c->gid = (gid_t) v;
                        else
                                c->supervisor = (pid_t) v;
                        break;
                case ARG_LOG_LEVEL: {
                        int level = log_level_from_string(optarg);

                        if (level < 0) {
                                fprintf(stderr, "apiary-worker: invalid log level \"%s\".\n", optarg);
                                return -EINVAL;
                        }
                        log_set_max_level(level);
                        break;
                }
                case ARG_ZYGOTE:
                        /* --zygote=fork-safe: only for a plugin that declares it may be (Zygote=auto). */
                        if (optarg && strcmp(optarg, "fork-safe") != 0) {
                                fprintf(stderr, "apiary-worker: invalid --zygote=%s (only \"fork-safe\").\n", optarg);
                                return -EINVAL;
                        }
                        c->zygote = true;
                        c->zygote_fork_safe_only = optarg;
                        break;
                case ARG_LIMIT_DATA: {
                        unsigned long long bytes;

                        errno = 0;
                        bytes = strtoull(optarg, &end, 10);
                        if (errno != 0 || *end != '\0' || optarg[0] < '0' || optarg[0] > '9' || bytes == 0) {
                                fprintf(stderr, "apiary-worker: invalid size \"%s\".\n", optarg);
                                return -EINVAL;
                        }
                        c->limit_data = bytes;
                        break;
                }
                case ARG_POOL:
                        free(c->pool);
                        c->pool = strdup(optarg);
                        if (!c->pool)
                                return -ENOMEM;
                        break;
                default:
                        return -EINVAL;
                }
        }
        if (c->bus_fd < 0 || !c->pool || c->supervisor <= 0) {
                fprintf(stderr, "apiary-worker is started by apiaryd: --bus-fd=, --pool= and --supervisor-pid= are required.\n"
                                "To run one task of a plugin by hand: apiary-worker --oneshot PLUGIN <PAYLOAD\n");
                return -EINVAL;
        }
        return 0;
}

/* LimitDATA=: soft and hard, so that the plugin cannot raise it again. Set just before the plugin
 * loads, so that its constructors count too, and the host's own start-up does not. */
static int apply_limits(const Context *c) {
        struct rlimit rl;

        if (c->limit_data == UINT64_MAX)
                return 0;
        rl.rlim_cur = rl.rlim_max = (rlim_t) c->limit_data;
        if (setrlimit(RLIMIT_DATA, &rl) < 0)
                return log_error_errno(errno, "Failed to set RLIMIT_DATA to %" PRIu64 " bytes (LimitDATA=): %m",
                                       c->limit_data);
        return 0;
}

/* Dies with the supervisor, even if it is SIGKILLed, and refuses to start if it is already gone. */
int bind_to_supervisor(pid_t supervisor) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
                return -errno;
        if (getppid() != supervisor)
                return -ESRCH;
        return 0;
}

/* Under journald, plugin output gets a journal stream of this process's own, so that every line
 * carries the worker's _PID and a tag naming pool and slot, without apiaryd copying any byte.
 * Wherever it goes, stdout is line-buffered: stdio fully buffers a stream that is not a terminal
 * (the journal's socket, a pipe), and a plugin's printf() would show up only when the buffer
 * fills or the worker exits, or never if it is killed. */
void connect_output(const Context *c) {
        char identifier[256];
        int fd;

        (void) setvbuf(stdout, NULL, _IOLBF, 0);
        if (!log_to_journal()) {
                char prefix[256];

                if (c->zygote)
                        snprintf(prefix, sizeof(prefix), "%s/zygote[%i]: ", c->pool, (int) getpid());
                else
                        snprintf(prefix, sizeof(prefix), "%s/%u[%i]: ", c->pool, c->slot, (int) getpid());
                output_prefix_set(prefix);
                return;
        }

        if (c->zygote)
                snprintf(identifier, sizeof(identifier), "apiary-worker[%s/zygote]", c->pool);
        else
                snprintf(identifier, sizeof(identifier), "apiary-worker[%s/%u]", c->pool, c->slot);
        fd = sd_journal_stream_fd(identifier, LOG_INFO, false);
        if (fd < 0) {
                log_debug_errno(fd, "Failed to open a journal stream, plugin output goes to the inherited stderr: %m");
                return;
        }
        (void) dup2(fd, STDOUT_FILENO);
        (void) dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
                safe_close(fd);
}

static int on_link_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Context *c = userdata;
        LogContext ctx = { .pool = c->pool, .slot = (int) c->slot, .pid = (int) getpid() };

        log_ctx(LOG_WARNING, &ctx, "The link to apiaryd closed, exiting.");
        /* Not sd_bus_get_event() of the message's bus: sd-bus detaches a closed bus from its event
         * loop before it dispatches Disconnected, and sd_event_exit(NULL) would do nothing. */
        return sd_event_exit(c->event, WORKER_EXIT_LINK);
}

/* The loop ends (SIGTERM, the link gone): before sd-bus's own exit source closes the link, the
 * results of this last turn go out (a fini() that hangs until the stop timeout must not hold them
 * back), then the plugin's fini() runs, and what it completes there (its pending tasks, failed
 * or finished) goes out too. */
static int on_loop_exit(sd_event_source *s, void *userdata) {
        Context *c = userdata;

        task_link_flush(&c->tasks);
        (void) sd_bus_flush(c->bus);
        plugin_host_fini(&c->plugin);
        task_link_flush(&c->tasks);
        (void) sd_bus_flush(c->bus);
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), WORKER_EXIT_OK);
}

typedef struct Settings {
        char **keys, **values;
        size_t n, allocated;
} Settings;

static int add_setting(const char *key, const char *value, void *userdata) {
        Settings *s = userdata;

        if (s->n + 1 >= s->allocated) {
                char **keys, **values;

                s->allocated = s->allocated * 2 + 8;
                keys = reallocarray(s->keys, s->allocated, sizeof(char *));
                if (keys)
                        s->keys = keys;
                values = reallocarray(s->values, s->allocated, sizeof(char *));
                if (values)
                        s->values = values;
                if (!keys || !values)
                        return -ENOMEM;
        }
        s->keys[s->n] = strdup(key);
        s->values[s->n] = strdup(value);
        if (!s->keys[s->n] || !s->values[s->n])
                return -ENOMEM;
        s->n++;
        return 0;
}

/* Hello() → (s plugin_path, a(ss) config, ah claims): what this worker is to run. */
static int call_hello(Context *c, char **ret_path, char ***ret_keys, char ***ret_values, size_t *ret_n) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Settings s = {};
        const char *path;
        int claims_fd = -1, r;

        r = link_call_hello(c->bus, APIARY_PLUGIN_ABI_VERSION, &error, &reply);
        if (r < 0)
                return log_error_errno(r, "Hello to apiaryd failed: %s", error.message ?: strerror(-r));

        r = link_read_hello_reply(reply, &path, add_setting, &s, &claims_fd);
        if (r >= 0 && !c->zygote) {
                /* A worker starts a task only once it has claimed it (ipc/claim.h). */
                r = claims_fd < 0 ? -EBADMSG : link_claim_map(claims_fd, c->slot % LINK_CLAIMS_PER_PAGE, &c->claim);
                if (r < 0)
                        log_error_errno(r, "Failed to map the claims apiaryd sent: %m");
        }
        if (r >= 0) {
                *ret_path = strdup(path);
                if (!*ret_path)
                        r = -ENOMEM;
        }
        if (r < 0) {
                for (size_t i = 0; i < s.n; i++) {
                        free(s.keys[i]);
                        free(s.values[i]);
                }
                free(s.keys);
                free(s.values);
                return r;
        }
        *ret_keys = s.keys;
        *ret_values = s.values;
        *ret_n = s.n;
        return 0;
}

static void strv_free_n(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

/* Tells apiaryd why this worker cannot start, then the caller exits with STATUS. */
int report_failure(Context *c, const char *error_name, const char *message) {
        LogContext ctx = { .pool = c->pool, .slot = (int) c->slot, .pid = (int) getpid() };
        int r;

        log_ctx(LOG_ERR, &ctx, "%s", message);
        r = link_call_failed(c->bus, error_name, message);
        if (r < 0)
                log_debug_errno(r, "Failed to report the failure to apiaryd, ignoring: %m");
        return r;
}

/* User=, Group=: supplementary groups cleared, then GID, then UID (all three of each), and in
 * any case no new privileges through exec (setuid binaries, file capabilities). Failing to switch
 * is reported like a load failure: trying again would not help. */
static int drop_privileges(Context *c) {
        _cleanup_(freep) char *msg = NULL;
        const char *what = NULL;

        if (c->gid != (gid_t) -1) {
                if (setgroups(0, NULL) < 0)
                        what = "clear the supplementary groups";
                else if (setresgid(c->gid, c->gid, c->gid) < 0)
                        what = "switch to the group";
        }
        if (!what && c->uid != (uid_t) -1) {
                if (c->gid == (gid_t) -1 && setgroups(0, NULL) < 0)
                        what = "clear the supplementary groups";
                else if (setresuid(c->uid, c->uid, c->uid) < 0)
                        what = "switch to the user";
        }
        if (!what && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                what = "set no_new_privs";
        if (!what)
                return 0;

        if (asprintf(&msg, "cannot %s (User=%d, Group=%d): %s", what, c->uid == (uid_t) -1 ? -1 : (int) c->uid,
                     c->gid == (gid_t) -1 ? -1 : (int) c->gid, strerror(errno)) < 0)
                return -ENOMEM;
        report_failure(c, WORKER_ERROR_LOAD, msg);
        return -EPERM;
}

/* The event loop and the link to apiaryd on fd 3, for a worker or a zygote (or a zygote's child,
 * which builds its own after the fork). */
int context_connect(Context *c) {
        sigset_t mask;
        int r;

        /* sd-event needs the signals it handles blocked; apiaryd spawned us with an empty mask. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        (void) sigprocmask(SIG_SETMASK, &mask, NULL);

        r = sd_event_new(&c->event);
        if (r < 0)
                return r;
        (void) sd_event_add_signal(c->event, NULL, SIGTERM, on_signal, NULL);
        (void) sd_event_add_signal(c->event, NULL, SIGINT, on_signal, NULL);

        /* Programs a plugin runs must not inherit the link: only this process speaks for the
         * worker (dup2() onto fd 3 cleared the flag). */
        (void) fcntl(WORKER_BUS_FD, F_SETFD, FD_CLOEXEC);
        c->bus_fd = -1;         /* the link owns fd 3 from here on */
        r = link_client_new(&c->bus, WORKER_BUS_FD, c->event, "apiaryd");
        if (r < 0)
                return log_error_errno(r, "Failed to connect to apiaryd: %m");
        /* apiaryd gone (it should have killed us first): exit with WORKER_EXIT_LINK. */
        return sd_bus_match_signal(c->bus, NULL, "org.freedesktop.DBus.Local", NULL, "org.freedesktop.DBus.Local",
                                   "Disconnected", on_link_disconnected, c);
}

/* From a loaded plugin to serving tasks: init(), the Worker1 object, Ready(), the loop. */
int worker_serve(Context *c) {
        int r;

        r = plugin_host_start(&c->plugin);
        if (r < 0) {
                _cleanup_(freep) char *msg = NULL;

                if (asprintf(&msg, "plugin %s: init failed: %s", c->plugin.plugin->name ?: c->plugin.path,
                             c->plugin.error) < 0)
                        return WORKER_EXIT_INIT;
                report_failure(c, WORKER_ERROR_INIT, msg);
                return WORKER_EXIT_INIT;
        }

        r = task_link_init(&c->tasks, &c->plugin, c->bus, c->event, c->claim);
        c->tasks_set = true;
        if (r < 0) {
                log_error_errno(r, "Failed to register the worker object: %m");
                return WORKER_EXIT_FAILURE;
        }
        r = sd_event_add_exit(c->event, &c->exit_source, on_loop_exit, c);
        if (r >= 0)
                r = sd_event_source_set_priority(c->exit_source, SD_EVENT_PRIORITY_IMPORTANT);
        if (r < 0) {
                log_error_errno(r, "Failed to watch the end of the loop: %m");
                return WORKER_EXIT_FAILURE;
        }

        return ready_and_serve(c);
}

int ready_and_serve(Context *c) {
        int r;

        r = link_call_ready(c->bus, strempty(c->plugin.plugin->name), strempty(c->plugin.plugin->version),
                            now_usec(CLOCK_MONOTONIC));
        if (r < 0) {
                log_error_errno(r, "Failed to report readiness to apiaryd: %m");
                return WORKER_EXIT_LINK;
        }

        r = sd_event_loop(c->event);
        if (r < 0) {
                log_error_errno(r, "Event loop failed: %m");
                return WORKER_EXIT_FAILURE;
        }
        return r;
}

static int run(int argc, char *argv[]) {
        _cleanup_(context_done) Context c = { .exit_status = WORKER_EXIT_FAILURE };
        char *path = NULL, **keys = NULL, **values = NULL;
        size_t n = 0;
        int r;

        r = parse_argv(&c, argc, argv);
        if (r < 0)
                return WORKER_EXIT_USAGE;

        r = bind_to_supervisor(c.supervisor);
        if (r < 0)
                return WORKER_EXIT_LINK;

        /* Hold nothing but stdio and our end of the link: plugins must not inherit stray fds. */
        if (c.bus_fd != WORKER_BUS_FD) {
                if (dup2(c.bus_fd, WORKER_BUS_FD) < 0)
                        return WORKER_EXIT_LINK;
                c.bus_fd = WORKER_BUS_FD;
        }
        (void) close_range(WORKER_BUS_FD + 1, ~0U, 0);

        log_setup("apiary-worker");
        connect_output(&c);

        r = context_connect(&c);
        if (r < 0)
                return r == -ENOMEM ? WORKER_EXIT_FAILURE : WORKER_EXIT_LINK;

        r = call_hello(&c, &path, &keys, &values, &n);
        if (r < 0) {
                strv_free_n(keys, n);
                strv_free_n(values, n);
                free(path);
                return WORKER_EXIT_LINK;
        }

        r = plugin_host_init(&c.plugin, c.pool, c.slot, path, keys, values, n, c.event, c.bus);
        c.plugin_set = true;
        strv_free_n(keys, n);
        strv_free_n(values, n);
        free(path);
        if (r < 0)
                return WORKER_EXIT_FAILURE;

        /* The link is authenticated (Hello answered): now become the pool's user, for good, before
         * any plugin code runs. A zygote does so too, and its children inherit it. */
        r = drop_privileges(&c);
        if (r < 0)
                return WORKER_EXIT_LOAD;
        /* A change of UID or GID clears PR_SET_PDEATHSIG: ask again, and check that apiaryd did
         * not die in between (we would have been reparented, with no signal coming). */
        r = bind_to_supervisor(c.supervisor);
        if (r < 0)
                return WORKER_EXIT_LINK;

        r = apply_limits(&c);
        if (r < 0)
                return WORKER_EXIT_FAILURE;

        r = plugin_host_load(&c.plugin);
        if (r < 0) {
                report_failure(&c, WORKER_ERROR_LOAD, c.plugin.error);
                return WORKER_EXIT_LOAD;
        }

        if (c.zygote && c.zygote_fork_safe_only && !(plugin_host_flags(&c.plugin) & APIARY_PLUGIN_FORK_SAFE)) {
                _cleanup_(freep) char *msg = NULL;

                /* Loaded all the same, as a worker would: nothing lost but this process. */
                if (asprintf(&msg, "plugin %s does not declare APIARY_PLUGIN_FORK_SAFE",
                             c.plugin.plugin->name ?: c.plugin.path) < 0)
                        return WORKER_EXIT_FAILURE;
                (void) link_call_failed(c.bus, WORKER_ERROR_NOT_FORK_SAFE, msg);
                return WORKER_EXIT_NOT_FORK_SAFE;
        }
        if (c.zygote)
                return zygote_serve(&c);
        return worker_serve(&c);
}

int main(int argc, char *argv[]) {
        if (oneshot_requested(argc, argv))
                return oneshot_main(argc, argv);
        return run(argc, argv);
}
