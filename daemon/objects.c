/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-bus.h>

#include "daemon/objects.h"
#include "util/macro.h"

int object_pool_path(const char *name, char **ret) {
        return sd_bus_path_encode(APIARY_POOL_PREFIX, name, ret);
}

int object_worker_path(const char *pool_name, unsigned slot, char **ret) {
        _cleanup_(freep) char *pool_path = NULL;
        int r;

        r = object_pool_path(pool_name, &pool_path);
        if (r < 0)
                return r;
        if (asprintf(ret, "%s/%u", pool_path, slot) < 0)
                return -ENOMEM;
        return 0;
}
