/* SPDX-License-Identifier: MIT */
/*
 * no-init: a plugin without init() or fini(). Its run() gets the host table as its state
 * (<apiary/plugin.h>), and returns the payload with "no-init: " in front.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apiary/plugin.h>

static int no_init_run(void *state, apiary_task *task) {
        const struct apiary_host *host = state;
        const void *payload;
        size_t size;
        char *result;
        int r;

        payload = host->task_payload(task, &size);
        result = malloc(size + 9);
        if (!result)
                return host->task_fail(task, "out of memory");
        memcpy(result, "no-init: ", 9);
        if (size > 0)
                memcpy(result + 9, payload, size);
        r = host->task_return(task, result, size + 9);
        free(result);
        return r;
}

APIARY_PLUGIN_DEFINE = {
        .abi_version = APIARY_PLUGIN_ABI_VERSION,
        .struct_size = sizeof(struct apiary_plugin),
        .name = "no-init",
        .version = "1.0",
        .run = no_init_run,
};
