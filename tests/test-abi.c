/* SPDX-License-Identifier: MIT */
/*
 * Pins the plugin ABI of include/apiary/plugin.h, version 1: what plugins already built against it
 * rely on. Every check here that fails after a change to the header means the change breaks
 * those plugins: put the new field at the end of its struct instead (the header's stability
 * rule), or bump APIARY_PLUGIN_ABI_VERSION and update this file on purpose.
 *
 * The order of the fields, their types (function signatures included) and the constants are
 * checked at compile time on every architecture; the exact offsets and sizes at run time, for
 * LP64 (x86_64, aarch64...) and ILP32 targets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <syslog.h>

#include <cmocka.h>

#include "apiary/plugin.h"

#define FIELD_TYPE(type, field) __typeof__(((type *) 0)->field)
#define HAS_TYPE(type, field, expected) \
        __builtin_types_compatible_p(FIELD_TYPE(type, field), expected)
/* FIELD directly follows PREV, with no other field in between (only padding). */
#define FOLLOWS(type, prev, field)                                                      \
        (offsetof(type, field) >= offsetof(type, prev) + sizeof(FIELD_TYPE(type, prev)) && \
         offsetof(type, field) < offsetof(type, prev) + sizeof(FIELD_TYPE(type, prev)) + _Alignof(FIELD_TYPE(type, field)))

/* ---- the version and the constants ---- */

_Static_assert(APIARY_PLUGIN_ABI_VERSION == 1, "this file pins ABI version 1");
_Static_assert(APIARY_TASK_PENDING == 1, "APIARY_TASK_PENDING changed");

_Static_assert(APIARY_LOG_ERR == LOG_ERR && APIARY_LOG_WARNING == LOG_WARNING && APIARY_LOG_NOTICE == LOG_NOTICE &&
               APIARY_LOG_INFO == LOG_INFO && APIARY_LOG_DEBUG == LOG_DEBUG,
               "APIARY_LOG_* are syslog's priorities");
_Static_assert(APIARY_IO_IN == (int) EPOLLIN && APIARY_IO_OUT == (int) EPOLLOUT && APIARY_IO_ERR == (int) EPOLLERR &&
               APIARY_IO_HUP == (int) EPOLLHUP,
               "APIARY_IO_* are epoll's events");

/* ---- struct apiary_config_entry ---- */

_Static_assert(offsetof(struct apiary_config_entry, key) == 0, "key first");
_Static_assert(FOLLOWS(struct apiary_config_entry, key, value), "value after key");
_Static_assert(HAS_TYPE(struct apiary_config_entry, key, const char *), "key");
_Static_assert(HAS_TYPE(struct apiary_config_entry, value, const char *), "value");

/* ---- struct apiary_host: field order ---- */

#define H struct apiary_host
_Static_assert(offsetof(H, abi_version) == 0, "abi_version opens struct apiary_host");
_Static_assert(offsetof(H, struct_size) == 4, "struct_size follows abi_version");
_Static_assert(FOLLOWS(H, struct_size, pool), "pool");
_Static_assert(FOLLOWS(H, pool, slot), "slot");
_Static_assert(FOLLOWS(H, slot, config), "config");
_Static_assert(FOLLOWS(H, config, n_config), "n_config");
_Static_assert(FOLLOWS(H, n_config, config_get), "config_get");
_Static_assert(FOLLOWS(H, config_get, log), "log");
_Static_assert(FOLLOWS(H, log, set_error), "set_error");
_Static_assert(FOLLOWS(H, set_error, task_payload), "task_payload");
_Static_assert(FOLLOWS(H, task_payload, task_return), "task_return");
_Static_assert(FOLLOWS(H, task_return, task_fail), "task_fail");
_Static_assert(FOLLOWS(H, task_fail, io_add), "io_add");
_Static_assert(FOLLOWS(H, io_add, timer_add), "timer_add");
_Static_assert(FOLLOWS(H, timer_add, source_free), "source_free");
_Static_assert(FOLLOWS(H, source_free, now_usec), "now_usec");
_Static_assert(FOLLOWS(H, now_usec, submit), "submit");
/* Version 1 ends with submit(): a field added later goes after it, and hosts of version 1.0
 * must not be assumed to have it (APIARY_HOST_HAS). */
#define HOST_V1_SIZE (offsetof(H, submit) + sizeof(FIELD_TYPE(H, submit)))
_Static_assert(sizeof(H) >= HOST_V1_SIZE, "struct apiary_host lost fields");

/* ---- struct apiary_host: field types ---- */

_Static_assert(HAS_TYPE(H, abi_version, uint32_t), "abi_version");
_Static_assert(HAS_TYPE(H, struct_size, uint32_t), "struct_size");
_Static_assert(HAS_TYPE(H, pool, const char *), "pool");
_Static_assert(HAS_TYPE(H, slot, unsigned), "slot");
_Static_assert(HAS_TYPE(H, config, const struct apiary_config_entry *), "config");
_Static_assert(HAS_TYPE(H, n_config, size_t), "n_config");
_Static_assert(HAS_TYPE(H, config_get, const char *(*)(const struct apiary_host *, const char *)), "config_get");
_Static_assert(HAS_TYPE(H, log, void (*)(const struct apiary_host *, int, const char *, ...)), "log");
_Static_assert(HAS_TYPE(H, set_error, void (*)(const struct apiary_host *, const char *, ...)), "set_error");
_Static_assert(HAS_TYPE(H, task_payload, const void *(*)(apiary_task *, size_t *)), "task_payload");
_Static_assert(HAS_TYPE(H, task_return, int (*)(apiary_task *, const void *, size_t)), "task_return");
_Static_assert(HAS_TYPE(H, task_fail, int (*)(apiary_task *, const char *, ...)), "task_fail");
_Static_assert(HAS_TYPE(H, io_add, int (*)(const struct apiary_host *, int, uint32_t, apiary_io_fn, void *,
                                          apiary_source **)),
               "io_add");
_Static_assert(HAS_TYPE(H, timer_add, int (*)(const struct apiary_host *, uint64_t, apiary_timer_fn, void *,
                                             apiary_source **)),
               "timer_add");
_Static_assert(HAS_TYPE(H, source_free, void (*)(apiary_source *)), "source_free");
_Static_assert(HAS_TYPE(H, now_usec, uint64_t (*)(const struct apiary_host *)), "now_usec");
_Static_assert(HAS_TYPE(H, submit, int (*)(const struct apiary_host *, const char *, const void *, size_t,
                                          apiary_result_fn, void *)),
               "submit");
_Static_assert(__builtin_types_compatible_p(apiary_io_fn, void (*)(apiary_source *, int, uint32_t, void *)),
               "apiary_io_fn");
_Static_assert(__builtin_types_compatible_p(apiary_timer_fn, void (*)(apiary_source *, void *)), "apiary_timer_fn");
_Static_assert(__builtin_types_compatible_p(apiary_result_fn, void (*)(int, const void *, size_t, void *)),
               "apiary_result_fn");

/* ---- struct apiary_plugin ---- */

#define P struct apiary_plugin
_Static_assert(offsetof(P, abi_version) == 0, "abi_version opens struct apiary_plugin");
_Static_assert(offsetof(P, struct_size) == 4, "struct_size follows abi_version");
_Static_assert(FOLLOWS(P, struct_size, name), "name");
_Static_assert(FOLLOWS(P, name, version), "version");
_Static_assert(FOLLOWS(P, version, init), "init");
_Static_assert(FOLLOWS(P, init, run), "run");
_Static_assert(FOLLOWS(P, run, fini), "fini");
#define PLUGIN_V1_SIZE (offsetof(P, fini) + sizeof(FIELD_TYPE(P, fini)))
_Static_assert(sizeof(P) >= PLUGIN_V1_SIZE, "struct apiary_plugin lost fields");

_Static_assert(HAS_TYPE(P, abi_version, uint32_t), "abi_version");
_Static_assert(HAS_TYPE(P, struct_size, uint32_t), "struct_size");
_Static_assert(HAS_TYPE(P, name, const char *), "name");
_Static_assert(HAS_TYPE(P, version, const char *), "version");
_Static_assert(HAS_TYPE(P, init, int (*)(const struct apiary_host *, void **)), "init");
_Static_assert(HAS_TYPE(P, run, int (*)(void *, apiary_task *)), "run");
_Static_assert(HAS_TYPE(P, fini, void (*)(void *)), "fini");
_Static_assert(HAS_TYPE(P, flags, uint64_t), "flags");

/* ---- exact layout, at run time so that every difference is reported ---- */

typedef struct Field {
        const char *name;
        size_t offset;
        size_t expected;
} Field;

#define F(type, field, lp64, ilp32) \
        { #type "." #field, offsetof(type, field), sizeof(void *) == 8 ? (lp64) : (ilp32) }

static void check_fields(const Field *fields, size_t n) {
        unsigned bad = 0;

        for (size_t i = 0; i < n; i++)
                if (fields[i].offset != fields[i].expected) {
                        print_error("%s: offset %zu, the ABI has %zu\n", fields[i].name, fields[i].offset,
                                    fields[i].expected);
                        bad++;
                }
        assert_int_equal(bad, 0);
}

static void skip_unless_known_data_model(void) {
        /* Other data models (LLP64, 16-bit...) are not targets of apiary; nothing to pin. */
        if (!(sizeof(void *) == 8 && sizeof(size_t) == 8 && sizeof(unsigned) == 4) &&
            !(sizeof(void *) == 4 && sizeof(size_t) == 4 && sizeof(unsigned) == 4))
                skip();
}

static void test_host_layout(void **state) {
        const Field fields[] = {
                F(H, abi_version, 0, 0),
                F(H, struct_size, 4, 4),
                F(H, pool, 8, 8),
                F(H, slot, 16, 12),
                F(H, config, 24, 16),
                F(H, n_config, 32, 20),
                F(H, config_get, 40, 24),
                F(H, log, 48, 28),
                F(H, set_error, 56, 32),
                F(H, task_payload, 64, 36),
                F(H, task_return, 72, 40),
                F(H, task_fail, 80, 44),
                F(H, io_add, 88, 48),
                F(H, timer_add, 96, 52),
                F(H, source_free, 104, 56),
                F(H, now_usec, 112, 60),
                F(H, submit, 120, 64),
        };

        skip_unless_known_data_model();
        check_fields(fields, sizeof(fields) / sizeof(fields[0]));
        assert_int_equal(HOST_V1_SIZE, sizeof(void *) == 8 ? 128 : 68);
        /* Version 1.0 exactly; when a field is appended, this becomes >= and the new size is
         * pinned for the new field. */
        assert_int_equal(sizeof(H), HOST_V1_SIZE);
}

static void test_plugin_layout(void **state) {
        const Field fields[] = {
                F(P, abi_version, 0, 0),
                F(P, struct_size, 4, 4),
                F(P, name, 8, 8),
                F(P, version, 16, 12),
                F(P, init, 24, 16),
                F(P, run, 32, 20),
                F(P, fini, 40, 24),
                /* Appended after 1.0. ILP32 ABIs align a uint64_t differently (i386 at 4, arm at
                 * 8): pinned on LP64 only. */
                F(P, flags, 48, offsetof(P, flags)),
        };

        skip_unless_known_data_model();
        check_fields(fields, sizeof(fields) / sizeof(fields[0]));
        assert_int_equal(PLUGIN_V1_SIZE, sizeof(void *) == 8 ? 48 : 28);
        assert_true(sizeof(P) >= PLUGIN_V1_SIZE);
        if (sizeof(void *) == 8)
                assert_int_equal(sizeof(P), 56);
}

static void test_config_entry_layout(void **state) {
        const Field fields[] = {
                F(struct apiary_config_entry, key, 0, 0),
                F(struct apiary_config_entry, value, 8, 4),
        };

        skip_unless_known_data_model();
        check_fields(fields, sizeof(fields) / sizeof(fields[0]));
        /* An array of them is handed to plugins: its stride is ABI too. */
        assert_int_equal(sizeof(struct apiary_config_entry), 2 * sizeof(void *));
}

/* APIARY_HOST_HAS() is how a plugin tells an older host: it must look at struct_size alone. */
static void test_host_has(void **state) {
        struct apiary_host host = { .struct_size = (uint32_t) HOST_V1_SIZE };

        assert_true(APIARY_HOST_HAS(&host, submit));
        assert_true(APIARY_HOST_HAS(&host, now_usec));

        host.struct_size = (uint32_t) offsetof(struct apiary_host, submit);
        assert_false(APIARY_HOST_HAS(&host, submit));
        assert_true(APIARY_HOST_HAS(&host, now_usec));

        host.struct_size = (uint32_t) offsetof(struct apiary_host, submit) + 1;
        assert_false(APIARY_HOST_HAS(&host, submit));

        host.struct_size = 0;
        assert_false(APIARY_HOST_HAS(&host, abi_version));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_host_layout),
                cmocka_unit_test(test_plugin_layout),
                cmocka_unit_test(test_config_entry_layout),
                cmocka_unit_test(test_host_has),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
