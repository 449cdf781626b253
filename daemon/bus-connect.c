/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "daemon/auth.h"
#include "daemon/bus-api.h"
#include "daemon/bus-connect.h"
#include "daemon/manager.h"
#include "daemon/peer.h"
#include "util/log.h"

static int on_bus_disconnected(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;

        /* Without the bus nobody can reach us: stop cleanly and exit non-zero, so that systemd's
         * Restart=on-failure brings us back once the bus is there again. */
        log_error("Lost the connection to the bus, shutting down.");
        m->exit_status = EXIT_FAILURE;
        manager_stop(m);
        return 0;
}

static int bus_open(Manager *m) {
        Config *c = m->config;
        int r;

        switch (c->bus) {
        case BUS_KIND_SYSTEM:
                return sd_bus_open_system_with_description(&m->bus, "apiaryd");
        case BUS_KIND_SESSION:
                return sd_bus_open_user_with_description(&m->bus, "apiaryd");
        case BUS_KIND_ADDRESS:
                r = sd_bus_new(&m->bus);
                if (r < 0)
                        return r;
                r = sd_bus_set_address(m->bus, c->bus_address);
                if (r < 0)
                        return r;
                r = sd_bus_set_bus_client(m->bus, true);
                if (r < 0)
                        return r;
                r = sd_bus_set_description(m->bus, "apiaryd");
                if (r < 0)
                        return r;
                return sd_bus_start(m->bus);
        default:
                return -EINVAL;
        }
}

int bus_connect(Manager *m) {
        Config *c = m->config;
        int r;

        r = bus_open(m);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the %s bus%s%s: %m",
                                       c->bus == BUS_KIND_SYSTEM ? "system" :
                                       c->bus == BUS_KIND_SESSION ? "session" : "configured",
                                       c->bus == BUS_KIND_ADDRESS ? " at " : "",
                                       c->bus == BUS_KIND_ADDRESS ? c->bus_address : "");

        r = bus_api_register(m, m->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to register bus objects: %m");
        r = auth_setup(m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch for callers leaving the bus: %m");

        r = sd_bus_match_signal_async(m->bus, NULL, "org.freedesktop.DBus.Local", NULL, "org.freedesktop.DBus.Local",
                                      "Disconnected", on_bus_disconnected, NULL, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch for bus disconnection: %m");
        r = sd_bus_set_exit_on_disconnect(m->bus, false);
        if (r < 0)
                return log_error_errno(r, "Failed to configure the bus connection: %m");

        r = sd_bus_request_name(m->bus, APIARY_BUS_NAME, 0);
        if (r == -EEXIST)
                return log_error_errno(r, "Another process already owns %s on this bus.", APIARY_BUS_NAME);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire %s: %m", APIARY_BUS_NAME);

        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");

        /* Only once the name is ours: a socket in the way is then a dead apiaryd's. */
        return peer_server_start(m);
}

void bus_close_peers(Manager *m) {
        peer_server_stop(m);
}
