/* SPDX-License-Identifier: MIT */
#pragma once

#include "worker/worker-context.h"

/*
 * apiary-worker --zygote: a pool's plugin loaded once, forking ready-to-init workers on request
 * (Zygote1.Fork), so that a worker's start costs a fork and the plugin's init(), not an exec and
 * the dynamic linking of libsystemd. The children are apiaryd's (CLONE_PARENT): their exit
 * status reaches apiaryd, and they die with it, exactly like spawned workers.
 */
int zygote_serve(Context *c);
