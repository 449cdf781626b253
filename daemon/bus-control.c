/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "daemon/auth.h"
#include "daemon/bus-api.h"
#include "daemon/bus-control.h"
#include "daemon/manager.h"
#include "daemon/pool.h"
#include "daemon/reload-plan.h"
#include "daemon/reload.h"
#include "daemon/worker.h"
#include "util/log.h"
#include "util/macro.h"

#define WORKERS_MAX 4096u

static int check(Pool *p, sd_bus_message *m, sd_bus_error *error) {
        int r;

        r = auth_check(p->manager, m, ACCESS_CONTROL, error);
        if (r < 0)
                return r;
        LogContext ctx = { .pool = p->config->name, .slot = -1 };
        log_ctx(LOG_NOTICE, &ctx, "%s() called by %s.", sd_bus_message_get_member(m),
                auth_caller_label(p->manager, m));
        if (p->manager->state == MANAGER_STOPPING)
                return sd_bus_error_set(error, APIARY_ERROR_STOPPING, "apiaryd is stopping.");
        return 0;
}

int bus_pool_method_start(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        int r;

        r = check(p, m, error);
        if (r < 0)
                return r;
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

int bus_pool_method_stop(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        int r;

        r = check(p, m, error);
        if (r < 0)
                return r;
        if (!IN_SET(p->life.phase, POOL_PHASE_STOPPED, POOL_PHASE_STOPPING)) {
                /* Queued tasks would wait for a Start() nobody may send: they fail now. Running
                 * ones finish first (StopTimeoutSec= bounds it). */
                pool_fail_queued(p, "pool stopped");
                pool_stop(p);
        }
        return sd_bus_reply_method_return(m, NULL);
}

int bus_pool_method_pause(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        int r;

        r = check(p, m, error);
        if (r < 0)
                return r;
        pool_set_paused(p, true);
        return sd_bus_reply_method_return(m, NULL);
}

int bus_pool_method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        int r;

        r = check(p, m, error);
        if (r < 0)
                return r;
        pool_set_paused(p, false);
        return sd_bus_reply_method_return(m, NULL);
}

int bus_pool_method_restart(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        int r;

        r = check(p, m, error);
        if (r < 0)
                return r;
        if (!pool_is_active(p))
                return sd_bus_error_setf(error, APIARY_ERROR_POOL_STOPPED,
                                         "Pool \"%s\" is %s; it must be started first.", p->config->name,
                                         p->life.phase == POOL_PHASE_STOPPING ? "stopping" :
                                         pool_state_to_string(p->state));
        (void) pool_restart(p);
        return sd_bus_reply_method_return(m, NULL);
}

int bus_pool_method_scale(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        uint32_t n;
        int r;

        r = sd_bus_message_read(m, "u", &n);
        if (r < 0)
                return r;
        r = check(p, m, error);
        if (r < 0)
                return r;
        if (n < 1 || n > WORKERS_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Cannot scale to %u workers: expected 1 to %u.", n, WORKERS_MAX);
        r = pool_scale(p, n);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to scale pool \"%s\": %m", p->config->name);
        return sd_bus_reply_method_return(m, NULL);
}

int bus_worker_method_restart(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;
        int r;

        r = check(w->pool, m, error);
        if (r < 0)
                return r;
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

int bus_worker_method_kill(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Worker *w = userdata;
        int32_t sig;
        int r;

        r = sd_bus_message_read(m, "i", &sig);
        if (r < 0)
                return r;
        if (sig < 1 || sig > SIGRTMAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid signal number %i: expected 1 to %i.",
                                         sig, SIGRTMAX);
        r = check(w->pool, m, error);
        if (r < 0)
                return r;
        if (!worker_is_running(w))
                return sd_bus_error_setf(error, APIARY_ERROR_NOT_RUNNING, "Worker %s/%u has no process (it is %s).",
                                         w->pool->config->name, w->slot, worker_state_to_string(w->state));
        worker_kill(w, sig);
        return sd_bus_reply_method_return(m, NULL);
}

static void message_unref(void *m) {
        sd_bus_message_unref(m);
}

int bus_manager_method_reload(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(freep) char *reason = NULL;
        Manager *mgr = userdata;
        int r;

        r = auth_check(mgr, m, ACCESS_CONTROL, error);
        if (r < 0)
                return r;
        log_notice("Reload() called by %s.", auth_caller_label(mgr, m));

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

int bus_manager_method_plan_reload(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(GPtrArray) changes = NULL;
        _cleanup_(freep) char *reason = NULL;
        Manager *mgr = userdata;
        int r;

        /* Control rights: the configuration may hold what not everyone is to read (plugin keys). */
        r = auth_check(mgr, m, ACCESS_CONTROL, error);
        if (r < 0)
                return r;
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
