/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "worker/plugin-host.h"
#include "ipc/claim.h"
#include "worker/task-link.h"

/* One apiary-worker process: a worker, or a pool's zygote (zygote.c), or a zygote's child. */
typedef struct Context {
        sd_event *event;
        sd_bus *bus;                    /* the link to apiaryd, on fd 3 */
        PluginHost plugin;
        bool plugin_set;
        TaskLink tasks;
        bool tasks_set;
        sd_event_source *exit_source;   /* on_loop_exit(): fini() while the link is up */
        LinkClaim *claim;               /* this worker's claim word (ipc/claim.h); NULL in a zygote */

        char *pool;
        unsigned slot;
        bool zygote;                    /* --zygote: load the plugin once, fork workers on request */
        bool zygote_fork_safe_only;     /* --zygote=fork-safe: ... only if the plugin declares it may */
        pid_t supervisor;
        int bus_fd;
        uint64_t limit_data;            /* --limit-data=: RLIMIT_DATA for the plugin; UINT64_MAX: none */
        uid_t uid;                      /* --uid=, --gid=: switched to before the plugin loads; */
        gid_t gid;                      /* (uid_t) -1, (gid_t) -1: stay as started */

        int exit_status;
} Context;

void context_done(Context *c);
/* Makes the event loop and the link to apiaryd on fd 3. */
int context_connect(Context *c);
/* With the plugin loaded: init(), Ready(), then tasks until told to stop. Returns the exit status. */
int worker_serve(Context *c);
/* Reports Ready() to apiaryd, then runs the event loop until told to stop. Returns the exit status. */
int ready_and_serve(Context *c);
/* Dies with apiaryd (PR_SET_PDEATHSIG), and fails if apiaryd is not our parent. */
int bind_to_supervisor(pid_t supervisor);
/* Under journald, stdout and stderr become a journal stream tagged with pool and slot. */
void connect_output(const Context *c);
/* Tells apiaryd why we cannot start. */
int report_failure(Context *c, const char *error_name, const char *message);
