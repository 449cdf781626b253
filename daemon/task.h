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
/* Submit()/SubmitBatch() to a shared pool: answered once the engine has stored the tasks (bus-tasks.c). */
typedef struct TaskAccept TaskAccept;

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
        TASK_PUBLISHING,        /* submitted to a shared pool here, on its way to the engine */
        TASK_STORED,            /* ... stored there: its result comes back from whichever host runs it */
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
        unsigned attempts;              /* starts that counted against TaskRetries= */
        usec_t started_mono;            /* CLOCK_MONOTONIC, when its worker started it (as apiaryd infers) */
        usec_t queued_mono;             /* CLOCK_MONOTONIC, when it was first queued */
        bool started;                   /* its worker has started it: its timeout runs */
        bool solo;                      /* lost with a worker that held others: runs alone from now on */
        uint32_t number;                /* its number among the tasks sent to its worker's process */
        char *last_loss;                /* how the last worker running it died */

        sd_bus_message *reply_to;       /* Run() (public bus or a worker's Submit): reply to this */
        sd_bus *notify_bus;             /* Submit(): the connection TaskFinished is sent on */
        char *submitter;                /* Submit(): its unique name there (none on a private one) */
        bool batch_results;             /* its end goes out in a TasksFinished, not a TaskFinished */
        uid_t owner;                    /* who submitted it: only they (or control users) cancel it */
        CallerTasks *caller;            /* counted there until it ends; NULL for a plugin's task */
        TaskBatch *batch;               /* RunBatch(): where the result goes instead */
        unsigned batch_index;
        TaskAccept *accept;             /* Submit*() to a shared pool: answered once stored */
        unsigned accept_index;

        /* A shared pool's task (source.c). Submitted here: its id in the engine. Pulled from the
         * engine to run here: that, its ack token, where its result goes, and the engine's count
         * of its deliveries (this one included). */
        char *source_id;
        char *source_token;             /* NULL for a task submitted here */
        char *source_reply;
        unsigned deliveries;
        GList source_link;              /* pulled: in the source's list of what it holds */

        GList queue_link;               /* in pool->queue while in_queue (data = task) */
        uint8_t priority;               /* the "priority" option, 0 to TASK_PRIORITY_MAX (task-queue.h) */
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

/* A task pulled from a shared pool's engine to run here (source.c): queued (not yet in the
 * pool's queue), not counted as submitted here; its end goes back to the engine. */
int task_new_pulled(Task **ret, Pool *pool, sd_bus_message *payload_message, const void *payload, size_t size,
                    usec_t timeout_usec);

/* Why a task submitted to a shared pool here has no end to report; the D-Bus edge turns each
 * into its documented error. */
typedef enum TaskRejection {
        TASK_REJECT_UNAVAILABLE,        /* the engine did not store it: it never existed */
        TASK_REJECT_TOO_LARGE,          /* ... it is larger than the engine carries */
        TASK_REJECT_STOPPING,           /* stored and runs, but apiaryd stops before its result comes */
        TASK_REJECT_POOL_REMOVED,       /* ... but the pool was removed here */
        _TASK_REJECT_MAX,
        _TASK_REJECT_INVALID = -EINVAL,
} TaskRejection;

/* T, submitted to a shared pool here, has no end to report (WHY, MESSAGE): its caller hears so,
 * and it is freed without being counted done or failed (nor submitted, if it was never stored). */
void task_reject(Task *t, TaskRejection why, const char *message);

/* Counts T as one of C's tasks until it is freed. */
void task_set_caller(Task *t, CallerTasks *c);

Task *task_free(Task *t);
