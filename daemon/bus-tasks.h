/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>

#include <stdbool.h>
#include <stddef.h>

typedef struct Manager Manager;
#include "daemon/task.h"

/*
 * The task methods of org.apiary.Apiary1.Manager (Submit, Run, SubmitBatch, Cancel), and the
 * Submit a plugin makes through its worker's private link. The vtable in bus-api.c points here,
 * and the core reaches link_method_submit() through ManagerObserver.worker_submit.
 */

int bus_method_submit(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_run(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_submit_batch(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_run_batch(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* org.apiary.Supervisor1.Submit(s pool, ay payload) → (ay result), from a plugin of the pool
 * FROM: a Run() without options, refused unless the target pool takes tasks from FROM
 * (SubmitFrom=). */
int link_method_submit(sd_bus_message *m, Manager *mgr, const char *from, sd_bus_error *error);

/* How a task's end reaches its submitter: the reply to its Run, its slot in a RunBatch reply, or
 * a TaskFinished to the connection that submitted it. The core calls it (ManagerObserver). */
bool bus_task_finished(Task *t, bool ok, const void *data, size_t size);
/* A shared pool's task submitted here is stored in the engine: Submit() and SubmitBatch() are
 * answered once all their tasks are. */
void bus_task_stored(Task *t);
/* ... has no end to report here (TaskRejection): its caller hears the documented error. */
void bus_task_rejected(Task *t, TaskRejection why, const char *message);
