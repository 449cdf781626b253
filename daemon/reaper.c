/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/manager.h"
#include "daemon/reaper.h"
#include "daemon/worker.h"
#include "util/log.h"
#include "util/macro.h"

void reaper_run(Manager *m) {
        char path[64];
        FILE *f;
        long pid;

        siginfo_t any = {};

        /* Nothing exited, the usual case: no need to look further (a fork reply calls us too). */
        m->reap_deferred = false;
        if (waitid(P_ALL, 0, &any, WEXITED | WNOHANG | WNOWAIT) < 0 || any.si_pid == 0)
                return;

        /* apiaryd is single-threaded: its children are its main thread's. */
        snprintf(path, sizeof(path), "/proc/self/task/%i/children", (int) getpid());
        f = fopen(path, "re");
        if (!f)
                return;
        while (fscanf(f, "%ld", &pid) == 1) {
                siginfo_t si = {};

                /* Exited? (Without reaping it yet.) */
                if (waitid(P_PID, (id_t) pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
                        continue;
                if (manager_pid_is_taken(m, (pid_t) pid, NULL))
                        continue;
                if (manager_fork_pending(m)) {
                        /* It may be the child of that Fork(): look again once it is answered. */
                        m->reap_deferred = true;
                        break;
                }
                if (waitid(P_PID, (id_t) pid, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
                        continue;
                log_debug("Reaped process %li, a child of apiaryd no worker or zygote is (%s %i).", pid,
                          si.si_code == CLD_EXITED ? "exit status" : "signal", si.si_status);
        }
        fclose(f);
}

void reaper_fork_answered(Manager *m) {
        if (m->reap_deferred)
                reaper_run(m);
}

static int on_sigchld(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        reaper_run(userdata);
        return 0;
}


int reaper_setup(Manager *m) {
        /* After the child sources: sd-event reaps its own before it dispatches this. */
        sd_event_source *s;
        int r;

        r = sd_event_add_signal(m->event, &s, SIGCHLD, on_sigchld, m);
        if (r < 0)
                return r;
        /* Last: the child sources of workers and zygotes handle theirs first. */
        (void) sd_event_source_set_priority(s, SD_EVENT_PRIORITY_IDLE);
        /* The loop owns it from here on. */
        r = sd_event_source_set_floating(s, true);
        sd_event_source_unref(s);
        return r;
}
