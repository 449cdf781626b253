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

static int print_value(sd_bus_message *m, GString *out);

/* The elements of an array or the fields of a struct, separated by a space. */
static int print_container(sd_bus_message *m, char type, const char *contents, GString *out) {
        bool first = true;
        int r;

        r = sd_bus_message_enter_container(m, type, contents);
        if (r < 0)
                return r;
        for (;;) {
                size_t before = out->len;

                if (!first)
                        g_string_append_c(out, ' ');
                r = print_value(m, out);
                if (r < 0)
                        return r;
                if (r == 0) {
                        g_string_truncate(out, before);
                        break;
                }
                first = false;
        }
        return sd_bus_message_exit_container(m);
}

/* One value of any type, as busctl prints it but without quotes: a byte array as text if it is
 * text. Returns 0 at the end of the enclosing container. */
static int print_value(sd_bus_message *m, GString *out) {
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r <= 0)
                return r;

        switch (type) {
        case SD_BUS_TYPE_ARRAY:
                if (streq(contents, "y")) {
                        const void *data;
                        size_t size;

                        r = sd_bus_message_read_array(m, 'y', &data, &size);
                        if (r < 0)
                                return r;
                        if (g_utf8_validate(data, (gssize) size, NULL) && !memchr(data, '\0', size))
                                g_string_append_len(out, data, (gssize) size);
                        else
                                for (size_t i = 0; i < size; i++)
                                        g_string_append_printf(out, "%s%02x", i > 0 ? " " : "",
                                                               ((const uint8_t *) data)[i]);
                        return 1;
                }
                __attribute__((fallthrough));
        case SD_BUS_TYPE_STRUCT:
        case SD_BUS_TYPE_DICT_ENTRY:
        case SD_BUS_TYPE_VARIANT:
                r = print_container(m, type, contents, out);
                return r < 0 ? r : 1;
        case SD_BUS_TYPE_STRING:
        case SD_BUS_TYPE_OBJECT_PATH:
        case SD_BUS_TYPE_SIGNATURE: {
                const char *s;

                r = sd_bus_message_read_basic(m, type, &s);
                if (r >= 0)
                        g_string_append(out, s);
                break;
        }
        case SD_BUS_TYPE_BOOLEAN: {
                int b;

                r = sd_bus_message_read_basic(m, type, &b);
                if (r >= 0)
                        g_string_append(out, b ? "yes" : "no");
                break;
        }
        case SD_BUS_TYPE_DOUBLE: {
                double d;

                r = sd_bus_message_read_basic(m, type, &d);
                if (r >= 0)
                        g_string_append_printf(out, "%g", d);
                break;
        }
        case SD_BUS_TYPE_BYTE: {
                uint8_t v;

                r = sd_bus_message_read_basic(m, type, &v);
                if (r >= 0)
                        g_string_append_printf(out, "%u", v);
                break;
        }
        case SD_BUS_TYPE_INT16:
        case SD_BUS_TYPE_INT32:
        case SD_BUS_TYPE_INT64: {
                union { int16_t n; int32_t i; int64_t x; } v;

                r = sd_bus_message_read_basic(m, type, &v);
                if (r >= 0)
                        g_string_append_printf(out, "%" PRIi64,
                                               type == SD_BUS_TYPE_INT16 ? (int64_t) v.n :
                                               type == SD_BUS_TYPE_INT32 ? (int64_t) v.i : v.x);
                break;
        }
        case SD_BUS_TYPE_UINT16:
        case SD_BUS_TYPE_UINT32:
        case SD_BUS_TYPE_UINT64: {
                union { uint16_t q; uint32_t u; uint64_t t; } v;

                r = sd_bus_message_read_basic(m, type, &v);
                if (r >= 0)
                        g_string_append_printf(out, "%" PRIu64,
                                               type == SD_BUS_TYPE_UINT16 ? (uint64_t) v.q :
                                               type == SD_BUS_TYPE_UINT32 ? (uint64_t) v.u : v.t);
                break;
        }
        default:
                /* Unix fds and anything newer: say what it is rather than guess. */
                g_string_append_printf(out, "[%c]", type);
                r = sd_bus_message_skip(m, (char[]) { type, '\0' });
                break;
        }
        return r < 0 ? r : 1;
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
                        r = print_container(reply, 'v', NULL, value);
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
