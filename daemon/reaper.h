/* SPDX-License-Identifier: MIT */
#pragma once

typedef struct Manager Manager;

/*
 * Reaps the children of apiaryd that nobody watches: a plugin's clone(CLONE_PARENT) makes its
 * children ours, and so does a zygote whose Fork() answer came too late. Left alone they would
 * stay zombies, counted against the service's TasksMax=. Workers and zygotes are not touched:
 * their child sources reap them. Nothing is reaped while a Fork() is unanswered, since the
 * child it made is ours and not known yet.
 */
int reaper_setup(Manager *m);
/* Reaps what is there now (run on every SIGCHLD). */
void reaper_run(Manager *m);
/* Runs reaper_run() again if it held back for an unanswered Fork(): call once one is answered. */
void reaper_fork_answered(Manager *m);
