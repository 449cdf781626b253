/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util/time-util.h"

/*
 * The arithmetic of the restart policy, free of any process or timer so that it can be tested:
 *
 * - FAILURES counts a slot's failed runs in a row. It is reset once a worker has stayed ready for
 *   the start-limit interval, so a crash a month after the last one starts from zero again.
 * - The restart after the first failure in a row is immediate: no fixed floor.
 * - After that the delay doubles from RestartSec up to RestartMaxSec, minus up to a quarter of it
 *   at random (jitter, so that a whole pool of crashed workers does not come back in lockstep).
 * - The start limit is a ring of the last StartLimitBurst failure times (s6's death tally): a
 *   failure that finds the ring full and its oldest entry within StartLimitIntervalSec trips it.
 */

usec_t restart_delay(usec_t restart_usec, usec_t restart_max_usec, unsigned failures, uint64_t random);

typedef struct StartLimit {
        usec_t *ring;           /* the last `burst` failure times, CLOCK_MONOTONIC */
        unsigned burst;
        unsigned n;             /* entries in use, <= burst */
        unsigned next;          /* where the next one goes */
} StartLimit;

int start_limit_init(StartLimit *l, unsigned burst);
void start_limit_deinit(StartLimit *l);
void start_limit_reset(StartLimit *l);

/* Records a failure at NOW. Returns true when it is one too many within INTERVAL. */
bool start_limit_record(StartLimit *l, usec_t now, usec_t interval);
/* What start_limit_record() would return now, without recording anything. */
bool start_limit_would_trip(const StartLimit *l, usec_t now, usec_t interval);
