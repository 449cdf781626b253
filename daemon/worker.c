/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apiary/plugin.h"
#include "bus-api.h"
#include "bus-tasks.h"
#include "link.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "pool.h"
#include "protocol.h"
#include "task.h"
#include "worker.h"
#include "zygote.h"

static const char *const worker_state_table[_WORKER_STATE_MAX] = {
        [WORKER_DEAD] = "dead",
        [WORKER_STARTING] = "starting",
        [WORKER_READY] = "ready",
        [WORKER_BUSY] = "busy",
        [WORKER_STOPPING] = "stopping",
        [WORKER_BACKOFF] = "backoff",
};

const char *worker_state_to_string(WorkerState s) {
        if (s < 0 || s >= _WORKER_STATE_MAX)
                return NULL;
        return worker_state_table[s];
}


bool worker_is_running(const Worker *w) {
        return w->pid > 0 || w->fork_slot;      /* or the zygote is forking it */
}

static void worker_set_state(Worker *w, WorkerState state) {
        if (w->state == state)
                return;
        w->state = state;
        bus_worker_emit_changed(w);
        pool_worker_changed(w->pool, w);
}

static int worker_arm_timer(Worker *w, usec_t usec, sd_event_time_handler_t handler) {
        Manager *m = w->pool->manager;

        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        if (usec == USEC_INFINITY)
                return 0;
        return sd_event_add_time_relative(m->event, &w->timer_source, CLOCK_MONOTONIC, usec, 1, handler, w);
}

static void worker_drop_process(Worker *w) {
        w->fork_slot = sd_bus_slot_unref(w->fork_slot);
        w->ready_call = sd_bus_message_unref(w->ready_call);
        w->child_source = sd_event_source_disable_unref(w->child_source);
        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        w->link_source = sd_event_source_disable_unref(w->link_source);
        w->link = sd_bus_flush_close_unref(w->link);
        w->pid = 0;
        w->pending_signal = 0;
}

void worker_kill(Worker *w, int sig) {
        if (w->pid <= 0) {
                /* Still being forked by the zygote: delivered once its PID is known. */
                if (w->fork_slot && (sig == SIGKILL || w->pending_signal != SIGKILL))
                        w->pending_signal = sig;
                return;
        }
        /* sd-event holds the child's pidfd, so the signal cannot reach a recycled PID. */
        if (sd_event_source_send_child_signal(w->child_source, sig, NULL, 0) < 0)
                (void) kill(w->pid, sig);
}

/* ---- the private link: what apiary-worker asks of us ---- */

static int link_method_hello(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;

        return link_reply_hello(msg, w->pool->config, error);
}

int link_reply_hello(sd_bus_message *msg, const PoolConfig *c, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        uint32_t abi;
        int r;

        r = sd_bus_message_read(msg, "u", &abi);
        if (r < 0)
                return r;
        if (abi != APIARY_PLUGIN_ABI_VERSION)
                return sd_bus_error_setf(error, SD_BUS_ERROR_NOT_SUPPORTED,
                                         "apiary-worker speaks plugin ABI %u, apiaryd %u: install matching versions.",
                                         abi, APIARY_PLUGIN_ABI_VERSION);

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "s", c->plugin_path);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ss)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_plugin; i++) {
                r = sd_bus_message_append(reply, "(ss)", c->plugin_keys[i], c->plugin_values[i]);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int link_method_ready(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;
        const char *name, *version;
        uint64_t when;
        int r;

        r = sd_bus_message_read(msg, "sst", &name, &version, &when);
        if (r < 0)
                return r;
        if (w->state == WORKER_STOPPING)
                /* Asked to stop while in init(): it will get SIGTERM now, as it is ready for it. */
                return sd_bus_reply_method_return(msg, NULL);
        if (w->state != WORKER_STARTING)
                return sd_bus_error_set(error, SD_BUS_ERROR_FAILED, "Ready() is only valid while starting.");
        if (w->pid <= 0 && w->fork_slot) {
                /* Forked by the zygote, whose answer with the PID (on another connection) has not
                 * come yet: answer then, so that a ready worker always has its PID. */
                sd_bus_message_unref(w->ready_call);
                w->ready_call = sd_bus_message_ref(msg);
                return 1;
        }

        if (!worker_check_peer(w)) {
                log_worker(LOG_ERR, w, "The link's other end is not the worker's: killing it.");
                worker_kill(w, SIGKILL);
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Not the worker of this link.");
        }

        w->ready_mono = now_usec(CLOCK_MONOTONIC);
        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        if (w->exited_mono > 0 && when >= w->exited_mono)
                log_worker(LOG_INFO, w, "Worker ready (plugin %s %s), %.3f ms after the previous one exited.",
                           name, version, (double) (when - w->exited_mono) / USEC_PER_MSEC);
        else
                log_worker(LOG_INFO, w, "Worker ready (plugin %s %s) in %.3f ms.", name, version,
                           (double) (w->ready_mono - w->spawned_mono) / USEC_PER_MSEC);

        worker_set_state(w, WORKER_READY);
        r = sd_bus_reply_method_return(msg, NULL);
        pool_dispatch(w->pool);
        return r;
}

void worker_resume_ready(Worker *w) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = TAKE_PTR(w->ready_call);
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        if (!msg)
                return;
        r = sd_bus_message_rewind(msg, true);
        if (r >= 0)
                r = link_method_ready(msg, w, &error);
        if (sd_bus_error_is_set(&error))
                (void) sd_bus_reply_method_error(msg, &error);
        else if (r < 0)
                (void) sd_bus_reply_method_errno(msg, r, NULL);
}

static int link_method_failed(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;
        const char *name, *message;
        int r;

        r = sd_bus_message_read(msg, "ss", &name, &message);
        if (r < 0)
                return r;

        free(w->failure_error);
        free(w->failure_message);
        w->failure_error = strdup(name);
        w->failure_message = strdup(message);
        if (!w->failure_error || !w->failure_message)
                return -ENOMEM;
        return sd_bus_reply_method_return(msg, NULL);
}

static int link_method_submit_from_worker(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;

        return link_method_submit(msg, w->pool->manager, w->pool->config->name, error);
}

static int on_link_lost_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;
        char buf[FORMAT_TIMESPAN_MAX];

        w->link_source = sd_event_source_disable_unref(w->link_source);
        log_worker(LOG_WARNING, w,
                   "Lost the link to the worker (it closed it, or sent what is not D-Bus), and it did not exit "
                   "within %s, killing it.",
                   format_timespan(buf, sizeof(buf), w->pool->config->stop_timeout_usec));
        w->link_lost = true;
        worker_kill(w, SIGKILL);
        return 0;
}

/* The link is the only way to the worker: one that closed it, or sent what is not D-Bus (which
 * makes sd-bus close it), can take no task and report no result, and would hold its slot and its
 * tasks for good. But a worker that exits closes its link too, a little before the kernel tells us
 * of the exit, and its exit must keep its own cause: so it gets StopTimeoutSec= to exit first. */
static int on_link_disconnected(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;
        usec_t grace = w->pool->config->stop_timeout_usec;
        int r;

        if (!worker_is_running(w) || w->link_source)
                return 0;
        if (w->state == WORKER_STOPPING || grace == USEC_INFINITY)
                return 0;       /* StopTimeoutSec= ends it, or nothing does, as configured */

        log_worker(LOG_DEBUG, w, "The link to the worker closed.");
        r = sd_event_add_time_relative(w->pool->manager->event, &w->link_source, CLOCK_MONOTONIC, grace, USEC_PER_MSEC,
                                       on_link_lost_timeout, w);
        if (r < 0)
                (void) on_link_lost_timeout(NULL, 0, w);
        return 0;
}

static const sd_bus_vtable link_supervisor_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Hello",
                                SD_BUS_ARGS("u", abi_version),
                                SD_BUS_RESULT("s", plugin_path, "a(ss)", config),
                                link_method_hello, 0),
        SD_BUS_METHOD_WITH_ARGS("Ready",
                                SD_BUS_ARGS("s", plugin_name, "s", plugin_version, "t", monotonic_usec),
                                SD_BUS_NO_RESULT,
                                link_method_ready, 0),
        SD_BUS_METHOD_WITH_ARGS("Failed",
                                SD_BUS_ARGS("s", error_name, "s", message),
                                SD_BUS_NO_RESULT,
                                link_method_failed, 0),
        SD_BUS_METHOD_WITH_ARGS("Submit",
                                SD_BUS_ARGS("s", pool, "ay", payload),
                                SD_BUS_RESULT("ay", result),
                                link_method_submit_from_worker, 0),
        SD_BUS_METHOD_WITH_ARGS("Results",
                                SD_BUS_ARGS("a(tbay)", results),
                                SD_BUS_NO_RESULT,
                                link_method_results, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

/* ---- process lifecycle ---- */

static char *describe_exit(const siginfo_t *si) {
        char *s = NULL;
        int k;

        if (si->si_code == CLD_EXITED)
                k = asprintf(&s, "exited with status %i", si->si_status);
        else
                k = asprintf(&s, "killed by SIG%s%s", sigabbrev_np(si->si_status) ?: "?",
                             si->si_code == CLD_DUMPED ? " (core dumped)" : "");
        return k < 0 ? NULL : s;
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

static int on_restart_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;
        int r;

        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        r = worker_start(w);
        if (r < 0)
                log_worker_errno(LOG_ERR, r, w, "Failed to restart worker: %m");
        return 0;
}

static int on_start_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;
        char buf[FORMAT_TIMESPAN_MAX];

        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        log_worker(LOG_ERR, w, "Worker did not become ready within %s, killing it.",
                   format_timespan(buf, sizeof(buf), w->pool->config->start_timeout_usec));
        w->timed_out = true;
        worker_kill(w, SIGKILL);
        return 0;
}

static int on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        log_worker(LOG_WARNING, w, "Worker did not stop within %s, sending SIGKILL.",
                   format_timespan((char[FORMAT_TIMESPAN_MAX]) {}, FORMAT_TIMESPAN_MAX,
                                   w->pool->config->stop_timeout_usec));
        worker_kill(w, SIGKILL);
        return 0;
}

int host_spawn(Manager *m, const PoolConfig *c, const char *role, int fd_worker, pid_t *ret_pid) {
        char arg_fd[32], arg_supervisor[32], arg_log[32], arg_uid[32], arg_gid[32], arg_limit[48];
        _cleanup_(freep) char *arg_pool = NULL;
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        _cleanup_(closep) int fd_moved = -1;
        sigset_t mask;
        int r;

        snprintf(arg_fd, sizeof(arg_fd), "--bus-fd=%i", WORKER_BUS_FD);
        snprintf(arg_supervisor, sizeof(arg_supervisor), "--supervisor-pid=%i", (int) getpid());
        if (asprintf(&arg_pool, "--pool=%s", c->name) < 0)
                return -ENOMEM;
        snprintf(arg_log, sizeof(arg_log), "--log-level=%s", log_level_to_string(log_get_max_level()) ?: "info");
        char *argv[16] = { (char *) "apiary-worker", arg_pool, (char *) role, arg_fd, arg_supervisor, arg_log };
        size_t n_argv = 6;
        /* User=, Group=: the worker switches once connected, before it loads the plugin. */
        if (pool_config_uid(c) != (uid_t) -1) {
                snprintf(arg_uid, sizeof(arg_uid), "--uid=%u", (unsigned) pool_config_uid(c));
                argv[n_argv++] = arg_uid;
        }
        if (pool_config_gid(c) != (gid_t) -1) {
                snprintf(arg_gid, sizeof(arg_gid), "--gid=%u", (unsigned) pool_config_gid(c));
                argv[n_argv++] = arg_gid;
        }
        /* LimitDATA=: set just before the plugin loads. */
        if (c->limit_data != UINT64_MAX) {
                snprintf(arg_limit, sizeof(arg_limit), "--limit-data=%" PRIu64, c->limit_data);
                argv[n_argv++] = arg_limit;
        }
        argv[n_argv] = NULL;

        /* dup2() onto WORKER_BUS_FD clears O_CLOEXEC in the child, unless the fd already is that
         * number, where dup2() does nothing: move it out of the way first. */
        if (fd_worker == WORKER_BUS_FD) {
                fd_moved = fcntl(fd_worker, F_DUPFD_CLOEXEC, WORKER_BUS_FD + 1);
                if (fd_moved < 0)
                        return -errno;
                fd_worker = fd_moved;
        }

        r = posix_spawn_file_actions_init(&actions);
        if (r != 0)
                return -r;
        r = posix_spawnattr_init(&attr);
        if (r != 0) {
                posix_spawn_file_actions_destroy(&actions);
                return -r;
        }

        /* stdin from /dev/null; stdout and stderr where ours go (the journal under systemd,
         * where apiary-worker swaps them for a stream of its own); the link as fd 3. */
        (void) posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        (void) posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
        (void) posix_spawn_file_actions_adddup2(&actions, fd_worker, WORKER_BUS_FD);

        /* Our signals are blocked for sd-event; the worker starts with none blocked and all default. */
        sigemptyset(&mask);
        (void) posix_spawnattr_setsigmask(&attr, &mask);
        sigfillset(&mask);
        (void) posix_spawnattr_setsigdefault(&attr, &mask);
        /* A session of its own: a terminal's Ctrl-C is for apiaryd, which stops workers in order. */
        (void) posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);

        r = posix_spawn(ret_pid, m->worker_path, &actions, &attr, argv, m->worker_env);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        return -r;
}

/* A new process for the slot is on its way (PID, or 0 until the zygote says): fresh bookkeeping. */
void worker_process_begins(Worker *w, pid_t pid) {
        w->pid = pid;
        w->started_at = now_usec(CLOCK_REALTIME);
        w->spawned_mono = now_usec(CLOCK_MONOTONIC);
        w->ready_mono = 0;
        w->timed_out = false;
        w->stop_wanted = false;
        w->gone = false;
        w->term_sent = false;
        w->retiring = false;
        w->recycling = false;
        w->killed_for_timeout = false;
        w->link_lost = false;
        w->n_dispatched = 0;
}

void worker_note_link_end(Worker *w, int fd) {
        struct stat st;

        w->link_ino = fstat(fd, &st) >= 0 ? st.st_ino : 0;
}

/*
 * The link is a socketpair made for this one process, so SO_PEERCRED would only name us (its
 * creator). What identifies the peer is who holds the other end: the process we started must
 * have it as its fd 3 (close-on-exec there, so programs a plugin runs do not inherit it).
 */
bool worker_check_peer(Worker *w) {
        char path[64], target[64], expect[64];
        ssize_t n;

        if (w->pid <= 0 || w->link_ino == 0)
                return true;    /* nothing to check against yet */
        snprintf(path, sizeof(path), "/proc/%i/fd/%i", (int) w->pid, WORKER_BUS_FD);
        n = readlink(path, target, sizeof(target) - 1);
        if (n < 0)
                /* Gone (its exit comes next), /proc not mounted, or not ours to look at: nothing
                 * to tell either way. */
                return true;
        target[n] = '\0';
        snprintf(expect, sizeof(expect), "socket:[%llu]", (unsigned long long) w->link_ino);
        return streq(target, expect);
}

/* Watches the process W->pid, from its PIDFD if one is given (consumed). */
int worker_watch_process(Worker *w, int pidfd) {
        Manager *m = w->pool->manager;
        int r;

        if (pidfd >= 0) {
                r = sd_event_add_child_pidfd(m->event, &w->child_source, pidfd, WEXITED, on_worker_exit, w);
                if (r >= 0)
                        r = sd_event_source_set_child_pidfd_own(w->child_source, true);
                if (r < 0 && !w->child_source)
                        safe_close(pidfd);
        } else
                r = sd_event_add_child(m->event, &w->child_source, w->pid, WEXITED, on_worker_exit, w);
        if (r < 0) {
                (void) kill(w->pid, SIGKILL);
                (void) waitpid(w->pid, NULL, 0);
                w->child_source = sd_event_source_disable_unref(w->child_source);
                w->pid = 0;
                return log_worker_errno(LOG_ERR, r, w, "Failed to watch worker: %m");
        }
        /* A signal asked for while the zygote was still forking it. */
        if (w->pending_signal > 0)
                worker_kill(w, w->pending_signal);
        w->pending_signal = 0;
        return 0;
}

/* Before each message a worker sends is handled: a worker (plugin code) that sends calls and does
 * not read the answers would make apiaryd queue them without end. Past LINK_QUEUED_MAX it is
 * killed, with that as the reason. Normal traffic never gets near: Dispatch is bounded by
 * Concurrency=, and the kernel takes megabytes before anything queues here. */
static int link_filter(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;
        uint64_t n;

        if (!link_queue_exceeded(w->link, LINK_QUEUED_MAX, &n))
                return 0;
        if (!w->failure_message) {
                log_worker(LOG_ERR, w, "Worker does not read its link (%" PRIu64 " messages queued for it), "
                           "killing it.", n);
                /* Shown as the cause of its exit, like a reason the worker gave itself. */
                if (asprintf(&w->failure_message, "killed: it did not read its link, %" PRIu64 " messages queued",
                             n) < 0)
                        w->failure_message = NULL;
                worker_kill(w, SIGKILL);
        }
        return 1;       /* not handled: nothing more is queued for it */
}

/* The server end of a new process's link. */
int worker_link_new(Worker *w, int fd) {
        Manager *m = w->pool->manager;
        char description[256];
        int r;

        snprintf(description, sizeof(description), "worker-%s-%u", w->pool->config->name, w->slot);
        r = link_server_new(&w->link, fd, m->link_id, m->event, description);
        if (r >= 0)
                r = sd_bus_add_object_vtable(w->link, NULL, SUPERVISOR_OBJECT_PATH, SUPERVISOR_INTERFACE,
                                             link_supervisor_vtable, w);
        if (r >= 0)
                r = sd_bus_match_signal(w->link, NULL, "org.freedesktop.DBus.Local", NULL, "org.freedesktop.DBus.Local",
                                        "Disconnected", on_link_disconnected, w);
        if (r >= 0)
                r = sd_bus_add_filter(w->link, NULL, link_filter, w);
        return r;
}

static int worker_spawn_exec(Worker *w) {
        Manager *m = w->pool->manager;
        PoolConfig *c = w->pool->config;
        _cleanup_(closep) int fd_worker = -1, fd_supervisor = -1;
        char arg_slot[32];
        pid_t pid;
        int sv[2], r;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        fd_supervisor = sv[0];
        fd_worker = sv[1];

        snprintf(arg_slot, sizeof(arg_slot), "--slot=%u", w->slot);
        worker_note_link_end(w, fd_worker);
        r = host_spawn(m, c, arg_slot, fd_worker, &pid);
        if (r < 0)
                return log_worker_errno(LOG_ERR, r, w, "Failed to spawn %s: %m", m->worker_path);
        fd_worker = safe_close(fd_worker);

        worker_process_begins(w, pid);
        /* From here on the child exists: whatever fails below, its exit still gets handled. */
        r = worker_watch_process(w, -1);
        if (r < 0)
                return r;

        r = worker_link_new(w, TAKE_FD(fd_supervisor));
        if (r < 0) {
                log_worker_errno(LOG_ERR, r, w, "Failed to set up the link to the worker, killing it: %m");
                worker_kill(w, SIGKILL);
                return 0;
        }

        log_worker(LOG_DEBUG, w, "Spawned worker.");
        return 0;
}

static int worker_spawn(Worker *w) {
        /* A forked copy of the pool's zygote, if it has one ready: no exec, no dynamic linking. */
        if (zygote_fork(w->pool, w) >= 0)
                return 0;
        return worker_spawn_exec(w);
}

/* Not even a process: treated like a start that failed at once. */
static void worker_spawn_failed(Worker *w) {
        free(w->last_exit);
        w->last_exit = strdup("failed to spawn apiary-worker");
        w->state = WORKER_DEAD;
        bus_worker_emit_changed(w);
        pool_fail(w->pool, "failed to spawn apiary-worker");
}

void worker_respawn(Worker *w) {
        Pool *p = w->pool;

        /* Stopped meanwhile: no process is what was wanted. */
        if (w->state == WORKER_STOPPING || w->stop_wanted || p->stopping || p->manager->state == MANAGER_STOPPING) {
                worker_drop_process(w);
                worker_set_state(w, WORKER_DEAD);
                manager_pool_changed(p->manager, p);
                return;
        }
        if (worker_spawn_exec(w) < 0)
                worker_spawn_failed(w);
}

int worker_start(Worker *w) {
        int r;

        assert(!worker_is_running(w));
        if (w->slot >= w->pool->n_wanted)
                return -ESTALE;         /* scaled away meanwhile */

        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        r = worker_spawn(w);
        if (r < 0) {
                worker_spawn_failed(w);
                return r;
        }

        r = worker_arm_timer(w, w->pool->config->start_timeout_usec, on_start_timeout);
        if (r < 0)
                log_worker_errno(LOG_WARNING, r, w, "Failed to arm the start timeout, ignoring: %m");

        w->state = WORKER_STARTING;
        bus_worker_emit_changed(w);
        pool_worker_changed(w->pool, w);
        return 0;
}

static void worker_terminate(Worker *w) {
        if (w->term_sent)
                return;
        w->term_sent = true;
        worker_kill(w, SIGTERM);
}

void worker_stop(Worker *w) {
        int r;

        switch (w->state) {
        case WORKER_BACKOFF:
                w->timer_source = sd_event_source_disable_unref(w->timer_source);
                worker_set_state(w, WORKER_DEAD);
                return;
        case WORKER_STARTING:
        case WORKER_READY:
        case WORKER_BUSY:
                w->stop_wanted = true;
                r = worker_arm_timer(w, w->pool->config->stop_timeout_usec, on_stop_timeout);
                if (r < 0) {
                        log_worker_errno(LOG_WARNING, r, w, "Failed to arm the stop timeout, killing at once: %m");
                        worker_kill(w, SIGKILL);
                }
                worker_set_state(w, WORKER_STOPPING);
                /* Tasks in flight finish first; worker_update_load() sends SIGTERM once they have. */
                if (w->in_flight.length == 0)
                        worker_terminate(w);
                return;
        case WORKER_STOPPING:
        case WORKER_DEAD:
        default:
                return;
        }
}

void worker_update_load(Worker *w) {
        if (w->gone)
                return;

        switch (w->state) {
        case WORKER_READY:
        case WORKER_BUSY:
                if (w->retiring && w->in_flight.length == 0) {
                        log_worker(LOG_INFO, w, "Worker ran %" PRIu64 " tasks (MaxTasksPerWorker=), recycling it.",
                                   w->n_dispatched);
                        w->recycling = true;
                        worker_stop(w);
                        return;
                }
                worker_set_state(w, w->in_flight.length > 0 ? WORKER_BUSY : WORKER_READY);
                return;
        case WORKER_STOPPING:
                if (w->in_flight.length == 0)
                        worker_terminate(w);
                return;
        default:
                return;
        }
}

int worker_restart(Worker *w) {
        switch (w->state) {
        case WORKER_READY:
        case WORKER_BUSY:
                w->recycling = true;
                worker_stop(w);
                return 0;
        case WORKER_BACKOFF:
        case WORKER_DEAD:
                if (worker_is_running(w))
                        return -EBUSY;
                worker_reset(w);
                return worker_start(w);
        case WORKER_STARTING:
        case WORKER_STOPPING:
        default:
                return -EBUSY;
        }
}

void worker_reset(Worker *w) {
        w->failures = 0;
        start_limit_reset(&w->start_limit);
}

static bool worker_exit_is_failure(const siginfo_t *si) {
        return !(si->si_code == CLD_EXITED && si->si_status == WORKER_EXIT_OK);
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Worker *w = userdata;
        Pool *p = w->pool;
        PoolConfig *c = p->config;
        WorkerState was = w->state;
        _cleanup_(freep) char *reason = NULL;
        bool failure, restart;
        usec_t now = now_usec(CLOCK_MONOTONIC);
        int r;

        w->exited_mono = now;
        w->gone = true;

        /* What the plugin started dies with the worker. The worker leads a process group of its
         * own (POSIX_SPAWN_SETSID), and is still a zombie here, so the group's ID cannot have been
         * reused: every process still in it is one of the worker's own, forked by its plugin. */
        if (w->pid > 0)
                (void) kill(-w->pid, SIGKILL);

        /* Results the worker sent before it died are still in the socket: take them first, so
         * that no finished task runs twice. */
        while (w->link && sd_bus_process(w->link, NULL) > 0)
                ;

        reason = describe_exit(si);
        free(w->last_exit);
        if (w->timed_out)
                r = asprintf(&w->last_exit, "start timed out, %s", strempty(reason));
        else if (w->failure_message)
                r = asprintf(&w->last_exit, "%s (%s)", strempty(reason), w->failure_message);
        else if (w->link_lost)
                r = asprintf(&w->last_exit, "%s (lost its link to apiaryd)", strempty(reason));
        else
                r = asprintf(&w->last_exit, "%s", strempty(reason));
        if (r < 0)
                w->last_exit = NULL;

        failure = !w->stop_wanted && (w->timed_out || worker_exit_is_failure(si));
        log_worker(w->stop_wanted ? LOG_INFO : LOG_WARNING, w, "Worker %s.", strempty(w->last_exit));

        worker_release_tasks(w, w->last_exit);
        worker_drop_process(w);
        free(w->failure_error);
        free(w->failure_message);
        w->failure_error = w->failure_message = NULL;

        if (w->slot >= p->n_wanted || was == WORKER_STOPPING || w->stop_wanted || p->stopping) {
                /* Asked for, or scaled away (a recycle included): nothing to restart. The pool
                 * may free W here, so nothing touches it after this. */
                bool recycle = w->recycling && w->slot < p->n_wanted && !p->stopping;

                if (recycle) {
                        w->restarts++;
                        p->restarts++;
                        r = worker_start(w);
                        if (r < 0)
                                log_worker_errno(LOG_ERR, r, w, "Failed to start the recycled worker: %m");
                } else
                        worker_set_state(w, WORKER_DEAD);
                pool_dispatch(p);
                return 0;
        }

        /* A plugin that cannot be loaded will not load on the next try either. */
        if (si->si_code == CLD_EXITED && si->si_status == WORKER_EXIT_LOAD && w->ready_mono == 0) {
                w->state = WORKER_DEAD;
                bus_worker_emit_changed(w);
                pool_fail(p, w->last_exit ?: "plugin failed to load");
                return 0;
        }

        if (w->killed_for_timeout) {
                /* Killed for a task that ran too long: that task failed, the worker did not. */
                w->restarts++;
                p->restarts++;
                pool_dispatch(p);
                r = worker_start(w);
                if (r < 0)
                        log_worker_errno(LOG_ERR, r, w, "Failed to replace the worker: %m");
                return 0;
        }

        if (w->ready_mono > 0 && now - w->ready_mono >= c->start_limit_interval_usec)
                w->failures = 0;
        w->failures++;

        if (start_limit_record(&w->start_limit, now, c->start_limit_interval_usec)) {
                _cleanup_(freep) char *why = NULL;
                char buf[FORMAT_TIMESPAN_MAX];

                if (asprintf(&why, "start limit hit: slot %u failed %u times within %s; last: %s", w->slot,
                             c->start_limit_burst + 1,
                             format_timespan(buf, sizeof(buf), c->start_limit_interval_usec),
                             strempty(w->last_exit)) < 0)
                        why = NULL;
                w->state = WORKER_DEAD;
                bus_worker_emit_changed(w);
                pool_fail(p, why ?: "start limit hit");
                return 0;
        }

        switch (c->restart) {
        case RESTART_ALWAYS:
                restart = true;
                break;
        case RESTART_ON_FAILURE:
                restart = failure;
                break;
        case RESTART_NO:
        default:
                restart = false;
                break;
        }
        pool_dispatch(p);       /* the tasks it left go to the other workers meanwhile */
        if (!restart) {
                worker_set_state(w, WORKER_DEAD);
                return 0;
        }

        w->restarts++;
        p->restarts++;

        usec_t delay = restart_delay(c->restart_usec, c->restart_max_usec, w->failures, (uint64_t) random());
        if (delay == 0) {
                r = worker_start(w);
                if (r < 0)
                        log_worker_errno(LOG_ERR, r, w, "Failed to restart worker: %m");
                return 0;
        }

        r = worker_arm_timer(w, delay, on_restart_timer);
        if (r < 0) {
                log_worker_errno(LOG_ERR, r, w, "Failed to arm the restart timer: %m");
                worker_set_state(w, WORKER_DEAD);
                return 0;
        }
        log_worker(LOG_INFO, w, "Restarting worker in %s (failure %u in a row).",
                   format_timespan((char[FORMAT_TIMESPAN_MAX]) {}, FORMAT_TIMESPAN_MAX, delay), w->failures);
        worker_set_state(w, WORKER_BACKOFF);
        return 0;
}

int worker_new(Worker **ret, Pool *pool, unsigned slot) {
        _cleanup_(worker_freep) Worker *w = NULL;
        int r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->pool = pool;
        w->slot = slot;
        w->state = WORKER_DEAD;

        r = start_limit_init(&w->start_limit, pool->config->start_limit_burst);
        if (r < 0)
                return r;
        r = bus_worker_path(pool->config->name, slot, &w->object_path);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(w);
        return 0;
}

Worker *worker_free(Worker *w) {
        if (!w)
                return NULL;

        if (w->pid > 0) {
                /* Only reached on a failed startup or at exit after the loop: make sure of it. */
                (void) kill(-w->pid, SIGKILL);
                (void) kill(w->pid, SIGKILL);
                (void) waitpid(w->pid, NULL, 0);
        }
        worker_drop_process(w);
        start_limit_deinit(&w->start_limit);
        free(w->object_path);
        free(w->last_exit);
        free(w->failure_message);
        free(w->failure_error);
        free(w);
        return NULL;
}
