/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * apiaryctl: a client of apiaryd's public D-Bus API (docs/dbus-api.md), on sd-bus only. It uses
 * nothing of the daemon but its documented API: the names below are repeated here on purpose
 * rather than taken from daemon/bus-api.h.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "util/macro.h"
#include "util/time-util.h"

#define APIARY_BUS_NAME "org.apiary.Apiary1"
#define APIARY_OBJECT_PATH "/org/apiary/Apiary1"
#define APIARY_POOL_PREFIX "/org/apiary/Apiary1/pool"
#define APIARY_MANAGER_INTERFACE "org.apiary.Apiary1.Manager"
#define APIARY_POOL_INTERFACE "org.apiary.Apiary1.Pool"
#define APIARY_WORKER_INTERFACE "org.apiary.Apiary1.Worker"

#define APIARY_ERROR_NO_SUCH_POOL "org.apiary.Apiary1.Error.NoSuchPool"
#define APIARY_ERROR_NO_SUCH_TASK "org.apiary.Apiary1.Error.NoSuchTask"
#define APIARY_ERROR_TASK_FAILED "org.apiary.Apiary1.Error.TaskFailed"
#define APIARY_ERROR_INVALID_OPTION "org.apiary.Apiary1.Error.InvalidOption"
#define APIARY_ERROR_POOL_STOPPED "org.apiary.Apiary1.Error.PoolStopped"
#define APIARY_ERROR_BUSY "org.apiary.Apiary1.Error.Busy"

/* The exit statuses, documented in docs/apiaryctl.md. */
enum {
        CTL_EXIT_SUCCESS = 0,
        CTL_EXIT_FAILURE = 1,           /* the operation failed, or a task did */
        CTL_EXIT_USAGE = 2,             /* bad command line, or arguments apiaryd refused as invalid */
        CTL_EXIT_ACCESS_DENIED = 3,     /* the caller may not do this */
        CTL_EXIT_NOT_FOUND = 4,         /* no such pool, worker slot or task */
        CTL_EXIT_UNREACHABLE = 5,       /* no bus, or no apiaryd on it */
};

typedef enum JsonMode {
        JSON_OFF,
        JSON_SHORT,
        JSON_PRETTY,
} JsonMode;

extern bool arg_verbose;
extern bool arg_wait;
extern bool arg_legend;
extern JsonMode arg_json;
extern usec_t arg_timeout;              /* USEC_INFINITY: not given */
extern bool arg_no_block;               /* control verbs: return once the call is answered */
extern bool arg_dry_run;                /* reload: show what would change, change nothing */
extern char **arg_properties;           /* show -p: the properties to print, NULL for all */
extern bool arg_value;                  /* show --value: values only, without NAME= */
extern bool arg_quiet;                  /* is-active, is-failed -q: the exit status only */
extern unsigned arg_lines;              /* logs, status -n: how many journal lines; UINT_MAX: not given */
extern bool arg_follow;                 /* logs -f */
extern const char *arg_since;           /* logs --since */
extern bool arg_output_json;            /* logs -o json */

/* Opens a connection to the bus the options chose; a negative errno on failure. */
int ctl_bus_open(sd_bus **ret);
/* True with --private: the connection is to apiaryd's private socket, peer-to-peer, with no bus
 * daemon (no names, no NameOwnerChanged, no monitoring; signals after Manager.Subscribe()). */
bool ctl_bus_is_private(void);
/* True with -H: the bus is another machine's (and so is its journal). */
bool ctl_bus_is_remote(void);
/* True with --user: apiaryd is the user's, its journal lines in the user's journal. */
bool ctl_bus_is_user(void);

/* Prints the last N journal lines about POOL after an empty line, if there are any. */
void ctl_print_pool_log_tail(const char *pool, unsigned n);

/* A one-line progress on stderr, if it is a terminal: shown (and true returned) or not. Updated
 * in place; ctl_progress_end() clears it. */
bool ctl_progress_begin(const char *format, ...) _printf_(1, 2);
void ctl_progress_update(const char *format, ...) _printf_(1, 2);
void ctl_progress_end(void);

/* One line to stderr. */
void ctl_error(const char *format, ...) _printf_(1, 2);
/* Prints a usage error and returns CTL_EXIT_USAGE. */
int ctl_usage_error(const char *format, ...) _printf_(1, 2);
/* Prints "WHAT: <error message>" (with the error name after -v) and returns the exit status the
 * error maps to. R is the negative errno of the failed call; ERROR may be unset. */
int ctl_bus_error(int r, const sd_bus_error *error, const char *format, ...) _printf_(3, 4);
int ctl_exit_status_for(int r, const sd_bus_error *error);
int ctl_oom(void);

/* Parses a task id: a decimal number > 0. */
int parse_task_id(const char *s, uint64_t *ret);
/* Parses a plain decimal number that fits 32 bits. */
int parse_u32(const char *s, uint32_t *ret);
/* Parses a signal: "TERM", "SIGTERM", "sigterm", "15", "RTMIN+2". */
int parse_signal(const char *s, int *ret);

/* Writes all of DATA to FD. */
int write_all(int fd, const void *data, size_t size);

/* Waiting for the TaskFinished of tasks (ctl-watch.c). With MONITOR, on a monitor connection of
 * its own, which sees the tasks of any submitter, where the bus allows it; without, on BUS, which
 * sees the tasks it submits itself. Subscribed once task_wait_new() returns 0; the functions that
 * return an int return the exit status. */
typedef struct TaskWait TaskWait;
int task_wait_new(sd_bus *bus, bool monitor, TaskWait **ret);
TaskWait *task_wait_free(TaskWait *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(TaskWait *, task_wait_free);
void task_wait_add(TaskWait *w, uint64_t id);
/* Until every task added has finished, or TIMEOUT: one result goes to stdout as it is, several one
 * line each. */
int task_wait_run(TaskWait *w, sd_bus *bus, usec_t timeout);

/* The verbs: each returns the exit status. ARGV[0] is the verb. */
int verb_status(sd_bus *bus, int argc, char **argv);
int verb_pools(sd_bus *bus, int argc, char **argv);
int verb_workers(sd_bus *bus, int argc, char **argv);
int verb_wait(sd_bus *bus, int argc, char **argv);
int verb_monitor(sd_bus *bus, int argc, char **argv);
int verb_pool_method(sd_bus *bus, int argc, char **argv);
int verb_scale(sd_bus *bus, int argc, char **argv);
int verb_kill(sd_bus *bus, int argc, char **argv);
int verb_reload(sd_bus *bus, int argc, char **argv);
int verb_show(sd_bus *bus, int argc, char **argv);
int verb_is_active(sd_bus *bus, int argc, char **argv);
int verb_is_failed(sd_bus *bus, int argc, char **argv);
int verb_logs(sd_bus *bus, int argc, char **argv);
int verb_top(sd_bus *bus, int argc, char **argv);
