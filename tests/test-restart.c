/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "daemon/restart.h"

#define MS USEC_PER_MSEC

static void test_first_failure_is_immediate(void **state) {
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, 1, 0), 0);
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, 1, UINT64_MAX), 0);
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, 0, 12345), 0);
}

static void test_exponential_without_jitter(void **state) {
        /* random == 0 takes nothing off: the plain doubling sequence. */
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, 2, 0), 100 * MS);
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, 3, 0), 200 * MS);
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, 4, 0), 400 * MS);
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, 10, 0), 25600 * MS);
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, 11, 0), 30 * USEC_PER_SEC);
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, 1000, 0), 30 * USEC_PER_SEC);
        assert_int_equal(restart_delay(100 * MS, 30 * USEC_PER_SEC, UINT32_MAX, 0), 30 * USEC_PER_SEC);
}

static void test_jitter_bounds(void **state) {
        for (uint64_t r = 0; r < 100000; r += 997) {
                usec_t d = restart_delay(1 * USEC_PER_SEC, 30 * USEC_PER_SEC, 3, r * 7919);

                assert_true(d <= 2 * USEC_PER_SEC);
                assert_true(d >= 2 * USEC_PER_SEC - 2 * USEC_PER_SEC / 4);
        }
        /* A cap below RestartSec wins; infinity stays infinity. */
        assert_int_equal(restart_delay(5 * USEC_PER_SEC, 1 * USEC_PER_SEC, 2, 0), 1 * USEC_PER_SEC);
        assert_int_equal(restart_delay(USEC_INFINITY, USEC_INFINITY, 2, 42), USEC_INFINITY);
        assert_int_equal(restart_delay(0, 0, 5, 42), 0);
}

static void test_start_limit(void **state) {
        StartLimit l;

        assert_int_equal(start_limit_init(&l, 3), 0);
        /* Three failures within the interval are allowed; the fourth trips. */
        assert_false(start_limit_record(&l, 1000 * MS, 10 * USEC_PER_SEC));
        assert_false(start_limit_record(&l, 1001 * MS, 10 * USEC_PER_SEC));
        assert_false(start_limit_record(&l, 1002 * MS, 10 * USEC_PER_SEC));
        assert_true(start_limit_record(&l, 1003 * MS, 10 * USEC_PER_SEC));

        /* Failures spread wider than the interval never trip. */
        start_limit_reset(&l);
        for (unsigned i = 0; i < 20; i++)
                assert_false(start_limit_record(&l, (usec_t) i * 4 * USEC_PER_SEC, 10 * USEC_PER_SEC));

        /* Exactly at the interval's edge still counts as within. */
        start_limit_reset(&l);
        assert_false(start_limit_record(&l, 0, 10 * USEC_PER_SEC));
        assert_false(start_limit_record(&l, 1, 10 * USEC_PER_SEC));
        assert_false(start_limit_record(&l, 2, 10 * USEC_PER_SEC));
        assert_true(start_limit_record(&l, 10 * USEC_PER_SEC, 10 * USEC_PER_SEC));
        assert_false(start_limit_record(&l, 10 * USEC_PER_SEC + 2, 10 * USEC_PER_SEC));
        start_limit_deinit(&l);

        /* Burst 0: no limit at all. */
        assert_int_equal(start_limit_init(&l, 0), 0);
        for (unsigned i = 0; i < 100; i++)
                assert_false(start_limit_record(&l, i, USEC_INFINITY));
        start_limit_deinit(&l);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_first_failure_is_immediate),
                cmocka_unit_test(test_exponential_without_jitter),
                cmocka_unit_test(test_jitter_bounds),
                cmocka_unit_test(test_start_limit),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
