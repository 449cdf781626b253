/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

/*
 * The small calls of the private link (docs/worker-protocol.md), written and read here, each
 * with its signature from ipc/protocol.h; the task messages are ipc/task-codec.h's. Callers use
 * link_call_*() (apiary-worker calls Supervisor1, apiaryd calls Zygote1.Fork), servers read the
 * arguments with link_read_*() and answer with link_reply_*(). Strings and arrays read point
 * into the message.
 */

/* Supervisor1.Hello(u abi_version) → (s plugin_path, a(ss) config, ah claims): a worker gets its
 * pool's page of claims (ipc/claim.h), a zygote none (CLAIMS_FD < 0). */
typedef int (*link_setting_fn)(const char *key, const char *value, void *userdata);
int link_call_hello(sd_bus *link, uint32_t abi, sd_bus_error *error, sd_bus_message **ret_reply);
int link_read_hello(sd_bus_message *m, uint32_t *ret_abi);
int link_reply_hello(sd_bus_message *call, const char *plugin_path, char *const *keys, char *const *values,
                     size_t n, int claims_fd);
/* Calls FN for each setting, in order; stops at FN's first negative return, which it returns. */
int link_read_hello_reply(sd_bus_message *reply, const char **ret_plugin_path, link_setting_fn fn, void *userdata,
                          int *ret_claims_fd);

/* Supervisor1.Ready(s plugin_name, s plugin_version, t monotonic_usec) */
int link_call_ready(sd_bus *link, const char *name, const char *version, uint64_t monotonic_usec);
int link_read_ready(sd_bus_message *m, const char **ret_name, const char **ret_version, uint64_t *ret_monotonic_usec);

/* Supervisor1.Failed(s error_name, s message) */
int link_call_failed(sd_bus *link, const char *error_name, const char *message);
int link_read_failed(sd_bus_message *m, const char **ret_error_name, const char **ret_message);

/* Supervisor1.Submit(s pool, ay payload) → (ay result), answered to CALLBACK without a bus
 * timeout: the task takes as long as its pool lets it. */
int link_call_submit(sd_bus *link, const char *pool, const void *payload, size_t size,
                     sd_bus_message_handler_t callback, void *userdata);
int link_read_submit_reply(sd_bus_message *reply, const void **ret_data, size_t *ret_size);

/* Zygote1.Fork(u slot, h link, h claims) → (u pid), answered to CALLBACK through *RET_SLOT. */
int link_call_fork(sd_bus *link, uint32_t slot, int fd, int claims_fd, uint64_t timeout_usec, sd_bus_message_handler_t callback,
                   void *userdata, sd_bus_slot **ret_slot);
int link_read_fork(sd_bus_message *m, uint32_t *ret_slot, int *ret_fd, int *ret_claims_fd);
int link_reply_fork(sd_bus_message *call, pid_t pid);
/* 0 with the PID, or -EBADMSG for a reply that says none (an error, or PID 0). */
int link_read_fork_reply(sd_bus_message *reply, pid_t *ret_pid);
