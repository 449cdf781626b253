/* SPDX-License-Identifier: MIT */
/*
 * show, is-active and is-failed: the properties of apiaryd, a pool or a worker as NAME=VALUE lines,
 * and a pool's state as an exit status, the way systemctl prints and answers them.
 */
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tools/apiaryctl/ctl-format.h"
#include "tools/apiaryctl/ctl-state.h"
#include "tools/apiaryctl/ctl-target.h"
#include "tools/apiaryctl/ctl.h"

/* systemctl's exit statuses for is-active (LSB "program is not running") and is-failed. */
#define CTL_EXIT_NOT_ACTIVE 3
#define CTL_EXIT_NOT_FAILED 1

static bool property_wanted(const char *name) {
        return !arg_properties || g_strv_contains((const char *const *) arg_properties, name);
}

/* show [POOL|POOL/SLOT]: Properties.GetAll of the object's interface, in the order it sends them. */
int verb_show(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(target_done) Target t = {};
        g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
        const char *path = APIARY_OBJECT_PATH, *interface = APIARY_MANAGER_INTERFACE, *what = "apiaryd";
        int r;

        if (argc > 1) {
                r = target_parse(argv[1], true, false, &t);
                if (r != 0)
                        return r;
                path = t.path;
                interface = t.has_slot ? APIARY_WORKER_INTERFACE : APIARY_POOL_INTERFACE;
                what = t.description;
        }

        r = ctl_call_looking(bus, path, "org.freedesktop.DBus.Properties", "GetAll", &error, &reply, "s", interface);
        if (r < 0 && argc > 1 && sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_OBJECT))
                return target_not_found(bus, &t, "show", &error);
        if (r < 0)
                return ctl_bus_error(r, &error, "Failed to read the properties of %s", what);

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                g_autoptr(GString) value = g_string_new(NULL);
                const char *name;

                r = sd_bus_message_read(reply, "s", &name);
                if (r >= 0)
                        r = ctl_append_value(reply, value, VALUE_PLAIN);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        break;
                if (!property_wanted(name))
                        continue;
                g_hash_table_add(seen, (char *) name);
                if (arg_value)
                        puts(value->str);
                else
                        printf("%s=%s\n", name, value->str);
        }
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to read the properties of %s", what);

        /* Asked for one that is not there: a typo, most likely. systemctl says nothing; say so. */
        for (char **p = arg_properties; p && *p; p++)
                if (!g_hash_table_contains(seen, *p)) {
                        ctl_error("%s has no property \"%s\" (apiaryctl show%s%s lists them).", what, *p,
                                  argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
                        return CTL_EXIT_NOT_FOUND;
                }
        return CTL_EXIT_SUCCESS;
}

/* The State of each pool named, one per line (unless --quiet); "unknown" for one that does not
 * exist. Returns how many are in one of STATES, or a negative exit status. */
static int count_pools_in(sd_bus *bus, int argc, char **argv, const char *const *states) {
        int n = 0;

        for (int i = 1; i < argc; i++) {
                _cleanup_(target_done) Target t = {};
                int r = target_parse(argv[i], false, false, &t);

                if (r != 0)
                        return -r;
        }
        for (int i = 1; i < argc; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(target_done) Target t = {};
                const char *state = NULL;
                int r;

                (void) target_parse(argv[i], false, false, &t);
                r = ctl_call_looking(bus, t.path, "org.freedesktop.DBus.Properties", "Get", &error, &reply, "ss",
                                     APIARY_POOL_INTERFACE, "State");
                if (r >= 0)
                        r = sd_bus_message_read(reply, "v", "s", &state);
                /* No such pool, or no apiaryd to have it: not active, not failed. */
                if (r < 0 && !sd_bus_error_has_names(&error, SD_BUS_ERROR_UNKNOWN_OBJECT,
                                                     SD_BUS_ERROR_UNKNOWN_INTERFACE, SD_BUS_ERROR_SERVICE_UNKNOWN,
                                                     SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                        return -ctl_bus_error(r, &error, "Failed to read the state of %s", t.description);
                if (!arg_quiet)
                        puts(state ?: "unknown");
                if (state && g_strv_contains(states, state))
                        n++;
        }
        return n;
}

/* is-active POOL...: 0 if one of them serves (running, or degraded: fewer workers, but serving),
 * 3 otherwise, as systemctl is-active. */
int verb_is_active(sd_bus *bus, int argc, char **argv) {
        static const char *const active[] = { "running", "degraded", NULL };
        int n = count_pools_in(bus, argc, argv, active);

        if (n < 0)
                return -n;
        return n > 0 ? CTL_EXIT_SUCCESS : CTL_EXIT_NOT_ACTIVE;
}

/* is-failed POOL...: 0 if one of them failed, 1 otherwise, as systemctl is-failed. */
int verb_is_failed(sd_bus *bus, int argc, char **argv) {
        static const char *const failed[] = { "failed", NULL };
        int n = count_pools_in(bus, argc, argv, failed);

        if (n < 0)
                return -n;
        return n > 0 ? CTL_EXIT_SUCCESS : CTL_EXIT_NOT_FAILED;
}
