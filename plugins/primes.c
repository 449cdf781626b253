/* SPDX-License-Identifier: MIT */
/*
 * primes: a CPU-bound example. Each task's payload is a number N (decimal text, at most
 * 100000000); the result is the count of primes below N, by trial division, as decimal text.
 * The work grows with N, so it measures what pools of CPU workers buy.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <apiary/plugin.h>

#define PRIMES_MAX 100000000ULL

static bool is_prime(uint64_t n) {
        if (n < 2)
                return false;
        if (n % 2 == 0)
                return n == 2;
        for (uint64_t d = 3; d * d <= n; d += 2)
                if (n % d == 0)
                        return false;
        return true;
}

static int primes_init(const struct apiary_host *host, void **ret_state) {
        *ret_state = (void *) host;
        return 0;
}

static int primes_run(void *state, apiary_task *task) {
        const struct apiary_host *host = state;
        const char *p;
        uint64_t n = 0, count = 0;
        char out[32];
        size_t size;
        int k;

        p = host->task_payload(task, &size);
        if (size == 0 || size > 9)
                return host->task_fail(task, "expected a number from 0 to %llu", PRIMES_MAX);
        for (size_t i = 0; i < size; i++) {
                if (p[i] < '0' || p[i] > '9')
                        return host->task_fail(task, "expected a number from 0 to %llu", PRIMES_MAX);
                n = n * 10 + (uint64_t) (p[i] - '0');
        }
        if (n > PRIMES_MAX)
                return host->task_fail(task, "expected a number from 0 to %llu", PRIMES_MAX);

        for (uint64_t i = 2; i < n; i++)
                if (is_prime(i))
                        count++;

        k = snprintf(out, sizeof(out), "%llu", (unsigned long long) count);
        return host->task_return(task, out, (size_t) k);
}

APIARY_PLUGIN_DEFINE = {
        .abi_version = APIARY_PLUGIN_ABI_VERSION,
        .struct_size = sizeof(struct apiary_plugin),
        .name = "primes",
        .version = "1.0",
        .init = primes_init,
        .run = primes_run,
        .flags = APIARY_PLUGIN_FORK_SAFE,
};
