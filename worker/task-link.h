/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "ipc/claim.h"
#include "worker/plugin-host.h"

/*
 * The worker's side of the task traffic on its link to apiaryd: Worker1.Dispatch(ua(tay)) brings
 * tasks, many per message when apiaryd's queue is deep, and says how many of them may run at once
 * (the pool's Concurrency=). The worker starts them in the order they came, that many at a time;
 * the others wait here, in its window. Their ends go back in Supervisor1.Results(a(tbtay))
 * messages, as many per message as finished in one turn of the event loop, each with how long it
 * ran. A turn that has run tasks for LINK_TURN_BUDGET_USEC sends what ended and goes on in the next
 * turn, so that apiaryd learns of ends, and so of starts, within that bound. Neither message wants
 * a reply. A task starts only once claimed (ipc/claim.h): one apiaryd took back is dropped
 * unstarted when its turn comes. See docs/worker-protocol.md.
 */
typedef struct LinkTask LinkTask;

typedef struct TaskLink {
        PluginHost *host;
        sd_bus *link;
        sd_event_source *flush_source;  /* one-shot defer: sends what collected in this turn */
        sd_event_source *run_source;    /* one-shot defer: starts what waits, in the next turn */
        sd_bus_message *results;        /* the Results call being filled, its a(tbtay) open */
        size_t results_bytes;
        unsigned n_results;

        LinkTask *waiting_head, *waiting_tail;  /* dispatched, not started yet: FIFO */
        unsigned n_running;             /* started, not ended */
        unsigned max_running;           /* from the last Dispatch */
        bool starting;                  /* in link_run_waiting(): an end does not start another */
        LinkClaim *claim;               /* shared with apiaryd */
        uint32_t n_received;            /* tasks received so far: the next one's number */
} TaskLink;


/* Serves Worker1 on LINK for HOST's plugin. */
int task_link_init(TaskLink *l, PluginHost *host, sd_bus *link, sd_event *event, LinkClaim *claim);
/* Sends the results still held, and frees the rest. */
void task_link_done(TaskLink *l);
/* Sends the results that have ended so far, at once. */
void task_link_flush(TaskLink *l);
