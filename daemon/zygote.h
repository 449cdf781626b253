/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "ipc/link-supervisor.h"
#include "util/time-util.h"

typedef struct Pool Pool;
typedef struct Worker Worker;

/*
 * A pool's zygote (Zygote=yes): one apiary-worker --zygote that has loaded the plugin and forks
 * workers on request, so that a crashed worker is back without an exec. The workers it forks are
 * ours (CLONE_PARENT): watched, signalled and restarted like spawned ones. Until the zygote is
 * ready, and whenever it is not, workers are spawned as usual; a zygote that dies is started
 * again (not counted against the pool), unless the plugin does not load. See docs/apiaryd.md.
 */
typedef enum ZygoteState {
        ZYGOTE_STARTING,
        ZYGOTE_READY,
        ZYGOTE_DEAD,
} ZygoteState;

typedef struct Zygote {
        Pool *pool;
        ZygoteState state;
        pid_t pid;
        sd_event_source *child_source;
        sd_event_source *retry_source;
        sd_bus *link;
        LinkSupervisor link_supervisor; /* what serves Supervisor1 on it */
        unsigned failures;              /* exits in a row, for the retry delay */
        bool given_up;                  /* the plugin does not load: no more tries until a restart */
} Zygote;

/* How long a pool start waits for its zygote before spawning its workers instead. */
#define ZYGOTE_HOLD_USEC (2 * USEC_PER_SEC)

/* Starts the pool's zygote if its configuration asks for one (and it has none running). */
int zygote_start(Pool *p);
/* Kills the zygote (it holds no task) and forgets it. */
void zygote_stop(Pool *p);

/* Asks the pool's zygote, if ready, for a worker in W's slot. Returns 0 if asked (the PID comes
 * later), or a negative errno if W is to be spawned instead. */
int zygote_fork(Pool *p, Worker *w);
