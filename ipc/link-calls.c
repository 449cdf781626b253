/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "ipc/link-calls.h"
#include "ipc/protocol.h"
#include "util/macro.h"

int link_call_hello(sd_bus *link, uint32_t abi, sd_bus_error *error, sd_bus_message **ret_reply) {
        return sd_bus_call_method(link, NULL, SUPERVISOR_OBJECT_PATH, SUPERVISOR_INTERFACE, "Hello", error, ret_reply,
                                  LINK_HELLO_IN, abi);
}

int link_read_hello(sd_bus_message *m, uint32_t *ret_abi) {
        return sd_bus_message_read(m, LINK_HELLO_IN, ret_abi);
}

int link_reply_hello(sd_bus_message *call, const char *plugin_path, char *const *keys, char *const *values,
                     size_t n, int claims_fd) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(call, &reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "s", plugin_path);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(" LINK_SETTING ")");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = sd_bus_message_append(reply, "(" LINK_SETTING ")", keys[i], values[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = claims_fd >= 0 ? sd_bus_message_append(reply, "ah", 1, claims_fd)
                                   : sd_bus_message_append(reply, "ah", 0);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

int link_read_hello_reply(sd_bus_message *reply, const char **ret_plugin_path, link_setting_fn fn, void *userdata,
                          int *ret_claims_fd) {
        const char *k, *v;
        int fd = -1, r;

        r = sd_bus_message_read(reply, "s", ret_plugin_path);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "(" LINK_SETTING ")");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(reply, "(" LINK_SETTING ")", &k, &v)) > 0) {
                r = fn(k, v, userdata);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "h");
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "h", &fd);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;
        *ret_claims_fd = fd;    /* the message's, or -1: dup it to keep it */
        return 0;
}

int link_call_ready(sd_bus *link, const char *name, const char *version, uint64_t monotonic_usec) {
        return sd_bus_call_method(link, NULL, SUPERVISOR_OBJECT_PATH, SUPERVISOR_INTERFACE, "Ready", NULL, NULL,
                                  LINK_READY_IN, name, version, monotonic_usec);
}

int link_read_ready(sd_bus_message *m, const char **ret_name, const char **ret_version, uint64_t *ret_monotonic_usec) {
        return sd_bus_message_read(m, LINK_READY_IN, ret_name, ret_version, ret_monotonic_usec);
}

int link_call_failed(sd_bus *link, const char *error_name, const char *message) {
        return sd_bus_call_method(link, NULL, SUPERVISOR_OBJECT_PATH, SUPERVISOR_INTERFACE, "Failed", NULL, NULL,
                                  LINK_FAILED_IN, error_name, message);
}

int link_read_failed(sd_bus_message *m, const char **ret_error_name, const char **ret_message) {
        return sd_bus_message_read(m, LINK_FAILED_IN, ret_error_name, ret_message);
}

int link_call_submit(sd_bus *link, const char *pool, const void *payload, size_t size,
                     sd_bus_message_handler_t callback, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(link, &m, NULL, SUPERVISOR_OBJECT_PATH, SUPERVISOR_INTERFACE, "Submit");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", pool);
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', payload, size);
        if (r < 0)
                return r;
        return sd_bus_call_async(link, NULL, m, callback, userdata, UINT64_MAX);
}

int link_read_submit_reply(sd_bus_message *reply, const void **ret_data, size_t *ret_size) {
        return sd_bus_message_read_array(reply, 'y', ret_data, ret_size);
}

int link_call_fork(sd_bus *link, uint32_t slot, int fd, int claims_fd, uint64_t timeout_usec, sd_bus_message_handler_t callback,
                   void *userdata, sd_bus_slot **ret_slot) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(link, &m, NULL, ZYGOTE_OBJECT_PATH, ZYGOTE_INTERFACE, "Fork");
        if (r >= 0)
                /* sd-bus sends a copy of the fd: the caller's stays the caller's. */
                r = sd_bus_message_append(m, LINK_FORK_IN, slot, fd, claims_fd);
        if (r < 0)
                return r;
        return sd_bus_call_async(link, ret_slot, m, callback, userdata, timeout_usec);
}

int link_read_fork(sd_bus_message *m, uint32_t *ret_slot, int *ret_fd, int *ret_claims_fd) {
        return sd_bus_message_read(m, LINK_FORK_IN, ret_slot, ret_fd, ret_claims_fd);
}

int link_reply_fork(sd_bus_message *call, pid_t pid) {
        return sd_bus_reply_method_return(call, LINK_FORK_OUT, (uint32_t) pid);
}

int link_read_fork_reply(sd_bus_message *reply, pid_t *ret_pid) {
        uint32_t pid;

        if (sd_bus_message_get_error(reply) || sd_bus_message_read(reply, LINK_FORK_OUT, &pid) <= 0 || pid == 0)
                return -EBADMSG;
        *ret_pid = (pid_t) pid;
        return 0;
}
