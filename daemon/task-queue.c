/* SPDX-License-Identifier: MIT */
#include "daemon/task.h"
#include "daemon/task-queue.h"

static void level_filled(TaskQueue *q, Task *t) {
        q->length++;
        q->nonempty |= (uint16_t) (1u << t->priority);
}

void task_queue_push_tail(TaskQueue *q, Task *t) {
        g_queue_push_tail_link(&q->level[t->priority], &t->queue_link);
        level_filled(q, t);
}

void task_queue_push_head(TaskQueue *q, Task *t) {
        g_queue_push_head_link(&q->level[t->priority], &t->queue_link);
        level_filled(q, t);
}

void task_queue_unlink(TaskQueue *q, Task *t) {
        GQueue *level = &q->level[t->priority];

        g_queue_unlink(level, &t->queue_link);
        q->length--;
        if (level->length == 0)
                q->nonempty &= (uint16_t) ~(1u << t->priority);
}

/* T's priority once aged at NOW. */
static uint64_t aged_priority(const Task *t, usec_t now, usec_t aging_usec) {
        if (aging_usec == USEC_INFINITY || now <= t->queued_mono)
                return t->priority;
        return t->priority + (now - t->queued_mono) / aging_usec;
}

Task *task_queue_peek(const TaskQueue *q, usec_t now, usec_t aging_usec) {
        Task *best = NULL;
        uint64_t best_priority = 0;

        if (q->nonempty == 0)
                return NULL;
        /* One priority in use, the common case: its FIFO. */
        if ((q->nonempty & (q->nonempty - 1)) == 0)
                return q->level[__builtin_ctz(q->nonempty)].head ? q->level[__builtin_ctz(q->nonempty)].head->data : NULL;

        for (int i = TASK_PRIORITY_MAX; i >= 0; i--) {
                Task *t;
                uint64_t p;

                if (!(q->nonempty & (1u << i)))
                        continue;
                t = q->level[i].head->data;
                p = aged_priority(t, now, aging_usec);
                if (!best || p > best_priority || (p == best_priority && t->queued_mono < best->queued_mono)) {
                        best = t;
                        best_priority = p;
                }
        }
        return best;
}
