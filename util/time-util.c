/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/macro.h"
#include "util/time-util.h"

static const struct {
        const char *suffix;
        usec_t usec;
} time_units[] = {
        /* Longest suffixes first wherever one is a prefix of another ("msec" before "ms" before "m"). */
        { "seconds", USEC_PER_SEC },
        { "second", USEC_PER_SEC },
        { "sec", USEC_PER_SEC },
        { "s", USEC_PER_SEC },
        { "minutes", USEC_PER_MINUTE },
        { "minute", USEC_PER_MINUTE },
        { "min", USEC_PER_MINUTE },
        { "months", 2629800ULL * USEC_PER_SEC },
        { "month", 2629800ULL * USEC_PER_SEC },
        { "msec", USEC_PER_MSEC },
        { "ms", USEC_PER_MSEC },
        { "m", USEC_PER_MINUTE },
        { "hours", USEC_PER_HOUR },
        { "hour", USEC_PER_HOUR },
        { "hr", USEC_PER_HOUR },
        { "h", USEC_PER_HOUR },
        { "days", USEC_PER_DAY },
        { "day", USEC_PER_DAY },
        { "d", USEC_PER_DAY },
        { "weeks", 7ULL * USEC_PER_DAY },
        { "week", 7ULL * USEC_PER_DAY },
        { "w", 7ULL * USEC_PER_DAY },
        { "years", 31557600ULL * USEC_PER_SEC },
        { "year", 31557600ULL * USEC_PER_SEC },
        { "y", 31557600ULL * USEC_PER_SEC },
        { "usec", 1ULL },
        { "us", 1ULL },
        { "µs", 1ULL },
};

static const char *skip_space(const char *p) {
        while (*p != '\0' && isspace((unsigned char) *p))
                p++;
        return p;
}

int parse_timespan(const char *s, usec_t default_unit, usec_t *ret) {
        usec_t total = 0;
        const char *p;
        bool any = false;

        if (!s)
                return -EINVAL;

        p = skip_space(s);
        if (strcmp(p, "infinity") == 0) {
                *ret = USEC_INFINITY;
                return 0;
        }

        while (*p != '\0') {
                unsigned long long whole;
                usec_t unit = default_unit, frac_usec = 0, frac_div = 1, frac = 0, part;
                char *end;
                size_t n;

                if (!isdigit((unsigned char) *p))
                        return -EINVAL;
                errno = 0;
                whole = strtoull(p, &end, 10);
                if (errno == ERANGE)
                        return -ERANGE;
                p = end;
                if (*p == '.') {
                        p++;
                        if (!isdigit((unsigned char) *p))
                                return -EINVAL;
                        for (; isdigit((unsigned char) *p); p++)
                                if (frac_div < 1000000000ULL) {
                                        frac = frac * 10 + (usec_t) (*p - '0');
                                        frac_div *= 10;
                                }
                }

                p = skip_space(p);
                for (size_t i = 0; i < ELEMENTSOF(time_units); i++) {
                        n = strlen(time_units[i].suffix);
                        if (strncmp(p, time_units[i].suffix, n) == 0 &&
                            !isalpha((unsigned char) p[n])) {
                                unit = time_units[i].usec;
                                p += n;
                                break;
                        }
                }
                if (isalpha((unsigned char) *p))
                        return -EINVAL;

                if (whole > UINT64_MAX / unit)
                        return -ERANGE;
                part = (usec_t) whole * unit;
                /* frac < frac_div ≤ 10⁹ times a unit of up to a year does not fit in 64 bits. */
                frac_usec = (usec_t) ((unsigned __int128) frac * unit / frac_div);
                if (part > USEC_INFINITY - 1 - frac_usec || total > USEC_INFINITY - 1 - part - frac_usec)
                        return -ERANGE;
                total += part + frac_usec;
                any = true;
                p = skip_space(p);
        }

        if (!any)
                return -EINVAL;

        *ret = total;
        return 0;
}

char *format_timespan(char *buf, size_t size, usec_t t) {
        static const struct {
                const char *suffix;
                usec_t usec;
        } table[] = {
                { "d", USEC_PER_DAY },
                { "h", USEC_PER_HOUR },
                { "min", USEC_PER_MINUTE },
                { "s", USEC_PER_SEC },
                { "ms", USEC_PER_MSEC },
                { "us", 1 },
        };
        size_t l = 0;

        if (t == USEC_INFINITY) {
                snprintf(buf, size, "infinity");
                return buf;
        }
        if (t == 0) {
                snprintf(buf, size, "0");
                return buf;
        }

        buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(table) && t > 0; i++) {
                usec_t n = t / table[i].usec;
                int k;

                if (n == 0)
                        continue;
                t -= n * table[i].usec;
                k = snprintf(buf + l, size - l, "%s%llu%s", l > 0 ? " " : "", (unsigned long long) n, table[i].suffix);
                if (k < 0 || (size_t) k >= size - l)
                        break;
                l += (size_t) k;
        }
        return buf;
}

char *format_size(char *buf, size_t size, uint64_t bytes) {
        static const char *const suffixes[] = { "", "K", "M", "G", "T" };
        size_t i = 0;

        if (bytes == UINT64_MAX) {
                snprintf(buf, size, "infinity");
                return buf;
        }
        while (bytes > 0 && bytes % 1024 == 0 && i + 1 < ELEMENTSOF(suffixes)) {
                bytes /= 1024;
                i++;
        }
        snprintf(buf, size, "%" PRIu64 "%s", bytes, suffixes[i]);
        return buf;
}

char *format_bytes_short(char *buf, size_t size, uint64_t bytes) {
        static const char suffixes[] = "BKMGTP";
        double v = (double) bytes;
        size_t i = 0;

        if (bytes == UINT64_MAX) {
                snprintf(buf, size, "-");
                return buf;
        }
        while (v >= 1024.0 && i < sizeof(suffixes) - 2) {
                v /= 1024.0;
                i++;
        }
        if (i == 0)
                snprintf(buf, size, "%" PRIu64 "B", bytes);
        else
                snprintf(buf, size, "%.1f%c", v, suffixes[i]);
        return buf;
}

int parse_size(const char *s, uint64_t *ret) {
        static const struct {
                char suffix;
                uint64_t factor;
        } table[] = {
                { 'K', 1ULL << 10 },
                { 'M', 1ULL << 20 },
                { 'G', 1ULL << 30 },
                { 'T', 1ULL << 40 },
        };
        unsigned long long n;
        uint64_t factor = 1;
        const char *p;
        char *end;

        if (!s)
                return -EINVAL;
        p = skip_space(s);
        if (strcmp(p, "infinity") == 0) {
                *ret = UINT64_MAX;
                return 0;
        }
        if (!isdigit((unsigned char) *p))
                return -EINVAL;

        errno = 0;
        n = strtoull(p, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        p = skip_space(end);
        if (*p != '\0') {
                bool found = false;

                for (size_t i = 0; i < ELEMENTSOF(table); i++)
                        if (toupper((unsigned char) *p) == table[i].suffix) {
                                factor = table[i].factor;
                                found = true;
                                break;
                        }
                if (!found)
                        return -EINVAL;
                p++;
                if (*p == 'i')  /* "KiB" reads like "K" */
                        p++;
                if (*p == 'B')
                        p++;
                if (*skip_space(p) != '\0')
                        return -EINVAL;
        }

        if (n > UINT64_MAX / factor)
                return -ERANGE;
        *ret = (uint64_t) n * factor;
        return 0;
}

usec_t now_usec(int clock_id) {
        struct timespec ts;

        if (clock_gettime(clock_id, &ts) < 0)
                abort();
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}
