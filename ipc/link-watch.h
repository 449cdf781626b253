/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/*
 * Watches a private link on an sd-event loop without sd_bus_attach_event(), which gives each
 * connection a prepare callback that sd-event runs on every iteration of the loop: with a
 * thousand workers, a thousand calls (sd_bus_get_events(), sd_bus_get_timeout() and the sources'
 * setters) before each event, so that starting N workers cost O(N²) (bench/run spawn). Here a
 * link's fd and timer are updated after its own messages are processed, and once per iteration,
 * in one post source for all links, for those whose output or state changed meanwhile (a message
 * sent to it while another link or timer was being handled): a cheap look at each link instead of
 * four calls into the loop.
 */
typedef struct LinkWatch LinkWatch;

/* Called when the link is closed for a message it could not read (sd-bus then dispatches no
 * Disconnected, as it does for a peer that went away). */
typedef void (*link_watch_closed_fn)(void *userdata);

/* Watches BUS (started, not attached) on EVENT; BUS must outlive the watch. */
int link_watch_new(LinkWatch **ret, sd_bus *bus, sd_event *event, link_watch_closed_fn closed, void *userdata);
/* Stops watching; safe from the link's own callbacks. */
LinkWatch *link_watch_free(LinkWatch *lw);
