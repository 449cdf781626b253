/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "ipc/protocol.h"
#include "ipc/task-codec.h"

int task_codec_read_dispatch(sd_bus_message *m, uint32_t *ret_max_running, task_codec_dispatch_fn fn,
                             void *userdata) {
        const void *payload;
        uint64_t id;
        size_t size;
        int r;

        r = sd_bus_message_read(m, "u", ret_max_running);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'a', "(" LINK_TASK ")");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'r', LINK_TASK)) > 0) {
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
        uint64_t id, run_usec;
        size_t size;
        int ok, r;

        r = sd_bus_message_enter_container(m, 'a', "(" LINK_RESULT ")");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'r', LINK_RESULT)) > 0) {
                r = sd_bus_message_read(m, "tbt", &id, &ok, &run_usec);
                if (r < 0)
                        return r;
                r = sd_bus_message_read_array(m, 'y', &data, &size);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                r = fn(id, ok, run_usec, data, size, userdata);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

/* A no-reply call of LINK on PATH's INTERFACE, its array of ELEMENT open (after a leading u if
 * HEAD is given). */
static int new_array_call(sd_bus *link, const char *path, const char *interface, const char *member,
                          const uint32_t *head, const char *element, sd_bus_message **ret) {
        sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(link, &m, NULL, path, interface, member);
        if (r >= 0)
                r = sd_bus_message_set_expect_reply(m, false);
        if (r >= 0 && head)
                r = sd_bus_message_append(m, "u", *head);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', element);
        if (r < 0) {
                sd_bus_message_unref(m);
                return r;
        }
        *ret = m;
        return 0;
}

int task_codec_new_dispatch(sd_bus *link, uint32_t max_running, sd_bus_message **ret) {
        return new_array_call(link, WORKER_OBJECT_PATH, WORKER_INTERFACE, "Dispatch", &max_running, "(" LINK_TASK ")",
                              ret);
}

int task_codec_add_task(sd_bus_message *m, uint64_t id, const void *payload, size_t size) {
        int r;

        r = sd_bus_message_open_container(m, 'r', LINK_TASK);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", id);
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', payload, size);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

int task_codec_new_results(sd_bus *link, sd_bus_message **ret) {
        return new_array_call(link, SUPERVISOR_OBJECT_PATH, SUPERVISOR_INTERFACE, "Results", NULL, "(" LINK_RESULT ")",
                              ret);
}

int task_codec_add_result(sd_bus_message *m, uint64_t id, bool ok, uint64_t run_usec, const void *data,
                          size_t size) {
        int r;

        r = sd_bus_message_open_container(m, 'r', LINK_RESULT);
        if (r >= 0)
                r = sd_bus_message_append(m, "tbt", id, (int) ok, run_usec);
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', data, size);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

int task_codec_close(sd_bus_message *m) {
        return sd_bus_message_close_container(m);
}
