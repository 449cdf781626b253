/* SPDX-License-Identifier: MIT */
/*
 * sleep: an IO-bound example. Each task's payload is a number of milliseconds (decimal text); the
 * task completes with its own payload after that long, on a timer of the worker's event loop,
 * so one worker holds as many sleeping tasks as its pool's Concurrency= allows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <apiary/plugin.h>

typedef struct Nap {
        const struct apiary_host *host;
        apiary_task *task;
} Nap;

static int parse_ms(const char *p, size_t n, uint64_t *ret) {
        uint64_t v = 0;

        if (n == 0 || n > 12)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (p[i] < '0' || p[i] > '9')
                        return -EINVAL;
                v = v * 10 + (uint64_t) (p[i] - '0');
        }
        *ret = v;
        return 0;
}

static int sleep_init(const struct apiary_host *host, void **ret_state) {
        *ret_state = (void *) host;
        return 0;
}

static void nap_done(apiary_source *source, void *userdata) {
        Nap *nap = userdata;
        const void *payload;
        size_t size;

        payload = nap->host->task_payload(nap->task, &size);
        nap->host->task_return(nap->task, payload, size);
        free(nap);
}

static int sleep_run(void *state, apiary_task *task) {
        const struct apiary_host *host = state;
        const char *payload;
        uint64_t ms;
        size_t size;
        Nap *nap;
        int r;

        payload = host->task_payload(task, &size);
        if (parse_ms(payload, size, &ms) < 0)
                return host->task_fail(task, "expected a number of milliseconds, got %zu bytes of something else", size);

        nap = malloc(sizeof(*nap));
        if (!nap)
                return -ENOMEM;
        *nap = (Nap) { .host = host, .task = task };
        r = host->timer_add(host, ms * 1000, nap_done, nap, NULL);
        if (r < 0) {
                free(nap);
                return r;
        }
        return APIARY_TASK_PENDING;
}

APIARY_PLUGIN_DEFINE = {
        .abi_version = APIARY_PLUGIN_ABI_VERSION,
        .struct_size = sizeof(struct apiary_plugin),
        .name = "sleep",
        .version = "1.0",
        .init = sleep_init,
        .run = sleep_run,
        .flags = APIARY_PLUGIN_FORK_SAFE,
};
