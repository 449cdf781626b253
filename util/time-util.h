/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t usec_t;

#define USEC_INFINITY ((usec_t) UINT64_MAX)
#define USEC_PER_MSEC ((usec_t) 1000ULL)
#define USEC_PER_SEC ((usec_t) 1000000ULL)
#define USEC_PER_MINUTE (60ULL * USEC_PER_SEC)
#define USEC_PER_HOUR (60ULL * USEC_PER_MINUTE)
#define USEC_PER_DAY (24ULL * USEC_PER_HOUR)

/* Parses a time span in systemd's syntax ("500ms", "2s", "1min 30s", "infinity"); a bare number
 * counts in DEFAULT_UNIT microseconds. Returns 0 or -EINVAL/-ERANGE; *ret untouched on error. */
int parse_timespan(const char *s, usec_t default_unit, usec_t *ret);

/* Formats a span the way parse_timespan() reads it back ("1min 30s", "infinity", "0"). */
char *format_timespan(char *buf, size_t size, usec_t t);
#define FORMAT_TIMESPAN_MAX 64

/* Parses a size with an optional binary suffix (K, M, G, T; 1024-based), "infinity" = UINT64_MAX. */
int parse_size(const char *s, uint64_t *ret);

/* SIZE as parse_size() reads it back: "infinity", or bytes with the largest suffix (K, M, G, T)
 * that divides them exactly, e.g. "256M", "1536K", "100". */
#define FORMAT_SIZE_MAX 24
char *format_size(char *buf, size_t size, uint64_t bytes);
/* Approximate, for a reader: "1.5M", "812.0K", "17B"; "-" for UINT64_MAX. */
char *format_bytes_short(char *buf, size_t size, uint64_t bytes);

usec_t now_usec(int clock_id);

/* Adds without wrapping: anything past USEC_INFINITY is USEC_INFINITY. */
static inline usec_t usec_add(usec_t a, usec_t b) {
        return a > USEC_INFINITY - b ? USEC_INFINITY : a + b;
}
