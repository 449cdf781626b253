/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "ipc/link-watch.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/time-util.h"

/* Messages of one link processed per wakeup, as sd_bus_attach_event() does: each one's effects
 * (deferred work, state changes) settle before the next, as they did when attached. */
#define LINK_WATCH_BATCH 1u

struct LinkWatch {
        sd_bus *bus;
        link_watch_closed_fn closed;
        void *userdata;
        sd_event_source *io_source;
        sd_event_source *time_source;
        LinkWatch *prev, *next;         /* in the loop's list, which its post source walks */
        bool output;                    /* as last set: POLLOUT wanted */
        bool open;                      /* as last seen */
        bool dispatching;               /* in its own callback: freed there, at the end */
        bool freed;
};

/* One list and one post source per process: apiaryd has one loop. */
static LinkWatch *watches;
static sd_event_source *post_source;

static void link_watch_update(LinkWatch *lw) {
        uint64_t until;
        int events, r;

        events = sd_bus_get_events(lw->bus);
        lw->open = sd_bus_is_open(lw->bus) > 0;
        if (events < 0) {
                /* Closed: nothing more to read or write, and our duplicate of its fd goes too, so
                 * that the peer sees the end. What is left is the timer's. */
                lw->output = false;
                lw->io_source = sd_event_source_disable_unref(lw->io_source);
        } else if (lw->io_source) {
                lw->output = events & POLLOUT;
                r = sd_event_source_set_io_events(lw->io_source, (uint32_t) events);
                if (r >= 0)
                        r = sd_event_source_set_enabled(lw->io_source, SD_EVENT_ON);
                if (r < 0)
                        log_debug_errno(r, "Failed to update a link's fd events: %m");
        }

        r = sd_bus_get_timeout(lw->bus, &until);
        if (r <= 0 || until == UINT64_MAX) {
                (void) sd_event_source_set_enabled(lw->time_source, SD_EVENT_OFF);
                return;
        }
        r = sd_event_source_set_time(lw->time_source, until);
        if (r >= 0)
                r = sd_event_source_set_enabled(lw->time_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_debug_errno(r, "Failed to arm a link's timer: %m");
}

static void link_watch_process(LinkWatch *lw) {
        int r = 0;

        lw->dispatching = true;
        /* sd-bus keeps BUS alive while it processes, even if a handler drops our reference. */
        for (unsigned k = 0; k < LINK_WATCH_BATCH && !lw->freed; k++) {
                r = sd_bus_process(lw->bus, NULL);
                if (r <= 0)
                        break;
        }
        if (r < 0 && !lw->freed) {
                /* A peer that went away sd-bus handles itself (Disconnected); this is worse, a
                 * message it cannot read: as sd_bus_attach_event() would, close the link. */
                log_debug_errno(r, "Processing a link failed, closing it: %m");
                sd_bus_close(lw->bus);
                if (lw->closed)
                        lw->closed(lw->userdata);
        }
        lw->dispatching = false;
        if (lw->freed) {
                free(lw);
                return;
        }
        link_watch_update(lw);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        link_watch_process(userdata);
        return 0;
}

static int on_time(sd_event_source *s, uint64_t usec, void *userdata) {
        link_watch_process(userdata);
        return 0;
}

/* After every iteration that dispatched something: the links that got output, or closed, from
 * elsewhere (a Dispatch sent while another worker's results were handled, a reply when a task
 * a plugin submitted ends, a send that failed). */
static int on_post(sd_event_source *s, void *userdata) {
        for (LinkWatch *lw = watches; lw; lw = lw->next) {
                uint64_t n = 0;

                if (lw->freed)
                        continue;
                if ((sd_bus_get_n_queued_write(lw->bus, &n) >= 0 && (n > 0) != lw->output) ||
                    (sd_bus_is_open(lw->bus) > 0) != lw->open)
                        link_watch_update(lw);
        }
        return 0;
}

int link_watch_new(LinkWatch **ret, sd_bus *bus, sd_event *event, link_watch_closed_fn closed, void *userdata) {
        LinkWatch *lw;
        int fd, r;

        /* A duplicate of the link's fd: sd-bus closes its own once the peer is gone (after it
         * dispatches Disconnected), without telling us, and a new link may get that number at
         * once; our epoll registration must not follow the number to it. */
        fd = sd_bus_get_fd(bus);
        if (fd < 0)
                return fd;
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;
        if (!post_source) {
                r = sd_event_add_post(event, &post_source, on_post, NULL);
                if (r < 0) {
                        safe_close(fd);
                        return r;
                }
        }

        lw = calloc(1, sizeof(*lw));
        if (!lw) {
                safe_close(fd);
                return -ENOMEM;
        }
        lw->bus = bus;
        lw->closed = closed;
        lw->userdata = userdata;
        r = sd_event_add_io(event, &lw->io_source, fd, EPOLLIN, on_io, lw);
        if (r < 0)
                safe_close(fd);
        else
                r = sd_event_source_set_io_fd_own(lw->io_source, true);
        if (r >= 0)
                r = sd_event_add_time(event, &lw->time_source, CLOCK_MONOTONIC, 0, USEC_PER_MSEC, on_time, lw);
        if (r >= 0)
                r = sd_event_source_set_enabled(lw->time_source, SD_EVENT_OFF);
        if (r < 0) {
                sd_event_source_disable_unref(lw->io_source);
                sd_event_source_disable_unref(lw->time_source);
                free(lw);
                return r;
        }

        lw->next = watches;
        if (watches)
                watches->prev = lw;
        watches = lw;
        link_watch_update(lw);
        *ret = lw;
        return 0;
}

LinkWatch *link_watch_free(LinkWatch *lw) {
        if (!lw)
                return NULL;

        if (lw->prev)
                lw->prev->next = lw->next;
        else
                watches = lw->next;
        if (lw->next)
                lw->next->prev = lw->prev;
        lw->prev = lw->next = NULL;
        lw->io_source = sd_event_source_disable_unref(lw->io_source);
        lw->time_source = sd_event_source_disable_unref(lw->time_source);
        lw->freed = true;
        if (!lw->dispatching)
                free(lw);
        if (!watches)
                post_source = sd_event_source_disable_unref(post_source);
        return NULL;
}
