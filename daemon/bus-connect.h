/* SPDX-License-Identifier: MIT */
#pragma once

typedef struct Manager Manager;

/*
 * The D-Bus edge's connections: the bus of Bus= (the API served there, the name taken, callers
 * leaving it watched, its loss a shutdown) and the private socket. The core holds none of this
 * open; it only tells the edge, through ManagerObserver.closing, when to let go.
 */

/* Connects to the bus, serves the API on it, takes org.apiary.Apiary1, then listens on the
 * private socket. Logs its failures. */
int bus_connect(Manager *m);

/* Closes every private connection and the socket, with a bound on what they may still take (peer.c):
 * before the loop exits, where sd-bus would flush them without one. Idempotent. */
void bus_close_peers(Manager *m);
