/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <systemd/sd-bus.h>

/*
 * The supervisor's end of org.apiary.Supervisor1 on a private link (docs/worker-protocol.md),
 * written once for every kind of peer, each signature once: a worker makes all five calls, a
 * zygote Hello, Ready and Failed only. What each call does is the peer's (LinkSupervisorOps);
 * Hello's ABI check and reply are done here.
 */
typedef struct LinkSupervisorOps {
        /* Hello(u abi) → (s plugin_path, a(ss) config, ah claims): what the peer runs, and for a
         * worker its pool's page of claims (the fd stays the caller's; -1: none). */
        void (*hello)(void *userdata, const char **ret_plugin_path, char *const **ret_keys,
                      char *const **ret_values, size_t *ret_n, int *ret_claims_fd);
        sd_bus_message_handler_t ready;         /* Ready(s name, s version, t monotonic_usec) */
        sd_bus_message_handler_t failed;        /* Failed(s error_name, s message) */
        sd_bus_message_handler_t submit;        /* Submit(s pool, ay payload) → (ay result); NULL: refused */
        sd_bus_message_handler_t results;       /* Results(a(tbtay)), no reply; NULL: refused */
} LinkSupervisorOps;

typedef struct LinkSupervisor {
        const LinkSupervisorOps *ops;
        void *userdata;                         /* what the handlers get */
} LinkSupervisor;

/* Serves org.apiary.Supervisor1 on LINK through S, which must live as long as LINK. */
int link_supervisor_add(sd_bus *link, LinkSupervisor *s);
