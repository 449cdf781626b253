/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "daemon/restart.h"

usec_t restart_delay(usec_t restart_usec, usec_t restart_max_usec, unsigned failures, uint64_t random) {
        usec_t d;

        if (failures <= 1)
                return 0;

        d = restart_usec;
        for (unsigned i = 2; i < failures && d < restart_max_usec; i++)
                d = d > USEC_INFINITY / 2 ? USEC_INFINITY : d * 2;
        if (d > restart_max_usec)
                d = restart_max_usec;
        if (d == 0 || d == USEC_INFINITY)
                return d;

        return d - random % (d / 4 + 1);
}

int start_limit_init(StartLimit *l, unsigned burst) {
        *l = (StartLimit) { .burst = burst };
        if (burst == 0)
                return 0;
        l->ring = calloc(burst, sizeof(usec_t));
        return l->ring ? 0 : -ENOMEM;
}

void start_limit_deinit(StartLimit *l) {
        free(l->ring);
        *l = (StartLimit) {};
}

void start_limit_reset(StartLimit *l) {
        l->n = 0;
        l->next = 0;
}

bool start_limit_would_trip(const StartLimit *l, usec_t now, usec_t interval) {
        /* With the ring full, the slot we are about to overwrite holds the oldest failure. */
        return l->burst > 0 && l->n == l->burst && now - l->ring[l->next] <= interval;
}

bool start_limit_record(StartLimit *l, usec_t now, usec_t interval) {
        bool tripped = start_limit_would_trip(l, now, interval);

        if (l->burst == 0)
                return false;

        l->ring[l->next] = now;
        l->next = (l->next + 1) % l->burst;
        if (l->n < l->burst)
                l->n++;
        return tripped;
}
