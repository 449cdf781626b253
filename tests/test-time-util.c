/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "util/macro.h"
#include "util/signal-util.h"
#include "util/time-util.h"

static void assert_span(const char *s, usec_t expected) {
        usec_t t = 4711;

        assert_int_equal(parse_timespan(s, USEC_PER_SEC, &t), 0);
        assert_int_equal(t, expected);
}

static void assert_span_error(const char *s, int error) {
        usec_t t = 4711;

        assert_int_equal(parse_timespan(s, USEC_PER_SEC, &t), error);
        assert_int_equal(t, 4711); /* untouched on failure */
}

static void test_timespan_units(void **state) {
        assert_span("0", 0);
        assert_span("2", 2 * USEC_PER_SEC);
        assert_span("2s", 2 * USEC_PER_SEC);
        assert_span("500ms", 500 * USEC_PER_MSEC);
        assert_span("500 ms", 500 * USEC_PER_MSEC);
        assert_span("1min", USEC_PER_MINUTE);
        assert_span("1m", USEC_PER_MINUTE);
        assert_span("1min 30s", 90 * USEC_PER_SEC);
        assert_span("1h30min", 90 * USEC_PER_MINUTE);
        assert_span("2d", 2 * USEC_PER_DAY);
        assert_span("1.5s", 1500 * USEC_PER_MSEC);
        assert_span("0.25min", 15 * USEC_PER_SEC);
        assert_span("10us", 10);
        assert_span("3msec", 3000);
        assert_span(" 7 sec ", 7 * USEC_PER_SEC);
        assert_span("infinity", USEC_INFINITY);
        /* A fraction of a long unit: fraction × unit does not fit in 64 bits (0.999999999w
         * parsed as about 4 h), and the result is truncated to whole µs, never rounded up. */
        assert_span("0.999999999w", 604799999395);
        assert_span("0.999999999 weeks", 604799999395);
        assert_span("0.5w", 302400 * USEC_PER_SEC);
        assert_span("1.999999999y", 63115199968442);
        assert_span("0.000000001y", 31557);
}

static void test_timespan_default_unit(void **state) {
        usec_t t;

        assert_int_equal(parse_timespan("250", USEC_PER_MSEC, &t), 0);
        assert_int_equal(t, 250 * USEC_PER_MSEC);
}

static void test_timespan_errors(void **state) {
        assert_span_error("", -EINVAL);
        assert_span_error("   ", -EINVAL);
        assert_span_error("abc", -EINVAL);
        assert_span_error("5 parsecs", -EINVAL);
        assert_span_error("-1s", -EINVAL);
        assert_span_error("1.s", -EINVAL);
        assert_span_error("1sx", -EINVAL);
        assert_span_error("infinity 2s", -EINVAL);
        assert_span_error("99999999999999999999", -ERANGE);
        assert_span_error("999999999999999y", -ERANGE);
        assert_int_equal(parse_timespan(NULL, USEC_PER_SEC, &(usec_t) { 0 }), -EINVAL);
}

static void test_timespan_roundtrip(void **state) {
        static const usec_t spans[] = { 0, 1, 999, USEC_PER_MSEC, 1500 * USEC_PER_MSEC, 90 * USEC_PER_SEC,
                                        USEC_PER_DAY + USEC_PER_HOUR + 7, USEC_INFINITY };
        char buf[FORMAT_TIMESPAN_MAX];

        for (size_t i = 0; i < sizeof(spans) / sizeof(spans[0]); i++) {
                usec_t t;

                format_timespan(buf, sizeof(buf), spans[i]);
                assert_int_equal(parse_timespan(buf, USEC_PER_SEC, &t), 0);
                assert_int_equal(t, spans[i]);
        }
        assert_string_equal(format_timespan(buf, sizeof(buf), 90 * USEC_PER_SEC), "1min 30s");
}

static void test_size(void **state) {
        uint64_t v = 42;

        assert_int_equal(parse_size("0", &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(parse_size("512", &v), 0);
        assert_int_equal(v, 512);
        assert_int_equal(parse_size("4K", &v), 0);
        assert_int_equal(v, 4096);
        assert_int_equal(parse_size("64M", &v), 0);
        assert_int_equal(v, 64ULL << 20);
        assert_int_equal(parse_size("2G", &v), 0);
        assert_int_equal(v, 2ULL << 30);
        assert_int_equal(parse_size("1GiB", &v), 0);
        assert_int_equal(v, 1ULL << 30);
        assert_int_equal(parse_size("infinity", &v), 0);
        assert_int_equal(v, UINT64_MAX);

        v = 42;
        assert_int_equal(parse_size("", &v), -EINVAL);
        assert_int_equal(parse_size("12X", &v), -EINVAL);
        assert_int_equal(parse_size("-5M", &v), -EINVAL);
        assert_int_equal(parse_size("5MM", &v), -EINVAL);
        assert_int_equal(parse_size("99999999999999999G", &v), -ERANGE);
        assert_int_equal(v, 42);
}

/* format_size() writes what parse_size() reads back, with the largest exact suffix. */
static void test_size_format(void **state) {
        static const uint64_t values[] = { 0, 1, 1000, 1024, 1536, 1536ULL << 10, 256ULL << 20, 1ULL << 30,
                                           (1ULL << 40) * 3, (1ULL << 50), UINT64_MAX - 1, UINT64_MAX };
        char buf[FORMAT_SIZE_MAX];

        assert_string_equal(format_size(buf, sizeof(buf), 0), "0");
        assert_string_equal(format_size(buf, sizeof(buf), 1000), "1000");
        assert_string_equal(format_size(buf, sizeof(buf), 1536), "1536");
        assert_string_equal(format_size(buf, sizeof(buf), 1536ULL << 10), "1536K");
        assert_string_equal(format_size(buf, sizeof(buf), 256ULL << 20), "256M");
        assert_string_equal(format_size(buf, sizeof(buf), 1ULL << 30), "1G");
        assert_string_equal(format_size(buf, sizeof(buf), 1ULL << 50), "1024T");
        assert_string_equal(format_size(buf, sizeof(buf), UINT64_MAX), "infinity");

        for (size_t i = 0; i < ELEMENTSOF(values); i++) {
                uint64_t v = 42;

                assert_int_equal(parse_size(format_size(buf, sizeof(buf), values[i]), &v), 0);
                assert_int_equal(v, values[i]);
        }
}

/* util/signal-util.c lives beside: signal names as log lines and LastExit write them. */
static void test_signal_names(void **state) {
        char buf[SIGNAL_NAME_MAX];

        assert_string_equal(signal_to_string(SIGSEGV, buf), "SIGSEGV");
        assert_string_equal(signal_to_string(SIGRTMIN, buf), "SIGRTMIN");
        assert_string_equal(signal_to_string(SIGRTMIN + 3, buf), "SIGRTMIN+3");
        assert_string_equal(signal_to_string(SIGRTMAX, buf), signal_to_string(SIGRTMAX, (char[SIGNAL_NAME_MAX]) {}));
        assert_non_null(strstr(signal_to_string(SIGRTMAX, buf), "SIGRTMIN+"));
        assert_string_equal(signal_to_string(0, buf), "signal 0");
        assert_string_equal(signal_to_string(999, buf), "signal 999");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_timespan_units),
                cmocka_unit_test(test_signal_names),
                cmocka_unit_test(test_timespan_default_unit),
                cmocka_unit_test(test_timespan_errors),
                cmocka_unit_test(test_timespan_roundtrip),
                cmocka_unit_test(test_size),
                cmocka_unit_test(test_size_format),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
