/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The private supervisor↔worker protocol: D-Bus, peer to peer, over a socketpair that apiaryd
 * makes before it spawns apiary-worker (the worker end is its fd 3). No bus daemon is involved and
 * these names exist only on that connection. See docs/worker-protocol.md.
 */

/* Served by apiaryd on each worker connection. */
#define SUPERVISOR_OBJECT_PATH "/org/apiary/Supervisor"
#define SUPERVISOR_INTERFACE "org.apiary.Supervisor1"

/* Served by apiary-worker on its connection. */
#define WORKER_OBJECT_PATH "/org/apiary/Worker"
#define WORKER_INTERFACE "org.apiary.Worker1"

/* Served by apiary-worker --zygote on its connection. */
#define ZYGOTE_OBJECT_PATH "/org/apiary/Zygote"
#define ZYGOTE_INTERFACE "org.apiary.Zygote1"

#define WORKER_ERROR_LOAD "org.apiary.Worker1.Error.Load"
#define WORKER_ERROR_INIT "org.apiary.Worker1.Error.Init"

/* A Worker1.Dispatch message carries tasks until their payloads reach this many bytes. */
#define DISPATCH_BYTES_MAX (1024u * 1024u)
/* A Supervisor1.Results message carries results until they reach this many bytes, and a result
 * may be at most RESULT_BYTES_MAX (a D-Bus array holds 64 MiB). */
#define RESULTS_BYTES_MAX (1024u * 1024u)
#define RESULT_BYTES_MAX (32u * 1024u * 1024u)

/* The fd number apiary-worker finds its end of the socketpair on. */
#define WORKER_BUS_FD 3

/* Messages apiaryd lets queue for a worker or zygote that does not read its link, before it
 * kills it. */
#define LINK_QUEUED_MAX 4096u

/* apiary-worker's exit statuses, which apiaryd reads to decide what to do next. */
enum {
        WORKER_EXIT_OK = 0,             /* stopped as asked */
        WORKER_EXIT_FAILURE = 1,        /* anything else went wrong */
        WORKER_EXIT_USAGE = 2,          /* bad command line */
        WORKER_EXIT_LOAD = 3,           /* plugin missing, not loadable, no symbol, wrong ABI: restarting will not help */
        WORKER_EXIT_INIT = 4,           /* the plugin's init() failed */
        WORKER_EXIT_LINK = 5,           /* the connection to apiaryd failed or closed */
};
