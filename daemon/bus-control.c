/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>

#include "daemon/auth.h"
#include "daemon/autoscale.h"
#include "daemon/bus-api.h"
#include "daemon/bus-control.h"
#include "daemon/manager.h"
#include "daemon/pool.h"
#include "daemon/reload-plan.h"
#include "daemon/reload.h"
#include "daemon/worker.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/signal-util.h"

#define WORKERS_MAX 4096u

/*
 * Every control call goes through control_call(): the caller's right, apiaryd not stopping, then
 * the method itself; and one audit line, whatever came of it:
 *   "Scale(4) on pool echo called by :1.7 (UID 0, PID 4242, apiaryctl)."
 *   "Stop() on pool echo by :1.9 (UID 1000, PID 4250, python3) refused: org.freedesktop.DBus.Error.AccessDenied: ..."
 */
typedef int (*ControlMethod)(sd_bus_message *m, void *userdata, sd_bus_error *error);

typedef struct ControlTarget {
        Manager *manager;
        const char *pool;       /* NULL: apiaryd itself */
        int slot;               /* -1: the pool */
        const char *args;       /* "4", "SIGRTMIN+3", "" */
} ControlTarget;

static void audit(const ControlTarget *t, sd_bus_message *m, int r, const sd_bus_error *error) {
        LogContext ctx = { .pool = t->pool, .slot = t->slot };
        g_autofree char *target = NULL;
        const char *member = sd_bus_message_get_member(m) ?: "?";
        const char *caller = auth_caller_label(t->manager, m);

        if (!t->pool)
                target = g_strdup("");
        else if (t->slot < 0)
                target = g_strdup_printf(" on pool %s", t->pool);
        else
                target = g_strdup_printf(" on worker %s/%i", t->pool, t->slot);

        if (r >= 0)
                log_ctx(LOG_NOTICE, &ctx, "%s(%s)%s called by %s.", member, t->args, target, caller);
        else
                log_ctx(LOG_WARNING, &ctx, "%s(%s)%s by %s refused: %s: %s", member, t->args, target, caller,
                        error && error->name ? error->name : "errno", error && error->message ? error->message :
                        strerror(-r));
}

static int control_call(const ControlTarget *t, sd_bus_message *m, ControlMethod method, void *userdata,
                        sd_bus_error *error) {
        int r;

        r = auth_check(t->manager, m, ACCESS_CONTROL, error);
        if (r >= 0 && t->manager->state == MANAGER_STOPPING)
                r = sd_bus_error_set(error, APIARY_ERROR_STOPPING, "apiaryd is stopping.");
        if (r >= 0)
                r = method(m, userdata, error);
        if (r < 0 && !sd_bus_error_is_set(error))
                (void) sd_bus_error_set_errno(error, r);
        audit(t, m, r, error);
        return r;
}

static ControlTarget pool_target(Pool *p, const char *args) {
        return (ControlTarget) { .manager = p->manager, .pool = p->config->name, .slot = -1, .args = args };
}

static ControlTarget worker_target(Worker *w, const char *args) {
        return (ControlTarget) { .manager = w->pool->manager, .pool = w->pool->config->name, .slot = (int) w->slot,
                                 .args = args };
}

static int pool_start_call(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        int r;

        if (IN_SET(p->life.phase, POOL_PHASE_STOPPING, POOL_PHASE_FAILING))
                return sd_bus_error_setf(error, APIARY_ERROR_BUSY, "Pool \"%s\" is still stopping its workers.",
                                         p->config->name);
        if (pool_is_removed(p))
                return sd_bus_error_setf(error, APIARY_ERROR_POOL_STOPPED, "Pool \"%s\" was removed by a reload.",
                                         p->config->name);
        if (IN_SET(p->life.phase, POOL_PHASE_FAILED, POOL_PHASE_STOPPED)) {
                r = pool_start(p);
                if (r < 0)
                        return sd_bus_error_set_errnof(error, r, "Failed to start pool \"%s\": %m", p->config->name);
        }
        return sd_bus_reply_method_return(m, NULL);
}

int bus_pool_method_start(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ControlTarget t = pool_target(userdata, "");

        return control_call(&t, m, pool_start_call, userdata, error);
}

static int pool_stop_call(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;

        if (!IN_SET(p->life.phase, POOL_PHASE_STOPPED, POOL_PHASE_STOPPING)) {
                /* Queued tasks would wait for a Start() nobody may send: they fail now. Running
                 * ones finish first (StopTimeoutSec= bounds it). */
                pool_fail_queued(p, "pool stopped");
                pool_stop(p);
        }
        return sd_bus_reply_method_return(m, NULL);
}

int bus_pool_method_stop(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ControlTarget t = pool_target(userdata, "");

        return control_call(&t, m, pool_stop_call, userdata, error);
}

static int pool_pause_call(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        pool_set_paused(userdata, streq(sd_bus_message_get_member(m), "Pause"));
        return sd_bus_reply_method_return(m, NULL);
}

int bus_pool_method_pause(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ControlTarget t = pool_target(userdata, "");

        return control_call(&t, m, pool_pause_call, userdata, error);
}

int bus_pool_method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ControlTarget t = pool_target(userdata, "");

        return control_call(&t, m, pool_pause_call, userdata, error);
}

static int pool_restart_call(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;

        if (!pool_is_active(p))
                return sd_bus_error_setf(error, APIARY_ERROR_POOL_STOPPED,
                                         "Pool \"%s\" is %s; it must be started first.", p->config->name,
                                         pool_state_to_string(p->state));
        (void) pool_restart(p);
        return sd_bus_reply_method_return(m, NULL);
}

int bus_pool_method_restart(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ControlTarget t = pool_target(userdata, "");

        return control_call(&t, m, pool_restart_call, userdata, error);
}

typedef struct ScaleCall {
        Pool *pool;
        uint32_t n;
} ScaleCall;

static int pool_scale_call(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ScaleCall *c = userdata;
        int r;

        const PoolConfig *pc = c->pool->config;

        if (c->n < 1 || c->n > WORKERS_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Cannot scale to %u workers: expected 1 to %u.", c->n, WORKERS_MAX);
        /* An autoscaled pool takes a count within its bounds, and goes on scaling from there. */
        if (pool_autoscales(c->pool) && (c->n < pc->workers || c->n > pc->workers_max))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Cannot scale pool \"%s\" to %u workers: it scales itself between %u and %u "
                                         "workers (Workers=%u..%u).", pc->name, c->n, pc->workers, pc->workers_max,
                                         pc->workers, pc->workers_max);
        r = pool_scale(c->pool, c->n);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to scale pool \"%s\": %m", c->pool->config->name);
        return sd_bus_reply_method_return(m, NULL);
}

int bus_pool_method_scale(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ScaleCall c = { .pool = userdata };
        char args[16];
        ControlTarget t;
        int r;

        r = sd_bus_message_read(m, "u", &c.n);
        if (r < 0)
                return r;
        snprintf(args, sizeof(args), "%u", c.n);
        t = pool_target(c.pool, args);
        return control_call(&t, m, pool_scale_call, &c, error);
}

static int worker_restart_call(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;
        int r;

        if (!pool_is_active(w->pool) || w->slot >= w->pool->n_wanted)
                return sd_bus_error_setf(error, APIARY_ERROR_POOL_STOPPED, "Pool \"%s\" is not running this slot.",
                                         w->pool->config->name);
        r = worker_restart(w);
        if (r == -EBUSY)
                return sd_bus_error_setf(error, APIARY_ERROR_BUSY, "Worker %s/%u is %s; try again when it is not.",
                                         w->pool->config->name, w->slot, worker_state_to_string(w->state));
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to restart worker: %m");
        return sd_bus_reply_method_return(m, NULL);
}

int bus_worker_method_restart(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ControlTarget t = worker_target(userdata, "");

        return control_call(&t, m, worker_restart_call, userdata, error);
}

typedef struct KillCall {
        Worker *worker;
        int32_t sig;
} KillCall;

static int worker_kill_call(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        KillCall *c = userdata;
        Worker *w = c->worker;

        if (c->sig < 1 || c->sig > SIGRTMAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid signal number %i: expected 1 to %i.",
                                         c->sig, SIGRTMAX);
        if (!worker_is_running(w))
                return sd_bus_error_setf(error, APIARY_ERROR_NOT_RUNNING, "Worker %s/%u has no process (it is %s).",
                                         w->pool->config->name, w->slot, worker_state_to_string(w->state));
        worker_kill(w, c->sig);
        return sd_bus_reply_method_return(m, NULL);
}

int bus_worker_method_kill(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        KillCall c = { .worker = userdata };
        char args[SIGNAL_NAME_MAX];
        ControlTarget t;
        int r;

        r = sd_bus_message_read(m, "i", &c.sig);
        if (r < 0)
                return r;
        if (c.sig >= 1 && c.sig <= SIGRTMAX)
                signal_to_string(c.sig, args);
        else
                snprintf(args, sizeof(args), "%i", c.sig);
        t = worker_target(c.worker, args);
        return control_call(&t, m, worker_kill_call, &c, error);
}

static void message_unref(void *m) {
        sd_bus_message_unref(m);
}

static int reload_call(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(freep) char *reason = NULL;
        Manager *mgr = userdata;
        int r;

        r = manager_reload(mgr, &reason);
        if (r == -ESHUTDOWN)
                return sd_bus_error_set(error, APIARY_ERROR_STOPPING, "apiaryd is stopping.");
        if (r == -EBUSY)
                return sd_bus_error_set(error, APIARY_ERROR_BUSY, "A reload is under way; try again once it has ended.");
        if (r < 0)
                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_CONFIG, "%s",
                                         reason ?: "the configuration could not be loaded");

        /* Answered once it has ended: the new settings run everywhere, or were rolled back. */
        if (!mgr->reload_calls)
                mgr->reload_calls = g_ptr_array_new_with_free_func(message_unref);
        g_ptr_array_add(mgr->reload_calls, sd_bus_message_ref(m));
        return 1;
}

int bus_manager_method_reload(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ControlTarget t = { .manager = userdata, .slot = -1, .args = "" };

        return control_call(&t, m, reload_call, userdata, error);
}

static int plan_reload_call(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(GPtrArray) changes = NULL;
        _cleanup_(freep) char *reason = NULL;
        Manager *mgr = userdata;
        int r;

        r = manager_plan_reload(mgr, &changes, &reason);
        if (r < 0)
                return sd_bus_error_setf(error, APIARY_ERROR_INVALID_CONFIG, "%s",
                                         reason ?: "the configuration could not be loaded");

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sssss)");
        if (r < 0)
                return r;
        for (guint i = 0; i < changes->len; i++) {
                const ReloadChange *c = changes->pdata[i];

                r = sd_bus_message_append(reply, "(sssss)", c->pool, reload_change_kind_to_string(c->kind),
                                          strempty(c->key), strempty(c->old), strempty(c->new));
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

int bus_manager_method_plan_reload(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        /* Control rights: the configuration may hold what not everyone is to read (plugin keys). */
        ControlTarget t = { .manager = userdata, .slot = -1, .args = "" };

        return control_call(&t, m, plan_reload_call, userdata, error);
}

void bus_reload_finished(Manager *m, ReloadResult result, const char *message) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;

        if (!m->reload_calls)
                return;
        if (result == RELOAD_ROLLED_BACK)
                (void) sd_bus_error_setf(&error, APIARY_ERROR_ROLLED_BACK, "%s.", strempty(message));
        else if (result == RELOAD_STOPPING)
                (void) sd_bus_error_set(&error, APIARY_ERROR_STOPPING, "apiaryd is stopping.");

        for (guint i = 0; i < m->reload_calls->len; i++) {
                sd_bus_message *call = m->reload_calls->pdata[i];

                /* A caller that left meanwhile gets nothing, and that is fine. */
                if (sd_bus_error_is_set(&error))
                        (void) sd_bus_reply_method_error(call, &error);
                else
                        (void) sd_bus_reply_method_return(call, NULL);
        }
        g_ptr_array_set_size(m->reload_calls, 0);
}
