/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <glib.h>

#include "config/config.h"

typedef struct Manager Manager;

/*
 * What a reload changes, worked out before anything is changed: what apiaryctl reload prints (and
 * --dry-run shows without applying, as supervisorctl reread does), what the reload logs, and what
 * Manager.PlanReload() returns (docs/control.md).
 */
typedef enum ReloadChangeKind {
        RELOAD_CHANGE_ADDED,            /* a new pool: started */
        RELOAD_CHANGE_REMOVED,          /* a pool no longer configured: drained, then gone */
        RELOAD_CHANGE_KEY,              /* KEY= of [Pool NAME] (or of [Apiary]: POOL "") changed, OLD → NEW
                                         * (NULL: not set) */
        RELOAD_CHANGE_PLUGIN_KEY,       /* KEY= of [Pool NAME Plugin] changed */
        RELOAD_CHANGE_ROLL,             /* new code: its workers roll over, and roll back if it cannot start */
        RELOAD_CHANGE_SCALE,            /* Workers= changed: from OLD to NEW workers */
        RELOAD_CHANGE_KEEP_SCALE,       /* Workers= did not change: the Scale() to OLD stays (NEW is Workers=) */
        RELOAD_CHANGE_DROP_SCALE,       /* Workers= changed: the Scale() to OLD gives way to NEW */
        RELOAD_CHANGE_RESTART_KEY,      /* KEY= of [Apiary] changed, which only a restart of apiaryd applies */
        _RELOAD_CHANGE_KIND_MAX,
        _RELOAD_CHANGE_KIND_INVALID = -EINVAL,
} ReloadChangeKind;

typedef struct ReloadChange {
        ReloadChangeKind kind;
        char *pool;
        char *key;              /* KEY, PLUGIN_KEY; else NULL */
        char *old;              /* NULL where there is none */
        char *new;
} ReloadChange;

void reload_change_free(void *c);

/* The changes of applying NEW (loaded and checked) to M's pools: each kept pool's, in NEW's order,
 * then the removed pools. A GPtrArray of ReloadChange, which frees them. */
GPtrArray *reload_plan(Manager *m, const Config *new);
/* The changes of one pool, which runs OLD with WANTED workers (ACTIVE: it runs), whose settings
 * become PC, appended to CHANGES. */
void reload_plan_pool(GPtrArray *changes, const PoolConfig *old, unsigned wanted, bool active, const PoolConfig *pc);

/* "added", "removed", "key", "plugin-key", "roll", "scale", "keep-scale", "drop-scale", "restart-key". */
const char *reload_change_kind_to_string(ReloadChangeKind k);
/* One line for a person: "Plugin=echo.so → control.so", "workers roll over to the new code". */
char *reload_change_describe(const ReloadChange *c);
