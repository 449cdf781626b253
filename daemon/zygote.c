/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/manager.h"
#include "daemon/objects.h"
#include "daemon/pool.h"
#include "daemon/reaper.h"
#include "daemon/worker.h"
#include "daemon/zygote.h"
#include "ipc/link-calls.h"
#include "ipc/link.h"
#include "ipc/protocol.h"
#include "util/log.h"
#include "util/macro.h"

#define ZYGOTE_RETRY_USEC (1 * USEC_PER_SEC)
#define ZYGOTE_RETRY_MAX_USEC (60 * USEC_PER_SEC)
/* How long a Fork() may take: 5 s, plus 20 ms for each Fork() already waiting before it. The
 * zygote answers them one by one (a few ms each): 1,000 started at once must not time out
 * behind each other, which spawned a second process for those slots while the zygote still
 * forked the first (bench/run spawn, Zygote=yes, 1,000 workers). */
#define FORK_TIMEOUT_USEC (5 * USEC_PER_SEC)
#define FORK_TIMEOUT_QUEUED_USEC (20 * USEC_PER_MSEC)
/* Fork() calls in flight at once; the others wait here. The zygote's sd-bus reads every call that
 * comes into its heap (about 1 KiB each), and each worker it forks meanwhile keeps its own copy of
 * the pages the zygote changes after (bench/run spawn: 570 KiB Pss per worker at 1,000 sent at
 * once). A few in flight keep the zygote busy all the same. */
#define ZYGOTE_FORKS_IN_FLIGHT 4u

#define log_zygote(level, z, ...)                                                                       \
        ({                                                                                              \
                LogContext _ctx = { .pool = (z)->pool->config->name, .slot = -1, .pid = (int) (z)->pid }; \
                log_ctx(level, &_ctx, __VA_ARGS__);                                                     \
        })

static void zygote_set_state(Zygote *z, ZygoteState state) {
        if (z->state == state)
                return;
        z->state = state;
        if (z->pool)
                manager_mark_changed(z->pool->manager, z->pool->object_path, APIARY_POOL_INTERFACE, "ZygotePID");
}

/* The Fork() calls that will get no answer now: their slots are spawned instead (or, if they
 * were stopped meanwhile, are done). Answers already in the socket are taken first. */
static void zygote_fail_pending(Zygote *z) {
        Pool *p = z->pool;

        if (z->link)
                while (sd_bus_process(z->link, NULL) > 0)
                        ;
        if (!p)
                return;
        for (unsigned i = 0; i < p->n_workers; i++) {
                Worker *w = p->workers[i];

                if (!w->fork_slot && w->fork_fd < 0)
                        continue;
                w->fork_slot = sd_bus_slot_unref(w->fork_slot);
                w->fork_fd = safe_close(w->fork_fd);
                w->ready_call = sd_bus_message_unref(w->ready_call);
                worker_close_link(w);
                worker_fork_failed(w);
        }
}

static void zygote_drop_process(Zygote *z) {
        z->child_source = sd_event_source_disable_unref(z->child_source);
        zygote_fail_pending(z);
        z->link = sd_bus_flush_close_unref(z->link);
        zygote_set_state(z, ZYGOTE_DEAD);
        z->pid = 0;
}

static void zygote_free(Zygote *z) {
        z->retry_source = sd_event_source_disable_unref(z->retry_source);
        z->link = sd_bus_flush_close_unref(z->link);
        free(z);
}

static int zygote_spawn(Zygote *z);
static void zygote_distrust(Pool *p);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Zygote *z = userdata;

        z->retry_source = sd_event_source_disable_unref(z->retry_source);
        (void) zygote_spawn(z);
        return 0;
}

static int on_zygote_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Zygote *z = userdata;
        Pool *p = z->pool;
        usec_t delay;


        if (si->si_code == CLD_EXITED && si->si_status == WORKER_EXIT_NOT_FORK_SAFE &&
            p->config->zygote == ZYGOTE_AUTO) {
                /* Zygote=auto, and the plugin does not say it may be forked: the usual way. */
                z->given_up = true;
                log_zygote(LOG_INFO, z, "The plugin does not declare APIARY_PLUGIN_FORK_SAFE: "
                           "workers of this pool are spawned (Zygote=auto).");
        } else {
                if (si->si_code == CLD_EXITED && IN_SET(si->si_status, WORKER_EXIT_LOAD, WORKER_EXIT_USAGE))
                        z->given_up = true;
                log_zygote(z->given_up ? LOG_NOTICE : LOG_WARNING, z, "Zygote %s %i%s.",
                           si->si_code == CLD_EXITED ? "exited with status" : "killed by signal", si->si_status,
                           z->given_up ? "; workers of this pool are spawned instead" : "");
        }
        zygote_drop_process(z);
        pool_release_held(p);   /* a start that waited for it spawns its workers */

        if (z->given_up || !pool_is_active(p))
                return 0;
        /* Not the pool's failure (its workers run on): just try again, more slowly each time. */
        delay = ZYGOTE_RETRY_USEC << MIN(z->failures, 6u);
        delay = MIN(delay, ZYGOTE_RETRY_MAX_USEC);
        z->failures++;
        if (sd_event_add_time_relative(p->manager->event, &z->retry_source, CLOCK_MONOTONIC, delay, USEC_PER_MSEC,
                                       on_retry, z) < 0)
                log_zygote(LOG_WARNING, z, "Cannot schedule a new zygote; workers are spawned instead.");
        return 0;
}

static void zygote_method_hello(void *userdata, const char **ret_plugin_path, char *const **ret_keys,
                                char *const **ret_values, size_t *ret_n, int *ret_claims_fd) {
        Zygote *z = userdata;

        pool_config_plugin_settings(z->pool->config, ret_plugin_path, ret_keys, ret_values, ret_n);
}

static int zygote_method_ready(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Zygote *z = userdata;

        z->failures = 0;
        zygote_set_state(z, ZYGOTE_READY);
        pool_release_held(z->pool);
        log_zygote(LOG_DEBUG, z, "Zygote ready.");
        return sd_bus_reply_method_return(msg, NULL);
}

static int zygote_method_failed(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Zygote *z = userdata;
        const char *name, *message;
        int r;

        r = link_read_failed(msg, &name, &message);
        if (r < 0)
                return r;
        /* Not fork-safe under Zygote=auto is no failure: its exit says what happens next. */
        if (!streq(name, WORKER_ERROR_NOT_FORK_SAFE))
                log_zygote(LOG_NOTICE, z, "Zygote cannot load the plugin: %s", message);
        return sd_bus_reply_method_return(msg, NULL);
}

/* A zygote loads the plugin and forks: it neither submits tasks nor reports results. */
static const LinkSupervisorOps zygote_link_ops = {
        .hello = zygote_method_hello,
        .ready = zygote_method_ready,
        .failed = zygote_method_failed,
};

/* As a worker's link (worker.c): a zygote that does not read what it is sent is killed. */
static int zygote_link_filter(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Zygote *z = userdata;
        uint64_t n;

        if (!link_queue_exceeded(z->link, LINK_QUEUED_MAX, &n))
                return 0;
        if (!z->pool)
                return 1;
        log_zygote(LOG_ERR, z, "Zygote does not read its link (%" PRIu64 " messages queued for it), killing it.", n);
        zygote_distrust(z->pool);
        return 1;
}

static int zygote_spawn(Zygote *z) {
        Pool *p = z->pool;
        Manager *m = p->manager;
        _cleanup_(closep) int fd_zygote = -1, fd_supervisor = -1;
        char description[256];
        int sv[2], r;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        fd_supervisor = sv[0];
        fd_zygote = sv[1];

        r = host_spawn(m, p->config, p->config->zygote == ZYGOTE_AUTO ? "--zygote=fork-safe" : "--zygote", fd_zygote,
                       &z->pid);
        if (r < 0) {
                log_zygote(LOG_WARNING, z, "Failed to spawn the zygote, workers are spawned instead: %s",
                           strerror(-r));
                z->pid = 0;
                return r;
        }
        z->state = ZYGOTE_STARTING;

        r = sd_event_add_child(m->event, &z->child_source, z->pid, WEXITED, on_zygote_exit, z);
        if (r < 0) {
                (void) kill(z->pid, SIGKILL);
                (void) waitpid(z->pid, NULL, 0);
                zygote_drop_process(z);
                return r;
        }
        snprintf(description, sizeof(description), "zygote-%s", p->config->name);
        z->link_supervisor = (LinkSupervisor) { .ops = &zygote_link_ops, .userdata = z };
        r = link_server_new(&z->link, TAKE_FD(fd_supervisor), m->link_id, m->event, description);
        if (r >= 0)
                r = link_supervisor_add(z->link, &z->link_supervisor);
        if (r >= 0)
                r = sd_bus_add_filter(z->link, NULL, zygote_link_filter, z);
        if (r < 0) {
                (void) kill(z->pid, SIGKILL);   /* its exit is handled as usual */
                return r;
        }
        return 0;
}

int zygote_start(Pool *p) {
        Zygote *z = p->zygote;

        if (!p->config->zygote)
                return 0;
        if (!z) {
                z = calloc(1, sizeof(*z));
                if (!z)
                        return -ENOMEM;
                z->pool = p;
                z->state = ZYGOTE_DEAD;
                p->zygote = z;
        }
        if (z->pid > 0 || z->retry_source)
                return 0;
        z->given_up = false;
        return zygote_spawn(z);
}

void zygote_stop(Pool *p) {
        Zygote *z = TAKE_PTR(p->zygote);

        if (!z)
                return;
        if (z->state == ZYGOTE_READY)
                manager_mark_changed(p->manager, p->object_path, APIARY_POOL_INTERFACE, "ZygotePID");
        if (z->pid > 0 && z->child_source) {
                /* It holds no task and sits in epoll_wait(): SIGKILL ends it at once, and we reap
                 * it right here, so that no zombie stays behind, not even when apiaryd exits next.
                 * (sd-event has not reaped it: its exit would have dropped the child source.) */
                if (sd_event_source_send_child_signal(z->child_source, SIGKILL, NULL, 0) < 0)
                        (void) kill(z->pid, SIGKILL);
                (void) waitid(P_PID, (id_t) z->pid, &(siginfo_t) {}, WEXITED);
        }
        zygote_drop_process(z);
        zygote_free(z);
}

/* Whether PID is a child of ours that is not already known as a worker or a zygote: returns 0
 * with a pidfd for it in *RET_PIDFD (-1 where pidfd_open() is missing, valgrind's say), -ECHILD
 * if it is not our child, or -EEXIST if it is one we know. */
static int zygote_verify_child(Worker *w, pid_t pid, int *ret_pidfd) {
        siginfo_t si = {};
        int fd, r;

        if (pid <= 0 || pid == getpid())
                return -ECHILD;
        if (manager_pid_is_taken(w->pool->manager, pid, w))
                return -EEXIST;
        fd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0 && errno != ENOSYS)
                return -ECHILD;
        /* Through the pidfd, so that the answer is about that process, whatever its PID is now.
         * Without one, by PID: a child of ours keeps its PID until we reap it. */
        if (fd >= 0)
                r = waitid((idtype_t) P_PIDFD, (id_t) fd, &si, WEXITED | WNOHANG | WNOWAIT);
        else
                r = waitid(P_PID, (id_t) pid, &si, WEXITED | WNOHANG | WNOWAIT);
        if (r < 0) {
                safe_close(fd);
                return -ECHILD;
        }
        *ret_pidfd = fd;
        return 0;
}

/* A zygote that lied is plugin code gone bad: stop it; the pool's workers are spawned from now
 * on, until the pool is started anew. */
static void zygote_distrust(Pool *p) {
        Zygote *z = p->zygote;

        if (!z)
                return;
        z->given_up = true;
        zygote_set_state(z, ZYGOTE_DEAD);      /* asked for nothing more: see zygote_fork() */
        if (z->child_source && sd_event_source_send_child_signal(z->child_source, SIGKILL, NULL, 0) < 0 && z->pid > 0)
                (void) kill(z->pid, SIGKILL);
        /* on_zygote_exit() does the rest, and does not try again (given_up). */
}

/* The answer to Fork(): the new worker's PID, or why there is none (then: spawn). */
static int fork_reply_handle(sd_bus_message *reply, Worker *w) {
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        pid_t pid;
        int pidfd, r;

        w->fork_slot = sd_bus_slot_unref(w->fork_slot);

        if (link_read_fork_reply(reply, &pid) < 0) {
                log_worker(LOG_WARNING, w, "The zygote did not fork the worker (%s), spawning it instead.",
                           e ? e->message ?: e->name : "malformed reply");
                w->ready_call = sd_bus_message_unref(w->ready_call);
                worker_close_link(w);
                worker_fork_failed(w);
                return 0;
        }

        /* The zygote runs plugin code, and may say anything: a PID is trusted only once it is
         * known to be a child of ours (CLONE_PARENT) that no slot has already. Being our child,
         * it cannot be reaped and reused but by us. That it holds the link is checked at Ready(). */
        r = zygote_verify_child(w, pid, &pidfd);
        if (r < 0) {
                Pool *p = w->pool;      /* W may be freed by the pool once dead */

                log_worker(LOG_ERR, w, "The zygote answered PID %i, which is %s: not trusting it, "
                           "stopping the zygote and spawning the worker instead.", pid,
                           r == -ECHILD ? "not a child of apiaryd" : "another process of apiaryd's");
                w->ready_call = sd_bus_message_unref(w->ready_call);
                worker_close_link(w);
                worker_fork_failed(w);
                zygote_distrust(p);
                return 0;
        }
        w->pid = pid;
        worker_forked(w, pidfd);        /* watched through PIDFD, or by PID if it is < 0 */
        return 0;
}

static void zygote_send_waiting(Pool *p);

static int on_fork_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Worker *w = userdata;
        Pool *p = w->pool;
        Manager *m = p->manager;

        (void) fork_reply_handle(reply, w);
        reaper_fork_answered(m);        /* what it held back while this Fork() was unanswered */
        zygote_send_waiting(p);
        return 0;
}

/* The Fork() calls of P not answered yet. */
static unsigned forks_waiting(const Pool *p) {
        unsigned n = 0;

        for (unsigned i = 0; i < p->n_workers; i++)
                if (p->workers[i]->fork_slot)
                        n++;
        return n;
}

/* Sends W's Fork(), with the worker's end of its link (closed here: sd-bus sent a copy). */
static int zygote_send_fork(Zygote *z, Worker *w) {
        _cleanup_(closep) int fd = TAKE_FD(w->fork_fd);

        return link_call_fork(z->link, (uint32_t) w->slot, fd, w->claim_page->fd,
                              FORK_TIMEOUT_USEC + forks_waiting(z->pool) * FORK_TIMEOUT_QUEUED_USEC, on_fork_reply, w,
                              &w->fork_slot);
}

/* Sends the Fork() calls that wait, while fewer than ZYGOTE_FORKS_IN_FLIGHT are unanswered. One
 * that cannot be sent: that worker is spawned. */
static void zygote_send_waiting(Pool *p) {
        Zygote *z = p->zygote;
        unsigned n;
        int r;

        if (!z || z->state != ZYGOTE_READY)
                return;         /* the zygote's exit fails them (zygote_fail_pending()) */
        n = forks_waiting(p);
        for (unsigned i = 0; i < p->n_workers && n < ZYGOTE_FORKS_IN_FLIGHT; i++) {
                Worker *w = p->workers[i];

                if (w->fork_fd < 0)
                        continue;
                r = zygote_send_fork(z, w);
                if (r < 0) {
                        log_worker_errno(LOG_WARNING, r, w, "Failed to ask the zygote for the worker, spawning it: %m");
                        w->ready_call = sd_bus_message_unref(w->ready_call);
                        worker_close_link(w);
                        worker_fork_failed(w);
                        continue;
                }
                n++;
        }
}

int zygote_fork(Pool *p, Worker *w) {
        _cleanup_(closep) int fd_worker = -1, fd_supervisor = -1;
        Zygote *z = p->zygote;
        int sv[2], r;

        if (!z || z->state != ZYGOTE_READY)
                return -EAGAIN;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        fd_supervisor = sv[0];
        fd_worker = sv[1];

        worker_note_link_end(w, fd_worker);
        w->fork_fd = TAKE_FD(fd_worker);
        if (forks_waiting(p) < ZYGOTE_FORKS_IN_FLIGHT) {
                r = zygote_send_fork(z, w);
                if (r < 0)
                        return r;
        }
        /* Else it waits for an answer to one in flight (zygote_send_waiting()). */

        worker_process_begins(w, 0);
        r = worker_link_new(w, TAKE_FD(fd_supervisor));
        if (r < 0) {
                /* No link, no worker: let the fork come, and kill it once we know its PID. */
                log_worker_errno(LOG_ERR, r, w, "Failed to set up the link to the worker, killing it: %m");
                worker_kill(w, SIGKILL);
        }
        return 0;
}
