/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "worker/plugin-host.h"

/*
 * The worker's side of the task traffic on its link to apiaryd: Worker1.Dispatch(a(tay)) brings
 * tasks, many per message when apiaryd's queue is deep, and their ends go back in
 * Supervisor1.Results(a(tbay)) messages, as many per message as finished in one turn of the
 * event loop. Neither wants a reply. See docs/worker-protocol.md.
 */
typedef struct TaskLink {
        PluginHost *host;
        sd_bus *link;
        sd_event_source *flush_source;  /* one-shot defer: sends what collected in this turn */
        sd_bus_message *results;        /* the Results call being filled, its a(tbay) open */
        size_t results_bytes;
        unsigned n_results;
} TaskLink;

/* Serves Worker1 on LINK for HOST's plugin. */
int task_link_init(TaskLink *l, PluginHost *host, sd_bus *link, sd_event *event);
/* Sends the results still held, and frees the rest. */
void task_link_done(TaskLink *l);
