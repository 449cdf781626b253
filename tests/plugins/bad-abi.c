/* SPDX-License-Identifier: MIT */
/* A plugin built for an ABI version this host does not speak. */
#include <apiary/plugin.h>

static int bad_run(void *state, apiary_task *task) {
        return -1;
}

APIARY_PLUGIN_DEFINE = {
        .abi_version = 999,
        .struct_size = sizeof(struct apiary_plugin),
        .name = "bad-abi",
        .version = "1.0",
        .run = bad_run,
};
