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

/* The signature of each call, written once: the vtables that serve the calls
 * (ipc/link-supervisor.c, worker/task-link.c, worker/zygote.c) and the codecs that write and read
 * them (ipc/task-codec.c, ipc/link-calls.c) use these. */
#define LINK_SETTING "ss"                               /* one key=value of the plugin's configuration */
#define LINK_HELLO_IN "u"                               /* abi_version */
#define LINK_HELLO_OUT "sa(" LINK_SETTING ")ah"         /* plugin_path, config, claims (one for a worker) */
#define LINK_READY_IN "sst"                             /* plugin_name, plugin_version, monotonic_usec */
#define LINK_FAILED_IN "ss"                             /* error_name, message */
#define LINK_SUBMIT_IN "say"                            /* pool, payload */
#define LINK_SUBMIT_OUT "ay"                            /* result */
#define LINK_RESULT "tbtay"                             /* id, ok, run_usec, data */
#define LINK_RESULTS_IN "a(" LINK_RESULT ")"            /* results */
#define LINK_TASK "tay"                                 /* id, payload */
#define LINK_DISPATCH_IN "ua(" LINK_TASK ")"            /* max_running, tasks */
#define LINK_FORK_IN "uhh"                              /* slot, link, claims */
#define LINK_FORK_OUT "u"                               /* pid */

#define WORKER_ERROR_LOAD "org.apiary.Worker1.Error.Load"
#define WORKER_ERROR_INIT "org.apiary.Worker1.Error.Init"
#define WORKER_ERROR_NOT_FORK_SAFE "org.apiary.Worker1.Error.NotForkSafe"

/* A Worker1.Dispatch message carries tasks until their payloads reach this many bytes. */
#define DISPATCH_BYTES_MAX (1024u * 1024u)
/* A Supervisor1.Results message carries results until they reach this many bytes, and a result
 * may be at most RESULT_BYTES_MAX, APIARY_RESULT_SIZE_MAX of the plugin header: what fits in one
 * message on the system bus, whose limit is 32 MiB. */
#define RESULTS_BYTES_MAX (1024u * 1024u)
#define RESULT_BYTES_MAX (32u * 1024u * 1024u - 64u * 1024u)

/* A worker's turn of its loop runs tasks for at most this long (µs) before it sends their ends:
 * apiaryd learns that a task started, from the end of the one before it, within about that. */
#define LINK_TURN_BUDGET_USEC 500u

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
        WORKER_EXIT_NOT_FORK_SAFE = 6,  /* a zygote of Zygote=auto: the plugin does not declare it may fork */
};
