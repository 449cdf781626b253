/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "ipc/link.h"
#include "util/macro.h"


static int link_new(sd_bus **ret, int fd, bool server, sd_id128_t server_id, sd_event *event,
                    const char *description) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = sd_bus_new(&bus);
        if (r < 0) {
                safe_close(fd);
                return r;
        }

        /* From here on BUS owns FD, and closes it when freed. */
        r = sd_bus_set_fd(bus, fd, fd);
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        if (description) {
                r = sd_bus_set_description(bus, description);
                if (r < 0)
                        return r;
        }
        if (server) {
                r = sd_bus_set_server(bus, 1, server_id);
                if (r < 0)
                        return r;
        }
        r = sd_bus_start(bus);
        if (r < 0)
                return r;
        if (event) {
                r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(bus);
        return 0;
}

int link_server_new(sd_bus **ret, int fd, sd_id128_t server_id, sd_event *event, const char *description) {
        return link_new(ret, fd, true, server_id, event, description);
}

int link_client_new(sd_bus **ret, int fd, sd_event *event, const char *description) {
        return link_new(ret, fd, false, SD_ID128_NULL, event, description);
}

bool link_queue_exceeded(sd_bus *bus, uint64_t max, uint64_t *ret_n) {
        uint64_t n;

        if (sd_bus_get_n_queued_write(bus, &n) < 0 || n <= max)
                return false;
        *ret_n = n;
        return true;
}
