/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "apiary/plugin.h"
#include "ipc/link-supervisor.h"
#include "ipc/protocol.h"
#include "util/macro.h"

static int on_hello(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        LinkSupervisor *s = userdata;
        char *const *keys, *const *values;
        const char *path;
        uint32_t abi;
        size_t n;
        int r;

        r = sd_bus_message_read(msg, "u", &abi);
        if (r < 0)
                return r;
        if (abi != APIARY_PLUGIN_ABI_VERSION)
                return sd_bus_error_setf(error, SD_BUS_ERROR_NOT_SUPPORTED,
                                         "apiary-worker speaks plugin ABI %u, apiaryd %u: install matching versions.",
                                         abi, APIARY_PLUGIN_ABI_VERSION);

        s->ops->hello(s->userdata, &path, &keys, &values, &n);
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "s", path);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ss)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = sd_bus_message_append(reply, "(ss)", keys[i], values[i]);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int forward(sd_bus_message_handler_t handler, sd_bus_message *msg, LinkSupervisor *s, sd_bus_error *error) {
        if (!handler)
                return sd_bus_error_setf(error, SD_BUS_ERROR_NOT_SUPPORTED, "This peer may not call %s().",
                                         sd_bus_message_get_member(msg));
        return handler(msg, s->userdata, error);
}

static int on_ready(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        LinkSupervisor *s = userdata;

        return forward(s->ops->ready, msg, s, error);
}

static int on_failed(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        LinkSupervisor *s = userdata;

        return forward(s->ops->failed, msg, s, error);
}

static int on_submit(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        LinkSupervisor *s = userdata;

        return forward(s->ops->submit, msg, s, error);
}

static int on_results(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        LinkSupervisor *s = userdata;

        return forward(s->ops->results, msg, s, error);
}

static const sd_bus_vtable link_supervisor_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Hello",
                                SD_BUS_ARGS("u", abi_version),
                                SD_BUS_RESULT("s", plugin_path, "a(ss)", config),
                                on_hello, 0),
        SD_BUS_METHOD_WITH_ARGS("Ready",
                                SD_BUS_ARGS("s", plugin_name, "s", plugin_version, "t", monotonic_usec),
                                SD_BUS_NO_RESULT,
                                on_ready, 0),
        SD_BUS_METHOD_WITH_ARGS("Failed",
                                SD_BUS_ARGS("s", error_name, "s", message),
                                SD_BUS_NO_RESULT,
                                on_failed, 0),
        SD_BUS_METHOD_WITH_ARGS("Submit",
                                SD_BUS_ARGS("s", pool, "ay", payload),
                                SD_BUS_RESULT("ay", result),
                                on_submit, 0),
        SD_BUS_METHOD_WITH_ARGS("Results",
                                SD_BUS_ARGS("a(tbay)", results),
                                SD_BUS_NO_RESULT,
                                on_results, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

int link_supervisor_add(sd_bus *link, LinkSupervisor *s) {
        return sd_bus_add_object_vtable(link, NULL, SUPERVISOR_OBJECT_PATH, SUPERVISOR_INTERFACE,
                                        link_supervisor_vtable, s);
}
