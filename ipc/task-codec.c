/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "ipc/task-codec.h"

int task_codec_read_dispatch(sd_bus_message *m, task_codec_dispatch_fn fn, void *userdata) {
        const void *payload;
        uint64_t id;
        size_t size;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "(tay)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'r', "tay")) > 0) {
                r = sd_bus_message_read(m, "t", &id);
                if (r < 0)
                        return r;
                r = sd_bus_message_read_array(m, 'y', &payload, &size);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                r = fn(id, payload, size, userdata);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int task_codec_read_results(sd_bus_message *m, task_codec_result_fn fn, void *userdata) {
        const void *data;
        uint64_t id;
        size_t size;
        int ok, r;

        r = sd_bus_message_enter_container(m, 'a', "(tbay)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'r', "tbay")) > 0) {
                r = sd_bus_message_read(m, "tb", &id, &ok);
                if (r < 0)
                        return r;
                r = sd_bus_message_read_array(m, 'y', &data, &size);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                r = fn(id, ok, data, size, userdata);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}
