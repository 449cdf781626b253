/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "build-config.h"
#include "daemon/manager.h"
#include "daemon/objects.h"
#include "daemon/pool.h"
#include "daemon/reaper.h"
#include "daemon/reload.h"
#include "daemon/source.h"
#include "daemon/worker.h"
#include "daemon/zygote.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/signal-util.h"
#include "util/notify.h"

extern char **environ;

static const char *const manager_state_table[_MANAGER_STATE_MAX] = {
        [MANAGER_STARTING] = "starting",
        [MANAGER_RUNNING] = "running",
        [MANAGER_RELOADING] = "reloading",
        [MANAGER_STOPPING] = "stopping",
};

const char *manager_state_to_string(ManagerState s) {
        if (s < 0 || s >= _MANAGER_STATE_MAX)
                return NULL;
        return manager_state_table[s];
}

bool manager_pid_is_taken(Manager *m, pid_t pid, const Worker *except) {
        for (size_t i = 0; i < m->n_pools; i++) {
                Pool *p = m->pools[i];

                if (p->zygote && p->zygote->pid == pid)
                        return true;
                if (p->source && p->source->pid == pid)
                        return true;
                for (unsigned j = 0; j < p->n_workers; j++)
                        if (p->workers[j] != except && p->workers[j]->pid == pid)
                                return true;
        }
        return false;
}

bool manager_fork_pending(Manager *m) {
        for (size_t i = 0; i < m->n_pools; i++)
                for (unsigned j = 0; j < m->pools[i]->n_workers; j++)
                        if (m->pools[i]->workers[j]->fork_slot)
                                return true;
        return false;
}

Pool *manager_find_pool(Manager *m, const char *name) {
        for (size_t i = 0; i < m->n_pools; i++)
                if (streq(m->pools[i]->config->name, name))
                        return m->pools[i];
        return NULL;
}

static void manager_set_state(Manager *m, ManagerState state) {
        if (m->state == state)
                return;
        m->state = state;
        manager_mark_changed(m, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE, "State");
}

/* Workers must not talk to systemd in our name, nor think they were socket-activated. */
static char **make_worker_env(void) {
        static const char *const drop[] = {
                "NOTIFY_SOCKET=", "WATCHDOG_PID=", "WATCHDOG_USEC=", "LISTEN_FDS=", "LISTEN_PID=",
                "LISTEN_FDNAMES=",
        };
        size_t n = 0, k = 0;
        char **env;

        while (environ[n])
                n++;
        env = calloc(n + 1, sizeof(char *));
        if (!env)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                bool skip = false;

                for (size_t j = 0; j < ELEMENTSOF(drop); j++)
                        if (strncmp(environ[i], drop[j], strlen(drop[j])) == 0)
                                skip = true;
                if (!skip)
                        env[k++] = environ[i];  /* borrowed: environ outlives us */
        }
        return env;
}

static char *manager_format_status(Manager *m) {
        unsigned wanted = 0, ready = 0, failed = 0;
        char *status = NULL;
        int k;

        for (size_t i = 0; i < m->n_pools; i++) {
                wanted += m->pools[i]->n_wanted;
                ready += pool_workers_ready(m->pools[i]);
                if (m->pools[i]->state == POOL_FAILED)
                        failed++;
        }

        if (m->state == MANAGER_STOPPING) {
                unsigned left = 0;

                for (size_t i = 0; i < m->n_pools; i++)
                        for (unsigned j = 0; j < m->pools[i]->n_workers; j++)
                                if (worker_is_running(m->pools[i]->workers[j]))
                                        left++;
                k = asprintf(&status, "Stopping: %u worker%s left", left, left == 1 ? "" : "s");
        }
        else if (failed > 0)
                k = asprintf(&status, "%zu pool%s (%u failed), %u/%u workers ready", m->n_pools,
                             m->n_pools == 1 ? "" : "s", failed, ready, wanted);
        else
                k = asprintf(&status, "%zu pool%s, %u/%u workers ready", m->n_pools, m->n_pools == 1 ? "" : "s",
                             ready, wanted);
        return k < 0 ? NULL : status;
}

/* Sends STATUS= (with EXTRA lines before it, e.g. "READY=1\n") if it changed, or if EXTRA is set. */
static void manager_send_status(Manager *m, const char *extra) {
        _cleanup_(freep) char *status = manager_format_status(m);

        if (!status)
                return;
        if (!extra && m->status && streq(m->status, status))
                return;

        if (extra)
                (void) sd_notifyf(false, "%sSTATUS=%s", extra, status);
        else {
                /* A status nobody reads must not stop the supervisor: never block for it. */
                _cleanup_(freep) char *line = NULL;

                if (asprintf(&line, "STATUS=%s", status) >= 0)
                        (void) notify_nonblocking(line);
        }
        m->status_sent_usec = now_usec(CLOCK_MONOTONIC);
        free(m->status);
        m->status = TAKE_PTR(status);
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        m->status_source = sd_event_source_disable_unref(m->status_source);
        manager_send_status(m, NULL);
        return 0;
}

/* STATUS= follows the workers, but at most every STATUS_INTERVAL_USEC: a crash storm must not
 * turn into a storm of notifications (sd_notify() blocks once the receiver's queue is full). */
static void manager_update_status(Manager *m) {
        usec_t now = now_usec(CLOCK_MONOTONIC);
        int r;

        if (m->status_source)
                return;
        if (now >= m->status_sent_usec + STATUS_INTERVAL_USEC) {
                manager_send_status(m, NULL);
                return;
        }
        r = sd_event_add_time(m->event, &m->status_source, CLOCK_MONOTONIC, m->status_sent_usec + STATUS_INTERVAL_USEC,
                              USEC_PER_MSEC, on_status_timer, m);
        if (r < 0)
                manager_send_status(m, NULL);
}

void manager_pool_changed(Manager *m, Pool *p) {
        manager_update_status(m);
        /* A shared pool on its way out stops its helper once its workers are gone. */
        if (p && p->source)
                source_check_stop(p->source);

        if (m->state == MANAGER_STARTING) {
                for (size_t i = 0; i < m->n_pools; i++)
                        if (!pool_has_started(m->pools[i]))
                                return;
                manager_set_state(m, MANAGER_RUNNING);
                if (!m->ready_sent) {
                        manager_send_status(m, "READY=1\n");
                        m->ready_sent = true;
                        log_info("Started %zu pool%s: %s", m->n_pools, m->n_pools == 1 ? "" : "s", m->status);
                }
        } else if (m->state == MANAGER_RELOADING)
                manager_reload_check(m);
        else if (m->state == MANAGER_STOPPING && !m->exiting) {
                for (size_t i = 0; i < m->n_pools; i++)
                        if (!pool_is_idle(m->pools[i]))
                                return;
                /* Then the shared pools' helpers, once what the workers ran is acked. */
                for (size_t i = 0; i < m->n_pools; i++)
                        if (m->pools[i]->source)
                                source_check_stop(m->pools[i]->source);
                for (size_t i = 0; i < m->n_pools; i++)
                        if (m->pools[i]->source && !source_is_stopped(m->pools[i]->source))
                                return;
                log_info("All workers stopped.");
                m->exiting = true;
                finished_batches_flush(m->finished_batches);
                /* Now, not at the loop's exit: there sd-bus flushes every connection still attached
                 * to it without a bound, and a peer that does not read would hold us forever. */
                if (m->observer.closing)
                        m->observer.closing(m);
                manager_flush_changes(m);       /* the last of them: the loop runs no defer source now */
                (void) sd_event_exit(m->event, m->exit_status);
        }
}

void manager_stop(Manager *m) {
        if (m->state == MANAGER_STOPPING)
                return;

        log_info("Stopping all pools.");
        if (m->state == MANAGER_RELOADING)
                manager_reload_abort(m);
        manager_set_state(m, MANAGER_STOPPING);
        /* Shared pools pull no more, and their callers waiting for a result elsewhere hear now. */
        for (size_t i = 0; i < m->n_pools; i++)
                if (m->pools[i]->source)
                        source_stop(m->pools[i]->source, TASK_REJECT_STOPPING,
                                    "apiaryd is stopping: the task is stored in the shared pool and runs, but its "
                                    "result cannot reach this caller");
        /* Tasks no worker has started will not start now: their callers hear so at once (a
         * shared pool's go back to the engine, for another host). */
        for (size_t i = 0; i < m->n_pools; i++)
                pool_fail_queued(m->pools[i], "apiaryd is stopping");
        manager_send_status(m, "STOPPING=1\n");
        for (size_t i = 0; i < m->n_pools; i++)
                pool_stop(m->pools[i]);
        manager_pool_changed(m, NULL);  /* exits now if nothing was running */
}

static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_info("Received %s.", signal_to_string((int) si->ssi_signo, (char[SIGNAL_NAME_MAX]) {}));
        manager_stop(m);
        return 0;
}

static int on_reload_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_info("Received SIGHUP.");
        (void) manager_reload(m, NULL);
        return 0;
}

int manager_start(Manager *m) {
        Config *c = m->config;
        int r;

        m->pools = calloc(c->n_pools, sizeof(Pool *));
        if (c->n_pools > 0 && !m->pools)
                return log_oom();
        for (size_t i = 0; i < c->n_pools; i++) {
                /* The pool owns its settings from here on: a reload may outlive this Config. */
                r = pool_new(&m->pools[i], m, c->pools[i]);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up pool %s: %m", c->pools[i]->name);
                c->pools[i] = NULL;
                m->n_pools++;
        }

        for (size_t i = 0; i < m->n_pools; i++) {
                r = pool_start(m->pools[i]);
                if (r < 0)
                        log_error_errno(r, "Failed to start pool %s, it stays failed: %m", m->pools[i]->config->name);
        }

        manager_pool_changed(m, NULL);  /* with no pools at all, we are ready right away */
        return 0;
}

int manager_new(Manager **ret, Config *config, const char *worker_path) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m) {
                config_free(config);
                return -ENOMEM;
        }
        m->version = APIARY_VERSION;
        m->started_at = now_usec(CLOCK_REALTIME);
        m->config = config;
        m->worker_path = worker_path;
        m->state = MANAGER_STARTING;
        m->exit_status = EXIT_SUCCESS;
        m->log_level_override = -1;

        m->tasks = g_hash_table_new(g_int64_hash, g_int64_equal);
        m->worker_env = make_worker_env();
        if (!m->worker_env)
                return -ENOMEM;

        r = sd_id128_randomize(&m->link_id);
        if (r < 0)
                return r;
        /* Ids of tasks submitted to shared pools: this host, this run of apiaryd, the task id. */
        {
                sd_id128_t run;

                r = sd_id128_randomize(&run);
                if (r < 0)
                        return r;
                if (asprintf(&m->source_id_prefix, "%s.%016" PRIx64 ".", strempty(config->host_id),
                             run.qwords[0]) < 0)
                        return -ENOMEM;
        }

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        r = changes_init(m);
        if (r < 0)
                return r;
        r = finished_batches_new(&m->finished_batches, m->event);
        if (r < 0)
                return r;
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_stop_signal, m);
        if (r < 0)
                return r;
        r = sd_event_add_signal(m->event, NULL, SIGINT, on_stop_signal, m);
        if (r < 0)
                return r;
        r = sd_event_add_signal(m->event, NULL, SIGHUP, on_reload_signal, m);
        if (r < 0)
                return r;
        r = reaper_setup(m);
        if (r < 0)
                return r;
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;

        /* First, while everything its calls may look at is still there (the edge answers what
         * peers send while it lets go of them): the loop may have ended without a stop. */
        finished_batches_flush(m->finished_batches);
        if (m->observer.closing)
                m->observer.closing(m);
        if (m->tasks) {
                GHashTableIter it;
                gpointer task;

                /* Only left when the loop ended abnormally; they hold messages of the bus. */
                g_hash_table_iter_init(&it, m->tasks);
                while (g_hash_table_iter_next(&it, NULL, &task))
                        task_free(task);
                g_hash_table_destroy(m->tasks);
        }
        if (m->caller_tasks)
                g_hash_table_destroy(m->caller_tasks);
        for (size_t i = 0; i < m->n_pools; i++)
                pool_free(m->pools[i]);
        free(m->pools);
        m->status_source = sd_event_source_disable_unref(m->status_source);
        m->gc_source = sd_event_source_disable_unref(m->gc_source);
        m->reload_source = sd_event_source_disable_unref(m->reload_source);
        if (m->reload_calls)
                g_ptr_array_free(m->reload_calls, true);
        if (m->callers)
                g_hash_table_destroy(m->callers);
        changes_done(m);
        m->finished_batches = finished_batches_free(m->finished_batches);
        m->bus = sd_bus_flush_close_unref(m->bus);
        m->event = sd_event_unref(m->event);
        config_free(m->config);
        free(m->worker_env);
        free(m->source_id_prefix);
        free(m->status);
        free(m);
        return NULL;
}
