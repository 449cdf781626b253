/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "util/macro.h"
#include "util/time-util.h"

typedef struct Manager Manager;
typedef struct Pool Pool;
typedef struct Worker Worker;

/* RunBatch(): one reply for many tasks, the D-Bus edge's business (bus-tasks.c). */
typedef struct TaskBatch TaskBatch;

/* The unfinished tasks of one caller UID, in all pools together, against MaxTasksPerCaller= and
 * MaxBytesPerCaller=: a client that floods apiaryd fills its own share, not everyone's queue, and
 * more connections do not make the share bigger. */
typedef struct CallerTasks {
        uid_t uid;
        unsigned n;
        uint64_t bytes;                 /* of their payloads */
} CallerTasks;


typedef enum TaskState {
        TASK_QUEUED,
        TASK_RUNNING,
        _TASK_STATE_MAX,
        _TASK_STATE_INVALID = -EINVAL,
} TaskState;

/*
 * One task, from the moment a Submit/Run is accepted until it ends, exactly once, in
 * task_finish(). The payload is never copied: the task holds a reference on the message it came
 * in (one batch message may back many tasks) and points into it.
 */
typedef struct Task {
        uint64_t id;
        Pool *pool;
        TaskState state;

        sd_bus_message *payload_message;
        const void *payload;
        size_t payload_size;

        usec_t timeout_usec;            /* the "timeout" option; USEC_INFINITY: the pool's */
        usec_t armed_timeout_usec;      /* what the timer of the current dispatch was armed with */
        unsigned attempts;              /* dispatches that counted against TaskRetries= */
        char *last_loss;                /* how the last worker running it died */

        sd_bus_message *reply_to;       /* Run() (public bus or a worker's Submit): reply to this */
        sd_bus *notify_bus;             /* Submit(): the connection TaskFinished is sent on */
        char *submitter;                /* Submit(): its unique name there (none on a private one) */
        uid_t owner;                    /* who submitted it: only they (or control users) cancel it */
        CallerTasks *caller;            /* counted there until it ends; NULL for a plugin's task */
        TaskBatch *batch;               /* RunBatch(): where the result goes instead */
        unsigned batch_index;

        GList queue_link;               /* in pool->queue while in_queue (data = task) */
        bool in_queue;
        GList worker_link;              /* in worker->in_flight while running */
        Worker *worker;
        sd_event_source *timeout_source;
} Task;

/* Creates a queued task (not yet in the pool's queue) and counts it as submitted. */
int task_new(Task **ret, Pool *pool, sd_bus_message *payload_message, const void *payload, size_t size,
             usec_t timeout_usec, sd_bus_message *reply_to);

/* Ends the task: replies to its Run caller or emits TaskFinished, counts it, frees it. A failed
 * task's DATA is its reason. */
void task_finish(Task *t, bool ok, const void *data, size_t size);
void task_fail(Task *t, const char *reason);
_printf_(2, 3) void task_failf(Task *t, const char *format, ...);

/* Counts T as one of C's tasks until it is freed. */
void task_set_caller(Task *t, CallerTasks *c);

Task *task_free(Task *t);
