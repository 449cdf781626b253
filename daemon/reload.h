/* SPDX-License-Identifier: MIT */
#pragma once

typedef struct Manager Manager;

/* Re-reads the configuration and applies it (see reload.c). On a configuration error nothing
 * changes and *RET_ERROR says which file, group and key. */
int manager_reload(Manager *m, char **ret_error);

/* Frees pools that were removed by a reload once they are idle (deferred to the loop). */
void manager_schedule_gc(Manager *m);
