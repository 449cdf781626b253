/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/* Sets up the supervisor's end: a D-Bus server on FD (which it consumes, also on failure),
 * attached to EVENT. The peer authenticates with EXTERNAL. FD is one end of a socketpair made for
 * one spawned child, whose other end no other process holds: that, not credentials, is what ties
 * the connection to the worker (SO_PEERCRED on a socketpair names its creator, us). */
int link_server_new(sd_bus **ret, int fd, sd_id128_t server_id, sd_event *event, const char *description);

/* Sets up the worker's end: a D-Bus client on FD (consumed, also on failure), attached to EVENT. */
int link_client_new(sd_bus **ret, int fd, sd_event *event, const char *description);
