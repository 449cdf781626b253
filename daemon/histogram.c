/* SPDX-License-Identifier: MIT */
#include "daemon/histogram.h"
#include "util/macro.h"

/* Prometheus' default buckets and a few on each side: a task of echo takes µs, one of a real
 * plugin seconds. */
static const usec_t bounds[HISTOGRAM_BUCKETS] = {
        500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
        1 * USEC_PER_SEC, 2500 * USEC_PER_MSEC, 5 * USEC_PER_SEC, 10 * USEC_PER_SEC, 30 * USEC_PER_SEC,
        60 * USEC_PER_SEC, USEC_INFINITY,
};

void histogram_add(Histogram *h, usec_t value) {
        size_t i = 0;

        while (value > bounds[i])       /* the last bound takes anything */
                i++;
        h->count[i]++;
        h->sum_usec = value > UINT64_MAX - h->sum_usec ? UINT64_MAX : h->sum_usec + value;
}

int histogram_append(sd_bus_message *m, const Histogram *h) {
        uint64_t cumulative = 0;
        int r;

        r = sd_bus_message_open_container(m, 'a', "(tt)");
        for (size_t i = 0; r >= 0 && i < HISTOGRAM_BUCKETS; i++) {
                cumulative += h->count[i];
                r = sd_bus_message_append(m, "(tt)", (uint64_t) bounds[i], cumulative);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}
