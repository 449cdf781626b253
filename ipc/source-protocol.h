/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The private apiaryd↔apiary-source protocol: D-Bus, peer to peer, over a socketpair that apiaryd
 * makes before it spawns apiary-source for one shared pool (the helper's end is its fd 3, as for
 * a worker). apiary-source holds the pool's connection to the task engine (NATS JetStream); apiaryd
 * holds every task's state, and ack tokens are data it keeps, so a restarted helper can still
 * ack. See docs/source-protocol.md.
 */

/* Served by apiaryd on the helper's connection. */
#define SOURCE_SUPERVISOR_OBJECT_PATH "/org/apiary/Supervisor"
#define SOURCE_SUPERVISOR_INTERFACE "org.apiary.SourceSupervisor1"

/* Served by apiary-source on its connection. */
#define SOURCE_OBJECT_PATH "/org/apiary/Source"
#define SOURCE_INTERFACE "org.apiary.Source1"

/* Bumped whenever a signature below changes: Hello refuses a helper of another version. */
#define SOURCE_PROTOCOL_VERSION 2u

/* The helper → apiaryd calls (SourceSupervisor1); all but Hello want no reply. */
#define SOURCE_HELLO_IN "u"                             /* protocol version */
#define SOURCE_HELLO_OUT "a(ss)"                        /* settings, key=value (source_setting_*) */
#define SOURCE_STATE_IN "ss"                            /* state (SourceState names), error or "" */
#define SOURCE_TASK "ssstuay"                           /* token, id, reply, timeout_usec, deliveries, payload */
#define SOURCE_TASKS_IN "a(" SOURCE_TASK ")"
#define SOURCE_RESULT "sbay"                            /* id, ok, data (the reason if not ok) */
#define SOURCE_RESULTS_IN "a(" SOURCE_RESULT ")"
#define SOURCE_STATS_IN "tttt"                          /* pending, ack_pending, redelivered, waiting */

/* The apiaryd → helper calls (Source1). */
#define SOURCE_OUTCOME "ss"                             /* error name and message; "" "" when it went well */
#define SOURCE_PUBLISH_ITEM "stay"                      /* id, timeout_usec (0: the pool's), payload */
#define SOURCE_PUBLISH_IN "a(" SOURCE_PUBLISH_ITEM ")"
#define SOURCE_PUBLISH_OUT "a(" SOURCE_OUTCOME ")"      /* one per item, in order */
#define SOURCE_WANT_IN "utb"                            /* places free now, tasks received so far,
                                                         * whether results are awaited here */
#define SOURCE_FINISH_ITEM "sssbbay"                    /* token, reply, id, ok, term, data */
#define SOURCE_FINISH_IN "a(" SOURCE_FINISH_ITEM ")"
#define SOURCE_FINISH_OUT "a(" SOURCE_OUTCOME ")"
#define SOURCE_TOKENS_IN "as"                           /* Release (answered when done) and Renew (no reply) */

/* The settings Hello answers with. */
#define SOURCE_SETTING_SERVERS "servers"                /* nats://HOST:PORT,... */
#define SOURCE_SETTING_POOL "pool"
#define SOURCE_SETTING_HOST "host"                      /* HostId= */
#define SOURCE_SETTING_REPLICAS "replicas"
#define SOURCE_SETTING_LEASE_USEC "lease_usec"
#define SOURCE_SETTING_CREDENTIALS "credentials"        /* a .creds file, or "" */
#define SOURCE_SETTING_TLS_CA "tls_ca"                  /* a CA bundle, or "" */
#define SOURCE_SETTING_TIMEOUT_USEC "timeout_usec"      /* how long the engine may take to store a write */

/* What apiaryd shows as the pool's SourceState. */
#define SOURCE_STATE_CONNECTING "connecting"
#define SOURCE_STATE_READY "ready"
#define SOURCE_STATE_UNAVAILABLE "unavailable"
#define SOURCE_STATE_FAILED "failed"

/* The error names a Publish or Finish item can carry, besides the empty one. */
#define SOURCE_ERROR_UNAVAILABLE "org.apiary.Apiary1.Error.SourceUnavailable"
#define SOURCE_ERROR_TOO_LARGE "org.apiary.Apiary1.Error.TooLarge"

/* Header fields of a task message in the stream. */
#define SOURCE_HEADER_ID "Nats-Msg-Id"
#define SOURCE_HEADER_REPLY "Apiary-Reply"              /* the subject its result goes to */
#define SOURCE_HEADER_TIMEOUT "Apiary-Timeout-Usec"     /* the submitter's "timeout" option */
#define SOURCE_HEADER_OK "Apiary-Ok"                    /* of a result message: "1" or "0" */
