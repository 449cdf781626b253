/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ipc/link-calls.h"
#include "ipc/protocol.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/time-util.h"
#include "worker/zygote.h"

/* In the new child: becomes the worker of SLOT on the link FD with its claim in the page
 * CLAIMS_FD, and never returns. */
static _noreturn_ void child_run(Context *c, unsigned slot, int fd, int claims_fd) {
        int status;

        /* Mapped before the fds go: a mapping outlives its fd. */
        if (link_claim_map(claims_fd, slot % LINK_CLAIMS_PER_PAGE, &c->claim) < 0)
                _exit(WORKER_EXIT_FAILURE);

        /* The link as fd 3, nothing else but stdio: the zygote's link, loop and signalfd go. The
         * zygote's sd-bus and sd-event objects are left alone (they belong to the zygote). */
        if (dup2(fd, WORKER_BUS_FD) < 0)
                _exit(WORKER_EXIT_LINK);
        (void) close_range(WORKER_BUS_FD + 1, ~0U, 0);

        /* What posix_spawn() gives a spawned worker: a session of its own, no signal blocked. A
         * worker must lead its process group, since apiaryd kills the group with the worker; if
         * setsid() fails (an old group still has this PID as its ID), exit: the next one gets
         * another PID. */
        if (setsid() < 0)
                _exit(WORKER_EXIT_FAILURE);
        sigset_t none;
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
        if (bind_to_supervisor(c->supervisor) < 0)
                _exit(WORKER_EXIT_LINK);

        c->zygote = false;
        c->slot = slot;
        c->event = NULL;
        c->bus = NULL;
        connect_output(c);

        if (context_connect(c) < 0)
                _exit(WORKER_EXIT_LINK);
        c->plugin.event = c->event;
        c->plugin.link = c->bus;
        c->plugin.host.slot = slot;

        status = worker_serve(c);
        if (c->tasks_set)
                task_link_done(&c->tasks);
        plugin_host_deinit(&c->plugin);
        sd_bus_flush_close_unref(c->bus);
        fflush(NULL);
        /* Not exit(): atexit handlers and destructors are the zygote's business. */
        _exit(status);
}

/* Zygote1.Fork(u slot, h link, h claims) → (u pid) */
static int method_fork(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Context *c = userdata;
        uint32_t slot;
        pid_t pid;
        int fd, claims_fd, r;

        r = link_read_fork(msg, &slot, &fd, &claims_fd);
        if (r < 0)
                return r;

        /*
         * CLONE_PARENT: the child is apiaryd's, not ours, so apiaryd waits for it and gets its
         * exit status as for a spawned worker. A raw clone() runs no atfork handlers: the child
         * only uses the plugin (loaded, not initialized) and objects it makes anew. glibc (≥ 2.34)
         * asks the kernel for the thread id where it matters (raise(), abort()).
         */
        pid = (pid_t) syscall(SYS_clone, CLONE_PARENT | SIGCHLD, NULL, NULL, NULL, 0);
        if (pid < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot fork a worker: %m");
        if (pid == 0)
                child_run(c, slot, fd, claims_fd);

        return link_reply_fork(msg, pid);
}

static const sd_bus_vtable zygote_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_NAMES("Fork", LINK_FORK_IN, SD_BUS_PARAM(slot) SD_BUS_PARAM(link) SD_BUS_PARAM(claims),
                                 LINK_FORK_OUT, SD_BUS_PARAM(pid),
                                 method_fork, 0),
        SD_BUS_VTABLE_END
};

int zygote_serve(Context *c) {
        int r;

        r = sd_bus_add_object_vtable(c->bus, NULL, ZYGOTE_OBJECT_PATH, ZYGOTE_INTERFACE, zygote_vtable, c);
        if (r < 0) {
                log_error_errno(r, "Failed to register the zygote object: %m");
                return WORKER_EXIT_FAILURE;
        }

        /* Loaded: apiaryd may ask for workers now. */
        return ready_and_serve(c);
}
