/* SPDX-License-Identifier: MIT */
/*
 * apiaryctl: query and control apiaryd over its public D-Bus API, in the manner of systemctl.
 * See docs/apiaryctl.md. This file holds the command line, the connection, error reporting and
 * the task verbs; ctl-control.c the verbs that steer pools, workers and reloads; ctl-show.c
 * prints the state, ctl-watch.c follows signals.
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-config.h"
#include "tools/apiaryctl/ctl-format.h"
#include "tools/apiaryctl/ctl.h"

typedef enum BusKind {
        BUS_SYSTEM,
        BUS_USER,
        BUS_ADDRESS,
        BUS_PRIVATE,            /* arg_address is unix:path=..., peer-to-peer */
        BUS_REMOTE,             /* arg_host's system bus, over ssh (systemd-stdio-bridge there) */
} BusKind;

static BusKind arg_bus_kind = BUS_SYSTEM;
static const char *arg_address = NULL;
static const char *arg_host = NULL;
static bool arg_private = false;
static const char *arg_private_path = NULL;
static char arg_private_address[sizeof("unix:path=") + 108];  /* arg_address with --private */
static bool arg_bus_given = false;
static bool arg_no_color = false;
static bool arg_timeout_given = false;
bool arg_verbose = false;
bool arg_wait = false;
bool arg_legend = true;
JsonMode arg_json = JSON_OFF;
usec_t arg_timeout = USEC_INFINITY;
bool arg_no_block = false;
bool arg_dry_run = false;
char **arg_properties = NULL;
bool arg_value = false;
bool arg_quiet = false;
unsigned arg_lines = UINT_MAX;
bool arg_follow = false;
const char *arg_since = NULL;
bool arg_output_json = false;

/* ---- reporting ---- */

void ctl_error(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
}

int ctl_usage_error(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputs("\nSee 'apiaryctl --help'.\n", stderr);
        return CTL_EXIT_USAGE;
}

static bool progress_shown = false;

static void progress_vprint(const char *format, va_list ap) {
        /* Back to the start of the line, the text, and the rest of the old one erased. */
        fputs("\r", stderr);
        vfprintf(stderr, format, ap);
        fputs("\033[K", stderr);
        fflush(stderr);
}

bool ctl_progress_begin(const char *format, ...) {
        va_list ap;

        if (!isatty(STDERR_FILENO))
                return false;
        va_start(ap, format);
        progress_vprint(format, ap);
        va_end(ap);
        progress_shown = true;
        return true;
}

void ctl_progress_update(const char *format, ...) {
        va_list ap;

        if (!progress_shown)
                return;
        va_start(ap, format);
        progress_vprint(format, ap);
        va_end(ap);
}

void ctl_progress_end(void) {
        if (!progress_shown)
                return;
        fputs("\r\033[K", stderr);
        fflush(stderr);
        progress_shown = false;
}

int ctl_oom(void) {
        ctl_error("Out of memory.");
        return CTL_EXIT_FAILURE;
}

static bool error_is_unreachable(const sd_bus_error *error) {
        return sd_bus_error_has_name(error, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
               sd_bus_error_has_name(error, SD_BUS_ERROR_NAME_HAS_NO_OWNER);
}

int ctl_exit_status_for(int r, const sd_bus_error *error) {
        /* sd-bus turns local failures into "System.Error.EFOO" errors: those go by their errno. */
        if (sd_bus_error_is_set(error) && g_str_has_prefix(error->name, "System.Error."))
                r = -sd_bus_error_get_errno(error);
        else if (sd_bus_error_is_set(error)) {
                if (sd_bus_error_has_name(error, APIARY_ERROR_NO_SUCH_POOL) ||
                    sd_bus_error_has_name(error, APIARY_ERROR_NO_SUCH_TASK) ||
                    sd_bus_error_has_name(error, SD_BUS_ERROR_UNKNOWN_OBJECT))
                        return CTL_EXIT_NOT_FOUND;
                if (sd_bus_error_has_name(error, SD_BUS_ERROR_ACCESS_DENIED) ||
                    sd_bus_error_has_name(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED))
                        return CTL_EXIT_ACCESS_DENIED;
                if (error_is_unreachable(error))
                        return CTL_EXIT_UNREACHABLE;
                if (sd_bus_error_has_name(error, SD_BUS_ERROR_INVALID_ARGS) ||
                    sd_bus_error_has_name(error, APIARY_ERROR_INVALID_OPTION))
                        return CTL_EXIT_USAGE;
                return CTL_EXIT_FAILURE;
        }
        if (IN_SET(r, -EACCES, -EPERM))
                return CTL_EXIT_ACCESS_DENIED;
        if (IN_SET(r, -ECONNREFUSED, -ECONNRESET, -ENOTCONN, -ENOENT, -EHOSTDOWN))
                return CTL_EXIT_UNREACHABLE;
        return CTL_EXIT_FAILURE;
}

static const char *bus_description(void) {
        return arg_bus_kind == BUS_USER ? "the session bus" : "the system bus";
}

/* The address sd-bus tries for the system or session bus, to name it in an error. */
static const char *bus_default_address(void) {
        static char buf[sizeof("unix:path=") + 4096];
        const char *e;

        if (arg_bus_kind == BUS_USER) {
                e = getenv("DBUS_SESSION_BUS_ADDRESS");
                if (e && e[0])
                        return e;
                e = getenv("XDG_RUNTIME_DIR");
                if (!e || !e[0])
                        return "no $DBUS_SESSION_BUS_ADDRESS, no $XDG_RUNTIME_DIR";
                snprintf(buf, sizeof(buf), "unix:path=%s/bus", e);
                return buf;
        }
        e = getenv("DBUS_SYSTEM_BUS_ADDRESS");
        return e && e[0] ? e : "unix:path=/run/dbus/system_bus_socket";
}

/* For a newcomer whose apiaryd is not where apiaryctl looked: tools/run starts it on a bus of its
 * own, and prints the command line for it. */
static void hint_other_bus(void) {
        fprintf(stderr, "If apiaryd runs on another bus (./tools/run starts it on a private bus and prints "
                        "the command line), point apiaryctl at it: --address=unix:path=BUILD/run/bus, or set "
                        "$APIARY_BUS_ADDRESS. See apiaryctl --help.\n");
}

int ctl_bus_error(int r, const sd_bus_error *error, const char *format, ...) {
        const char *message;
        va_list ap;

        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);

        if (sd_bus_error_is_set(error)) {
                /* dbus-daemon's "…was not provided by any .service files" says it obliquely. */
                if (error_is_unreachable(error))
                        message = "apiaryd is not running on this bus (nobody owns " APIARY_BUS_NAME ").";
                else
                        message = error->message ?: error->name;
        } else
                message = strerror(r < 0 ? -r : EIO);
        fprintf(stderr, ": %s", message);
        if (arg_verbose && sd_bus_error_is_set(error))
                fprintf(stderr, " (%s)", error->name);
        fputc('\n', stderr);
        if (sd_bus_error_is_set(error) && error_is_unreachable(error) && IN_SET(arg_bus_kind, BUS_SYSTEM, BUS_USER))
                hint_other_bus();
        return ctl_exit_status_for(r, error);
}

/* ---- parsing ---- */

static int parse_u64(const char *s, uint64_t *ret) {
        unsigned long long v;
        char *end;

        /* strtoull() would take a sign, spaces and hex: only plain decimal digits here. */
        if (!s || !g_ascii_isdigit(s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        *ret = (uint64_t) v;
        return 0;
}

int parse_task_id(const char *s, uint64_t *ret) {
        uint64_t id;

        if (parse_u64(s, &id) < 0 || id == 0)
                return -EINVAL;
        *ret = id;
        return 0;
}

int parse_u32(const char *s, uint32_t *ret) {
        uint64_t v;

        if (parse_u64(s, &v) < 0 || v > UINT32_MAX)
                return -EINVAL;
        *ret = (uint32_t) v;
        return 0;
}

/* "TERM", "SIGTERM", "sigterm", "15", "RTMIN+2". */
int parse_signal(const char *s, int *ret) {
        uint32_t n;

        if (parse_u32(s, &n) >= 0) {
                if (n < 1 || n > (uint32_t) SIGRTMAX)
                        return -ERANGE;
                *ret = (int) n;
                return 0;
        }

        if (g_ascii_strncasecmp(s, "SIG", 3) == 0)
                s += 3;
        for (int sig = 1; sig < SIGRTMIN; sig++) {
                const char *name = sigabbrev_np(sig);

                if (name && g_ascii_strcasecmp(name, s) == 0) {
                        *ret = sig;
                        return 0;
                }
        }
        if (g_ascii_strncasecmp(s, "RTMIN", 5) == 0 || g_ascii_strncasecmp(s, "RTMAX", 5) == 0) {
                bool min = g_ascii_toupper(s[4]) == 'N';
                uint32_t off = 0;

                if (s[5] != '\0' && (s[5] != (min ? '+' : '-') || parse_u32(s + 6, &off) < 0))
                        return -EINVAL;
                if (off > (uint32_t) (SIGRTMAX - SIGRTMIN))
                        return -ERANGE;
                *ret = min ? SIGRTMIN + (int) off : SIGRTMAX - (int) off;
                return 0;
        }
        return -EINVAL;
}

int write_all(int fd, const void *data, size_t size) {
        const uint8_t *p = data;

        while (size > 0) {
                ssize_t k = write(fd, p, size);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                size -= (size_t) k;
        }
        return 0;
}

static int read_all(int fd, GByteArray *ret) {
        uint8_t buf[65536];

        for (;;) {
                ssize_t k = read(fd, buf, sizeof(buf));

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return 0;
                g_byte_array_append(ret, buf, (guint) k);
        }
}

/* ---- tasks ---- */

/* The payload of submit and run: the arguments after POOL, or stdin for none or "-". */
static int read_payloads(int argc, char **argv, GPtrArray **ret) {
        g_autoptr(GPtrArray) payloads = g_ptr_array_new_with_free_func((GDestroyNotify) g_bytes_unref);

        if (argc <= 2 || (argc == 3 && streq(argv[2], "-"))) {
                g_autoptr(GByteArray) data = g_byte_array_new();
                int r;

                r = read_all(STDIN_FILENO, data);
                if (r < 0) {
                        ctl_error("Failed to read the task's data from stdin: %s", strerror(-r));
                        return CTL_EXIT_FAILURE;
                }
                g_ptr_array_add(payloads, g_byte_array_free_to_bytes(g_steal_pointer(&data)));
        } else
                for (int i = 2; i < argc; i++) {
                        if (streq(argv[i], "-"))
                                return ctl_usage_error("\"-\" (stdin) must be the only data argument.");
                        g_ptr_array_add(payloads, g_bytes_new(argv[i], strlen(argv[i])));
                }

        *ret = g_steal_pointer(&payloads);
        return 0;
}

static int append_options(sd_bus_message *m) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        if (arg_timeout != USEC_INFINITY) {
                r = sd_bus_message_append(m, "{sv}", "timeout", "t", (uint64_t) arg_timeout);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

static int append_payload(sd_bus_message *m, GBytes *b) {
        gsize size;
        const void *data = g_bytes_get_data(b, &size);

        return sd_bus_message_append_array(m, 'y', data ?: "", size);
}

/* With --wait, the tasks are followed on this connection, the one that submits them: TaskFinished
 * goes to the submitter only. The match is in place before the tasks exist. */
static int verb_submit(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(task_wait_freep) TaskWait *w = NULL;
        g_autoptr(GPtrArray) payloads = NULL;
        bool batch;
        uint64_t id;
        int r;

        r = read_payloads(argc, argv, &payloads);
        if (r != 0)
                return r;
        batch = payloads->len > 1;
        if (arg_wait) {
                r = task_wait_new(bus, /* monitor= */ false, &w);
                if (r != 0)
                        return r;
        }

        r = sd_bus_message_new_method_call(bus, &m, APIARY_BUS_NAME, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE,
                                           batch ? "SubmitBatch" : "Submit");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", argv[1]);
        if (r >= 0 && batch) {
                r = sd_bus_message_open_container(m, 'a', "ay");
                for (guint i = 0; r >= 0 && i < payloads->len; i++)
                        r = append_payload(m, g_ptr_array_index(payloads, i));
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        } else if (r >= 0)
                r = append_payload(m, g_ptr_array_index(payloads, 0));
        if (r >= 0)
                r = append_options(m);
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to create the Submit() call");

        r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0)
                return ctl_bus_error(r, &error, "Failed to submit to pool \"%s\"", argv[1]);

        if (!batch) {
                r = sd_bus_message_read(reply, "t", &id);
                if (r < 0)
                        return ctl_bus_error(r, NULL, "Failed to read the reply of Submit()");
                if (w)
                        task_wait_add(w, id);
                else
                        printf("%" PRIu64 "\n", id);
        } else {
                r = sd_bus_message_enter_container(reply, 'a', "t");
                while (r >= 0 && (r = sd_bus_message_read(reply, "t", &id)) > 0) {
                        if (w)
                                task_wait_add(w, id);
                        else
                                printf("%" PRIu64 "\n", id);
                }
                if (r < 0)
                        return ctl_bus_error(r, NULL, "Failed to read the reply of SubmitBatch()");
        }

        /* --timeout is the tasks' own here: how long they may wait in the queue is not bounded. */
        return w ? task_wait_run(w, bus, USEC_INFINITY) : CTL_EXIT_SUCCESS;
}

static int verb_run(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autoptr(GPtrArray) payloads = NULL;
        const void *data;
        size_t size;
        int r;

        r = read_payloads(argc, argv, &payloads);
        if (r != 0)
                return r;

        r = sd_bus_message_new_method_call(bus, &m, APIARY_BUS_NAME, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE,
                                           "Run");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", argv[1]);
        if (r >= 0)
                r = append_payload(m, g_ptr_array_index(payloads, 0));
        if (r >= 0)
                r = append_options(m);
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to create the Run() call");

        /* No method call timeout: a task takes as long as it takes, and --timeout is apiaryd's to
         * enforce (it fails the task with TaskFailed). */
        r = sd_bus_call(bus, m, UINT64_MAX, &error, &reply);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, APIARY_ERROR_TASK_FAILED)) {
                        if (arg_verbose)
                                ctl_error("Task failed: %s (%s)", strempty(error.message), error.name);
                        else
                                ctl_error("Task failed: %s", strempty(error.message));
                        return CTL_EXIT_FAILURE;
                }
                return ctl_bus_error(r, &error, "Failed to run a task on pool \"%s\"", argv[1]);
        }

        r = sd_bus_message_read_array(reply, 'y', &data, &size);
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to read the result of Run()");
        r = write_all(STDOUT_FILENO, data, size);
        if (r < 0) {
                ctl_error("Failed to write the result: %s", strerror(-r));
                return CTL_EXIT_FAILURE;
        }
        return CTL_EXIT_SUCCESS;
}

static int verb_cancel(sd_bus *bus, int argc, char **argv) {
        int ret = CTL_EXIT_SUCCESS;

        for (int i = 1; i < argc; i++) {
                uint64_t id;

                if (parse_task_id(argv[i], &id) < 0)
                        return ctl_usage_error("Expected a task id (a number above 0), got \"%s\".", argv[i]);
        }

        for (int i = 1; i < argc; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                uint64_t id = 0;
                int cancelled = false, r;

                (void) parse_task_id(argv[i], &id);
                r = sd_bus_call_method(bus, APIARY_BUS_NAME, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE, "Cancel",
                                       &error, &reply, "t", id);
                if (r >= 0)
                        r = sd_bus_message_read(reply, "b", &cancelled);
                if (r < 0)
                        r = ctl_bus_error(r, &error, "Failed to cancel task %" PRIu64, id);
                else if (!cancelled) {
                        ctl_error("Failed to cancel task %" PRIu64 ": it has started already, and runs to its end.",
                                  id);
                        r = CTL_EXIT_FAILURE;
                } else
                        r = CTL_EXIT_SUCCESS;
                if (r != 0 && ret == CTL_EXIT_SUCCESS)
                        ret = r;
        }
        return ret;
}

/* ---- the command line ---- */

static void help(void) {
        printf("apiaryctl [OPTIONS...] COMMAND ...\n\n"
               "Query and control apiaryd, the Apiary supervisor, over D-Bus.\n\n"
               "State:\n"
               "  status [POOL...]           Show apiaryd, its pools and their workers (the default)\n"
               "  pools                      List the pools, one line each\n"
               "  workers [POOL...]          List the worker slots, one line each\n"
               "  show [POOL[/SLOT]]         Show the properties of apiaryd, a pool or a worker as NAME=VALUE\n"
               "  is-active POOL...          Exit 0 if a pool serves (running or degraded), else 3\n"
               "  is-failed POOL...          Exit 0 if a pool failed, else 1\n"
               "  top                        A live view of the pools and workers, redrawn every second\n"
               "  logs [POOL[/SLOT]]         Show what apiaryd and the workers wrote to the journal\n"
               "  monitor                    Print task results and state changes as they come\n\n"
               "Tasks:\n"
               "  submit POOL [DATA...|-]    Queue a task for each DATA (stdin if none or -), print the ids\n"
               "                             (with --wait, their results instead)\n"
               "  run POOL [DATA|-]          Run a task and write its result to stdout\n"
               "  wait ID...                 Wait until tasks submitted elsewhere finish and print their\n"
               "                             results (needs the right to monitor the bus)\n"
               "  cancel ID...               Cancel tasks that are still queued\n\n"
               "Pools and workers:\n"
               "  start POOL...              Start stopped or failed pools\n"
               "  stop POOL...               Stop pools; their queued tasks fail\n"
               "  pause POOL...              Hold back the queued tasks of pools\n"
               "  resume POOL...             Dispatch them again\n"
               "  restart POOL[/SLOT]...     Replace the workers of a pool one by one, or one worker\n"
               "  scale POOL N               Run N workers in a pool\n"
               "  kill POOL/SLOT [SIGNAL]    Send a signal (default TERM) to a worker\n"
               "  reload                     Reload apiaryd's configuration: print what changes, apply it,\n"
               "                             and wait until it is applied (--dry-run: only print)\n\n"
               "Options:\n"
               "  -h --help                  Show this help\n"
               "     --version               Show the version\n"
               "     --system                Connect to the system bus (the default)\n"
               "     --user, --session       Connect to the session bus\n"
               "     --bus=BUS               system, session, or a D-Bus address, as for apiaryd\n"
               "     --address=ADDRESS       Connect to the bus at ADDRESS ($APIARY_BUS_ADDRESS, if set,\n"
               "                             is used when no bus option is given)\n"
               "  -H --host=[USER@]HOST       Talk to apiaryd on HOST's system bus, over ssh (as busctl -H)\n"
               "     --private[=PATH]        Connect to apiaryd's private socket, without the bus daemon\n"
               "                             (default /run/apiary/bus, with --user $XDG_RUNTIME_DIR/apiary/bus)\n"
               "     --timeout=SPAN          submit, run: fail the task after SPAN (500ms, 2s, 1min);\n"
               "                             wait: give up after SPAN\n"
               "     --wait                  submit: wait for the tasks and print their results\n"
               "     --no-block              start, stop, restart, scale, reload: do not wait for the effect\n"
               "     --dry-run               reload: print what would change, and change nothing\n"
               "     --json=short|pretty     status, pools, workers: print JSON\n"
               "     --no-legend             Print no column headers and footers\n"
               "     --no-color              Print no colours (nor with $NO_COLOR set)\n"
               "  -p --property=NAME[,NAME...]  show: only these properties (the option repeats)\n"
               "     --value                 show: print the values only, without NAME=\n"
               "  -q --quiet                 is-active, is-failed: print nothing, answer by the exit status\n"
               "     --no-pager              Accepted as systemctl takes it: apiaryctl never pages\n"
               "  -n --lines=N               logs: the last N lines (10 with -f); status: N under each pool\n"
               "  -f --follow                logs: print new lines as they come\n"
               "     --since=TIME            logs: from TIME (\"2026-12-07 15:10\", \"15:10\", \"-5min\")\n"
               "  -o --output=short|json     logs: journalctl's short lines, or one JSON object each\n"
               "  -v --verbose               Show D-Bus error names, and progress on stderr\n\n"
               "Exit status: 0 done, 1 failed, 2 bad usage, 3 access denied,\n"
               "4 no such pool, worker or task, 5 no bus or no apiaryd on it.\n"
               "See docs/apiaryctl.md.\n");
}

/* V with a copy of S at its end; V may be NULL. */
static char **strv_add(char **v, const char *s) {
        size_t n = v ? g_strv_length(v) : 0;

        v = g_renew(char *, v, n + 2);
        v[n] = g_strdup(s);
        v[n + 1] = NULL;
        return v;
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_SYSTEM,
                ARG_USER,
                ARG_ADDRESS,
                ARG_BUS,
                ARG_TIMEOUT,
                ARG_JSON,
                ARG_NO_LEGEND,
                ARG_NO_COLOR,
                ARG_WAIT,
                ARG_PRIVATE,
                ARG_NO_BLOCK,
                ARG_DRY_RUN,
                ARG_VALUE,
                ARG_NO_PAGER,
                ARG_SINCE,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "system", no_argument, NULL, ARG_SYSTEM },
                { "user", no_argument, NULL, ARG_USER },
                { "session", no_argument, NULL, ARG_USER },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "bus", required_argument, NULL, ARG_BUS },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "json", optional_argument, NULL, ARG_JSON },
                { "no-legend", no_argument, NULL, ARG_NO_LEGEND },
                { "no-color", no_argument, NULL, ARG_NO_COLOR },
                { "wait", no_argument, NULL, ARG_WAIT },
                { "private", optional_argument, NULL, ARG_PRIVATE },
                { "no-block", no_argument, NULL, ARG_NO_BLOCK },
                { "dry-run", no_argument, NULL, ARG_DRY_RUN },
                { "verbose", no_argument, NULL, 'v' },
                { "host", required_argument, NULL, 'H' },
                { "property", required_argument, NULL, 'p' },
                { "value", no_argument, NULL, ARG_VALUE },
                { "quiet", no_argument, NULL, 'q' },
                { "no-pager", no_argument, NULL, ARG_NO_PAGER },
                { "lines", required_argument, NULL, 'n' },
                { "follow", no_argument, NULL, 'f' },
                { "since", required_argument, NULL, ARG_SINCE },
                { "output", required_argument, NULL, 'o' },
                {}
        };
        const char *e;
        int c, r;

        while ((c = getopt_long(argc, argv, "hvH:p:qn:fo:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("apiaryctl %s\n", APIARY_VERSION);
                        return 0;
                case ARG_SYSTEM:
                        arg_bus_kind = BUS_SYSTEM;
                        arg_bus_given = true;
                        break;
                case ARG_USER:
                        arg_bus_kind = BUS_USER;
                        arg_bus_given = true;
                        break;
                case ARG_ADDRESS:
                        arg_bus_kind = BUS_ADDRESS;
                        arg_address = optarg;
                        arg_bus_given = true;
                        break;
                case ARG_BUS:
                        /* apiaryd's own spelling: --bus=system|session|ADDRESS. */
                        if (streq(optarg, "system"))
                                arg_bus_kind = BUS_SYSTEM;
                        else if (streq(optarg, "session") || streq(optarg, "user"))
                                arg_bus_kind = BUS_USER;
                        else if (strchr(optarg, ':')) {
                                arg_bus_kind = BUS_ADDRESS;
                                arg_address = optarg;
                        } else {
                                ctl_usage_error("Invalid --bus=%s: expected system, session or a D-Bus address.", optarg);
                                return -EINVAL;
                        }
                        arg_bus_given = true;
                        break;
                case ARG_TIMEOUT:
                        r = parse_timespan(optarg, USEC_PER_SEC, &arg_timeout);
                        if (r < 0) {
                                ctl_usage_error("Invalid time span \"%s\": expected e.g. 500ms, 2s or 1min.", optarg);
                                return -EINVAL;
                        }
                        if (arg_timeout == 0) {
                                ctl_usage_error("The timeout must be above 0.");
                                return -EINVAL;
                        }
                        arg_timeout_given = true;
                        break;
                case ARG_JSON:
                        if (!optarg || streq(optarg, "short"))
                                arg_json = JSON_SHORT;
                        else if (streq(optarg, "pretty"))
                                arg_json = JSON_PRETTY;
                        else if (streq(optarg, "off"))
                                arg_json = JSON_OFF;
                        else {
                                ctl_usage_error("Unknown --json= mode \"%s\": expected short, pretty or off.", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_NO_LEGEND:
                        arg_legend = false;
                        break;
                case ARG_NO_COLOR:
                        arg_no_color = true;
                        break;
                case ARG_WAIT:
                        arg_wait = true;
                        break;
                case ARG_NO_BLOCK:
                        arg_no_block = true;
                        break;
                case ARG_DRY_RUN:
                        arg_dry_run = true;
                        break;
                case ARG_PRIVATE:
                        if (optarg && optarg[0] != '/') {
                                ctl_usage_error("Invalid --private=%s: expected the absolute path of a socket.", optarg);
                                return -EINVAL;
                        }
                        arg_private = true;
                        arg_private_path = optarg;
                        break;
                case 'H':
                        arg_host = optarg;
                        break;
                case 'v':
                        arg_verbose = true;
                        break;
                case 'p': {
                        g_auto(GStrv) names = g_strsplit(optarg, ",", -1);

                        for (char **n = names; *n; n++) {
                                if (**n == '\0')
                                        continue;
                                if (!arg_properties || !g_strv_contains((const char *const *) arg_properties, *n))
                                        arg_properties = strv_add(arg_properties, *n);
                        }
                        break;
                }
                case ARG_VALUE:
                        arg_value = true;
                        break;
                case 'q':
                        arg_quiet = true;
                        break;
                case ARG_NO_PAGER:
                        break;
                case 'n':
                        if (parse_u32(optarg, &arg_lines) < 0 || arg_lines == UINT_MAX) {
                                ctl_usage_error("Invalid -n/--lines=%s: expected a number of lines.", optarg);
                                return -EINVAL;
                        }
                        break;
                case 'f':
                        arg_follow = true;
                        break;
                case ARG_SINCE:
                        arg_since = optarg;
                        break;
                case 'o':
                        if (streq(optarg, "json"))
                                arg_output_json = true;
                        else if (streq(optarg, "short"))
                                arg_output_json = false;
                        else {
                                ctl_usage_error("Unknown -o/--output=%s: expected short or json.", optarg);
                                return -EINVAL;
                        }
                        break;
                case '?':
                        /* getopt_long() has said what is wrong. */
                        return -EINVAL;
                default:
                        abort();
                }

        if (arg_host) {
                /* The remote system bus: another bus or the private socket makes no sense there. */
                if (arg_private || (arg_bus_given && arg_bus_kind != BUS_SYSTEM)) {
                        ctl_usage_error("-H/--host talks to HOST's system bus: it takes neither --private, --user "
                                        "nor a bus address.");
                        return -EINVAL;
                }
                if (!arg_host[0] || arg_host[0] == '-') {
                        ctl_usage_error("Invalid -H/--host=%s: expected [USER@]HOST.", arg_host);
                        return -EINVAL;
                }
                arg_bus_kind = BUS_REMOTE;
        }
        e = getenv("APIARY_BUS_ADDRESS");
        if (!arg_host && !arg_bus_given && e && e[0] != '\0') {
                arg_bus_kind = BUS_ADDRESS;
                arg_address = e;
        }

        if (arg_private) {
                /* The socket next to the bus chosen, as apiaryd's PrivateSocket= defaults. */
                if (!arg_private_path && arg_bus_kind == BUS_USER) {
                        e = getenv("XDG_RUNTIME_DIR");
                        if (!e || e[0] != '/') {
                                ctl_usage_error("--private --user needs $XDG_RUNTIME_DIR, or give the path.");
                                return -EINVAL;
                        }
                        if (snprintf(arg_private_address, sizeof(arg_private_address), "unix:path=%s/apiary/bus",
                                     e) >= (int) sizeof(arg_private_address)) {
                                ctl_usage_error("$XDG_RUNTIME_DIR is too long for a socket path.");
                                return -EINVAL;
                        }
                } else if (!arg_private_path && arg_bus_kind == BUS_ADDRESS) {
                        ctl_usage_error("--private with a bus address needs the socket's path: --private=PATH.");
                        return -EINVAL;
                } else if (snprintf(arg_private_address, sizeof(arg_private_address), "unix:path=%s",
                                    arg_private_path ?: APIARY_PRIVATE_SOCKET) >= (int) sizeof(arg_private_address)) {
                        ctl_usage_error("--private=%s: too long for a socket path.", arg_private_path);
                        return -EINVAL;
                }
                arg_bus_kind = BUS_PRIVATE;
                arg_address = arg_private_address;
        }
        return 1;
}

/* sd_bus_start() only begins the handshake of a peer-to-peer connection. Finish it here, so that
 * apiaryd turning the connection away (see bus_connect()) is told apart from a call's failure. */
static int private_handshake(sd_bus *bus) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + 25 * USEC_PER_SEC;    /* sd-bus's call timeout */
        int r;

        for (;;) {
                usec_t now = now_usec(CLOCK_MONOTONIC);

                r = sd_bus_is_ready(bus);
                if (r != 0)
                        return r;
                if (now >= deadline)
                        return -ETIMEDOUT;
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (r == 0) {
                        r = sd_bus_wait(bus, deadline - now);
                        if (r < 0)
                                return r;
                }
        }
}

int ctl_bus_open(sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        switch (arg_bus_kind) {
        case BUS_SYSTEM:
                r = sd_bus_open_system(&bus);
                break;
        case BUS_USER:
                r = sd_bus_open_user(&bus);
                break;
        case BUS_REMOTE:
                /* ssh -xT HOST systemd-stdio-bridge, as busctl -H and systemctl -H. */
                r = sd_bus_open_system_remote(&bus, arg_host);
                break;
        default:
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, arg_address);
                /* A peer of apiaryd's private socket is no bus client: no Hello(). */
                if (r >= 0 && arg_bus_kind != BUS_PRIVATE)
                        r = sd_bus_set_bus_client(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
                if (r >= 0 && arg_bus_kind == BUS_PRIVATE)
                        r = private_handshake(bus);
        }
        if (r < 0)
                return r;

        *ret = TAKE_PTR(bus);
        return 0;
}

bool ctl_bus_is_private(void) {
        return arg_bus_kind == BUS_PRIVATE;
}

bool ctl_bus_is_remote(void) {
        return arg_bus_kind == BUS_REMOTE;
}

bool ctl_bus_is_user(void) {
        return arg_bus_kind == BUS_USER;
}

static int bus_connect(sd_bus **ret) {
        int r;

        r = ctl_bus_open(ret);
        /* apiaryd turns away those who may neither submit nor control before the handshake ends:
         * with its REJECTED (EPERM), or the socket closed under it. */
        if (r < 0 && arg_bus_kind == BUS_PRIVATE && IN_SET(r, -EPERM, -EPIPE, -ECONNRESET, -ENOTCONN)) {
                ctl_error("Failed to connect to %s: apiaryd turned the connection away (%s). Its private socket "
                          "serves only users that may submit tasks or control (SubmitUsers=, SubmitGroups=, "
                          "ControlUsers=, ControlGroups=); without --private, apiaryctl reads the state on the bus.",
                          arg_address, strerror(-r));
                return CTL_EXIT_ACCESS_DENIED;
        }
        if (r < 0) {
                if (arg_bus_kind == BUS_REMOTE)
                        ctl_error("Failed to connect to the system bus of %s: %s", arg_host, strerror(-r));
                else if (IN_SET(arg_bus_kind, BUS_SYSTEM, BUS_USER)) {
                        ctl_error("Failed to connect to %s (%s): %s", bus_description(), bus_default_address(),
                                  strerror(-r));
                        hint_other_bus();
                } else
                        ctl_error("Failed to connect to %s: %s", arg_address, strerror(-r));
                return CTL_EXIT_UNREACHABLE;
        }
        return CTL_EXIT_SUCCESS;
}

typedef enum VerbFlags {
        VERB_JSON = 1 << 0,             /* takes --json */
        VERB_TIMEOUT = 1 << 1,          /* takes --timeout */
        VERB_WAIT = 1 << 2,             /* takes --wait */
        VERB_NO_BLOCK = 1 << 3,         /* takes --no-block */
        VERB_DRY_RUN = 1 << 4,          /* takes --dry-run */
        VERB_PROPERTY = 1 << 5,         /* takes -p and --value */
        VERB_QUIET = 1 << 6,            /* takes -q */
        VERB_LOGS = 1 << 7,             /* takes -f, --since, -o */
        VERB_LINES = 1 << 8,            /* takes -n */
        VERB_NO_BUS = 1 << 9,           /* reads no bus: the journal */
} VerbFlags;

typedef struct Verb {
        const char *name;
        unsigned min_args, max_args;    /* after the verb */
        int (*run)(sd_bus *bus, int argc, char **argv);
        VerbFlags flags;
} Verb;

static const Verb verbs[] = {
        { "status", 0, UINT_MAX, verb_status, VERB_JSON | VERB_LINES },
        { "logs", 0, 1, verb_logs, VERB_LOGS | VERB_LINES | VERB_NO_BUS },
        { "top", 0, 0, verb_top, 0 },
        { "pools", 0, 0, verb_pools, VERB_JSON },
        { "workers", 0, UINT_MAX, verb_workers, VERB_JSON },
        { "show", 0, 1, verb_show, VERB_PROPERTY },
        { "is-active", 1, UINT_MAX, verb_is_active, VERB_QUIET },
        { "is-failed", 1, UINT_MAX, verb_is_failed, VERB_QUIET },
        { "monitor", 0, 0, verb_monitor, 0 },
        { "submit", 1, UINT_MAX, verb_submit, VERB_TIMEOUT | VERB_WAIT },
        { "run", 1, 2, verb_run, VERB_TIMEOUT },
        { "wait", 1, UINT_MAX, verb_wait, VERB_TIMEOUT },
        { "cancel", 1, UINT_MAX, verb_cancel, 0 },
        { "start", 1, UINT_MAX, verb_pool_method, VERB_NO_BLOCK },
        { "stop", 1, UINT_MAX, verb_pool_method, VERB_NO_BLOCK },
        { "pause", 1, UINT_MAX, verb_pool_method, 0 },
        { "resume", 1, UINT_MAX, verb_pool_method, 0 },
        { "restart", 1, UINT_MAX, verb_pool_method, VERB_NO_BLOCK },
        { "scale", 2, 2, verb_scale, VERB_NO_BLOCK },
        { "kill", 1, 2, verb_kill, 0 },
        { "reload", 0, 0, verb_reload, VERB_NO_BLOCK | VERB_DRY_RUN },
        { "help", 0, UINT_MAX, NULL, 0 },
};

static bool want_colors(void) {
        const char *no_color = getenv("NO_COLOR"), *term = getenv("TERM");

        if (arg_no_color || (no_color && no_color[0] != '\0'))
                return false;
        if (term && streq(term, "dumb"))
                return false;
        return isatty(STDOUT_FILENO) > 0;
}

int main(int argc, char *argv[]) {
        static char *default_argv[] = { (char *) "status", NULL };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const Verb *verb = NULL;
        unsigned n_args;
        int r;

        setlocale(LC_ALL, "");

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? CTL_EXIT_USAGE : CTL_EXIT_SUCCESS;
        argc -= optind;
        argv += optind;
        if (argc == 0) {
                argc = 1;
                argv = default_argv;
        }

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].name, argv[0]))
                        verb = &verbs[i];
        if (!verb)
                return ctl_usage_error("Unknown command \"%s\".", argv[0]);
        n_args = (unsigned) argc - 1;
        if (n_args < verb->min_args)
                return ctl_usage_error("Too few arguments for \"%s\".", verb->name);
        if (n_args > verb->max_args)
                return ctl_usage_error("Too many arguments for \"%s\".", verb->name);
        if (arg_json != JSON_OFF && !(verb->flags & VERB_JSON))
                return ctl_usage_error("--json works with status, pools and workers only.");
        if (arg_timeout_given && !(verb->flags & VERB_TIMEOUT))
                return ctl_usage_error("--timeout works with submit, run and wait only.");
        if (arg_wait && !(verb->flags & VERB_WAIT))
                return ctl_usage_error("--wait works with submit only.");
        if (arg_no_block && !(verb->flags & VERB_NO_BLOCK))
                return ctl_usage_error("--no-block works with start, stop, restart, scale and reload only.");
        if (arg_dry_run && !(verb->flags & VERB_DRY_RUN))
                return ctl_usage_error("--dry-run works with reload only.");
        if ((arg_properties || arg_value) && !(verb->flags & VERB_PROPERTY))
                return ctl_usage_error("-p/--property and --value work with show only.");
        if (arg_quiet && !(verb->flags & VERB_QUIET))
                return ctl_usage_error("-q/--quiet works with is-active and is-failed only.");
        if ((arg_follow || arg_since || arg_output_json) && !(verb->flags & VERB_LOGS))
                return ctl_usage_error("-f, --since and -o work with logs only.");
        if (arg_lines != UINT_MAX && !(verb->flags & VERB_LINES))
                return ctl_usage_error("-n/--lines works with logs and status only.");
        if (!verb->run) {
                help();
                return CTL_EXIT_SUCCESS;
        }

        colors_set(want_colors());

        if (!(verb->flags & VERB_NO_BUS)) {
                r = bus_connect(&bus);
                if (r != 0)
                        return r;
        }
        r = verb->run(bus, argc, argv);
        g_clear_pointer(&arg_properties, g_strfreev);
        if (fflush(stdout) != 0 && r == CTL_EXIT_SUCCESS) {
                ctl_error("Failed to write to stdout: %s", strerror(errno));
                return CTL_EXIT_FAILURE;
        }
        return r;
}
