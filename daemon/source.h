/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "daemon/task.h"

/*
 * A shared pool's source (docs/shared-pools.md): its tasks live in a NATS JetStream stream that
 * every host with the pool pulls from. The engine client is apiary-source, a helper process this
 * spawns and restarts, over a private link (docs/source-protocol.md); here is everything apiaryd
 * knows: the tasks submitted here until their result comes back from whichever host ran them, the
 * tasks pulled to run here with their ack tokens, and the pull credit (exactly the free places).
 */

typedef struct Source {
        Pool *pool;
        pid_t pid;                      /* the helper, or 0 */
        sd_event_source *child_source;
        sd_bus *link;
        char *state;                    /* SourceState: connecting, ready, unavailable, failed */
        char *error;                    /* SourceError, "" if none */
        usec_t restart_usec;            /* the next restart of a helper that exited waits this long */
        sd_event_source *restart_source;
        sd_event_source *defer_source;  /* once a turn: Want, and the Publish and Finish batches */
        sd_event_source *renew_source;  /* renews the leases of what is held here */
        sd_event_source *retry_source;  /* Finish again what the engine did not confirm */
        sd_event_source *kill_source;   /* a stopping helper that takes too long */

        uint64_t received;              /* tasks received from the current helper */
        unsigned want_sent;             /* the last Want(places, received, awaiting) sent */
        uint64_t received_sent;
        bool awaiting_sent;
        bool want_sent_valid;

        GArray *to_publish;             /* ids of tasks (TASK_PUBLISHING) for the next Publish */
        GQueue to_finish;               /* FinishItem for the next Finish */
        GQueue calls;                   /* SourceCall not answered yet */
        GQueue held;                    /* pulled tasks, queued or running (Task.source_link) */
        unsigned n_finishing;           /* FinishItem sent or to send */

        uint64_t pending, ack_pending, redelivered, waiting;    /* the stream's, from Stats */
        uint64_t n_pulled;              /* tasks pulled to run here */
        uint64_t n_ran;                 /* ... that ran to their end here, their result stored */
        uint64_t n_released;            /* ... given back to the engine */
        uint64_t n_duplicates;          /* results dropped: their task had ended already */
        uint64_t n_awaiting;            /* tasks submitted here whose end has not come */

        bool stopping;                  /* apiaryd stops, or the pool goes */
        bool helper_stopping;           /* SIGTERM sent: the helper's exit is expected */
} Source;

int source_new(Source **ret, Pool *p);
Source *source_free(Source *s);

/* T, just submitted here (its pool is S's), goes to the engine; the edge hears task_stored()
 * once it is stored, or task_rejected(). */
void source_publish(Source *s, Task *t);
/* T, pulled to run here, ended: its result goes to its submitter, then the engine forgets it.
 * T is freed by the caller. */
void source_task_ended(Source *s, Task *t, bool ok, const void *data, size_t size);
/* T, pulled to run here, goes back to the engine to run anywhere; T is freed. */
void source_release(Source *s, Task *t);
/* T, pulled, is freed: S holds it no more. */
void source_forget(Source *s, Task *t);
/* The pool's free places may have changed: Want goes out once this turn, if it changed. */
void source_places_changed(Source *s);
/* Whether tasks can be submitted now; if not, why in *RET_WHY. */
bool source_is_ready(const Source *s, const char **ret_why);
/* The pool goes, or apiaryd stops: nothing more is pulled, tasks submitted here that wait for
 * their result are rejected with WHY and REASON (they still run, elsewhere), and once the
 * pool's workers are gone and what they ran is acked or released, the helper stops. */
void source_stop(Source *s, TaskRejection why, const char *reason);
/* Stops the helper if S is stopping and nothing is left to do. */
void source_check_stop(Source *s);
bool source_is_stopped(const Source *s);
/* The helper's settings changed (a reload): it is restarted with the new ones. What is held
 * here stays held: its tokens stay good. */
void source_restart_helper(Source *s);
