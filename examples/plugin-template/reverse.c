/* SPDX-License-Identifier: MIT */
/*
 * reverse: an Apiary plugin that returns each task's payload reversed, byte by byte.
 *
 *   [Pool NAME Plugin]
 *   MaxSize=1048576     longer payloads fail their task (bytes; default 1048576)
 *
 * It is synchronous: run() completes the task before it returns.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apiary/plugin.h>

#define MAX_SIZE_DEFAULT 1048576

typedef struct Reverse {
        const struct apiary_host *host;
        size_t max_size;
} Reverse;

/* Once per worker: read the configuration, allocate the state that run() gets. */
static int reverse_init(const struct apiary_host *host, void **ret_state) {
        const char *v = host->config_get(host, "MaxSize");
        unsigned long long max = MAX_SIZE_DEFAULT;
        Reverse *r;

        /* apiaryd --check-config cannot know our keys: a typo would pass silently, so any key
         * but ours fails the start, naming it. */
        for (size_t i = 0; i < host->n_config; i++)
                if (strcmp(host->config[i].key, "MaxSize") != 0) {
                        host->set_error(host, "unknown key %s= in [Pool %s Plugin]; this plugin knows MaxSize=",
                                        host->config[i].key, host->pool);
                        return -EINVAL;
                }

        if (v) {
                char *end;

                errno = 0;
                max = strtoull(v, &end, 10);
                if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || max > SIZE_MAX) {
                        /* The reason reaches the operator: the pool's FailureReason, and stderr. */
                        host->set_error(host, "MaxSize=%s: expected a number of bytes", v);
                        return -EINVAL;
                }
        }

        r = malloc(sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->host = host;
        r->max_size = (size_t) max;
        host->log(host, APIARY_LOG_DEBUG, "reverse ready, MaxSize=%llu", max);
        *ret_state = r;
        return 0;
}

/* Once per task. */
static int reverse_run(void *state, apiary_task *task) {
        Reverse *r = state;
        const struct apiary_host *host = r->host;
        const unsigned char *payload;
        unsigned char *out;
        size_t size;
        int k;

        payload = host->task_payload(task, &size);
        if (size > r->max_size)
                return host->task_fail(task, "payload of %zu bytes is longer than MaxSize=%zu", size, r->max_size);

        out = malloc(size > 0 ? size : 1);
        if (!out)
                return -ENOMEM;         /* the host fails the task with strerror(ENOMEM) */
        for (size_t i = 0; i < size; i++)
                out[i] = payload[size - 1 - i];
        k = host->task_return(task, out, size);        /* copies the result */
        free(out);
        return k;
}

static void reverse_fini(void *state) {
        free(state);
}

APIARY_PLUGIN_DEFINE = {
        .abi_version = APIARY_PLUGIN_ABI_VERSION,
        .struct_size = sizeof(struct apiary_plugin),
        .name = "reverse",
        .version = "1.0",
        .init = reverse_init,
        .run = reverse_run,
        .fini = reverse_fini,
        .flags = APIARY_PLUGIN_FORK_SAFE,
};
