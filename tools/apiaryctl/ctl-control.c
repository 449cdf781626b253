/* SPDX-License-Identifier: MIT */
/*
 * The verbs that steer apiaryd: start, stop, pause, resume, restart, scale, kill and reload. Every
 * target is checked, syntax and existence, before anything is done; each verb then waits for its
 * effect unless --no-block (docs/apiaryctl.md).
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/apiaryctl/ctl.h"

/* ---- targets: POOL or POOL/SLOT ---- */

typedef struct Target {
        char *pool;
        bool has_slot;
        uint32_t slot;
        char *path;
        char *description;      /* pool "echo", worker echo/1 */
} Target;

static void target_done(Target *t) {
        free(t->pool);
        free(t->path);
        free(t->description);
}

/* Pool names have no '/' (see pool_name_is_valid() in config/), so the last one splits off a slot. */
static int target_parse(const char *s, bool slot_allowed, bool slot_required, Target *ret) {
        _cleanup_(freep) char *pool = NULL, *pool_path = NULL, *path = NULL, *description = NULL;
        const char *slash = strrchr(s, '/');
        uint32_t slot = 0;
        int r;

        if (slash) {
                if (!slot_allowed)
                        return ctl_usage_error("Expected a pool name, not a worker: \"%s\".", s);
                if (parse_u32(slash + 1, &slot) < 0 || slash == s)
                        return ctl_usage_error("Expected POOL/SLOT with a decimal slot number: \"%s\".", s);
                pool = strndup(s, (size_t) (slash - s));
        } else {
                if (slot_required)
                        return ctl_usage_error("Expected a worker as POOL/SLOT, e.g. echo/0: \"%s\".", s);
                pool = strdup(s);
        }
        if (!pool)
                return ctl_oom();
        if (pool[0] == '\0')
                return ctl_usage_error("Expected a pool name, got an empty one.");

        r = sd_bus_path_encode(APIARY_POOL_PREFIX, pool, &pool_path);
        if (r < 0)
                return ctl_oom();
        if (slash) {
                if (asprintf(&path, "%s/%" PRIu32, pool_path, slot) < 0 ||
                    asprintf(&description, "worker %s/%" PRIu32, pool, slot) < 0)
                        return ctl_oom();
        } else {
                path = TAKE_PTR(pool_path);
                if (asprintf(&description, "pool \"%s\"", pool) < 0)
                        return ctl_oom();
        }

        *ret = (Target) {
                .pool = TAKE_PTR(pool),
                .has_slot = slash != NULL,
                .slot = slot,
                .path = TAKE_PTR(path),
                .description = TAKE_PTR(description),
        };
        return 0;
}

/* An object that does not exist gets UnknownObject, which does not say whether the pool or only
 * the slot is missing: ask the pool. */
static int target_not_found(sd_bus *bus, const Target *t, const char *verb, const sd_bus_error *error) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(freep) char *pool_path = NULL, *name = NULL;
        bool pool_exists = false;
        int r;

        if (t->has_slot && sd_bus_path_encode(APIARY_POOL_PREFIX, t->pool, &pool_path) >= 0) {
                r = sd_bus_get_property_string(bus, APIARY_BUS_NAME, pool_path, APIARY_POOL_INTERFACE, "Name", &e,
                                               &name);
                pool_exists = r >= 0;
        }

        fprintf(stderr, "Failed to %s %s: ", verb, t->description);
        if (pool_exists)
                fprintf(stderr, "Pool \"%s\" has no slot %" PRIu32 ".", t->pool, t->slot);
        else
                fprintf(stderr, "No pool named \"%s\".", t->pool);
        if (arg_verbose)
                fprintf(stderr, " (%s)", error->name);
        fputc('\n', stderr);
        return CTL_EXIT_NOT_FOUND;
}

/* Calls METHOD on the pool or worker object of T, with arguments TYPES, ... (or none). */
static int target_call(sd_bus *bus, const Target *t, const char *method, const char *verb, const char *types, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, APIARY_BUS_NAME, t->path,
                                           t->has_slot ? APIARY_WORKER_INTERFACE : APIARY_POOL_INTERFACE, method);
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to create the %s() call", method);
        if (types) {
                va_list ap;

                va_start(ap, types);
                r = sd_bus_message_appendv(m, types, ap);
                va_end(ap);
                if (r < 0)
                        return ctl_bus_error(r, NULL, "Failed to create the %s() call", method);
        }

        r = sd_bus_call(bus, m, 0, &error, NULL);
        if (r >= 0)
                return CTL_EXIT_SUCCESS;
        if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT))
                return target_not_found(bus, t, verb, &error);
        return ctl_bus_error(r, &error, "Failed to %s %s", verb, t->description);
}

/* ---- verbs on pools and workers ---- */

/* start, stop, pause, resume, restart: each target in turn; the first failure's status is
 * returned, but the other targets are still tried, as systemctl does. */
int verb_pool_method(sd_bus *bus, int argc, char **argv) {
        static const struct {
                const char *verb;
                const char *method;
                bool slot_allowed;
        } table[] = {
                { "start", "Start", false },
                { "stop", "Stop", false },
                { "pause", "Pause", false },
                { "resume", "Resume", false },
                { "restart", "Restart", true },
        };
        const char *method = NULL;
        bool slot_allowed = false;
        int ret = CTL_EXIT_SUCCESS;

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (streq(table[i].verb, argv[0])) {
                        method = table[i].method;
                        slot_allowed = table[i].slot_allowed;
                }
        assert(method);

        /* All targets are checked before anything is done: a typo must not leave half a job. */
        for (int i = 1; i < argc; i++) {
                Target t;
                int r = target_parse(argv[i], slot_allowed, false, &t);

                if (r != 0)
                        return r;
                target_done(&t);
        }

        for (int i = 1; i < argc; i++) {
                Target t = {};
                int r;

                (void) target_parse(argv[i], slot_allowed, false, &t);
                r = target_call(bus, &t, method, argv[0], NULL);
                target_done(&t);
                if (r != 0 && ret == CTL_EXIT_SUCCESS)
                        ret = r;
        }
        return ret;
}

int verb_scale(sd_bus *bus, int argc, char **argv) {
        Target t;
        uint32_t n;
        int r;

        if (parse_u32(argv[2], &n) < 0)
                return ctl_usage_error("Expected a number of workers, got \"%s\".", argv[2]);
        r = target_parse(argv[1], false, false, &t);
        if (r != 0)
                return r;
        r = target_call(bus, &t, "Scale", "scale", "u", n);
        target_done(&t);
        return r;
}

int verb_kill(sd_bus *bus, int argc, char **argv) {
        Target t;
        int sig = SIGTERM, r;

        if (argc > 2) {
                r = parse_signal(argv[2], &sig);
                if (r < 0)
                        return ctl_usage_error("Unknown signal \"%s\": expected a name (TERM, SIGKILL, RTMIN+1) "
                                               "or a number from 1 to %i.", argv[2], SIGRTMAX);
        }
        r = target_parse(argv[1], true, true, &t);
        if (r != 0)
                return r;
        r = target_call(bus, &t, "Kill", "kill", "i", (int32_t) sig);
        target_done(&t);
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

