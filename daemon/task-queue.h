/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "util/time-util.h"

typedef struct Task Task;

/* The "priority" task option: 0 (the default, lowest) to 9 (highest). */
#define TASK_PRIORITY_MAX 9u
#define TASK_PRIORITY_LEVELS (TASK_PRIORITY_MAX + 1)

/*
 * A pool's queue: one FIFO per priority. The next task is the head with the highest priority
 * once aged: a task's priority counts one more for every AGING of its wait, and of two heads
 * equal so, the one queued first goes. Thus FIFO within a priority, and no task is overtaken by
 * one of priority P submitted (P − its priority) × AGING or more after it (docs/tasks.md).
 * AGING USEC_INFINITY: strict priorities.
 */
typedef struct TaskQueue {
        GQueue level[TASK_PRIORITY_LEVELS];
        unsigned length;
        uint16_t nonempty;              /* bit N: level N holds tasks */
} TaskQueue;

void task_queue_push_tail(TaskQueue *q, Task *t);
/* Back to the head of its priority's FIFO (a task taken back, or that a dead worker held). */
void task_queue_push_head(TaskQueue *q, Task *t);
void task_queue_unlink(TaskQueue *q, Task *t);
/* The task that goes next at NOW; NULL if the queue is empty. */
Task *task_queue_peek(const TaskQueue *q, usec_t now, usec_t aging_usec);
static inline unsigned task_queue_length(const TaskQueue *q) {
        return q->length;
}
static inline unsigned task_queue_level_length(const TaskQueue *q, unsigned priority) {
        return q->level[priority].length;
}
