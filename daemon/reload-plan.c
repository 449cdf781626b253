/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/manager.h"
#include "daemon/pool.h"
#include "daemon/reload-plan.h"
#include "util/macro.h"

static const char *const change_kind_table[_RELOAD_CHANGE_KIND_MAX] = {
        [RELOAD_CHANGE_ADDED] = "added",
        [RELOAD_CHANGE_REMOVED] = "removed",
        [RELOAD_CHANGE_KEY] = "key",
        [RELOAD_CHANGE_PLUGIN_KEY] = "plugin-key",
        [RELOAD_CHANGE_ROLL] = "roll",
        [RELOAD_CHANGE_SCALE] = "scale",
        [RELOAD_CHANGE_KEEP_SCALE] = "keep-scale",
        [RELOAD_CHANGE_DROP_SCALE] = "drop-scale",
        [RELOAD_CHANGE_RESTART_KEY] = "restart-key",
};

const char *reload_change_kind_to_string(ReloadChangeKind k) {
        if (k < 0 || k >= _RELOAD_CHANGE_KIND_MAX)
                return NULL;
        return change_kind_table[k];
}

void reload_change_free(void *p) {
        ReloadChange *c = p;

        free(c->pool);
        free(c->key);
        free(c->old);
        free(c->new);
        free(c);
}

static void add(GPtrArray *changes, ReloadChangeKind kind, const char *pool, const char *key, const char *old,
                const char *new) {
        ReloadChange *c = g_new0(ReloadChange, 1);

        *c = (ReloadChange) {
                .kind = kind,
                .pool = g_strdup(pool),
                .key = g_strdup(key),
                .old = g_strdup(old),
                .new = g_strdup(new),
        };
        g_ptr_array_add(changes, c);
}

typedef struct KeyDiff {
        GPtrArray *changes;
        const char *pool;
} KeyDiff;

static void on_key(const char *key, bool plugin, const char *old, const char *new, void *userdata) {
        KeyDiff *k = userdata;

        add(k->changes, plugin ? RELOAD_CHANGE_PLUGIN_KEY : RELOAD_CHANGE_KEY, k->pool, key, old, new);
}

void reload_plan_pool(GPtrArray *changes, const PoolConfig *old, unsigned wanted, bool active, const PoolConfig *pc) {
        char from[16], to[16];

        if (!pool_config_equal(old, pc)) {
                pool_config_diff(old, pc, on_key, &(KeyDiff) { .changes = changes, .pool = pc->name });
                if (!pool_config_same_code(old, pc) && active)
                        add(changes, RELOAD_CHANGE_ROLL, pc->name, NULL, NULL, NULL);
        }

        /* A scale in force is said either way: kept, or given up. */
        snprintf(from, sizeof(from), "%u", wanted);
        snprintf(to, sizeof(to), "%u", pc->workers);
        if (old->workers == pc->workers) {
                if (wanted != pc->workers)
                        add(changes, RELOAD_CHANGE_KEEP_SCALE, pc->name, NULL, from, to);
        } else if (wanted != old->workers)
                add(changes, RELOAD_CHANGE_DROP_SCALE, pc->name, NULL, from, to);
        else
                add(changes, RELOAD_CHANGE_SCALE, pc->name, NULL, from, to);
}

static void on_apiary_key(const char *key, bool plugin, const char *old, const char *new, void *userdata) {
        /* What only a restart of apiaryd changes (reload.c keeps it). */
        bool restart = streq(key, "Bus") || streq(key, "PrivateSocket");

        add(userdata, restart ? RELOAD_CHANGE_RESTART_KEY : RELOAD_CHANGE_KEY, "", key, old, new);
}

GPtrArray *reload_plan(Manager *m, const Config *new) {
        GPtrArray *changes = g_ptr_array_new_with_free_func(reload_change_free);

        config_diff(m->config, new, on_apiary_key, changes);
        for (size_t i = 0; i < new->n_pools; i++) {
                const PoolConfig *pc = new->pools[i];
                Pool *p = manager_find_pool(m, pc->name);

                if (!p)
                        add(changes, RELOAD_CHANGE_ADDED, pc->name, NULL, NULL, NULL);
                else if (!pool_is_removed(p))
                        reload_plan_pool(changes, p->config, p->n_wanted, pool_is_active(p), pc);
                /* else: still draining from an earlier reload, and left alone (reload.c says so) */
        }
        for (size_t i = 0; i < m->n_pools; i++) {
                Pool *p = m->pools[i];
                bool kept = false;

                for (size_t j = 0; j < new->n_pools && !kept; j++)
                        kept = streq(new->pools[j]->name, p->config->name);
                if (!kept && !pool_is_removed(p))
                        add(changes, RELOAD_CHANGE_REMOVED, p->config->name, NULL, NULL, NULL);
        }
        return changes;
}

char *reload_change_describe(const ReloadChange *c) {
        switch (c->kind) {
        case RELOAD_CHANGE_ADDED:
                return g_strdup("added");
        case RELOAD_CHANGE_REMOVED:
                return g_strdup("removed: drains, then goes");
        case RELOAD_CHANGE_RESTART_KEY:
                return g_strdup_printf("%s=%s → %s: takes effect when apiaryd restarts", c->key, c->old ?: "(unset)",
                                       c->new ?: "(unset)");
        case RELOAD_CHANGE_KEY:
        case RELOAD_CHANGE_PLUGIN_KEY:
                return g_strdup_printf("%s%s=%s → %s", c->kind == RELOAD_CHANGE_PLUGIN_KEY ? "[Plugin] " : "", c->key,
                                       c->old ?: "(unset)", c->new ?: "(unset)");
        case RELOAD_CHANGE_ROLL:
                return g_strdup("new code: the workers roll over, and roll back if it cannot start");
        case RELOAD_CHANGE_SCALE:
                return g_strdup_printf("scales from %s to %s workers", c->old, c->new);
        case RELOAD_CHANGE_KEEP_SCALE:
                return g_strdup_printf("keeps its %s workers of Scale() (Workers=%s did not change)", c->old, c->new);
        case RELOAD_CHANGE_DROP_SCALE:
                return g_strdup_printf("Workers= changed: its Scale() to %s workers gives way, scales to %s", c->old,
                                       c->new);
        default:
                return NULL;
        }
}
