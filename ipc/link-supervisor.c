/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "apiary/plugin.h"
#include "ipc/link-calls.h"
#include "ipc/link-supervisor.h"
#include "ipc/protocol.h"
#include "util/macro.h"

static int on_hello(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        LinkSupervisor *s = userdata;
        char *const *keys, *const *values;
        const char *path;
        int claims_fd = -1;
        uint32_t abi;
        size_t n;
        int r;

        r = link_read_hello(msg, &abi);
        if (r < 0)
                return r;
        if (abi != APIARY_PLUGIN_ABI_VERSION)
                return sd_bus_error_setf(error, SD_BUS_ERROR_NOT_SUPPORTED,
                                         "apiary-worker speaks plugin ABI %u, apiaryd %u: install matching versions.",
                                         abi, APIARY_PLUGIN_ABI_VERSION);

        s->ops->hello(s->userdata, &path, &keys, &values, &n, &claims_fd);
        return link_reply_hello(msg, path, keys, values, n, claims_fd);
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
        SD_BUS_METHOD_WITH_NAMES("Hello", LINK_HELLO_IN, SD_BUS_PARAM(abi_version),
                                 LINK_HELLO_OUT, SD_BUS_PARAM(plugin_path) SD_BUS_PARAM(config) SD_BUS_PARAM(claims),
                                 on_hello, 0),
        SD_BUS_METHOD_WITH_NAMES("Ready", LINK_READY_IN,
                                 SD_BUS_PARAM(plugin_name) SD_BUS_PARAM(plugin_version) SD_BUS_PARAM(monotonic_usec),
                                 NULL,, on_ready, 0),
        SD_BUS_METHOD_WITH_NAMES("Failed", LINK_FAILED_IN, SD_BUS_PARAM(error_name) SD_BUS_PARAM(message),
                                 NULL,, on_failed, 0),
        SD_BUS_METHOD_WITH_NAMES("Submit", LINK_SUBMIT_IN, SD_BUS_PARAM(pool) SD_BUS_PARAM(payload),
                                 LINK_SUBMIT_OUT, SD_BUS_PARAM(result),
                                 on_submit, 0),
        SD_BUS_METHOD_WITH_NAMES("Results", LINK_RESULTS_IN, SD_BUS_PARAM(results),
                                 NULL,, on_results, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

int link_supervisor_add(sd_bus *link, LinkSupervisor *s) {
        return sd_bus_add_object_vtable(link, NULL, SUPERVISOR_OBJECT_PATH, SUPERVISOR_INTERFACE,
                                        link_supervisor_vtable, s);
}
