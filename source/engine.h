/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "util/time-util.h"

/*
 * apiary-source's side of the engine: one shared pool's NATS JetStream connection, driven from
 * the helper's sd-event loop. libnats runs threads of its own; what they receive is queued and
 * handed to the loop through an eventfd, so everything below, and every callback, runs on the
 * loop's thread.
 *
 * In the engine, the pool NAME has (docs/shared-pools.md):
 *   the task stream   APIARY_NAME          subject apiary.NAME.t, work queue, durable consumer "workers"
 *   a result stream   APIARY_NAME_R_HOST   subject apiary.NAME.r.HOST, one per submitting host,
 *                                          durable consumer "submitter"
 */

typedef struct Engine Engine;

typedef struct EngineSettings {
        const char *servers;            /* nats://HOST:PORT[,HOST:PORT...] */
        const char *pool;
        const char *host;
        unsigned replicas;
        usec_t lease_usec;              /* the task consumer's AckWait */
        const char *credentials;        /* NULL: none */
        const char *tls_ca;             /* NULL: no TLS */
        usec_t timeout_usec;            /* for a write the engine must confirm */
} EngineSettings;

typedef struct EngineOps {
        void (*state)(void *userdata, const char *state, const char *error);
        /* A task pulled for this host. Strings and payload live until the callback returns. */
        void (*task)(void *userdata, const char *token, const char *id, const char *reply, uint64_t timeout_usec,
                     unsigned deliveries, const void *payload, size_t size);
        /* A result for a task this host submitted. */
        void (*result)(void *userdata, const char *id, bool ok, const void *data, size_t size);
        /* What arrived in one go has been handed over: time to send it on. */
        void (*flush)(void *userdata);
        void (*stats)(void *userdata, uint64_t pending, uint64_t ack_pending, uint64_t redelivered,
                      uint64_t waiting);
} EngineOps;

/* How a write ended: ERROR_NAME is NULL when the engine confirmed it. */
typedef void (*engine_done_fn)(const char *error_name, const char *message, void *userdata);

int engine_new(Engine **ret, const EngineSettings *s, sd_event *event, const EngineOps *ops, void *userdata);
Engine *engine_free(Engine *e);

/* Connects, makes sure the streams and consumers exist, then pulls; retries until it works. The
 * first attempt blocks for at most a few seconds. */
int engine_start(Engine *e);

/* Stores a task in the pool's stream; FN is called once it is stored, or not. */
void engine_publish(Engine *e, const char *id, uint64_t timeout_usec, const void *payload, size_t size,
                    engine_done_fn fn, void *userdata);
/* Stores a task's result for its submitter (at REPLY, once per ID), then acks the task at TOKEN,
 * or terminates it if TERM: it is never delivered again. */
void engine_finish(Engine *e, const char *token, const char *reply, const char *id, bool ok, bool term,
                   const void *data, size_t size, engine_done_fn fn, void *userdata);
/* Gives a task back to the stream, to be delivered at once (to any host). */
void engine_release(Engine *e, const char *token, engine_done_fn fn, void *userdata);
/* Renews a task's lease: it is not delivered again while this keeps coming. */
void engine_renew(Engine *e, const char *token);
/* apiaryd has WANT free places now and has received RECEIVED tasks in all: pulls what fits.
 * AWAITING: it waits for results of tasks it submitted (the results stream is audited then). */
void engine_want(Engine *e, unsigned want, uint64_t received, bool awaiting);

/* The number of deliveries in an ack token, or 0 if it is not one. */
unsigned engine_token_deliveries(const char *token);
