/* SPDX-License-Identifier: MIT */
/*
 * control: a plugin whose misbehaviour the tests choose through its [Pool NAME Plugin] keys.
 *
 *   InitMode=ok|fail|crash|hang|exit   what init() does (default ok)
 *   ExitCode=N                         the status for InitMode=exit (default 7)
 *   CrashAfterMs=N                     after a successful init(), die by SIGALRM N ms later
 *   InitDelayMs=N                      take N ms in init() before doing what InitMode says
 *   FiniMode=ok|hang|crash|fail-pending what fini() does (default ok); fail-pending: fails each task
 *                                      still pending from "pend" with "failed in fini()"
 *   IgnoreSigterm=yes                  init() unblocks SIGTERM and SIGINT and ignores them, so that
 *                                      the host's stop never comes (only SIGKILL ends the worker)
 *   InitLeakMiB=N                      allocate and touch N MiB in init(), and keep it: a plugin that
 *                                      starts big
 *   OnlySlots=0,2                      apply InitMode/CrashAfterMs/FiniMode/IgnoreSigterm only in
 *                                      these slots (default all)
 *
 * Tasks: the payload is echoed, except for these commands:
 *   "crash"          abort()
 *   "fail TEXT"      fail the task with TEXT
 *   "hang"           never return
 *   "exit N"         _exit(N)
 *   "pid"            return the worker's PID (decimal)
 *   "print TEXT"     write "stdout: TEXT" to stdout (stdio, not flushed) and "stderr: TEXT" to
 *                    stderr, return "printed"
 *   "relay POOL DATA" submit DATA to POOL, return "relayed:" + its result (asynchronously)
 *   "return-nothing" return from run() without completing the task
 *   "pend"           return APIARY_TASK_PENDING and never complete the task (until fini())
 *   "spawn N"        fork N (at most 64) children that sleep forever; return their PIDs
 *   "orphan N"       clone(CLONE_PARENT) N (at most 1000) children, which are so apiaryd's, and
 *                    which exit at once; return "orphaned N"
 *   "flood N"        submit() N tasks to a pool that does not exist, then hang without ever
 *                    reading the answers: a plugin that floods its link
 *   "hog N"          allocate and touch N MiB; if malloc() fails, log it and abort()
 *   "big N"          return a result of N bytes (at most 64 MiB), 'x' each
 *   "leak N"         allocate and touch N MiB (at most 1024) and keep it: a leaky plugin; return
 *                    "leaked N MiB"
 *   "close-bus"      close the worker's link to apiaryd (fd 3), then return the payload
 *   "garbage"        write bytes that are not D-Bus to the link (fd 3), then return the payload
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <sys/types.h>
#include <unistd.h>

#include <apiary/plugin.h>

static int slot_applies(const struct apiary_host *host) {
        const char *slots = host->config_get(host, "OnlySlots");
        char buf[256], *tok, *save = NULL;

        if (!slots)
                return 1;
        snprintf(buf, sizeof(buf), "%s", slots);
        for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
                if ((unsigned) atoi(tok) == host->slot)
                        return 1;
        return 0;
}

/* What "leak" and InitLeakMiB= keep: reachable from here, so that a leak checker (LeakSanitizer,
 * valgrind) does not count it. Each chunk's first bytes link to the one before. */
static void *leaked;

/* Allocates and touches MIB MiB that are never freed: RSS grows by that much. */
static int leak(long mib) {
        for (long i = 0; i < mib; i++) {
                char *chunk = malloc(1 << 20);

                if (!chunk)
                        return -1;
                memset(chunk, 0x5a, 1 << 20);
                memcpy(chunk, &leaked, sizeof(leaked));
                leaked = chunk;
        }
        return 0;
}

static int control_init(const struct apiary_host *host, void **ret_state) {
        const char *mode = host->config_get(host, "InitMode");
        const char *crash_after = host->config_get(host, "CrashAfterMs");
        const char *delay = host->config_get(host, "InitDelayMs");
        const char *ignore_sigterm = host->config_get(host, "IgnoreSigterm");
        const char *init_leak = host->config_get(host, "InitLeakMiB");

        *ret_state = (void *) host;
        if (!slot_applies(host))
                return 0;

        if (init_leak && leak(atol(init_leak)) < 0) {
                host->set_error(host, "could not allocate InitLeakMiB=%s", init_leak);
                return -1;
        }
        if (delay) {
                long ms = atol(delay);
                struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
        }

        if (mode && strcmp(mode, "fail") == 0) {
                host->set_error(host, "told to fail by InitMode=fail");
                return -EINVAL;
        }
        if (mode && strcmp(mode, "crash") == 0)
                abort();
        if (mode && strcmp(mode, "hang") == 0)
                for (;;)
                        pause();
        if (mode && strcmp(mode, "exit") == 0) {
                const char *code = host->config_get(host, "ExitCode");
                exit(code ? atoi(code) : 7);
        }

        if (ignore_sigterm && strcmp(ignore_sigterm, "yes") == 0) {
                sigset_t mask;

                /* The host blocks them to read them from its event loop; unblocked and ignored,
                 * they are dropped as they come. */
                sigemptyset(&mask);
                sigaddset(&mask, SIGTERM);
                sigaddset(&mask, SIGINT);
                signal(SIGTERM, SIG_IGN);
                signal(SIGINT, SIG_IGN);
                sigprocmask(SIG_UNBLOCK, &mask, NULL);
        }

        if (crash_after) {
                struct itimerval it = {};
                long ms = atol(crash_after);

                it.it_value.tv_sec = ms / 1000;
                it.it_value.tv_usec = (ms % 1000) * 1000;
                if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0)
                        it.it_value.tv_usec = 1;
                setitimer(ITIMER_REAL, &it, NULL);
        }

        host->log(host, APIARY_LOG_DEBUG, "control plugin ready (InitMode=%s)", mode ? mode : "ok");
        return 0;
}

/* The tasks of "pend", which only fini() completes (FiniMode=fail-pending). */
static apiary_task *pending[64];
static unsigned n_pending;

static void control_fini(void *state) {
        const struct apiary_host *host = state;
        const char *mode = host->config_get(host, "FiniMode");

        if (!mode || !slot_applies(host))
                return;
        if (strcmp(mode, "fail-pending") == 0)
                while (n_pending > 0)
                        (void) host->task_fail(pending[--n_pending], "failed in fini()");
        if (strcmp(mode, "hang") == 0)
                for (;;)
                        pause();
        if (strcmp(mode, "crash") == 0)
                abort();
}

static void ignore_result(int ok, const void *data, size_t size, void *userdata) {
}

/* "flood N": N calls on the link, whose answers are never read. */
static int flood_link(const struct apiary_host *host, apiary_task *task, int n) {
        for (int i = 0; i < n; i++)
                if (host->submit(host, "no-such-pool", "x", 1, ignore_result, NULL) < 0)
                        break;
        for (;;)
                pause();
        return 0;
}

/* "orphan N": children of apiaryd's, which it did not make and does not know; they exit at once. */
static int orphan_children(const struct apiary_host *host, apiary_task *task, int n) {
        char buf[32];

        if (n < 1 || n > 1000)
                return host->task_fail(task, "usage: orphan N, with N from 1 to 1000");
        for (int i = 0; i < n; i++) {
                long pid = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, NULL, NULL, NULL, 0);

                if (pid < 0)
                        return host->task_fail(task, "clone: %s", strerror(errno));
                if (pid == 0)
                        _exit(0);
        }
        return host->task_return(task, buf, (size_t) snprintf(buf, sizeof(buf), "orphaned %i", n));
}

/* "spawn N": children that outlive nothing. They stay in the worker's process group. */
static int spawn_children(const struct apiary_host *host, apiary_task *task, int n) {
        char buf[64 * 12] = "";
        size_t len = 0;

        if (n < 1 || n > 64)
                return host->task_fail(task, "usage: spawn N, with N from 1 to 64");
        for (int i = 0; i < n; i++) {
                pid_t pid = fork();

                if (pid < 0)
                        return host->task_fail(task, "fork: %s", strerror(errno));
                if (pid == 0)
                        for (;;)
                                pause();
                len += (size_t) snprintf(buf + len, sizeof(buf) - len, "%s%i", i > 0 ? " " : "", (int) pid);
        }
        return host->task_return(task, buf, len);
}

/* "hog N": what a leaky plugin does when the memory runs out, as g_malloc() or C++'s new would. */
static int hog(const struct apiary_host *host, apiary_task *task, long mib) {
        char **chunks = calloc((size_t) mib + 1, sizeof(char *));
        char buf[64];
        int k;

        if (!chunks)
                abort();
        for (long i = 0; i < mib; i++) {
                chunks[i] = malloc(1 << 20);
                if (!chunks[i]) {
                        host->log(host, APIARY_LOG_ERR, "out of memory after %ld MiB, aborting", i);
                        abort();
                }
                memset(chunks[i], 0x5a, 1 << 20);
        }
        for (long i = 0; i < mib; i++)
                free(chunks[i]);
        free(chunks);
        k = snprintf(buf, sizeof(buf), "allocated %ld MiB", mib);
        return host->task_return(task, buf, (size_t) k);
}

typedef struct Relay {
        const struct apiary_host *host;
        apiary_task *task;
} Relay;

static void relay_done(int ok, const void *data, size_t size, void *userdata) {
        Relay *r = userdata;

        if (ok) {
                char *out = malloc(size + 8);

                memcpy(out, "relayed:", 8);
                memcpy(out + 8, data, size);
                r->host->task_return(r->task, out, size + 8);
                free(out);
        } else
                r->host->task_fail(r->task, "relay failed: %.*s", (int) size, (const char *) data);
        free(r);
}

static int control_run(void *state, apiary_task *task) {
        const struct apiary_host *host = state;
        const char *p;
        size_t n;

        p = host->task_payload(task, &n);
        if (n == 5 && memcmp(p, "crash", 5) == 0)
                abort();
        if (n == 4 && memcmp(p, "hang", 4) == 0)
                for (;;)
                        pause();
        if (n > 5 && n < 16 && memcmp(p, "exit ", 5) == 0) {
                char num[16];   /* the payload is not NUL-terminated */

                memcpy(num, p + 5, n - 5);
                num[n - 5] = '\0';
                _exit(atoi(num));
        }
        if (n >= 5 && memcmp(p, "fail ", 5) == 0)
                return host->task_fail(task, "%.*s", (int) (n - 5), p + 5);
        if (n == 3 && memcmp(p, "pid", 3) == 0) {
                char buf[32];
                int k = snprintf(buf, sizeof(buf), "%i", (int) getpid());
                return host->task_return(task, buf, (size_t) k);
        }
        if (n > 6 && memcmp(p, "print ", 6) == 0) {
                /* No fflush(): what the host makes of a plugin's buffered stdout is under test. */
                printf("stdout: %.*s\n", (int) (n - 6), p + 6);
                fprintf(stderr, "stderr: %.*s\n", (int) (n - 6), p + 6);
                return host->task_return(task, "printed", 7);
        }
        if (n == 14 && memcmp(p, "return-nothing", 14) == 0)
                return 0;
        if (n == 4 && memcmp(p, "pend", 4) == 0) {
                if (n_pending >= 64)
                        return host->task_fail(task, "too many pending tasks");
                pending[n_pending++] = task;
                /* Tests wait for this line: the worker holds the task (apiaryd's "busy" says only
                 * that it was sent). */
                host->log(host, APIARY_LOG_INFO, "holding a pending task (%u)", n_pending);
                return APIARY_TASK_PENDING;
        }
        if (n > 6 && n < 16 && memcmp(p, "spawn ", 6) == 0) {
                char num[16];

                memcpy(num, p + 6, n - 6);
                num[n - 6] = '\0';
                return spawn_children(host, task, atoi(num));
        }
        if (n > 6 && n < 16 && memcmp(p, "flood ", 6) == 0) {
                char num[16];

                memcpy(num, p + 6, n - 6);
                num[n - 6] = '\0';
                return flood_link(host, task, atoi(num));
        }
        if (n > 7 && n < 16 && memcmp(p, "orphan ", 7) == 0) {
                char num[16];

                memcpy(num, p + 7, n - 7);
                num[n - 7] = '\0';
                return orphan_children(host, task, atoi(num));
        }
        if (n > 4 && n < 16 && memcmp(p, "hog ", 4) == 0) {
                char num[16];

                memcpy(num, p + 4, n - 4);
                num[n - 4] = '\0';
                return hog(host, task, atol(num));
        }
        if (n > 4 && n < 16 && memcmp(p, "big ", 4) == 0) {
                char num[16], *big;
                long size;
                int r;

                memcpy(num, p + 4, n - 4);
                num[n - 4] = '\0';
                size = atol(num);
                if (size < 0 || size > 64L << 20 || !(big = malloc((size_t) size + 1)))
                        return host->task_fail(task, "cannot make %ld bytes", size);
                memset(big, 'x', (size_t) size);
                r = host->task_return(task, big, (size_t) size);
                free(big);
                return r;
        }
        if (n > 5 && n < 16 && memcmp(p, "leak ", 5) == 0) {
                char num[16], buf[64];
                long mib;
                int k;

                memcpy(num, p + 5, n - 5);
                num[n - 5] = '\0';
                mib = atol(num);
                if (mib < 0 || mib > 1024 || leak(mib) < 0)
                        return host->task_fail(task, "could not leak %ld MiB", mib);
                k = snprintf(buf, sizeof(buf), "leaked %ld MiB", mib);
                return host->task_return(task, buf, (size_t) k);
        }
        if (n == 9 && memcmp(p, "close-bus", 9) == 0) {
                close(3);
                return host->task_return(task, p, n);
        }
        if (n == 7 && memcmp(p, "garbage", 7) == 0) {
                static const char junk[] = "this is not D-Bus\n\xff\xfe\0\0";

                if (write(3, junk, sizeof(junk)) < 0)
                        return host->task_fail(task, "write: %s", strerror(errno));
                return host->task_return(task, p, n);
        }
        if (n > 6 && memcmp(p, "relay ", 6) == 0) {
                const char *pool = p + 6, *sp = memchr(pool, ' ', n - 6);
                char name[128];
                Relay *r;

                if (!sp || (size_t) (sp - pool) >= sizeof(name))
                        return host->task_fail(task, "usage: relay POOL DATA");
                memcpy(name, pool, (size_t) (sp - pool));
                name[sp - pool] = '\0';
                r = malloc(sizeof(*r));
                *r = (Relay) { .host = host, .task = task };
                if (host->submit(host, name, sp + 1, n - (size_t) (sp + 1 - p), relay_done, r) < 0) {
                        free(r);
                        return host->task_fail(task, "submit failed");
                }
                return APIARY_TASK_PENDING;
        }
        return host->task_return(task, p, n);
}

APIARY_PLUGIN_DEFINE = {
        .abi_version = APIARY_PLUGIN_ABI_VERSION,
        .struct_size = sizeof(struct apiary_plugin),
        .name = "control",
        .version = "1.0",
        .init = control_init,
        .run = control_run,
        .fini = control_fini,
};
