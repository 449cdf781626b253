/* SPDX-License-Identifier: MIT */
/* echo: returns every task's payload as its result. */
#include <apiary/plugin.h>

static int echo_init(const struct apiary_host *host, void **ret_state) {
        *ret_state = (void *) host;
        return 0;
}

static int echo_run(void *state, apiary_task *task) {
        const struct apiary_host *host = state;
        const void *payload;
        size_t size;

        payload = host->task_payload(task, &size);
        return host->task_return(task, payload, size);
}

APIARY_PLUGIN_DEFINE = {
        .abi_version = APIARY_PLUGIN_ABI_VERSION,
        .struct_size = sizeof(struct apiary_plugin),
        .name = "echo",
        .version = "1.0",
        .init = echo_init,
        .run = echo_run,
        .flags = APIARY_PLUGIN_FORK_SAFE,
};
