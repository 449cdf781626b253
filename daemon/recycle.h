/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct Pool Pool;
typedef struct Worker Worker;

/* Why a worker takes no more tasks and is replaced once drained (worker.c logs it). */
typedef enum RecycleReason {
        RECYCLE_TASKS,          /* MaxTasksPerWorker= */
        RECYCLE_MEMORY,         /* MaxMemoryPerWorker= */
        RECYCLE_AGE,            /* MaxWorkerAgeSec= */
        _RECYCLE_REASON_MAX,
} RecycleReason;

/*
 * Recycling by memory and by age: what uWSGI's reload-on-rss and max-worker-lifetime do, without
 * their failure modes. A worker whose RSS is above MaxMemoryPerWorker= after a Results message
 * retires (takes no more tasks, is replaced once drained: no task fails or loses a retry), unless
 * it was above it already when it became ready: replacing it would start one just as big, again
 * and again, so the pool reports it instead (MemoryWarning). A worker retires at MaxWorkerAgeSec=
 * plus a random part of MaxWorkerAgeJitterSec= after it became ready, and only one slot of a pool
 * recycles for its age at a time: the next one due waits until that slot has a ready worker again.
 */

/* W's new process is ready: its size at start is measured and its age timer armed; if the pool
 * waited for this slot's age recycle, the next one due goes. */
void recycle_worker_ready(Worker *w);
/* W ended tasks: recycled if it is now above MaxMemoryPerWorker=. */
void recycle_check_memory(Worker *w);
/* W's process is gone: its age timer with it. */
void recycle_worker_dropped(Worker *w);
/* W's slot changed state: an age recycle that ended without a ready worker (the slot stopped or
 * went away) lets the next one go. */
void recycle_slot_changed(Pool *p, Worker *w);
/* "worker 1 uses 96.0M right after it starts, above MaxMemoryPerWorker=64.0M: ...", or NULL. */
char *recycle_memory_warning(const Pool *p);
