/* SPDX-License-Identifier: MIT */
/*
 * Reload (SIGHUP, Manager.Reload(), systemctl reload): the new configuration is loaded and checked
 * whole before anything changes; a bad one changes nothing. Then pools are matched by name:
 * unchanged pools are not touched (same PIDs), new pools start, removed pools drain and go away,
 * and changed pools take their new settings: a new plugin or new plugin settings roll over the
 * workers slot by slot (no task lost), Workers= scales, everything else applies to the running
 * workers at once. Bus= only takes effect on restart.
 */
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon/autoscale.h"
#include "daemon/manager.h"
#include "daemon/objects.h"
#include "daemon/pool.h"
#include "daemon/reload-plan.h"
#include "daemon/reload.h"
#include "daemon/source.h"
#include "util/log.h"
#include "util/macro.h"

static int on_gc(sd_event_source *s, void *userdata) {
        Manager *m = userdata;
        size_t k = 0;
        bool changed = false;

        m->gc_source = sd_event_source_disable_unref(m->gc_source);
        for (size_t i = 0; i < m->n_pools; i++) {
                Pool *p = m->pools[i];

                if (pool_can_be_freed(p)) {
                        LogContext ctx = { .pool = p->config->name, .slot = -1 };

                        log_ctx(LOG_INFO, &ctx, "Pool removed.");
                        for (unsigned j = 0; j < p->n_workers; j++)
                                manager_object_removed(m, p->workers[j]->object_path, APIARY_WORKER_INTERFACE);
                        manager_object_removed(m, p->object_path, APIARY_POOL_INTERFACE);
                        pool_free(p);
                        changed = true;
                        continue;
                }
                m->pools[k++] = p;
        }
        m->n_pools = k;
        if (changed)
                manager_mark_changed(m, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE, "Pools");
        return 0;
}

void manager_schedule_gc(Manager *m) {
        if (m->gc_source)
                return;
        /* Deferred: pools are freed from the loop, never under a caller that still uses them. */
        if (sd_event_add_defer(m->event, &m->gc_source, on_gc, m) < 0)
                log_warning("Failed to schedule freeing removed pools, they stay listed.");
}

/* What changed in P's settings, for its log line: "Plugin=a.so → b.so, [Plugin] Mode=(unset) → x". */
static char *describe_keys(const PoolConfig *old, unsigned wanted, bool active, const PoolConfig *pc) {
        g_autoptr(GPtrArray) changes = g_ptr_array_new_with_free_func(reload_change_free);
        g_autoptr(GString) s = g_string_new(NULL);

        reload_plan_pool(changes, old, wanted, active, pc);
        for (guint i = 0; i < changes->len; i++) {
                const ReloadChange *c = changes->pdata[i];
                g_autofree char *text = NULL;

                if (!IN_SET(c->kind, RELOAD_CHANGE_KEY, RELOAD_CHANGE_PLUGIN_KEY, RELOAD_CHANGE_DROP_SCALE))
                        continue;
                text = reload_change_describe(c);
                g_string_append_printf(s, "%s%s", s->len > 0 ? ", " : "", text);
        }
        return g_string_free(g_steal_pointer(&s), false);
}

/* Gives P its new settings PC (taken). */
static void pool_apply(Pool *p, PoolConfig *pc) {
        LogContext ctx = { .pool = pc->name, .slot = -1 };
        PoolConfig *old = p->config;
        bool same_code = pool_config_same_code(old, pc);
        bool same_source = pool_config_same_source(old, pc);
        unsigned old_workers = old->workers, old_workers_max = old->workers_max;
        g_autofree char *keys = NULL;
        int r;

        /* What it runs is compared with what is configured anew. */
        pool_forget_rollback(p);
        if (pool_config_equal(old, pc)) {
                pool_config_free(pc);
                return;
        }

        keys = describe_keys(old, p->n_wanted, pool_is_active(p), pc);
        log_ctx(LOG_NOTICE, &ctx, "Settings changed (%s)%s.", keys,
                same_code ? ", applied to the running workers" :
                pool_is_active(p) ? ", rolling the workers over to the new code" : "");
        manager_mark_changed(p->manager, p->object_path, APIARY_POOL_INTERFACE, "Plugin", "Kind", "QueueLimit",
                             "QueueBytesLimit", "Concurrency", "WorkersMin", "WorkersMax");
        if (same_code || !pool_is_active(p)) {
                p->config = pc;
                if (!same_code)
                        p->generation = ++p->n_generations;
                pool_config_apply_limits(p, old);
                pool_config_free(old);
        } else {
                /* New code is tried: the old settings are kept until every slot runs the new
                 * ones, and come back if a new worker cannot start. The intent is set first, so
                 * that the new slots of a scale-up are part of the trial. */
                pool_try_settings(p, pc);
                pool_config_apply_limits(p, old);
        }

        if (pc->workers_max > pc->workers || old_workers_max > old_workers) {
                /* Autoscaled before or now: the count it runs, kept within the new bounds (a range
                 * that became a number: that number). */
                unsigned n = CLAMP(p->n_wanted, pc->workers, pc->workers_max);

                r = n != p->n_wanted ? pool_scale(p, n) : 0;
                if (r < 0)
                        log_ctx(LOG_ERR, &ctx, "Failed to scale to %u workers: %s", n, strerror(-r));
        } else if (pc->workers != old_workers && p->n_wanted != pc->workers) {
                /* A Scale() stays until Workers= itself changes. */
                r = pool_scale(p, pc->workers);
                if (r < 0)
                        log_ctx(LOG_ERR, &ctx, "Failed to scale to %u workers: %s", pc->workers, strerror(-r));
        }
        autoscale_refresh(p);

        /* A new zygote for new code (or none, if no longer wanted): the workers to come fork from it. */
        if (!same_code || !pc->zygote)
                zygote_stop(p);
        if (pool_is_active(p))
                (void) zygote_start(p);

        if (!same_code && p->life.phase == POOL_PHASE_FAILED)
                /* New code for a failed pool: worth a try right away. */
                (void) pool_start(p);
        /* A shared pool's engine settings: its helper starts anew with them; what it holds stays. */
        if (!same_source && p->source)
                source_restart_helper(p->source);
        pool_dispatch(p);       /* Concurrency= may have grown */
}

/* Whether the reload is still being applied: new settings rolling in (or back), workers of new
 * settings or new slots or pools still starting. Drains are not waited for. */
static bool reload_in_progress(Manager *m) {
        for (size_t i = 0; i < m->n_pools; i++) {
                Pool *p = m->pools[i];

                if (pool_is_trying(p))
                        return true;
                /* Its workers wait for its zygote (Zygote=auto, the default): not started yet. */
                if (p->life.phase == POOL_PHASE_HELD)
                        return true;
                if (!pool_is_active(p))
                        continue;
                for (unsigned j = 0; j < p->n_wanted; j++)
                        if (p->workers[j]->state == WORKER_STARTING)
                                return true;
        }
        return false;
}

static void reload_finish(Manager *m) {
        _cleanup_(freep) char *rolled_back = NULL;

        for (size_t i = 0; i < m->n_pools; i++) {
                Pool *p = m->pools[i];
                char *s;

                /* A removed pool's rollback was an earlier reload's, not this one's. */
                if (!p->rollback_reason || pool_is_removed(p))
                        continue;
                if (asprintf(&s, "%s%sPool \"%s\" rolled back to its previous settings: %s", strempty(rolled_back),
                             rolled_back ? "; " : "", p->config->name, p->rollback_reason) < 0)
                        s = NULL;
                free(rolled_back);
                rolled_back = s;
        }

        m->state = MANAGER_RUNNING;
        manager_mark_changed(m, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE, "State");
        (void) sd_notify(false, "READY=1");
        if (rolled_back)
                log_error("Reload done, but not everywhere: %s", rolled_back);
        else
                log_info("Reloaded.");
        if (m->observer.reload_finished)
                m->observer.reload_finished(m, rolled_back ? RELOAD_ROLLED_BACK : RELOAD_DONE, rolled_back);
        manager_pool_changed(m, NULL);
}

static int on_reload_check(sd_event_source *s, void *userdata) {
        Manager *m = userdata;

        m->reload_source = sd_event_source_disable_unref(m->reload_source);
        if (m->state == MANAGER_RELOADING && !reload_in_progress(m))
                reload_finish(m);
        return 0;
}

void manager_reload_check(Manager *m) {
        if (m->state != MANAGER_RELOADING || m->reload_source)
                return;
        /* Deferred: never in the middle of applying, nor under a pool's event. */
        if (sd_event_add_defer(m->event, &m->reload_source, on_reload_check, m) < 0) {
                log_warning("Failed to schedule the end of the reload, ending it now.");
                reload_finish(m);
        }
}

void manager_reload_abort(Manager *m) {
        m->reload_source = sd_event_source_disable_unref(m->reload_source);
        if (m->observer.reload_finished)
                m->observer.reload_finished(m, RELOAD_STOPPING, "apiaryd is stopping");
}

/* Everything --check-config checks beyond the syntax: that each plugin file is there to load. */
static int reload_check_plugins(Config *c, char **ret_error) {
        g_auto(GStrv) problems = NULL;

        if (config_check_plugins(c, &problems) == 0)
                return 0;
        *ret_error = g_strjoinv("; ", problems);
        return -ENOENT;
}

/* A pool does not turn shared, or local, while it runs: its tasks would have to move between
 * its queue and the engine. */
static int reload_check_sources(Manager *m, const Config *c, char **ret_error) {
        for (size_t i = 0; i < c->n_pools; i++) {
                const PoolConfig *pc = c->pools[i];
                Pool *p = manager_find_pool(m, pc->name);

                if (!p || pool_is_removed(p) || !p->config->source == !pc->source)
                        continue;
                *ret_error = g_strdup_printf("%s: [Pool %s] Source=%s: a reload cannot make a running pool %s; "
                                             "remove the pool (reload), then add it back (reload)",
                                             c->path, pc->name, strempty(pc->source),
                                             pc->source ? "shared" : "local");
                return -EINVAL;
        }
        return 0;
}

/* The configuration a reload would apply: loaded, and checked as --check-config checks it. */
static int reload_load(Manager *m, Config **ret, char **ret_error) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_(freep) char *error = NULL;
        long n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int r;

        r = config_load(m->config->path, n_cpus > 0 ? (unsigned) n_cpus : 1, &c, &error);
        if (r >= 0)
                r = reload_check_plugins(c, &error);
        if (r >= 0)
                r = reload_check_sources(m, c, &error);
        if (r < 0) {
                if (ret_error)
                        *ret_error = error ? TAKE_PTR(error) : strdup(strerror(-r));
                return r;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

int manager_plan_reload(Manager *m, GPtrArray **ret, char **ret_error) {
        _cleanup_(config_freep) Config *c = NULL;
        int r;

        r = reload_load(m, &c, ret_error);
        if (r < 0)
                return r;
        *ret = reload_plan(m, c);
        return 0;
}

int manager_reload(Manager *m, char **ret_error) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_(freep) char *error = NULL;
        Pool **pools;
        size_t n = 0;
        int r;

        if (m->state == MANAGER_STOPPING)
                return -ESHUTDOWN;
        if (m->state == MANAGER_RELOADING) {
                log_warning("A reload is under way; asked to reload again, ignoring.");
                return -EBUSY;
        }

        log_info("Reloading %s.", m->config->path);
        r = reload_load(m, &c, &error);
        if (r < 0) {
                g_auto(GStrv) lines = g_strsplit(strempty(error), "\n", -1);

                /* One entry per problem; the caller of Reload() gets them all in one message. */
                for (char **l = lines; *l; l++)
                        log_error("Reload refused, the running configuration stays: %s", *l);
                if (ret_error)
                        *ret_error = TAKE_PTR(error);
                return r;
        }

        (void) sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading",
                          (unsigned long long) now_usec(CLOCK_MONOTONIC));
        m->state = MANAGER_RELOADING;
        manager_mark_changed(m, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE, "State");

        /* What only a restart can change stays as it is. */
        c->bus = m->config->bus;
        free(c->bus_address);
        c->bus_address = m->config->bus_address ? strdup(m->config->bus_address) : NULL;
        free(c->private_socket);
        c->private_socket = m->config->private_socket ? strdup(m->config->private_socket) : NULL;
        c->private_socket_set = m->config->private_socket_set;
        /* Tasks submitted to shared pools carry the host's id: it stays until a restart. */
        free(c->host_id);
        c->host_id = m->config->host_id ? strdup(m->config->host_id) : NULL;
        if (m->log_level_override < 0)
                log_set_max_level(c->log_level);

        pools = calloc(c->n_pools + m->n_pools, sizeof(Pool *));
        if (!pools)
                return log_oom();

        /* In the new file's order: kept pools with their new settings, and new pools. */
        for (size_t i = 0; i < c->n_pools; i++) {
                PoolConfig *pc = TAKE_PTR(c->pools[i]);
                Pool *p = manager_find_pool(m, pc->name);

                if (p && !pool_is_removed(p)) {
                        pool_apply(p, pc);
                        pools[n++] = p;
                        continue;
                }
                if (p) {
                        /* Removed by an earlier reload and back before it was gone: it gets a
                         * fresh start once its old workers have left. */
                        log_warning("Pool %s is still draining from an earlier reload; reload again once it is gone.",
                                    pc->name);
                        pool_config_free(pc);
                        continue;
                }

                r = pool_new(&p, m, pc);
                if (r < 0) {
                        log_error_errno(r, "Failed to set up the new pool %s: %m", pc->name);
                        pool_config_free(pc);
                        continue;
                }
                log_info("Pool %s added.", pc->name);
                pools[n++] = p;
                manager_object_added(m, p->object_path);
                r = pool_start(p);
                if (r < 0)
                        log_error_errno(r, "Failed to start the new pool %s: %m", pc->name);
        }

        /* Pools no longer configured drain: running tasks finish, queued ones fail. */
        for (size_t i = 0; i < m->n_pools; i++) {
                Pool *p = m->pools[i];
                bool kept = false;

                for (size_t j = 0; j < n; j++)
                        if (pools[j] == p)
                                kept = true;
                if (kept)
                        continue;
                pools[n++] = p;
                if (pool_is_removed(p))
                        continue;
                log_info("Pool %s removed from the configuration, draining it.", p->config->name);
                pool_remove(p);
        }

        free(m->pools);
        m->pools = pools;
        m->n_pools = n;

        /* The new globals (authorization lists, plugin directory) take over. */
        config_free(m->config);
        m->config = TAKE_PTR(c);

        manager_mark_changed(m, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE, "Pools");
        manager_schedule_gc(m);
        /* It ends (READY=1, State running, the observer told) once the new settings are in
         * every slot, or rolled back. */
        manager_reload_check(m);
        return 0;
}
