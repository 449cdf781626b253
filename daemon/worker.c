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

#include "daemon/manager.h"
#include "daemon/objects.h"
#include "daemon/pool.h"
#include "daemon/task.h"
#include "daemon/worker.h"
#include "daemon/zygote.h"
#include "ipc/link-calls.h"
#include "ipc/link-supervisor.h"
#include "ipc/link.h"
#include "ipc/protocol.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/signal-util.h"

/* What an event brings with it, for the actions that need it. */
typedef struct WorkerEventArgs {
        sd_bus_message *ready_call;     /* READY: the call, to answer or to hold */
        const char *plugin_name, *plugin_version;
        uint64_t ready_when;            /* READY: CLOCK_MONOTONIC, as the worker says */
        bool exit_clean, exit_signal, exit_load;        /* EXIT: see SlotFacts */
} WorkerEventArgs;

bool worker_is_running(const Worker *w) {
        return slot_state_has_process(w->life.state);
}

/* Shows the slot's state on the bus, if it changed: once per event (and its consequences), so
 * that a slot goes from one shown state to the next without those in between. The pool hears of
 * it too, unless it is about to fail (which looks at every slot itself). The pool may free W
 * here, when it was scaled away and is dead: nothing touches W after this. */
/* Its group of properties is signalled this turn of the loop (changes.h), before its pool's. */
static void worker_mark_changed(Worker *w) {
        manager_mark_changed(w->pool->manager, w->object_path, APIARY_WORKER_INTERFACE, "PID", "State", "Restarts",
                             "PlannedRestarts",
                             "StartedAt", "LastExit");
}

static void worker_publish(Worker *w, bool tell_pool) {
        WorkerState shown = slot_to_public(&w->life, w->in_flight.length);
        bool was_ready;

        if (shown < 0 || shown == w->state)
                return;
        was_ready = IN_SET(w->state, WORKER_READY, WORKER_BUSY);
        w->state = shown;
        worker_mark_changed(w);
        if (IN_SET(shown, WORKER_READY, WORKER_BUSY) != was_ready)
                pool_mark_changed(w->pool);
        if (tell_pool)
                pool_worker_changed(w->pool, w);
}

static int on_slot_timer(sd_event_source *s, uint64_t usec, void *userdata);

static int worker_arm_timer(Worker *w, usec_t usec) {
        Manager *m = w->pool->manager;

        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        if (usec == USEC_INFINITY)
                return 0;
        return sd_event_add_time_relative(m->event, &w->timer_source, CLOCK_MONOTONIC, usec, 1, on_slot_timer, w);
}

static void worker_drop_process(Worker *w) {
        w->fork_slot = sd_bus_slot_unref(w->fork_slot);
        w->fork_fd = safe_close(w->fork_fd);
        w->ready_call = sd_bus_message_unref(w->ready_call);
        w->child_source = sd_event_source_disable_unref(w->child_source);
        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        w->link_source = sd_event_source_disable_unref(w->link_source);
        worker_close_link(w);
        recycle_worker_dropped(w);
        w->pid = 0;
        w->pending_signal = 0;
}

void worker_kill(Worker *w, int sig) {
        if (w->pid <= 0) {
                /* Still being forked by the zygote: delivered once its PID is known. */
                if ((w->fork_slot || w->fork_fd >= 0) && (sig == SIGKILL || w->pending_signal != SIGKILL))
                        w->pending_signal = sig;
                return;
        }
        /* sd-event holds the child's pidfd, so the signal cannot reach a recycled PID. */
        if (sd_event_source_send_child_signal(w->child_source, sig, NULL, 0) < 0)
                (void) kill(w->pid, sig);
}

/* ---- the private link: what apiary-worker asks of us ---- */

static void link_hello(void *userdata, const char **ret_plugin_path, char *const **ret_keys,
                       char *const **ret_values, size_t *ret_n, int *ret_claims_fd) {
        Worker *w = userdata;

        pool_config_plugin_settings(w->pool->config, ret_plugin_path, ret_keys, ret_values, ret_n);
        *ret_claims_fd = w->claim_page->fd;
}

static int worker_event(Worker *w, SlotEvent e, const WorkerEventArgs *args);

static int link_method_ready(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;
        WorkerEventArgs args = { .ready_call = msg };
        int r;

        r = link_read_ready(msg, &args.plugin_name, &args.plugin_version, &args.ready_when);
        if (r < 0)
                return r;
        if (w->life.state == SLOT_STARTING && !worker_check_peer(w)) {
                log_worker(LOG_ERR, w, "The link's other end is not the worker's: killing it.");
                worker_kill(w, SIGKILL);
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Not the worker of this link.");
        }
        r = worker_event(w, SLOT_EVENT_READY, &args);
        if (r == -EBADE)
                return sd_bus_error_set(error, SD_BUS_ERROR_FAILED, "Ready() is only valid while starting.");
        return r < 0 ? r : 1;
}

/* Fork() answered: a Ready() that came first is handled now, the peer check included. */
static void worker_resume_ready(Worker *w) {
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

        r = link_read_failed(msg, &name, &message);
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
        Manager *m = w->pool->manager;

        if (!m->observer.worker_submit)
                return sd_bus_error_set(error, SD_BUS_ERROR_NOT_SUPPORTED, "This apiaryd takes no tasks from plugins.");
        return m->observer.worker_submit(msg, m, w->pool->config->name, error);
}

static int on_link_lost_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;
        char buf[FORMAT_TIMESPAN_MAX];

        w->link_source = sd_event_source_disable_unref(w->link_source);
        log_worker(LOG_WARNING, w,
                   "Lost the link to the worker (it closed it, or sent what is not D-Bus), and it did not exit "
                   "within %s, killing it.",
                   format_timespan(buf, sizeof(buf), w->pool->config->stop_timeout_usec));
        (void) worker_event(w, SLOT_EVENT_LINK_LOST, NULL);
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

        if (!worker_is_running(w) || w->link_source || w->life.state == SLOT_EXITED)
                return 0;
        if (IN_SET(w->life.state, SLOT_DRAINING, SLOT_STOP_SIGTERM, SLOT_STOP_SIGKILL) || grace == USEC_INFINITY)
                return 0;       /* StopTimeoutSec= ends it, or nothing does, as configured */

        log_worker(LOG_DEBUG, w, "The link to the worker closed.");
        r = sd_event_add_time_relative(w->pool->manager->event, &w->link_source, CLOCK_MONOTONIC, grace, USEC_PER_MSEC,
                                       on_link_lost_timeout, w);
        if (r < 0)
                (void) on_link_lost_timeout(NULL, 0, w);
        return 0;
}

static void on_link_closed(void *userdata) {
        (void) on_link_disconnected(NULL, userdata, NULL);
}

static const LinkSupervisorOps link_ops = {
        .hello = link_hello,
        .ready = link_method_ready,
        .failed = link_method_failed,
        .submit = link_method_submit_from_worker,
        .results = link_method_results,
};

/* ---- process lifecycle ---- */

static char *describe_exit(const siginfo_t *si) {
        char *s = NULL;
        int k;

        if (si->si_code == CLD_EXITED)
                k = asprintf(&s, "exited with status %i", si->si_status);
        else
                k = asprintf(&s, "killed by %s%s", signal_to_string(si->si_status, (char[SIGNAL_NAME_MAX]) {}),
                             si->si_code == CLD_DUMPED ? " (core dumped)" : "");
        return k < 0 ? NULL : s;
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

/* The slot's one timer: what it was armed for follows from the state. */
static int on_slot_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;
        char buf[FORMAT_TIMESPAN_MAX];

        w->timer_source = sd_event_source_disable_unref(w->timer_source);
        switch (w->life.state) {
        case SLOT_FORKING:
        case SLOT_STARTING:
                log_worker(LOG_ERR, w, "Worker did not become ready within %s, killing it.",
                           format_timespan(buf, sizeof(buf), w->pool->config->start_timeout_usec));
                (void) worker_event(w, SLOT_EVENT_START_TIMEOUT, NULL);
                break;
        case SLOT_DRAINING:
        case SLOT_STOP_SIGTERM:
                log_worker(LOG_WARNING, w, "Worker did not stop within %s, sending SIGKILL.",
                           format_timespan(buf, sizeof(buf), w->pool->config->stop_timeout_usec));
                (void) worker_event(w, SLOT_EVENT_STOP_TIMEOUT, NULL);
                break;
        case SLOT_BACKOFF:
                (void) worker_event(w, SLOT_EVENT_BACKOFF_DONE, NULL);
                break;
        default:
                break;
        }
        return 0;
}

int spawn_with_link(Manager *m, const char *path, char **argv, int fd_link, pid_t *ret_pid) {
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        _cleanup_(closep) int fd_moved = -1;
        sigset_t mask;
        int r;

        /* dup2() onto WORKER_BUS_FD clears O_CLOEXEC in the child, unless the fd already is that
         * number, where dup2() does nothing: move it out of the way first. */
        if (fd_link == WORKER_BUS_FD) {
                fd_moved = fcntl(fd_link, F_DUPFD_CLOEXEC, WORKER_BUS_FD + 1);
                if (fd_moved < 0)
                        return -errno;
                fd_link = fd_moved;
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
        (void) posix_spawn_file_actions_adddup2(&actions, fd_link, WORKER_BUS_FD);

        /* Our signals are blocked for sd-event; the child starts with none blocked and all default. */
        sigemptyset(&mask);
        (void) posix_spawnattr_setsigmask(&attr, &mask);
        sigfillset(&mask);
        (void) posix_spawnattr_setsigdefault(&attr, &mask);
        /* A session of its own: a terminal's Ctrl-C is for apiaryd, which stops its children in order. */
        (void) posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);

        r = posix_spawn(ret_pid, path, &actions, &attr, argv, m->worker_env);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        return -r;
}

int host_spawn(Manager *m, const PoolConfig *c, const char *role, int fd_worker, pid_t *ret_pid) {
        char arg_fd[32], arg_supervisor[32], arg_log[32], arg_uid[32], arg_gid[32], arg_limit[48];
        _cleanup_(freep) char *arg_pool = NULL;

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

        return spawn_with_link(m, m->worker_path, argv, fd_worker, ret_pid);
}

/* A new process for the slot is on its way (PID, or 0 until the zygote says): fresh bookkeeping.
 * (Its intent and result are the state machine's, reset by START.) */
void worker_process_begins(Worker *w, pid_t pid) {
        w->pid = pid;
        w->n_sent = 0;
        w->taken_back = false;
        link_claim_reset(w->claim);
        w->started_at = now_usec(CLOCK_REALTIME);
        w->spawned_mono = now_usec(CLOCK_MONOTONIC);
        w->ready_mono = 0;
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
static int worker_watch_process(Worker *w, int pidfd) {
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

void worker_close_link(Worker *w) {
        w->link_watch = link_watch_free(w->link_watch);
        w->link = sd_bus_flush_close_unref(w->link);
}

/* The server end of a new process's link. */
int worker_link_new(Worker *w, int fd) {
        Manager *m = w->pool->manager;
        char description[256];
        int r;

        snprintf(description, sizeof(description), "worker-%s-%u", w->pool->config->name, w->slot);
        w->link_supervisor = (LinkSupervisor) { .ops = &link_ops, .userdata = w };
        /* Not attached to the loop: watched (ipc/link-watch.h), at no cost per loop iteration. */
        r = link_server_new(&w->link, fd, m->link_id, NULL, description);
        if (r >= 0)
                r = link_watch_new(&w->link_watch, w->link, m->event, on_link_closed, w);
        if (r >= 0)
                r = link_supervisor_add(w->link, &w->link_supervisor);
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

void worker_forked(Worker *w, int pidfd) {
        if (worker_watch_process(w, pidfd) < 0) {
                worker_close_link(w);
                (void) worker_event(w, SLOT_EVENT_SPAWN_FAILED, NULL);
                return;
        }
        (void) worker_event(w, SLOT_EVENT_FORKED, NULL);
        worker_resume_ready(w);
}

void worker_task_timed_out(Worker *w) {
        (void) worker_event(w, SLOT_EVENT_TASK_TIMEOUT, NULL);
}

void worker_fork_failed(Worker *w) {
        (void) worker_event(w, SLOT_EVENT_FORK_FAILED, NULL);
}

int worker_start(Worker *w) {
        if (w->slot >= w->pool->n_wanted)
                return -ESTALE;         /* scaled away meanwhile */
        return worker_event(w, SLOT_EVENT_START, NULL);
}

void worker_stop(Worker *w) {
        (void) worker_event(w, SLOT_EVENT_STOP, NULL);
}

void worker_update_load(Worker *w) {
        (void) worker_event(w, SLOT_EVENT_LOAD, NULL);
}

int worker_retire(Worker *w) {
        return worker_event(w, SLOT_EVENT_RETIRE, NULL);
}

void worker_revive(Worker *w) {
        (void) worker_event(w, SLOT_EVENT_REVIVE, NULL);
}

int worker_restart(Worker *w) {
        return worker_event(w, SLOT_EVENT_RECYCLE, NULL) == -EBADE ? -EBUSY : 0;
}

void worker_reset(Worker *w) {
        w->failures = 0;
        start_limit_reset(&w->start_limit);
}

/* ---- the state machine's events, and their actions ---- */

/* The facts of worker-fsm.h, as of now. Those of an exit (EXITED) are worked out only then: the
 * failures in a row this one would make, and the restart delay that comes with them. */
static SlotFacts worker_facts(Worker *w, SlotEvent e, unsigned *ret_failures) {
        Pool *p = w->pool;
        PoolConfig *c = p->config;
        SlotFacts f = {
                .in_flight = w->in_flight.length,
                .zygote_ready = p->zygote && p->zygote->state == ZYGOTE_READY,
                .wanted = w->slot < p->n_wanted && pool_is_active(p),
                .restart = c->restart,
                /* A run of the settings a reload tries, never ready: its end is theirs. */
                .trial = p->life.intent == POOL_INTENT_TRY && w->generation == p->generation && w->ready_mono == 0,
        };

        if (e == SLOT_EVENT_EXITED) {
                usec_t now = w->exited_mono;
                bool stayed_up = w->ready_mono > 0 && now - w->ready_mono >= c->start_limit_interval_usec;
                unsigned failures = (stayed_up ? 0 : w->failures) + 1;

                f.start_limit_trips = start_limit_would_trip(&w->start_limit, now, c->start_limit_interval_usec);
                w->backoff_usec = restart_delay(c->restart_usec, c->restart_max_usec, failures, (uint64_t) random());
                f.backoff = w->backoff_usec > 0;
                *ret_failures = failures;
        }
        return f;
}

static char *pool_failure_reason(Worker *w) {
        const PoolConfig *c = w->pool->config;
        char buf[FORMAT_TIMESPAN_MAX];
        char *why = NULL;

        switch (w->life.result) {
        case SLOT_RESULT_START_LIMIT:
                if (asprintf(&why, "start limit hit: slot %u failed %u times within %s; last: %s", w->slot,
                             c->start_limit_burst + 1, format_timespan(buf, sizeof(buf), c->start_limit_interval_usec),
                             strempty(w->last_exit)) < 0)
                        return NULL;
                return why;
        case SLOT_RESULT_SPAWN:
                return strdup("failed to spawn apiary-worker");
        default:
                return strdup(w->last_exit ?: "plugin failed to load");
        }
}

static int worker_arm_or_kill(Worker *w, usec_t usec, const char *what) {
        int r = worker_arm_timer(w, usec);

        if (r < 0 && streq(what, "stop")) {
                log_worker_errno(LOG_WARNING, r, w, "Failed to arm the stop timeout, killing at once: %m");
                worker_kill(w, SIGKILL);
        } else if (r < 0)
                log_worker_errno(LOG_WARNING, r, w, "Failed to arm the %s timer, ignoring: %m", what);
        return r;
}

static void worker_accept_ready(Worker *w, const WorkerEventArgs *args, bool now_ready) {
        if (now_ready) {
                w->ready_mono = now_usec(CLOCK_MONOTONIC);
                if (w->exited_mono > 0 && args->ready_when >= w->exited_mono)
                        log_worker(LOG_INFO, w, "Worker ready (plugin %s %s), %.3f ms after the previous one exited.",
                                   args->plugin_name, args->plugin_version,
                                   (double) (args->ready_when - w->exited_mono) / USEC_PER_MSEC);
                else
                        log_worker(LOG_INFO, w, "Worker ready (plugin %s %s) in %.3f ms.", args->plugin_name,
                                   args->plugin_version, (double) (w->ready_mono - w->spawned_mono) / USEC_PER_MSEC);
                /* After the line above: the next slot's age recycle, if this one's let it go,
                 * is logged after this one's end. */
                recycle_worker_ready(w);
        }
        (void) sd_bus_reply_method_return(args->ready_call, NULL);
}

/* The actions of D that touch only W, in order. Returns the event an action that could not be
 * done raises (FORK_FAILED, SPAWN_FAILED, STOP for a restart timer that could not be armed), or
 * _SLOT_EVENT_INVALID; a spawn's failure goes to *RET_R. */
static SlotEvent worker_act(Worker *w, const SlotDecision *d, SlotState was, const WorkerEventArgs *args,
                            unsigned failures, int *ret_r) {
        Pool *p = w->pool;
        SlotEvent then = _SLOT_EVENT_INVALID;
        unsigned a = d->actions;

        if (a & SLOT_ACTION_DROP)
                worker_drop_process(w);
        if (a & SLOT_ACTION_DISARM)
                w->timer_source = sd_event_source_disable_unref(w->timer_source);
        if (a & SLOT_ACTION_RESET)
                worker_reset(w);
        if (a & SLOT_ACTION_COUNT_FAILURE) {
                w->failures = failures;
                (void) start_limit_record(&w->start_limit, w->exited_mono, p->config->start_limit_interval_usec);
        }
        if (a & SLOT_ACTION_COUNT_RESTART) {
                w->restarts++;
                p->restarts++;
                worker_mark_changed(w);
                pool_mark_changed(p);
        }
        if (a & SLOT_ACTION_COUNT_PLANNED) {
                w->planned_restarts++;
                p->planned_restarts++;
                worker_mark_changed(w);
                pool_mark_changed(p);
        }
        if (a & SLOT_ACTION_PLANNED)
                pool_slot_planned(p, w);
        if (a & (SLOT_ACTION_FORK | SLOT_ACTION_SPAWN)) {
                /* A new run, of the code the pool has now; never ready yet. */
                w->generation = p->generation;
                w->ready_mono = 0;
        }
        if ((a & SLOT_ACTION_FORK) && zygote_fork(p, w) < 0)
                then = SLOT_EVENT_FORK_FAILED;
        if (a & SLOT_ACTION_SPAWN) {
                *ret_r = worker_spawn_exec(w);
                if (*ret_r < 0)
                        then = SLOT_EVENT_SPAWN_FAILED;
        }
        if (a & SLOT_ACTION_ARM_START)
                (void) worker_arm_or_kill(w, p->config->start_timeout_usec, "start timeout");
        if (a & SLOT_ACTION_ARM_STOP)
                (void) worker_arm_or_kill(w, p->config->stop_timeout_usec, "stop");
        if (a & SLOT_ACTION_ARM_BACKOFF) {
                if (worker_arm_or_kill(w, w->backoff_usec, "restart") < 0)
                        then = SLOT_EVENT_STOP;         /* no timer, no restart: dead */
                else
                        log_worker(LOG_INFO, w, "Restarting worker in %s (failure %u in a row).",
                                   format_timespan((char[FORMAT_TIMESPAN_MAX]) {}, FORMAT_TIMESPAN_MAX,
                                                   w->backoff_usec), w->failures);
        }
        if (a & SLOT_ACTION_SIGTERM)
                worker_kill(w, SIGTERM);
        if (a & SLOT_ACTION_SIGKILL)
                worker_kill(w, SIGKILL);
        if (a & SLOT_ACTION_HOLD_READY) {
                sd_bus_message_unref(w->ready_call);
                w->ready_call = sd_bus_message_ref(args->ready_call);
        }
        if (a & SLOT_ACTION_ACCEPT_READY)
                worker_accept_ready(w, args, d->next.state == SLOT_READY && was != SLOT_READY);
        if (was == SLOT_RETIRING && d->next.intent == SLOT_INTENT_RECYCLE && d->next.state != was &&
            w->retire_reason == RECYCLE_TASKS)
                log_worker(LOG_INFO, w, "Worker ran %" PRIu64 " tasks (MaxTasksPerWorker=), recycling it.",
                           w->n_dispatched);
        return then;
}

/*
 * Raises event E on W's slot: slot_decide() says what it leads to, worker_act() does what
 * touches W, and then the slot shows its new state and the pool hears of it, unless a new run
 * comes right away (which shows "starting" instead). Returns -EBADE if E means nothing in the
 * slot's state (nothing changed), or a spawn's failure.
 */
static int worker_event(Worker *w, SlotEvent e, const WorkerEventArgs *args) {
        static const WorkerEventArgs no_args = {};
        Pool *p = w->pool;
        SlotState was = w->life.state;
        unsigned failures = 0;
        SlotEvent then;
        SlotFacts f;
        SlotDecision d;
        int r = 0;

        if (!args)
                args = &no_args;
        f = worker_facts(w, e, &failures);
        if (e == SLOT_EVENT_EXIT)
                f.exit_clean = args->exit_clean, f.exit_signal = args->exit_signal, f.exit_load = args->exit_load;
        d = slot_decide(&w->life, e, &f);
        if (!d.legal) {
                log_worker(LOG_DEBUG, w, "Event %s means nothing in state %s, ignored.", slot_event_to_string(e),
                           slot_state_to_string(was));
                return -EBADE;
        }
        w->life = d.next;
        if (d.next.state != was)
                log_worker(LOG_DEBUG, w, "%s: %s → %s.", slot_event_to_string(e), slot_state_to_string(was),
                           slot_state_to_string(d.next.state));

        then = worker_act(w, &d, was, args, failures, &r);
        if (then >= 0) {
                (void) worker_event(w, then, NULL);
                return r;
        }
        if (d.actions & SLOT_ACTION_START) {
                if (d.actions & SLOT_ACTION_DISPATCH)
                        pool_dispatch(p);
                return worker_event(w, SLOT_EVENT_START, NULL);
        }
        if (d.actions & (SLOT_ACTION_FAIL_POOL | SLOT_ACTION_ROLL_BACK)) {
                _cleanup_(freep) char *why = NULL;

                if (d.next.result == SLOT_RESULT_SPAWN) {
                        free(w->last_exit);
                        w->last_exit = strdup("failed to spawn apiary-worker");
                }
                worker_publish(w, false);       /* the pool looks at every slot */
                if (d.actions & SLOT_ACTION_FAIL_POOL) {
                        why = pool_failure_reason(w);
                        pool_fail(p, why ?: "pool failed");
                        return r;
                }
                if (asprintf(&why, "worker %u %s", w->slot, strempty(w->last_exit)) < 0)
                        why = NULL;
                pool_roll_failed(p, why ?: "a new worker failed");      /* which starts W again */
                pool_dispatch(p);
                return r;
        }
        worker_publish(w, true);                /* W may be gone from here on */
        if (d.actions & SLOT_ACTION_DISPATCH)
                pool_dispatch(p);
        return r;
}

static bool worker_exit_is_failure(const siginfo_t *si) {
        return !(si->si_code == CLD_EXITED && si->si_status == WORKER_EXIT_OK);
}

/* What the process left: its plugin's processes, results still in the socket, its tasks. */
static void worker_collect(Worker *w, const siginfo_t *si) {
        _cleanup_(freep) char *reason = NULL;
        int r;

        w->exited_mono = now_usec(CLOCK_MONOTONIC);

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
        if (w->life.result == SLOT_RESULT_START_TIMEOUT)
                r = asprintf(&w->last_exit, "start timed out, %s", strempty(reason));
        else if (w->failure_message)
                r = asprintf(&w->last_exit, "%s (%s)", strempty(reason), w->failure_message);
        else if (w->life.result == SLOT_RESULT_LINK_LOST)
                r = asprintf(&w->last_exit, "%s (lost its link to apiaryd)", strempty(reason));
        else
                r = asprintf(&w->last_exit, "%s", strempty(reason));
        if (r < 0)
                w->last_exit = NULL;
        log_worker(w->life.intent != SLOT_INTENT_NONE ? LOG_INFO : LOG_WARNING, w, "Worker %s.",
                   strempty(w->last_exit));

        worker_release_tasks(w, w->last_exit);
        worker_drop_process(w);
        free(w->failure_error);
        free(w->failure_message);
        w->failure_error = w->failure_message = NULL;
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Worker *w = userdata;
        WorkerEventArgs args = {
                .exit_clean = !worker_exit_is_failure(si),
                .exit_signal = si->si_code != CLD_EXITED,
                .exit_load = si->si_code == CLD_EXITED && si->si_status == WORKER_EXIT_LOAD && w->ready_mono == 0,
        };

        (void) worker_event(w, SLOT_EVENT_EXIT, &args);
        worker_collect(w, si);
        (void) worker_event(w, SLOT_EVENT_EXITED, NULL);
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
        w->fork_fd = -1;

        r = start_limit_init(&w->start_limit, pool->config->start_limit_burst);
        if (r < 0)
                return r;
        r = object_worker_path(pool->config->name, slot, &w->object_path);
        if (r < 0)
                return r;
        r = pool_claim_page(pool, slot / LINK_CLAIMS_PER_PAGE, &w->claim_page);
        if (r < 0)
                return r;
        w->claim = w->claim_page->claims + slot % LINK_CLAIMS_PER_PAGE;

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
