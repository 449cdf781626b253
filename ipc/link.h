/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/* Sets up the supervisor's end: a D-Bus server on FD (which it consumes, also on failure),
 * attached to EVENT (if not NULL: else the caller watches it, see link-watch.h). The peer authenticates with EXTERNAL. FD is one end of a socketpair made for
 * one spawned child, whose other end no other process holds: that, not credentials, is what ties
 * the connection to the worker (SO_PEERCRED on a socketpair names its creator, us). */
int link_server_new(sd_bus **ret, int fd, sd_id128_t server_id, sd_event *event, const char *description);

/* Whether more than MAX messages wait in BUS's write queue for a peer that does not read them
 * (the kernel's socket buffer is full by then): how a filter tells that the peer must go before
 * it makes us queue more. The count goes to *RET_N. */
bool link_queue_exceeded(sd_bus *bus, uint64_t max, uint64_t *ret_n);

/* Sets up the worker's end: a D-Bus client on FD (consumed, also on failure), attached to EVENT. */
int link_client_new(sd_bus **ret, int fd, sd_event *event, const char *description);
