/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

/*
 * The task messages of the private link, read on both sides: Worker1.Dispatch(a(tay)) in the
 * worker, Supervisor1.Results(a(tbay)) in apiaryd. Each walks the array and calls its callback
 * per element, with the payload or result pointing into the message; a malformed message stops
 * the walk with a negative errno (what was read before it has been handed on). The callbacks
 * return 0 to go on, or a negative errno to stop. Fuzzed by tests/fuzz/fuzz-link.c.
 */
typedef int (*task_codec_dispatch_fn)(uint64_t id, const void *payload, size_t size, void *userdata);
typedef int (*task_codec_result_fn)(uint64_t id, bool ok, const void *data, size_t size, void *userdata);

int task_codec_read_dispatch(sd_bus_message *m, task_codec_dispatch_fn fn, void *userdata);
int task_codec_read_results(sd_bus_message *m, task_codec_result_fn fn, void *userdata);
