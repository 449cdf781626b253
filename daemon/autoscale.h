/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

typedef struct Pool Pool;
typedef struct Worker Worker;

/*
 * Autoscaling, Workers=MIN..MAX (docs/tasks.md, "Autoscaling"): a pool grows by one worker when
 * tasks wait and no worker has room, and no worker of it is starting (so it grows one start at
 * a time, and never for a queue that a starting worker is about to serve); it shrinks by the
 * workers that stayed idle ScaleDownIdleSec=, never below MIN. A worker is idle from the moment it
 * holds no task; one task ends that. The asymmetry is the hysteresis: growing takes a queue that
 * waits now, shrinking a whole ScaleDownIdleSec= without work, so a steady load does not flap.
 */
bool pool_autoscales(const Pool *p);
/* P dispatched what it could, and tasks still wait: grows if it may. */
void autoscale_queue_waits(Pool *p);
/* W's state changed: its idleness is noted, and the shrink timer follows. */
void autoscale_slot_changed(Pool *p, Worker *w);
/* The bounds changed (a reload) or a Scale() moved the count: the timer follows. */
void autoscale_refresh(Pool *p);
