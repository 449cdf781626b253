/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>

typedef struct Manager Manager;

/* Re-reads the configuration and starts to apply it (see reload.c): it ends, and the manager's
 * observer hears (reload_finished), once the new settings run in every slot or were rolled back.
 * On a configuration error nothing changes, *RET_ERROR says which file, group and key, and it
 * returns a negative errno; -EBUSY while a reload is under way, -ESHUTDOWN while stopping. */
int manager_reload(Manager *m, char **ret_error);
/* What a reload would change now (reload-plan.h), without changing anything; a negative errno and
 * *RET_ERROR as manager_reload()'s for a configuration that does not load. */
int manager_plan_reload(Manager *m, GPtrArray **ret, char **ret_error);
/* Ends a reload under way once nothing of it is left to do (deferred). */
void manager_reload_check(Manager *m);
/* apiaryd stops: a reload under way ends unfinished. */
void manager_reload_abort(Manager *m);

/* Frees pools that were removed by a reload once they are idle (deferred to the loop). */
void manager_schedule_gc(Manager *m);
