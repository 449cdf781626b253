/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/apiaryctl/ctl-target.h"
#include "tools/apiaryctl/ctl.h"

void target_done(Target *t) {
        free(t->pool);
        free(t->path);
        free(t->description);
}

/* Pool names have no '/' (see pool_name_is_valid() in config/), so the last one splits off a slot. */
int target_parse(const char *s, bool slot_allowed, bool slot_required, Target *ret) {
        _cleanup_(freep) char *pool = NULL, *pool_path = NULL, *path = NULL, *description = NULL;
        const char *slash = strrchr(s, '/');
        uint32_t slot = 0;
        int r;

        if (slash) {
                if (!slot_allowed)
                        return ctl_usage_error("Expected a pool name, not a worker: \"%s\".", s);
                if (parse_u32(slash + 1, &slot) < 0 || slash == s)
                        return ctl_usage_error("Expected POOL/SLOT with a decimal slot number: \"%s\".", s);
                pool = strndup(s, (size_t) (slash - s));
        } else {
                if (slot_required)
                        return ctl_usage_error("Expected a worker as POOL/SLOT, e.g. echo/0: \"%s\".", s);
                pool = strdup(s);
        }
        if (!pool)
                return ctl_oom();
        if (pool[0] == '\0')
                return ctl_usage_error("Expected a pool name, got an empty one.");

        r = sd_bus_path_encode(APIARY_POOL_PREFIX, pool, &pool_path);
        if (r < 0)
                return ctl_oom();
        if (slash) {
                if (asprintf(&path, "%s/%" PRIu32, pool_path, slot) < 0 ||
                    asprintf(&description, "worker %s/%" PRIu32, pool, slot) < 0)
                        return ctl_oom();
        } else {
                path = TAKE_PTR(pool_path);
                if (asprintf(&description, "pool \"%s\"", pool) < 0)
                        return ctl_oom();
        }

        *ret = (Target) {
                .pool = TAKE_PTR(pool),
                .has_slot = slash != NULL,
                .slot = slot,
                .path = TAKE_PTR(path),
                .description = TAKE_PTR(description),
        };
        return 0;
}

/* An object that does not exist gets UnknownObject, which does not say whether the pool or only
 * the slot is missing: ask the pool. */
int target_not_found(sd_bus *bus, const Target *t, const char *verb, const sd_bus_error *error) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(freep) char *pool_path = NULL, *name = NULL;
        bool pool_exists = false;
        int r;

        if (t->has_slot && sd_bus_path_encode(APIARY_POOL_PREFIX, t->pool, &pool_path) >= 0) {
                r = sd_bus_get_property_string(bus, APIARY_BUS_NAME, pool_path, APIARY_POOL_INTERFACE, "Name", &e,
                                               &name);
                pool_exists = r >= 0;
        }

        fprintf(stderr, "Failed to %s %s: ", verb, t->description);
        if (pool_exists)
                fprintf(stderr, "Pool \"%s\" has no slot %" PRIu32 ".", t->pool, t->slot);
        else
                fprintf(stderr, "No pool named \"%s\".", t->pool);
        if (arg_verbose)
                fprintf(stderr, " (%s)", error->name);
        fputc('\n', stderr);
        return CTL_EXIT_NOT_FOUND;
}
