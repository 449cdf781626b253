/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes parse_timespan() and parse_size() with the input as a string, and checks that
 * format_timespan() output reads back to the same value.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "util/time-util.h"

static void check_round_trip(usec_t v) {
        char buf[FORMAT_TIMESPAN_MAX];
        usec_t w = 0;
        int r;

        if (v == USEC_INFINITY)
                return;
        format_timespan(buf, sizeof(buf), v);
        r = parse_timespan(buf, USEC_PER_SEC, &w);
        if (r < 0 || w != v) {
                fprintf(stderr, "format_timespan(%llu) = \"%s\" parses back as %s%llu (r=%d)\n",
                        (unsigned long long) v, buf, r < 0 ? "error, " : "",
                        (unsigned long long) w, r);
                abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const usec_t units[] = { 1, USEC_PER_MSEC, USEC_PER_SEC, USEC_PER_MINUTE };
        char *s;
        usec_t v;
        uint64_t sz;

        if (size > 4096)        /* longer inputs only slow the fuzzer down */
                return 0;
        s = strndup((const char *) data, size);
        if (!s)
                return 0;

        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
                if (parse_timespan(s, units[i], &v) >= 0)
                        check_round_trip(v);
        (void) parse_size(s, &sz);

        free(s);
        return 0;
}
