/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/*
 * Manager1.TasksFinished(a(tsbay)): the ends of the tasks submitted with the option
 * "batch-results", sent to their submitter as one signal per turn of apiaryd's loop (another past
 * 1 MiB), rather than one TaskFinished each. A submitter with many tasks in flight then reads one
 * message where it would read hundreds, as a RunBatch caller does.
 */
typedef struct FinishedBatches FinishedBatches;

int finished_batches_new(FinishedBatches **ret, sd_event *event);
/* Sends what is pending now: before the connections close. */
void finished_batches_flush(FinishedBatches *b);
/* Sends what is pending, then frees. */
FinishedBatches *finished_batches_free(FinishedBatches *b);

/* Adds one end for SUBMITTER (NULL on a private connection) on BUS, sent at the end of this turn. */
int finished_batches_add(FinishedBatches *b, sd_bus *bus, const char *submitter, uint64_t id, const char *pool,
                         bool ok, const void *data, size_t size);
