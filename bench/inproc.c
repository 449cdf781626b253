/* SPDX-License-Identifier: MIT */
/*
 * bench-inproc: loads an Apiary plugin with dlopen() and calls its run() directly, with a fake
 * host table, in this one process: the cost of a task with no supervisor, no bus and no worker.
 * The difference to the same task through apiaryd is the dispatch overhead.
 *
 *   bench-inproc PLUGIN.so echo N SIZE      N tasks of a SIZE-byte payload, each checked
 *   bench-inproc PLUGIN.so primes N LIMIT   N tasks of LIMIT, each result checked with a sieve
 *
 * Prints one line of KEY=VALUE pairs: tasks, ok, bad, seconds, ns_per_task. Exits 1 if any
 * result was wrong.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apiary/plugin.h>

/* The plugin sees only an opaque pointer: this is our side of it. */
struct apiary_task {
        const void *payload;
        size_t size;
        char *result;
        size_t result_size;
        bool done;
        bool ok;
};

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static const char *host_config_get(const struct apiary_host *host, const char *key) {
        return NULL;
}

static void host_log(const struct apiary_host *host, int priority, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static void host_set_error(const struct apiary_host *host, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static const void *host_task_payload(apiary_task *task, size_t *ret_size) {
        *ret_size = task->size;
        return task->payload;
}

/* Copies the result, as apiary-worker does (it copies into the reply message). */
static int host_task_return(apiary_task *task, const void *result, size_t size) {
        if (task->done)
                return -EALREADY;
        task->result = malloc(size + 1);
        if (!task->result)
                return -ENOMEM;
        memcpy(task->result, result, size);
        task->result[size] = '\0';
        task->result_size = size;
        task->done = task->ok = true;
        return 0;
}

static int host_task_fail(apiary_task *task, const char *format, ...) {
        va_list ap;
        int k;

        if (task->done)
                return -EALREADY;
        va_start(ap, format);
        k = vasprintf(&task->result, format, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        task->result_size = (size_t) k;
        task->done = true;
        task->ok = false;
        return 0;
}

/* The count of primes below N, by a sieve: not the plugin's algorithm, so it checks it. */
static uint64_t primes_below(uint64_t n) {
        uint64_t count = 0;
        char *composite;

        if (n < 3)
                return 0;
        composite = calloc(n, 1);
        if (!composite)
                abort();
        for (uint64_t i = 2; i < n; i++) {
                if (composite[i])
                        continue;
                count++;
                for (uint64_t j = i * i; j < n; j += i)
                        composite[j] = 1;
        }
        free(composite);
        return count;
}

int main(int argc, char *argv[]) {
        const struct apiary_plugin *plugin;
        struct apiary_host host = {
                .abi_version = APIARY_PLUGIN_ABI_VERSION,
                .struct_size = sizeof(struct apiary_host),
                .pool = "bench",
                .slot = 0,
                .config_get = host_config_get,
                .log = host_log,
                .set_error = host_set_error,
                .task_payload = host_task_payload,
                .task_return = host_task_return,
                .task_fail = host_task_fail,
        };
        unsigned long n, arg, ok = 0, bad = 0;
        char expected[32], payload[4096];
        size_t payload_size;
        bool echo;
        void *dl, *state = NULL;
        uint64_t elapsed;

        if (argc != 5) {
                fprintf(stderr, "usage: %s PLUGIN.so echo|primes N SIZE|LIMIT\n", argv[0]);
                return 2;
        }
        echo = strcmp(argv[2], "echo") == 0;
        if (!echo && strcmp(argv[2], "primes") != 0) {
                fprintf(stderr, "unknown mode %s\n", argv[2]);
                return 2;
        }
        n = strtoul(argv[3], NULL, 10);
        arg = strtoul(argv[4], NULL, 10);

        dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!dl) {
                fprintf(stderr, "dlopen: %s\n", dlerror());
                return 1;
        }
        plugin = dlsym(dl, APIARY_PLUGIN_SYMBOL);
        if (!plugin || plugin->abi_version != APIARY_PLUGIN_ABI_VERSION || !plugin->run) {
                fprintf(stderr, "%s: not an Apiary plugin of ABI %u\n", argv[1], APIARY_PLUGIN_ABI_VERSION);
                return 1;
        }
        if (plugin->init && plugin->init(&host, &state) < 0) {
                fprintf(stderr, "init() failed\n");
                return 1;
        }

        if (echo) {
                if (arg == 0 || arg > sizeof(payload)) {
                        fprintf(stderr, "SIZE must be 1-%zu\n", sizeof(payload));
                        return 2;
                }
                payload_size = arg;
        } else {
                snprintf(expected, sizeof(expected), "%llu", (unsigned long long) primes_below(arg));
                payload_size = (size_t) snprintf(payload, sizeof(payload), "%lu", arg);
        }

        elapsed = 0;
        for (unsigned long i = 0; i < n; i++) {
                struct apiary_task task = { .payload = payload, .size = payload_size };
                uint64_t t0;
                int r;

                if (echo)
                        /* A different payload each time, like the bus benchmarks send. */
                        for (size_t j = 0; j < payload_size; j++)
                                payload[j] = (char) ('a' + (i + j) % 26);

                t0 = now_ns();
                r = plugin->run(state, &task);
                elapsed += now_ns() - t0;

                if (r < 0 || !task.done || !task.ok)
                        bad++;
                else if (echo ? task.result_size == payload_size && memcmp(task.result, payload, payload_size) == 0
                              : strcmp(task.result, expected) == 0)
                        ok++;
                else
                        bad++;
                free(task.result);
        }
        if (plugin->fini)
                plugin->fini(state);

        printf("tasks=%lu ok=%lu bad=%lu failed=0 seconds=%.6f ns_per_task=%.1f%s%s\n", n, ok, bad, elapsed / 1e9,
               n ? (double) elapsed / (double) n : 0.0, echo ? "" : " expected=", echo ? "" : expected);
        return bad == 0 && ok == n ? 0 : 1;
}
