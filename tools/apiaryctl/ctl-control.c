/* SPDX-License-Identifier: MIT */
/*
 * The verbs that steer apiaryd: start, stop, pause, resume, restart, scale, kill and reload. Every
 * target is checked, syntax and existence, before anything is done; each verb then waits for its
 * effect unless --no-block (docs/apiaryctl.md).
 */
#include <assert.h>
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/apiaryctl/ctl-state.h"
#include "tools/apiaryctl/ctl-target.h"
#include "tools/apiaryctl/ctl.h"

/* Calls METHOD on the pool or worker object of T, with arguments TYPES, AP (or none). */
static int target_callv(sd_bus *bus, const Target *t, const char *method, const char *verb, const char *types,
                        va_list ap) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, APIARY_BUS_NAME, t->path,
                                           t->has_slot ? APIARY_WORKER_INTERFACE : APIARY_POOL_INTERFACE, method);
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to create the %s() call", method);
        if (types) {
                r = sd_bus_message_appendv(m, types, ap);
                if (r < 0)
                        return ctl_bus_error(r, NULL, "Failed to create the %s() call", method);
        }

        r = sd_bus_call(bus, m, 0, &error, NULL);
        if (r >= 0)
                return CTL_EXIT_SUCCESS;
        if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT))
                return target_not_found(bus, t, verb, &error);
        r = ctl_bus_error(r, &error, "Failed to %s %s", verb, t->description);
        /* What to do about it, in this tool's words. */
        if (sd_bus_error_has_name(&error, APIARY_ERROR_POOL_STOPPED) && streq(verb, "restart"))
                ctl_error("To start it: apiaryctl start %s", t->pool);
        else if (sd_bus_error_has_name(&error, APIARY_ERROR_BUSY) && streq(verb, "start"))
                ctl_error("Once it has stopped, it can start: apiaryctl stop %s waits for that.", t->pool);
        return r;
}

/* ---- every target checked first ---- */

/* ARGS (N of them) parsed and looked up in S: all exist, or nothing is done. Returns 0, or the exit
 * status, having said what is wrong. */
static int targets_check(const Snapshot *s, const char *verb, char **args, int n, bool slot_allowed, bool slot_required,
                         Target **ret) {
        g_autofree Target *targets = g_new0(Target, n > 0 ? n : 1);
        int r = 0, i;

        for (i = 0; i < n && r == 0; i++)
                r = target_parse(args[i], slot_allowed, slot_required, &targets[i]);
        if (r != 0) {
                for (int j = 0; j < i - 1; j++)
                        target_done(&targets[j]);
                return r;
        }

        for (i = 0; i < n; i++) {
                const Target *t = &targets[i];
                PoolInfo *p = snapshot_find_pool(s, t->pool);
                bool found = p && !t->has_slot;

                for (guint j = 0; p && t->has_slot && j < p->workers->len; j++)
                        found = found || ((WorkerInfo *) p->workers->pdata[j])->slot == t->slot;
                if (found)
                        continue;
                fprintf(stderr, "Failed to %s %s: ", verb, t->description);
                if (p)
                        fprintf(stderr, "Pool \"%s\" has no slot %" PRIu32 ".", t->pool, t->slot);
                else
                        fprintf(stderr, "No pool named \"%s\".", t->pool);
                fputs(n > 1 ? " Nothing was done.\n" : "\n", stderr);
                for (int j = 0; j < n; j++)
                        target_done(&targets[j]);
                return CTL_EXIT_NOT_FOUND;
        }
        *ret = g_steal_pointer(&targets);
        return 0;
}

static void targets_free(Target *targets, int n) {
        for (int i = 0; i < n; i++)
                target_done(&targets[i]);
        g_free(targets);
}

/* ---- waiting for the effect ---- */

typedef enum Effect {
        EFFECT_WAITING,
        EFFECT_DONE,
        EFFECT_FAILED,
} Effect;

/* What a verb waits for: VERB on TARGET, called at SINCE (CLOCK_REALTIME, µs), N_WORKERS for scale. */
typedef struct Want {
        const char *verb;
        const Target *target;
        uint64_t since;
        uint32_t n_workers;
} Want;

static bool state_is(const char *state, const char *a, const char *b) {
        return streq(strempty(state), a) || (b && streq(strempty(state), b));
}

static bool pool_is_down(const PoolInfo *p) {
        return state_is(p->state, "stopped", "failed") || state_is(p->state, "stopping", NULL);
}

/* A worker that took its new process since W->since and serves; FAILED if it is dead instead. */
static Effect worker_replaced(const Want *w, const WorkerInfo *wi, char **ret_why) {
        if (wi->started_at >= w->since && state_is(wi->state, "ready", "busy"))
                return EFFECT_DONE;
        if (state_is(wi->state, "dead", NULL) && wi->started_at >= w->since) {
                *ret_why = g_strdup_printf("Worker %s/%" PRIu32 " is dead: %s.", wi->pool_name, wi->slot,
                                           strempty(wi->last_exit));
                return EFFECT_FAILED;
        }
        return EFFECT_WAITING;
}

/* Where W stands in S: *RET_WHY says why it failed, *RET_PROGRESS how far it is. */
static Effect want_check(const Snapshot *s, const Want *w, char **ret_why, char **ret_progress) {
        const Target *t = w->target;
        PoolInfo *p = snapshot_find_pool(s, t->pool);
        unsigned done = 0, wanted = 0;

        if (!p) {
                *ret_why = g_strdup_printf("Pool \"%s\" is gone.", t->pool);
                return EFFECT_FAILED;
        }

        if (streq(w->verb, "start")) {
                if (state_is(p->state, "failed", NULL)) {
                        *ret_why = g_strdup_printf("Pool \"%s\" failed: %s", t->pool, strempty(p->failure_reason));
                        return EFFECT_FAILED;
                }
                if (state_is(p->state, "stopped", "stopping")) {
                        *ret_why = g_strdup_printf("Pool \"%s\" was stopped meanwhile.", t->pool);
                        return EFFECT_FAILED;
                }
                *ret_progress = g_strdup_printf("%s: %s, %" PRIu32 "/%" PRIu32 " workers ready", t->pool,
                                                strempty(p->state), p->workers_ready, p->workers_wanted);
                return state_is(p->state, "starting", NULL) ? EFFECT_WAITING : EFFECT_DONE;
        }

        if (streq(w->verb, "stop")) {
                for (guint i = 0; i < p->workers->len; i++) {
                        WorkerInfo *wi = p->workers->pdata[i];

                        wanted++;
                        if (state_is(wi->state, "dead", "stopped") || state_is(wi->state, "backoff", NULL))
                                done++;
                }
                *ret_progress = g_strdup_printf("%s: %s, %u/%u workers stopped", t->pool, strempty(p->state), done,
                                                wanted);
                return state_is(p->state, "stopped", "failed") && done == wanted ? EFFECT_DONE : EFFECT_WAITING;
        }

        if (pool_is_down(p)) {
                if (streq(w->verb, "scale"))
                        return EFFECT_DONE;     /* it takes effect when the pool starts */
                *ret_why = g_strdup_printf("Pool \"%s\" is %s%s%s", t->pool, strempty(p->state),
                                           p->failure_reason && p->failure_reason[0] ? ": " : ".",
                                           strempty(p->failure_reason));
                return EFFECT_FAILED;
        }

        if (streq(w->verb, "scale")) {
                for (guint i = 0; i < p->workers->len; i++) {
                        WorkerInfo *wi = p->workers->pdata[i];

                        if (wi->slot < w->n_workers && state_is(wi->state, "dead", NULL)) {
                                *ret_why = g_strdup_printf("Worker %s/%" PRIu32 " is dead: %s.", t->pool, wi->slot,
                                                           strempty(wi->last_exit));
                                return EFFECT_FAILED;
                        }
                }
                *ret_progress = g_strdup_printf("%s: %" PRIu32 "/%" PRIu32 " workers ready, %u slots", t->pool,
                                                p->workers_ready, w->n_workers, p->workers->len);
                return p->workers->len == w->n_workers && p->workers_ready >= w->n_workers ? EFFECT_DONE :
                                                                                               EFFECT_WAITING;
        }

        /* restart: every slot (or the one) has a worker started since the call, ready. */
        for (guint i = 0; i < p->workers->len; i++) {
                WorkerInfo *wi = p->workers->pdata[i];
                Effect e;

                if (t->has_slot ? wi->slot != t->slot : wi->slot >= p->workers_wanted)
                        continue;
                wanted++;
                e = worker_replaced(w, wi, ret_why);
                if (e == EFFECT_FAILED)
                        return e;
                if (e == EFFECT_DONE)
                        done++;
        }
        *ret_progress = g_strdup_printf("%s: %u/%u workers replaced", t->description, done, wanted);
        return done == wanted ? EFFECT_DONE : EFFECT_WAITING;
}

/* Signals that may mean progress: a property, an object going or coming, apiaryd leaving. */
static int watch_changes(sd_bus *bus) {
        static const char *const rules[] = {
                "type='signal',sender='" APIARY_BUS_NAME "',interface='org.freedesktop.DBus.Properties',"
                "member='PropertiesChanged',path_namespace='" APIARY_OBJECT_PATH "'",
                "type='signal',sender='" APIARY_BUS_NAME "',interface='org.freedesktop.DBus.ObjectManager'",
                "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                "member='NameOwnerChanged',arg0='" APIARY_BUS_NAME "'",
        };
        int r;

        if (ctl_bus_is_private())
                /* No bus daemon, no match rules: apiaryd sends what it is asked for. */
                return sd_bus_call_method(bus, APIARY_BUS_NAME, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE,
                                          "Subscribe", NULL, NULL, NULL);
        for (size_t i = 0; i < ELEMENTSOF(rules); i++) {
                r = sd_bus_add_match(bus, NULL, rules[i], NULL, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Until every one of WANTS (N) is done, or one failed: event driven, a look at the state after
 * each batch of signals. Returns the exit status. */
static int wait_effect(sd_bus *bus, const Want *wants, int n) {
        bool progress = false;
        int r;

        for (;;) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(snapshot_freep) Snapshot *s = NULL;
                g_autofree char *line = NULL;
                bool all_done = true;

                r = snapshot_load(bus, &s, &error);
                if (r < 0) {
                        ctl_progress_end();
                        return ctl_bus_error(r, &error, "Failed to follow the %s", wants[0].verb);
                }
                for (int i = 0; i < n; i++) {
                        g_autofree char *why = NULL, *text = NULL;
                        Effect e = want_check(s, &wants[i], &why, &text);

                        if (e == EFFECT_FAILED) {
                                ctl_progress_end();
                                ctl_error("Failed to %s %s: %s", wants[i].verb, wants[i].target->description, why);
                                return CTL_EXIT_FAILURE;
                        }
                        if (e == EFFECT_WAITING) {
                                all_done = false;
                                if (!line)
                                        line = g_steal_pointer(&text);
                        }
                }
                if (all_done) {
                        ctl_progress_end();
                        return CTL_EXIT_SUCCESS;
                }
                if (!progress)
                        progress = ctl_progress_begin("%s…", line ?: "waiting");
                else
                        ctl_progress_update("%s…", line ?: "waiting");

                /* What came while the state was read is taken in, and the state read again: a
                 * signal queued then would not wake sd_bus_wait(). Only with nothing new, wait. */
                {
                        bool any = false;

                        while ((r = sd_bus_process(bus, NULL)) > 0)
                                any = true;
                        if (r >= 0 && !any)
                                r = sd_bus_wait(bus, UINT64_MAX);
                }
                if (r < 0) {
                        ctl_progress_end();
                        return ctl_bus_error(r, NULL, "Failed to follow the %s", wants[0].verb);
                }
        }
}

/* ---- verbs on pools and workers ---- */

/* Calls METHOD on each of TARGETS (N), then waits for the effect of VERB unless it has none to wait
 * for or --no-block. Every target is tried, as systemctl does; the first failure's status is
 * returned, and only the targets whose call succeeded are waited for. */
static int call_and_wait(sd_bus *bus, const char *verb, const char *method, Target *targets, int n, bool wait,
                         uint32_t n_workers, const char *types, ...) {
        g_autofree Want *wants = g_new0(Want, n > 0 ? n : 1);
        uint64_t since = now_usec(CLOCK_REALTIME);
        int ret = CTL_EXIT_SUCCESS, n_wants = 0, r;

        if (!arg_no_block && wait) {
                r = watch_changes(bus);
                if (r < 0)
                        return ctl_bus_error(r, NULL, "Failed to follow apiaryd's state");
        }

        for (int i = 0; i < n; i++) {
                va_list ap;

                va_start(ap, types);
                r = target_callv(bus, &targets[i], method, verb, types, ap);
                va_end(ap);
                if (r != 0) {
                        if (ret == CTL_EXIT_SUCCESS)
                                ret = r;
                        continue;
                }
                wants[n_wants++] = (Want) { .verb = verb, .target = &targets[i], .since = since,
                                            .n_workers = n_workers };
        }
        if (arg_no_block || !wait || n_wants == 0)
                return ret;
        r = wait_effect(bus, wants, n_wants);
        return ret != CTL_EXIT_SUCCESS ? ret : r;
}

/* start, stop, pause, resume, restart. */
int verb_pool_method(sd_bus *bus, int argc, char **argv) {
        static const struct {
                const char *verb;
                const char *method;
                bool slot_allowed;
                bool wait;
        } table[] = {
                { "start", "Start", false, true },
                { "stop", "Stop", false, true },
                { "pause", "Pause", false, false },
                { "resume", "Resume", false, false },
                { "restart", "Restart", true, true },
        };
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(snapshot_freep) Snapshot *s = NULL;
        Target *targets = NULL;
        size_t k = 0;
        int r;

        while (!streq(table[k].verb, argv[0]))
                k++;
        assert(k < ELEMENTSOF(table));

        /* All targets are checked, and looked up, before anything is done: a typo must not leave
         * half a job. */
        r = snapshot_load(bus, &s, &error);
        if (r < 0)
                return ctl_bus_error(r, &error, "Failed to %s", argv[0]);
        r = targets_check(s, argv[0], argv + 1, argc - 1, table[k].slot_allowed, false, &targets);
        if (r != 0)
                return r;

        r = call_and_wait(bus, argv[0], table[k].method, targets, argc - 1, table[k].wait, 0, NULL);
        targets_free(targets, argc - 1);
        return r;
}

int verb_scale(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(snapshot_freep) Snapshot *s = NULL;
        Target *t = NULL;
        uint32_t n;
        int r;

        if (parse_u32(argv[2], &n) < 0)
                return ctl_usage_error("Expected a number of workers, got \"%s\".", argv[2]);
        r = snapshot_load(bus, &s, &error);
        if (r < 0)
                return ctl_bus_error(r, &error, "Failed to scale");
        r = targets_check(s, "scale", argv + 1, 1, false, false, &t);
        if (r != 0)
                return r;
        r = call_and_wait(bus, "scale", "Scale", t, 1, true, n, "u", n);
        targets_free(t, 1);
        return r;
}

int verb_kill(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(snapshot_freep) Snapshot *s = NULL;
        Target *t = NULL;
        int sig = SIGTERM, r;

        if (argc > 2) {
                r = parse_signal(argv[2], &sig);
                if (r < 0)
                        return ctl_usage_error("Unknown signal \"%s\": expected a name (TERM, SIGKILL, RTMIN+1) "
                                               "or a number from 1 to %i.", argv[2], SIGRTMAX);
        }
        r = snapshot_load(bus, &s, &error);
        if (r < 0)
                return ctl_bus_error(r, &error, "Failed to kill");
        r = targets_check(s, "kill", argv + 1, 1, true, true, &t);
        if (r != 0)
                return r;
        /* What a signal leads to is the restart policy's business: nothing to wait for. */
        r = call_and_wait(bus, "kill", "Kill", t, 1, false, 0, "i", (int32_t) sig);
        targets_free(t, 1);
        return r;
}

/* One change of PlanReload(), as a line: "echo: Plugin=echo.so → control.so". POOL "" is [Apiary]. */
static void print_change(const char *pool, const char *kind, const char *key, const char *old, const char *new) {
        const char *o = old[0] ? old : "(unset)", *n = new[0] ? new : "(unset)";

        printf("%s: ", pool[0] ? pool : "[Apiary]");
        if (streq(kind, "added"))
                printf("added, starts\n");
        else if (streq(kind, "removed"))
                printf("removed: drains, then goes\n");
        else if (streq(kind, "key"))
                printf("%s=%s → %s\n", key, o, n);
        else if (streq(kind, "plugin-key"))
                printf("[Plugin] %s=%s → %s\n", key, o, n);
        else if (streq(kind, "restart-key"))
                printf("%s=%s → %s, which takes effect when apiaryd restarts\n", key, o, n);
        else if (streq(kind, "roll"))
                printf("new code: its workers roll over one by one, and back if the new ones cannot start\n");
        else if (streq(kind, "scale"))
                printf("scales from %s to %s workers\n", old, new);
        else if (streq(kind, "keep-scale"))
                printf("keeps the %s workers of its scale (Workers=%s did not change)\n", old, new);
        else if (streq(kind, "drop-scale"))
                printf("does not keep the %s workers of its scale: Workers= changed, scales to %s\n", old, new);
        else
                printf("%s %s %s %s\n", kind, key, old, new);  /* a newer apiaryd's: as it is */
}

/* PlanReload(): prints what a reload changes now. */
static int print_plan(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *pool, *kind, *key, *old, *new;
        unsigned n = 0;
        int r;

        r = sd_bus_call_method(bus, APIARY_BUS_NAME, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE, "PlanReload", &error,
                               &reply, NULL);
        if (r < 0)
                return ctl_bus_error(r, &error, "Failed to reload apiaryd");
        r = sd_bus_message_enter_container(reply, 'a', "(sssss)");
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to read PlanReload()'s answer");
        while ((r = sd_bus_message_read(reply, "(sssss)", &pool, &kind, &key, &old, &new)) > 0) {
                print_change(pool, kind, key, old, new);
                n++;
        }
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to read PlanReload()'s answer");
        if (n == 0)
                printf("No changes.\n");
        fflush(stdout);
        return CTL_EXIT_SUCCESS;
}

int verb_reload(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        bool progress;
        int r;

        /* What it changes, first: it could still be refused, with the same error. */
        r = print_plan(bus);
        if (r != 0 || arg_dry_run)
                return r;

        r = sd_bus_message_new_method_call(bus, &m, APIARY_BUS_NAME, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE,
                                           "Reload");
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to create the Reload() call");
        if (arg_no_block) {
                r = sd_bus_send(bus, m, NULL);
                if (r < 0)
                        return ctl_bus_error(r, NULL, "Failed to reload apiaryd");
                return CTL_EXIT_SUCCESS;
        }

        progress = ctl_progress_begin("Reloading: new settings roll in…");
        /* It answers once the new settings run everywhere: rolling restarts take what they
         * take (StartTimeoutSec=, StopTimeoutSec= bound them), and systemd bounds the whole. */
        r = sd_bus_call(bus, m, USEC_INFINITY, &error, NULL);
        if (progress)
                ctl_progress_end();
        if (r < 0)
                return ctl_bus_error(r, &error, "Failed to reload apiaryd");
        printf("Reloaded.\n");
        return CTL_EXIT_SUCCESS;
}

