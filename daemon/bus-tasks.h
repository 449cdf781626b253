/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>

/*
 * The task methods of org.apiary.Apiary1.Manager (Submit, Run, SubmitBatch, Cancel), and the
 * Submit a plugin makes through its worker's private link. The vtables in bus-api.c and
 * worker.c point here.
 */

int bus_method_submit(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_run(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_submit_batch(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_run_batch(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* org.apiary.Supervisor1.Submit(s pool, ay payload) → (ay result), from a plugin; USERDATA is
 * the Manager. */
int link_method_submit(sd_bus_message *m, void *userdata, sd_bus_error *error);
