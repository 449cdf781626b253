/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

/*
 * The task messages of the private link, written and read here for both sides:
 * Worker1.Dispatch(ua(tay)), which apiaryd writes and the worker reads, and
 * Supervisor1.Results(a(tbtay)), the other way. Both want no reply.
 *
 * Reading walks the array and calls the callback per element, with the payload or result
 * pointing into the message; a malformed message stops the walk with a negative errno (what was
 * read before it has been handed on). The callbacks return 0 to go on, or a negative errno to
 * stop. Fuzzed by tests/fuzz/fuzz-link.c.
 */
typedef int (*task_codec_dispatch_fn)(uint64_t id, const void *payload, size_t size, void *userdata);
typedef int (*task_codec_result_fn)(uint64_t id, bool ok, uint64_t run_usec, const void *data, size_t size,
                                   void *userdata);

/* Reads MAX_RUNNING (how many of its tasks the worker runs at once) before the first callback. */
int task_codec_read_dispatch(sd_bus_message *m, uint32_t *ret_max_running, task_codec_dispatch_fn fn,
                             void *userdata);
int task_codec_read_results(sd_bus_message *m, task_codec_result_fn fn, void *userdata);

/* Writing: _new_*() makes the message on LINK, _add_*() appends one element (the payload is
 * copied), task_codec_close() ends the array; then it is sent. */
int task_codec_new_dispatch(sd_bus *link, uint32_t max_running, sd_bus_message **ret);
int task_codec_add_task(sd_bus_message *m, uint64_t id, const void *payload, size_t size);
int task_codec_new_results(sd_bus *link, sd_bus_message **ret);
int task_codec_add_result(sd_bus_message *m, uint64_t id, bool ok, uint64_t run_usec, const void *data,
                          size_t size);
int task_codec_close(sd_bus_message *m);
