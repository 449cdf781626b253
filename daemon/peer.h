/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

typedef struct Manager Manager;
typedef struct Caller Caller;

/*
 * The private socket (PrivateSocket=, e.g. /run/apiary/bus): the objects of the public bus,
 * served peer-to-peer to each client that connects, as systemd serves systemctl on
 * /run/systemd/private. A task costs no bus-daemon hop there. Anyone may connect (the socket is
 * mode 0666); what a peer may do is decided per call from the credentials its socket had when it
 * connected, exactly as on the bus (auth.c).
 */
typedef struct Peer {
        Manager *manager;
        sd_bus *bus;
        Caller *caller;         /* its credentials (SO_PEERCRED, SO_PEERGROUPS), taken at accept() */
        uint64_t id;            /* counts from 1: names it in MaxTasksPerCaller= accounting */
        bool subscribed;        /* Subscribe() called: it gets the signals the bus would broadcast */
        sd_event_source *handshake_source;
        sd_event_source *deadline_source;       /* the handshake's time limit */
} Peer;

/* Listens on the configured private socket, if any. */
int peer_server_start(Manager *m);
/* Closes every peer connection and the socket, and removes the socket file. */
void peer_server_stop(Manager *m);

Peer *peer_find(Manager *m, sd_bus *bus);

/* Manager.Subscribe() and Unsubscribe(): on a private connection, whether it gets
 * PropertiesChanged, InterfacesAdded and InterfacesRemoved (TaskFinished for its own tasks it
 * always gets). A peer is not sent what it did not ask for: a signal written to a client that
 * has just hung up would make sd-bus drop the calls it sent before. On the bus, where match
 * rules decide, both succeed and do nothing. */
int bus_method_subscribe(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int bus_method_unsubscribe(sd_bus_message *msg, void *userdata, sd_bus_error *error);
