/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <systemd/sd-bus.h>

#include "util/time-util.h"

/*
 * A histogram of durations with fixed buckets, as Prometheus keeps them: 500 µs to 60 s, and the
 * rest. Adding is a short scan; nothing is allocated. On the bus it is a(tt): each bucket's upper
 * bound in µs (UINT64_MAX for the last) and how many values were at most that (cumulative).
 */
#define HISTOGRAM_BUCKETS 17

typedef struct Histogram {
        uint64_t count[HISTOGRAM_BUCKETS];      /* per bucket, not cumulative */
        uint64_t sum_usec;
} Histogram;

void histogram_add(Histogram *h, usec_t value);
/* Appends the a(tt) described above to M. */
int histogram_append(sd_bus_message *m, const Histogram *h);
