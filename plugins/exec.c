/* SPDX-License-Identifier: MIT */
/*
 * exec: runs a command for every task, with the task's payload on its stdin, and returns what it
 * wrote to stdout. A non-zero exit, a signal, a time limit or too much output fails the task.
 *
 *   [Pool NAME Plugin]
 *   Command=/usr/bin/tr a-z A-Z     absolute path and arguments; no shell (required)
 *   MaxOutput=1M                    stdout beyond this fails the task (default 1M)
 *   TimeoutSec=30                   SIGKILL and fail after this long (default 30s)
 *   MaxStderr=4096                  bytes of stderr kept for the error message (default 4096)
 *
 * Every task is asynchronous: run() starts the child and returns APIARY_TASK_PENDING, and the
 * worker's loop feeds its stdin, drains its stdout and stderr, and watches a pidfd for its exit
 * and a timer for its time limit. Nothing here blocks but the few steps of starting a child (a
 * fork() and a read of the exec status pipe) and reaping ones already sent SIGKILL in fini(), so
 * one Kind=io worker can run many commands at once. docs/plugins/exec.md has the details.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <apiary/plugin.h>

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MINUTE (60 * USEC_PER_SEC)

#define MAX_OUTPUT_DEFAULT (UINT64_C(1) << 20)
/* The result travels as one D-Bus byte array, which may not be longer than 64 MiB. */
#define MAX_OUTPUT_LIMIT (UINT64_C(64) << 20)
#define MAX_STDERR_DEFAULT UINT64_C(4096)
#define MAX_STDERR_LIMIT (UINT64_C(1) << 20)
#define TIMEOUT_DEFAULT_USEC (30 * USEC_PER_SEC)
/* Without pidfds, how often at most a child is polled for its exit. */
#define EXIT_POLL_MAX_USEC (50 * USEC_PER_MSEC)

/* How much one callback reads: level-triggered watches call again while data is left, and the
 * other tasks of the worker get their turn in between. */
#define READ_CHUNK ((size_t) 65536)

typedef struct ExecRun ExecRun;

typedef struct Exec {
        const struct apiary_host *host;
        char **argv;                    /* Command=, split; argv[0] is absolute */
        size_t max_output;
        size_t max_stderr;
        uint64_t timeout_usec;
        char timeout_text[32];          /* TimeoutSec= for messages, e.g. "200ms" */
        int max_fd;                     /* highest fd a child may have to close */
        bool have_pidfd;                /* false: Linux < 5.3, or valgrind 3.19 */
        ExecRun *runs;                  /* children not reaped yet */
} Exec;

/*
 * One child and, until it is completed, its task. The task may end before the child does (time
 * limit, too much output): the ExecRun then lives on, with its pipes closed, until the pidfd
 * (or, without pidfds, the exit poll) says the SIGKILLed child has exited, and it is reaped.
 *
 * The child is not reaped when it exits, only after its pipes reached EOF: the zombie keeps its
 * PID, which is also the ID of the process group it leads, from being reused, so that killing
 * the group on a time limit can never hit a stranger.
 */
struct ExecRun {
        Exec *exec;
        ExecRun *prev, *next;
        apiary_task *task;              /* NULL once completed */

        pid_t pid;                      /* 0 once reaped */
        int pidfd;
        uint64_t exit_poll_usec;        /* without pidfds: the next delay of the exit poll */
        bool exited;
        int exit_code;                  /* CLD_EXITED, CLD_KILLED, CLD_DUMPED; 0 when unknown */
        int exit_status;

        const uint8_t *payload;         /* the task's, valid until the task is completed */
        size_t payload_size;
        size_t payload_written;

        int stdin_fd, stdout_fd, stderr_fd;
        apiary_source *stdin_source, *stdout_source, *stderr_source;
        apiary_source *exit_source;     /* the pidfd's watch, or the exit poll's timer */
        apiary_source *timer_source;    /* TimeoutSec= */

        uint8_t *out;
        size_t out_size, out_allocated;

        char *err;                      /* the last max_stderr bytes of stderr */
        size_t err_size;
        bool err_truncated;
};

static int pidfd_open_(pid_t pid) {
        return (int) syscall(SYS_pidfd_open, pid, 0);
}

static int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -1;
}

static void strv_free(char **v) {
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

/* ---- configuration ---- */

/*
 * Splits Command= into words: blanks (space, tab) separate them, '…' quotes everything up to the
 * next ', "…" quotes with \" and \\ as the only escapes, and outside quotes a backslash takes the
 * next character literally. "" is an empty word. Nothing is expanded: there is no shell.
 */
static int split_command(const char *s, char ***ret, const char **ret_problem) {
        char **argv = NULL, *word = NULL;
        size_t n = 0, len = 0, size = strlen(s) + 1;
        bool in_word = false;

        for (const char *p = s;; p++) {
                char c = *p;

                if (c == '\0' || c == ' ' || c == '\t') {
                        if (in_word) {
                                char **a = realloc(argv, (n + 2) * sizeof(char *));

                                if (!a)
                                        goto oom;
                                argv = a;
                                word[len] = '\0';
                                argv[n++] = word;
                                argv[n] = NULL;
                                word = NULL;
                                in_word = false;
                        }
                        if (c == '\0')
                                break;
                        continue;
                }

                if (!in_word) {
                        /* No word is longer than the whole value. */
                        word = malloc(size);
                        if (!word)
                                goto oom;
                        len = 0;
                        in_word = true;
                }

                if (c == '\\') {
                        if (p[1] == '\0') {
                                *ret_problem = "ends in a lone backslash";
                                goto invalid;
                        }
                        word[len++] = *++p;
                } else if (c == '\'') {
                        const char *end = strchr(p + 1, '\'');

                        if (!end) {
                                *ret_problem = "has an unbalanced single quote";
                                goto invalid;
                        }
                        memcpy(word + len, p + 1, (size_t) (end - p - 1));
                        len += (size_t) (end - p - 1);
                        p = end;
                } else if (c == '"') {
                        for (p++;; p++) {
                                if (*p == '\0') {
                                        *ret_problem = "has an unbalanced double quote";
                                        goto invalid;
                                }
                                if (*p == '"')
                                        break;
                                if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                                        p++;
                                word[len++] = *p;
                        }
                } else
                        word[len++] = c;
        }

        *ret = argv;
        return 0;

oom:
        free(word);
        strv_free(argv);
        return -ENOMEM;
invalid:
        free(word);
        strv_free(argv);
        return -EINVAL;
}

static bool suffix_is(const char *s, const char *suffix) {
        return strcasecmp(s, suffix) == 0;
}

/* Reads the leading decimal digits of S into *RET; returns the rest, or NULL if none or too big. */
static const char *parse_digits(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (*s < '0' || *s > '9')
                return NULL;
        for (; *s >= '0' && *s <= '9'; s++) {
                if (v > (UINT64_MAX - (uint64_t) (*s - '0')) / 10)
                        return NULL;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        *ret = v;
        return s;
}

/* A byte count with an optional 1024-based suffix K, M or G (any case, "KiB" and "KB" too). */
static int parse_size(const char *s, uint64_t max, uint64_t *ret) {
        static const struct {
                const char *suffix;
                uint64_t factor;
        } table[] = {
                { "", 1 },
                { "B", 1 },
                { "K", UINT64_C(1) << 10 }, { "KiB", UINT64_C(1) << 10 }, { "KB", UINT64_C(1) << 10 },
                { "M", UINT64_C(1) << 20 }, { "MiB", UINT64_C(1) << 20 }, { "MB", UINT64_C(1) << 20 },
                { "G", UINT64_C(1) << 30 }, { "GiB", UINT64_C(1) << 30 }, { "GB", UINT64_C(1) << 30 },
        };
        const char *rest;
        uint64_t v;

        rest = parse_digits(s, &v);
        if (!rest)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                if (!suffix_is(rest, table[i].suffix))
                        continue;
                if (v > max / table[i].factor)
                        return -ERANGE;
                *ret = v * table[i].factor;
                return 0;
        }
        return -EINVAL;
}

/* A positive time span: an integer, alone (seconds) or with "ms", "s" or "min". */
static int parse_timeout(const char *s, uint64_t *ret) {
        static const struct {
                const char *suffix;
                uint64_t factor;
        } table[] = {
                { "", USEC_PER_SEC },
                { "s", USEC_PER_SEC }, { "sec", USEC_PER_SEC },
                { "ms", USEC_PER_MSEC }, { "msec", USEC_PER_MSEC },
                { "min", USEC_PER_MINUTE },
        };
        const char *rest;
        uint64_t v;

        rest = parse_digits(s, &v);
        if (!rest)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                if (strcmp(rest, table[i].suffix) != 0)
                        continue;
                if (v == 0 || v > UINT64_MAX / 2 / table[i].factor)
                        return -ERANGE;
                *ret = v * table[i].factor;
                return 0;
        }
        return -EINVAL;
}

static void format_timeout(char *buf, size_t size, uint64_t usec) {
        if (usec % USEC_PER_MINUTE == 0)
                snprintf(buf, size, "%" PRIu64 "min", usec / USEC_PER_MINUTE);
        else if (usec % USEC_PER_SEC == 0)
                snprintf(buf, size, "%" PRIu64 "s", usec / USEC_PER_SEC);
        else
                snprintf(buf, size, "%" PRIu64 "ms", usec / USEC_PER_MSEC);
}

static int exec_parse_config(Exec *e) {
        static const char *const known[] = { "Command", "MaxOutput", "MaxStderr", "TimeoutSec" };
        const struct apiary_host *host = e->host;
        const char *command, *v, *problem = NULL;
        uint64_t u;
        int r;

        /* A typo must not pass silently: the config loader cannot check these keys, so we do. */
        for (size_t i = 0; i < host->n_config; i++) {
                bool found = false;

                for (size_t j = 0; j < sizeof(known) / sizeof(known[0]); j++)
                        if (strcmp(host->config[i].key, known[j]) == 0)
                                found = true;
                if (!found) {
                        host->set_error(host,
                                        "unknown key %s=; known keys: Command=, MaxOutput=, MaxStderr=, TimeoutSec=",
                                        host->config[i].key);
                        return -EINVAL;
                }
        }

        command = host->config_get(host, "Command");
        if (!command) {
                host->set_error(host, "Command= is not set; expected an absolute path and its arguments");
                return -EINVAL;
        }
        r = split_command(command, &e->argv, &problem);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                host->set_error(host, "Command=%s %s", command, problem);
                return r;
        }
        if (!e->argv || !e->argv[0]) {
                host->set_error(host, "Command= is empty; expected an absolute path and its arguments");
                return -EINVAL;
        }
        if (e->argv[0][0] != '/') {
                host->set_error(host,
                                "Command=%s: \"%s\" is not an absolute path; the command is not looked up in $PATH",
                                command, e->argv[0]);
                return -EINVAL;
        }

        u = MAX_OUTPUT_DEFAULT;
        v = host->config_get(host, "MaxOutput");
        if (v && parse_size(v, MAX_OUTPUT_LIMIT, &u) < 0) {
                host->set_error(host, "MaxOutput=%s: expected a size in bytes, with an optional K, M or G, at most 64M",
                                v);
                return -EINVAL;
        }
        e->max_output = (size_t) u;

        u = MAX_STDERR_DEFAULT;
        v = host->config_get(host, "MaxStderr");
        if (v && parse_size(v, MAX_STDERR_LIMIT, &u) < 0) {
                host->set_error(host, "MaxStderr=%s: expected a size in bytes, with an optional K or M, at most 1M", v);
                return -EINVAL;
        }
        e->max_stderr = (size_t) u;

        e->timeout_usec = TIMEOUT_DEFAULT_USEC;
        v = host->config_get(host, "TimeoutSec");
        if (v && parse_timeout(v, &e->timeout_usec) < 0) {
                host->set_error(host,
                                "TimeoutSec=%s: expected a positive number of seconds, or a number with ms, s or min",
                                v);
                return -EINVAL;
        }
        format_timeout(e->timeout_text, sizeof(e->timeout_text), e->timeout_usec);

        if (access(e->argv[0], X_OK) < 0)
                host->log(host, APIARY_LOG_WARNING, "Command=%s: %s: %s; its tasks will fail", command, e->argv[0],
                          strerror(errno));
        return 0;
}

/* ---- one child ---- */

static void exec_run_close_io(ExecRun *run) {
        const struct apiary_host *host = run->exec->host;

        host->source_free(run->stdin_source);
        host->source_free(run->stdout_source);
        host->source_free(run->stderr_source);
        run->stdin_source = run->stdout_source = run->stderr_source = NULL;
        run->stdin_fd = safe_close(run->stdin_fd);
        run->stdout_fd = safe_close(run->stdout_fd);
        run->stderr_fd = safe_close(run->stderr_fd);
}

static void exec_run_close_stdin(ExecRun *run) {
        run->exec->host->source_free(run->stdin_source);
        run->stdin_source = NULL;
        run->stdin_fd = safe_close(run->stdin_fd);
}

/* The child and everything left in its process group. */
static void exec_run_kill(ExecRun *run) {
        if (run->pid <= 0)
                return;
        /* The group may be empty (the child left it with setsid()), and the child may be a
         * zombie; neither is an error. While the child is not reaped both IDs are still ours. */
        (void) kill(-run->pid, SIGKILL);
        (void) kill(run->pid, SIGKILL);
}

/* Waits for the child, which has exited or been sent SIGKILL. */
static void exec_run_reap(ExecRun *run) {
        siginfo_t si;

        if (run->pid <= 0)
                return;
        for (;;) {
                if (waitid(P_PID, (id_t) run->pid, &si, WEXITED) >= 0 || errno != EINTR)
                        break;
        }
        run->pid = 0;
}

/* Frees RUN, reaping its child first, and closing or freeing whatever is left. */
static void exec_run_free(ExecRun *run) {
        const struct apiary_host *host = run->exec->host;

        exec_run_reap(run);
        exec_run_close_io(run);
        host->source_free(run->exit_source);
        host->source_free(run->timer_source);
        run->pidfd = safe_close(run->pidfd);

        if (run->prev)
                run->prev->next = run->next;
        else if (run->exec->runs == run)
                run->exec->runs = run->next;
        if (run->next)
                run->next->prev = run->prev;

        free(run->out);
        free(run->err);
        free(run);
}

/*
 * Fails the task now, kills the child and its group, and lets go of the pipes: whatever else still
 * holds them (a grandchild that escaped the group) no longer keeps the task waiting. The child
 * is reaped once it is seen to have exited, right now if it already has.
 */
static APIARY_PRINTF(2, 3) void exec_run_abort(ExecRun *run, const char *format, ...) {
        const struct apiary_host *host = run->exec->host;
        char reason[512];
        va_list ap;

        exec_run_kill(run);

        va_start(ap, format);
        vsnprintf(reason, sizeof(reason), format, ap);
        va_end(ap);
        (void) host->task_fail(run->task, "%s", reason);
        run->task = NULL;

        exec_run_close_io(run);
        host->source_free(run->timer_source);
        run->timer_source = NULL;
        free(run->out);
        run->out = NULL;
        run->out_size = run->out_allocated = 0;

        if (run->exited)
                exec_run_free(run);
}

/* The number of bytes of the well-formed UTF-8 sequence at S, or 0 if there is none. */
static size_t utf8_sequence_length(const uint8_t *s, size_t n) {
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF;

        if (s[0] < 0x80)
                return 1;
        else if (s[0] >= 0xC2 && s[0] <= 0xDF)
                len = 2;
        else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
                len = 3;
                if (s[0] == 0xE0)
                        lo = 0xA0;              /* overlong */
                else if (s[0] == 0xED)
                        hi = 0x9F;              /* surrogates */
        } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
                len = 4;
                if (s[0] == 0xF0)
                        lo = 0x90;              /* overlong */
                else if (s[0] == 0xF4)
                        hi = 0x8F;              /* beyond U+10FFFF */
        } else
                return 0;

        if (n < len || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (s[i] < 0x80 || s[i] > 0xBF)
                        return 0;
        return len;
}

/*
 * The kept stderr as text for an error message: blanks trimmed at both ends, "..." in front if
 * the start was cut off, and every byte that is not valid UTF-8 or is a control character other
 * than newline and tab replaced by U+FFFD, since a D-Bus string must be valid UTF-8 without NUL.
 */
static char *exec_run_stderr_text(const ExecRun *run) {
        const uint8_t *s = (const uint8_t *) run->err;
        size_t n = run->err_size, k = 0;
        char *text;

        while (n > 0 && strchr(" \t\r\n", s[n - 1]) && s[n - 1] != '\0')
                n--;
        while (n > 0 && strchr(" \t\r\n", s[0]) && s[0] != '\0') {
                s++;
                n--;
        }

        text = malloc(3 + 3 * n + 1);
        if (!text)
                return NULL;
        if (run->err_truncated && n > 0) {
                memcpy(text, "...", 3);
                k = 3;
        }
        for (size_t i = 0; i < n;) {
                size_t len = utf8_sequence_length(s + i, n - i);

                if (len == 1 && ((s[i] < 0x20 && s[i] != '\n' && s[i] != '\t') || s[i] == 0x7F))
                        len = 0;
                if (len == 0) {
                        memcpy(text + k, "\xEF\xBF\xBD", 3);
                        k += 3;
                        i++;
                        continue;
                }
                memcpy(text + k, s + i, len);
                k += len;
                i += len;
        }
        text[k] = '\0';
        return text;
}

static void exec_run_complete(ExecRun *run) {
        const struct apiary_host *host = run->exec->host;
        apiary_task *task = run->task;

        run->task = NULL;
        if (run->exit_code == CLD_EXITED && run->exit_status == 0)
                (void) host->task_return(task, run->out, run->out_size);
        else if (run->exit_code == CLD_EXITED) {
                char *text = exec_run_stderr_text(run);

                (void) host->task_fail(task, "command exited with status %i%s%s", run->exit_status,
                                       text && text[0] ? ": " : "", text ?: "");
                free(text);
        } else if (run->exit_code == CLD_KILLED || run->exit_code == CLD_DUMPED) {
                const char *name = sigabbrev_np(run->exit_status);

                if (name)
                        (void) host->task_fail(task, "command killed by SIG%s%s", name,
                                               run->exit_code == CLD_DUMPED ? " (core dumped)" : "");
                else
                        (void) host->task_fail(task, "command killed by signal %i%s", run->exit_status,
                                               run->exit_code == CLD_DUMPED ? " (core dumped)" : "");
        } else
                (void) host->task_fail(task, "command ended, but its exit status is unknown");

        exec_run_free(run);
}

/* Completes the task once the child has exited and its stdout and stderr have reached EOF. */
static void exec_run_maybe_complete(ExecRun *run) {
        if (run->task && run->exited && run->stdout_fd < 0 && run->stderr_fd < 0)
                exec_run_complete(run);
}

static void on_stdin(apiary_source *source, int fd, uint32_t revents, void *userdata) {
        ExecRun *run = userdata;

        while (run->payload_written < run->payload_size) {
                size_t left = run->payload_size - run->payload_written;
                ssize_t n = write(fd, run->payload + run->payload_written, left > SSIZE_MAX ? SSIZE_MAX : left);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return;
                        /* EPIPE: the command does not read all of its input, which is its right.
                         * SIGPIPE is ignored (see exec_init()), so this is only an error code. */
                        if (errno != EPIPE)
                                run->exec->host->log(run->exec->host, APIARY_LOG_DEBUG,
                                                     "writing to the stdin of PID %i failed, closing it: %s",
                                                     (int) run->pid, strerror(errno));
                        break;
                }
                run->payload_written += (size_t) n;
        }
        /* All written, or the reader is gone: EOF for the command. */
        exec_run_close_stdin(run);
}

static void on_stdout(apiary_source *source, int fd, uint32_t revents, void *userdata) {
        ExecRun *run = userdata;
        Exec *e = run->exec;
        size_t cap = e->max_output + 1;       /* one byte more tells "exceeded" from "exactly full" */
        ssize_t n;

        if (run->out_allocated - run->out_size < READ_CHUNK && run->out_allocated < cap) {
                size_t want = run->out_allocated * 2;
                uint8_t *p;

                if (want < run->out_size + READ_CHUNK)
                        want = run->out_size + READ_CHUNK;
                if (want > cap)
                        want = cap;
                p = realloc(run->out, want);
                if (!p) {
                        exec_run_abort(run, "out of memory for the command's output");
                        return;
                }
                run->out = p;
                run->out_allocated = want;
        }

        n = read(fd, run->out + run->out_size, run->out_allocated - run->out_size);
        if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                        return;
                exec_run_abort(run, "reading the command's output failed: %s", strerror(errno));
                return;
        }
        if (n == 0) {
                e->host->source_free(run->stdout_source);
                run->stdout_source = NULL;
                run->stdout_fd = safe_close(run->stdout_fd);
                exec_run_maybe_complete(run);
                return;
        }

        run->out_size += (size_t) n;
        if (run->out_size > e->max_output)
                exec_run_abort(run, "output exceeded MaxOutput=%zu bytes", e->max_output);
}

/* Keeps the last max_stderr bytes of everything the command wrote to stderr. */
static void exec_run_keep_stderr(ExecRun *run, const char *data, size_t n) {
        size_t cap = run->exec->max_stderr;

        if (cap == 0 || n == 0)
                return;
        if (!run->err) {
                run->err = malloc(cap);
                if (!run->err)
                        return;         /* The message will lack the detail; the task is fine. */
        }
        if (n >= cap) {
                memcpy(run->err, data + (n - cap), cap);
                run->err_truncated = run->err_truncated || n > cap || run->err_size > 0;
                run->err_size = cap;
                return;
        }
        if (run->err_size + n > cap) {
                size_t drop = run->err_size + n - cap;

                memmove(run->err, run->err + drop, run->err_size - drop);
                run->err_size -= drop;
                run->err_truncated = true;
        }
        memcpy(run->err + run->err_size, data, n);
        run->err_size += n;
}

static void on_stderr(apiary_source *source, int fd, uint32_t revents, void *userdata) {
        ExecRun *run = userdata;
        char buf[16384];
        ssize_t n;

        n = read(fd, buf, sizeof(buf));
        if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                        return;
                /* Only the error message would lose something: carry on as at EOF. */
                n = 0;
        }
        if (n == 0) {
                run->exec->host->source_free(run->stderr_source);
                run->stderr_source = NULL;
                run->stderr_fd = safe_close(run->stderr_fd);
                exec_run_maybe_complete(run);
                return;
        }
        exec_run_keep_stderr(run, buf, (size_t) n);
}

/* Whether the child has exited, noting how; it stays a zombie (WNOWAIT, see struct ExecRun). */
static bool exec_run_check_exit(ExecRun *run) {
        siginfo_t si = {};

        if (waitid(P_PID, (id_t) run->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
                if (errno == EINTR)
                        return false;
                /* ECHILD: someone reaped it for us (SIGCHLD set to SIG_IGN in this process). */
                run->exec->host->log(run->exec->host, APIARY_LOG_WARNING,
                                     "cannot get the exit status of PID %i: %s", (int) run->pid, strerror(errno));
                run->pid = 0;
                si.si_code = 0;
        } else if (si.si_pid == 0)
                return false;

        run->exited = true;
        run->exit_code = si.si_code;
        run->exit_status = si.si_status;
        return true;
}

static void exec_run_exited(ExecRun *run) {
        if (!run->task) {
                /* Aborted earlier: the task is done, only the child was left. */
                exec_run_free(run);
                return;
        }
        exec_run_maybe_complete(run);
}

static void on_exit_(apiary_source *source, int fd, uint32_t revents, void *userdata) {
        ExecRun *run = userdata;

        if (!exec_run_check_exit(run))
                return;
        run->exec->host->source_free(run->exit_source);
        run->exit_source = NULL;
        run->pidfd = safe_close(run->pidfd);
        exec_run_exited(run);
}

static void on_exit_poll(apiary_source *source, void *userdata) {
        ExecRun *run = userdata;
        const struct apiary_host *host = run->exec->host;
        int r;

        /* One-shot: the host frees the source after this callback. */
        run->exit_source = NULL;
        if (exec_run_check_exit(run)) {
                exec_run_exited(run);
                return;
        }

        run->exit_poll_usec *= 2;
        if (run->exit_poll_usec > EXIT_POLL_MAX_USEC)
                run->exit_poll_usec = EXIT_POLL_MAX_USEC;
        r = host->timer_add(host, run->exit_poll_usec, on_exit_poll, run, &run->exit_source);
        if (r < 0) {
                /* Without a way to learn of its exit, the child must go now. */
                if (run->task)
                        exec_run_abort(run, "cannot watch the command: %s", strerror(-r));
                exec_run_kill(run);
                exec_run_free(run);
        }
}

static void on_timeout(apiary_source *source, void *userdata) {
        ExecRun *run = userdata;

        /* One-shot: the host frees the source after this callback. */
        run->timer_source = NULL;
        exec_run_abort(run, "command timed out after %s and was killed", run->exec->timeout_text);
}

/* ---- starting a child ---- */

/* Moves FD (O_CLOEXEC) to 3 or above, so that the child's dup2() onto 0, 1, 2 always copies. */
static int fd_move_above_stdio(int fd) {
        int copy;

        if (fd > STDERR_FILENO)
                return fd;
        copy = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
        safe_close(fd);
        return copy < 0 ? -errno : copy;
}

/* A pipe, both ends O_CLOEXEC and above stdio, OUR end (0 read, 1 write) non-blocking. */
static int make_pipe(int fds[2], int ours) {
        int p[2];

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        for (int i = 0; i < 2; i++) {
                p[i] = fd_move_above_stdio(p[i]);
                if (p[i] < 0) {
                        int r = p[i];

                        safe_close(p[1 - i]);
                        return r;
                }
        }
        /* Only our end: the child's end is another open file, and a child must not get a
         * non-blocking stdin or stdout it did not ask for. */
        if (fcntl(p[ours], F_SETFL, fcntl(p[ours], F_GETFL) | O_NONBLOCK) < 0) {
                int r = -errno;

                safe_close(p[0]);
                safe_close(p[1]);
                return r;
        }
        fds[0] = p[0];
        fds[1] = p[1];
        return 0;
}

static void close_pair(int fds[2]) {
        fds[0] = safe_close(fds[0]);
        fds[1] = safe_close(fds[1]);
}

/* Between fork() and execve(): async-signal-safe calls only, and no return. */
static void exec_child(const Exec *e, pid_t parent, int in, int out, int err, int status_fd) {
        /* The kernel's struct sigaction with SIG_DFL, no flags and an empty mask: all zeros,
         * whatever its layout on this architecture. */
        static const uint64_t sigaction_default[8] = {};
        sigset_t mask;
        int k;

        /* Dies with the worker, even when it is SIGKILLed (apiaryd's TaskTimeoutSec=), instead of
         * living on as an orphan. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                goto fail;
        /* Leads a group of its own, so that a time limit kills what it started, too. */
        if (setpgid(0, 0) < 0)
                goto fail;

        /* Default dispositions (this process ignores SIGPIPE), then no signal blocked (the worker
         * blocks the ones sd-event handles). The raw system call, because glibc's sigaction()
         * refuses its own two signals, 32 and 33, and a worker started by posix_spawn() has them
         * ignored, which execve() would pass on. EINVAL for SIGKILL and SIGSTOP. */
        for (int sig = 1; sig < _NSIG; sig++)
                (void) syscall(SYS_rt_sigaction, sig, sigaction_default, NULL, (size_t) (_NSIG / 8));
        sigemptyset(&mask);
        if (sigprocmask(SIG_SETMASK, &mask, NULL) < 0)
                goto fail;

        /* All three are 3 or above, so dup2() copies and the copies are not O_CLOEXEC. */
        if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0)
                goto fail;

        /* Nothing else: not the worker's link to apiaryd, nor another task's pipes. The status
         * pipe is O_CLOEXEC and goes at execve(). */
        if ((status_fd > STDERR_FILENO + 1 && close_range(STDERR_FILENO + 1, (unsigned) status_fd - 1, 0) < 0) ||
            close_range((unsigned) status_fd + 1, ~0U, 0) < 0) {
                if (errno != ENOSYS)
                        goto fail;
                for (int fd = STDERR_FILENO + 1; fd <= e->max_fd; fd++)
                        if (fd != status_fd)
                                (void) close(fd);
        }

        execve(e->argv[0], e->argv, environ);

fail:
        k = errno;
        (void) !write(status_fd, &k, sizeof(k));
        _exit(127);
}

/*
 * Forks and execs the command with the pipes as its stdio. Returns the PID, or a negative errno
 * of the fork or of the execve() in the child (ENOENT for a missing binary): a status pipe that
 * execve() closes tells the two apart.
 */
static pid_t exec_spawn(const Exec *e, int in, int out, int err) {
        int status[2], k = 0;
        pid_t parent = getpid(), pid;
        ssize_t n;

        if (pipe2(status, O_CLOEXEC) < 0)
                return -errno;

        pid = fork();
        if (pid < 0) {
                int r = -errno;

                close_pair(status);
                return r;
        }
        if (pid == 0)
                exec_child(e, parent, in, out, err, status[1]);

        safe_close(status[1]);
        do
                n = read(status[0], &k, sizeof(k));
        while (n < 0 && errno == EINTR);
        safe_close(status[0]);
        if (n == 0)
                return pid;             /* EOF: execve() succeeded */

        (void) waitpid(pid, NULL, 0);   /* it _exit()s right after the write */
        return n == (ssize_t) sizeof(k) && k > 0 ? -k : -EIO;
}

static int exec_run(void *state, apiary_task *task) {
        Exec *e = state;
        const struct apiary_host *host = e->host;
        int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
        const char *what = "cannot start";
        ExecRun *run;
        pid_t pid;
        int r;

        run = calloc(1, sizeof(*run));
        if (!run)
                return -ENOMEM;
        *run = (ExecRun) {
                .exec = e,
                .task = task,
                .pidfd = -1,
                .stdin_fd = -1,
                .stdout_fd = -1,
                .stderr_fd = -1,
        };
        run->payload = host->task_payload(task, &run->payload_size);

        r = make_pipe(in, 1);
        if (r >= 0)
                r = make_pipe(out, 0);
        if (r >= 0)
                r = make_pipe(err, 0);
        if (r < 0)
                goto fail;

        pid = exec_spawn(e, in[0], out[1], err[1]);
        in[0] = safe_close(in[0]);
        out[1] = safe_close(out[1]);
        err[1] = safe_close(err[1]);
        if (pid < 0) {
                r = pid;
                what = "cannot execute";
                goto fail;
        }
        run->pid = pid;
        run->stdin_fd = in[1];
        run->stdout_fd = out[0];
        run->stderr_fd = err[0];
        in[1] = out[0] = err[0] = -1;

        /* Linked now: whatever happens next, the child is accounted for. */
        run->next = e->runs;
        if (e->runs)
                e->runs->prev = run;
        e->runs = run;

        what = "cannot watch the command";
        if (e->have_pidfd) {
                run->pidfd = pidfd_open_(pid);
                if (run->pidfd < 0) {
                        r = -errno;
                        goto fail_child;
                }
                r = host->io_add(host, run->pidfd, APIARY_IO_IN, on_exit_, run, &run->exit_source);
        } else {
                run->exit_poll_usec = USEC_PER_MSEC;
                r = host->timer_add(host, run->exit_poll_usec, on_exit_poll, run, &run->exit_source);
        }
        if (r >= 0)
                r = host->io_add(host, run->stdout_fd, APIARY_IO_IN, on_stdout, run, &run->stdout_source);
        if (r >= 0)
                r = host->io_add(host, run->stderr_fd, APIARY_IO_IN, on_stderr, run, &run->stderr_source);
        if (r >= 0 && run->payload_size > 0)
                r = host->io_add(host, run->stdin_fd, APIARY_IO_OUT, on_stdin, run, &run->stdin_source);
        if (r >= 0)
                r = host->timer_add(host, e->timeout_usec, on_timeout, run, &run->timer_source);
        if (r < 0)
                goto fail_child;
        if (run->payload_size == 0)
                exec_run_close_stdin(run);

        return APIARY_TASK_PENDING;

fail_child:
        /* Rare (out of fds or memory): kill the child and wait for it right here. */
        exec_run_kill(run);
        exec_run_free(run);
        return host->task_fail(task, "%s: %s", what, strerror(-r));

fail:
        close_pair(in);
        close_pair(out);
        close_pair(err);
        free(run);
        return host->task_fail(task, "%s %s: %s", what, e->argv[0], strerror(-r));
}

/* ---- the plugin ---- */

static void exec_free(Exec *e) {
        if (!e)
                return;
        strv_free(e->argv);
        free(e);
}

static int exec_init(const struct apiary_host *host, void **ret_state) {
        struct rlimit rl;
        Exec *e;
        int fd, r;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->host = host;

        r = exec_parse_config(e);
        if (r < 0) {
                exec_free(e);
                return r;
        }

        fd = pidfd_open_(getpid());
        if (fd >= 0) {
                e->have_pidfd = true;
                safe_close(fd);
        } else if (errno == ENOSYS)
                host->log(host, APIARY_LOG_NOTICE,
                          "pidfd_open() is not available (Linux < 5.3, or valgrind), polling for the exit of commands");
        else {
                r = -errno;
                host->set_error(host, "pidfd_open() failed: %s", strerror(errno));
                exec_free(e);
                return r;
        }

        /* For the fallback when close_range() is missing (Linux < 5.9). */
        e->max_fd = getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 65536 ?
                (int) rl.rlim_cur - 1 : 65535;

        /*
         * A command that exits before reading all of its input makes our write() to its stdin
         * raise SIGPIPE, which would kill the whole worker: MSG_NOSIGNAL exists only for sockets,
         * so SIGPIPE is ignored in this process, and write() fails with EPIPE instead. This is
         * process-wide, for the host and other code in this worker too; the children get the
         * default disposition back before execve().
         */
        if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
                r = -errno;
                host->set_error(host, "cannot ignore SIGPIPE: %s", strerror(errno));
                exec_free(e);
                return r;
        }

        host->log(host, APIARY_LOG_DEBUG, "running %s, MaxOutput=%zu, MaxStderr=%zu, TimeoutSec=%s", e->argv[0],
                  e->max_output, e->max_stderr, e->timeout_text);
        *ret_state = e;
        return 0;
}

static void exec_fini(void *state) {
        Exec *e = state;

        /* Tasks still running are left unanswered: the worker is exiting, and apiaryd retries
         * or fails them as for any worker that exits with tasks in flight. Their children go. */
        while (e->runs) {
                exec_run_kill(e->runs);
                exec_run_free(e->runs);
        }
        exec_free(e);
}

APIARY_PLUGIN_DEFINE = {
        .abi_version = APIARY_PLUGIN_ABI_VERSION,
        .struct_size = sizeof(struct apiary_plugin),
        .name = "exec",
        .version = "1.0",
        .init = exec_init,
        .run = exec_run,
        .fini = exec_fini,
        .flags = APIARY_PLUGIN_FORK_SAFE,
};
