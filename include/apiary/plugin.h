/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The Apiary worker plugin ABI.
 *
 * A plugin is a shared object that exports exactly one symbol, APIARY_PLUGIN_SYMBOL ("apiary_plugin"),
 * a const struct apiary_plugin. The host (apiary-worker) dlopen()s the object, checks abi_version and
 * struct_size, and calls init() once, run() once per task, and fini() once when it stops (not when
 * it is killed).
 *
 * Plugins link against nothing: every service the host offers (logging, configuration, completing
 * tasks) comes through the struct apiary_host table passed to init(). Every struct opens with its
 * ABI version and its size so that either side can tell what the other one knows.
 *
 * Stability: within one APIARY_PLUGIN_ABI_VERSION, fields are only ever appended to the structs
 * below; a host checks struct_size before using a field a plugin may not have, and a plugin checks
 * host->struct_size (or APIARY_HOST_HAS()) before calling a host function added later. A change
 * that is not an append bumps APIARY_PLUGIN_ABI_VERSION, and the host refuses plugins built for
 * another version with a message naming both.
 *
 * This header is plain C99 and C++, and uses no type from any library.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define APIARY_PLUGIN_ABI_VERSION 1u
#define APIARY_PLUGIN_SYMBOL "apiary_plugin"

#if defined(__GNUC__)
#  define APIARY_PLUGIN_EXPORT __attribute__((visibility("default")))
#  define APIARY_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#  define APIARY_PLUGIN_EXPORT
#  define APIARY_PRINTF(a, b)
#endif

/* Log priorities, as syslog(3) and the journal number them. */
enum {
        APIARY_LOG_ERR = 3,
        APIARY_LOG_WARNING = 4,
        APIARY_LOG_NOTICE = 5,
        APIARY_LOG_INFO = 6,
        APIARY_LOG_DEBUG = 7,
};

typedef struct apiary_task apiary_task;         /* opaque: one task handed to run() */
typedef struct apiary_source apiary_source;     /* opaque: an fd watch or a timer on the worker's loop */

/* One [Pool NAME Plugin] key=value pair. */
struct apiary_config_entry {
        const char *key;
        const char *value;
};

/*
 * The largest result (or failure reason) a task can have: 32 MiB, less 64 KiB for the D-Bus message
 * around it, since the system bus takes no message over 32 MiB (dbus-daemon's max_message_size).
 * A larger one fails the task with "result too large: N bytes (at most APIARY_RESULT_SIZE_MAX)",
 * in a pool as in apiary-worker --oneshot. Payloads have no limit of Apiary's own: the bus's
 * (a submitter's message holds them) and QueueBytesLimit=, MaxBytesPerCaller= bound them.
 */
#define APIARY_RESULT_SIZE_MAX (32u * 1024u * 1024u - 64u * 1024u)

/* Returned by run() for a task it will complete later, with task_return() or task_fail(). */
#define APIARY_TASK_PENDING 1

/* Events for io_add(), as epoll(7) numbers them. */
enum {
        APIARY_IO_IN = 0x001,
        APIARY_IO_OUT = 0x004,
        APIARY_IO_ERR = 0x008,
        APIARY_IO_HUP = 0x010,
};

typedef void (*apiary_io_fn)(apiary_source *source, int fd, uint32_t revents, void *userdata);
typedef void (*apiary_timer_fn)(apiary_source *source, void *userdata);
/* The end of a task submitted with submit(): OK is 1 with the result, or 0 with the reason (a
 * NUL-terminated text in DATA). DATA is valid only during the call. */
typedef void (*apiary_result_fn)(int ok, const void *data, size_t size, void *userdata);

/* Services the host offers the plugin. Valid from init() until fini() returns. */
struct apiary_host {
        uint32_t abi_version;                   /* APIARY_PLUGIN_ABI_VERSION of the host */
        uint32_t struct_size;                   /* sizeof(struct apiary_host) of the host */

        const char *pool;                       /* name of the pool this worker serves */
        unsigned slot;                          /* the worker's slot in the pool, 0..N-1 */

        /* The pool's [Pool NAME Plugin] group, in file order, n_config entries. These strings, and
         * those config_get() returns, are the host's and live from init() until fini() returns. */
        const struct apiary_config_entry *config;
        size_t n_config;

        /* Returns the value of KEY in the pool's plugin group, or NULL when it is not set. */
        const char *(*config_get)(const struct apiary_host *host, const char *key);

        /* Logs one line to the journal (or stderr), tagged with the pool, slot and PID. */
        void (*log)(const struct apiary_host *host, int priority, const char *format, ...) APIARY_PRINTF(3, 4);

        /* Sets the reason for a failing init(); it reaches the operator (FailureReason, LastExit). */
        void (*set_error)(const struct apiary_host *host, const char *format, ...) APIARY_PRINTF(2, 3);

        /*
         * Tasks. task_payload() gives the payload and its size, valid until the task is completed:
         * never NULL for an open task, but not to be read when the size is 0. (For a NULL or
         * completed task it returns NULL and leaves *ret_size alone.)
         *
         * Every task is completed once: task_return() with its result (copied; RESULT may be NULL
         * when SIZE is 0), or task_fail() with a reason (UTF-8 text, which reaches the caller of
         * Run and TaskFinished listeners). Both return 0 once the task is completed, and from then
         * on TASK must not be used: inside run() a second call returns -EALREADY, but after run()
         * has returned the task is freed at once, and touching it is undefined.
         *
         * They fail WITHOUT completing the task, which stays open and valid: -EINVAL for a NULL
         * TASK, or a NULL RESULT with SIZE > 0; task_fail() also -ENOMEM when its reason cannot be
         * formatted. Complete it again (task_fail() with a short reason, now or from a timer a
         * little later). An asynchronous callback must never drop a task it could not complete:
         * it holds one of the worker's Concurrency= places until the worker exits, and then runs
         * again elsewhere. A result above APIARY_RESULT_SIZE_MAX is not refused here: it is taken,
         * and the task fails with "result too large". A task that run() leaves without completing
         * it (returning 0, or a negative errno) is failed by the host.
         */
        const void *(*task_payload)(apiary_task *task, size_t *ret_size);
        int (*task_return)(apiary_task *task, const void *result, size_t size);
        int (*task_fail)(apiary_task *task, const char *format, ...) APIARY_PRINTF(2, 3);

        /*
         * The worker's event loop, for asynchronous plugins. io_add() watches FD for EVENTS until
         * source_free(); timer_add() calls back once, USEC microseconds from now, and frees the
         * source after the callback returns (source_free() before that cancels it). No callback
         * runs inside io_add() or timer_add(), not even for 0 µs: callbacks run from the loop, on
         * the worker's one thread, after run() or the current callback has returned. Both return
         * 0 or a negative errno.
         */
        int (*io_add)(const struct apiary_host *host, int fd, uint32_t events, apiary_io_fn callback,
                      void *userdata, apiary_source **ret_source);
        int (*timer_add)(const struct apiary_host *host, uint64_t usec, apiary_timer_fn callback, void *userdata,
                         apiary_source **ret_source);
        void (*source_free)(apiary_source *source);
        uint64_t (*now_usec)(const struct apiary_host *host);   /* CLOCK_MONOTONIC */

        /*
         * Submits a task to POOL (any pool of this apiaryd, this one included) and calls CALLBACK
         * on this worker's loop when it ends. Returns 0 once the request is sent, or a negative
         * errno; errors of the submission itself (no such pool, queue full) reach CALLBACK.
         * -ENOTCONN when there is no apiaryd to submit to (apiary-worker --oneshot).
         */
        int (*submit)(const struct apiary_host *host, const char *pool, const void *payload, size_t size,
                      apiary_result_fn callback, void *userdata);
};

/* True when HOST is new enough to offer FIELD (a host function added after version 1.0). */
#define APIARY_HOST_HAS(host, field) \
        ((host)->struct_size >= offsetof(struct apiary_host, field) + sizeof((host)->field))

struct apiary_plugin {
        uint32_t abi_version;                   /* always APIARY_PLUGIN_ABI_VERSION */
        uint32_t struct_size;                   /* always sizeof(struct apiary_plugin) */

        const char *name;                       /* short name, e.g. "echo" */
        const char *version;                    /* the plugin's own version, free-form */

        /*
         * Called once when the worker starts, before it reports ready. Returns 0, or a negative
         * errno-style value on failure (after host->set_error() to say why); a failing init() is
         * a failed start of the worker. *ret_state is handed to run() and fini(). May be NULL:
         * then run() gets the host table, const struct apiary_host *, as its state.
         */
        int (*init)(const struct apiary_host *host, void **ret_state);

        /*
         * Called for every task. Synchronous plugins complete TASK with host->task_return() or
         * host->task_fail() and return 0. Asynchronous ones return APIARY_TASK_PENDING and
         * complete it later from a callback on the worker's loop. A negative return fails the
         * task with that error if it was not completed. Required.
         */
        int (*run)(void *state, apiary_task *task);

        /*
         * Called once when the worker stops, after a successful init(): apiaryd stops a worker
         * (SIGTERM) once the tasks it holds have ended, but a SIGTERM from elsewhere can come
         * with tasks still pending in an asynchronous plugin. The link to apiaryd is still up:
         * fini() may complete them (fail them with a reason, or finish them), and those ends reach
         * their callers. Tasks left pending go back to apiaryd with the worker's exit and run
         * again elsewhere, each counted against TaskRetries=. Not called when the worker is
         * killed (SIGKILL: a stop or task timeout, or apiaryd gone). May be NULL.
         */
        void (*fini)(void *state);

        /* APIARY_PLUGIN_* flags. Appended: a plugin built before it has none (its struct_size
         * ends before this field). */
        uint64_t flags;
};

/*
 * The plugin may be loaded once in a zygote that then forks each worker (Zygote=auto, the
 * default, uses one only for such plugins): loading it (its constructors, and those of the
 * libraries it links) starts no thread, opens no file, socket or connection, and takes no lock
 * that a fork would leave held. init() runs in each forked worker, which is where such things
 * belong.
 */
#define APIARY_PLUGIN_FORK_SAFE (UINT64_C(1) << 0)

/* Declares the plugin's one exported symbol:  APIARY_PLUGIN_DEFINE = { ... };  */
#define APIARY_PLUGIN_DEFINE \
        APIARY_PLUGIN_EXPORT extern const struct apiary_plugin apiary_plugin; \
        const struct apiary_plugin apiary_plugin

#ifdef __cplusplus
}
#endif
