/* SPDX-License-Identifier: MIT */
/*
 * top: a live view of apiaryd, redrawn every second, as pm2 monit or systemd-cgtop: per pool its
 * state, tasks per second, queue and counters; per worker its PID, state, CPU %, RSS, uptime and
 * the tasks it was handed. Read-only: one snapshot of the bus API a second (apiaryd reads the
 * workers' CPU and memory from /proc when asked). q quits; so do Ctrl-C and SIGTERM.
 */
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "tools/apiaryctl/ctl-format.h"
#include "tools/apiaryctl/ctl-state.h"
#include "tools/apiaryctl/ctl.h"

#define TOP_INTERVAL_USEC USEC_PER_SEC

/* What the previous frame saw, for the rates: pool name → tasks ended, "PID" → CPU ns. */
typedef struct TopHistory {
        GHashTable *ended;
        GHashTable *cpu;
        usec_t when;            /* CLOCK_MONOTONIC; 0 before the first frame */
} TopHistory;

static uint64_t *u64_dup(uint64_t v) {
        return g_memdup2(&v, sizeof(v));
}

static bool history_get(GHashTable *h, const char *key, uint64_t *ret) {
        const uint64_t *v = g_hash_table_lookup(h, key);

        if (v)
                *ret = *v;
        return v != NULL;
}

/* A rate with one decimal, or "-" before there are two frames to compare. */
static void append_rate(Table *t, bool known, double rate) {
        if (known)
                table_addf(t, NULL, "%.1f", rate);
        else
                table_add(t, NULL, "-");
}

static void draw(const Snapshot *s, TopHistory *h, bool tty) {
        g_autoptr(GHashTable) ended = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autoptr(GHashTable) cpu = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        _cleanup_(table_freep) Table *pools = table_new((const char *const[]) {
                "POOL", "STATE", "READY", "TASKS/S", "QUEUED", "RUNNING", "DONE", "FAILED", "RESTARTS", NULL });
        _cleanup_(table_freep) Table *workers = table_new((const char *const[]) {
                "POOL", "SLOT", "PID", "STATE", "CPU%", "RSS", "UPTIME", "TASKS", NULL });
        usec_t now = now_usec(CLOCK_MONOTONIC), wall = now_usec(CLOCK_REALTIME);
        double dt = h->when > 0 && now > h->when ? (double) (now - h->when) / USEC_PER_SEC : 0;
        char span[FORMAT_TIMESPAN_MAX], rss[FORMAT_SIZE_MAX];
        unsigned n_workers = 0;

        for (guint i = 0; i < s->pools->len; i++) {
                const PoolInfo *p = g_ptr_array_index(s->pools, i);
                uint64_t now_ended = p->tasks_done + p->tasks_failed, before;
                bool known = dt > 0 && history_get(h->ended, p->name, &before) && now_ended >= before;

                g_hash_table_insert(ended, g_strdup(p->name), u64_dup(now_ended));
                table_add(pools, NULL, p->name);
                table_add(pools, state_color(p->state), strempty(p->state));
                table_addf(pools, NULL, "%" PRIu32 "/%" PRIu32, p->workers_ready, p->workers_wanted);
                append_rate(pools, known, known ? (double) (now_ended - before) / dt : 0);
                table_addf(pools, NULL, "%" PRIu64, p->tasks_queued);
                table_addf(pools, NULL, "%" PRIu64, p->tasks_running);
                table_addf(pools, NULL, "%" PRIu64, p->tasks_done);
                table_addf(pools, p->tasks_failed > 0 ? ANSI_RED : NULL, "%" PRIu64, p->tasks_failed);
                table_addf(pools, NULL, "%" PRIu64, p->restarts);

                for (guint k = 0; k < p->workers->len; k++) {
                        const WorkerInfo *w = g_ptr_array_index(p->workers, k);
                        bool alive = w->pid > 0;
                        g_autofree char *key = g_strdup_printf("%" PRIu32, w->pid);
                        uint64_t cpu_before;
                        bool cpu_known = alive && w->cpu_nsec != UINT64_MAX && dt > 0 &&
                                         history_get(h->cpu, key, &cpu_before) && w->cpu_nsec >= cpu_before;

                        n_workers++;
                        if (alive && w->cpu_nsec != UINT64_MAX)
                                g_hash_table_insert(cpu, g_steal_pointer(&key), u64_dup(w->cpu_nsec));
                        table_add(workers, NULL, p->name);
                        table_addf(workers, NULL, "%" PRIu32, w->slot);
                        if (alive)
                                table_addf(workers, NULL, "%" PRIu32, w->pid);
                        else
                                table_add(workers, NULL, "-");
                        table_add(workers, state_color(w->state), strempty(w->state));
                        append_rate(workers, cpu_known,
                                    cpu_known ? (double) (w->cpu_nsec - cpu_before) / 1e9 / dt * 100 : 0);
                        table_add(workers, NULL, format_bytes_short(rss, sizeof(rss), alive ? w->rss_bytes : UINT64_MAX));
                        table_add(workers, NULL,
                                  format_span_short(span, sizeof(span),
                                                    alive && w->started_at > 0 && wall > w->started_at ?
                                                    wall - w->started_at : USEC_INFINITY));
                        if (alive && w->tasks_dispatched != UINT64_MAX)
                                table_addf(workers, NULL, "%" PRIu64, w->tasks_dispatched);
                        else
                                table_add(workers, NULL, "-");
                }
        }

        if (tty)
                fputs("\x1B[H\x1B[2J", stdout);        /* home, clear */
        printf("apiaryd %s, %s", strempty(s->manager.version), strempty(s->manager.state));
        if (s->manager.started_at > 0 && wall > s->manager.started_at)
                printf(", up %s", format_span_short(span, sizeof(span), wall - s->manager.started_at));
        printf("; %u pools, %u workers; %" PRIu64 " queued, %" PRIu64 " running, %" PRIu64 " done, %" PRIu64
               " failed%s\n\n",
               s->pools->len, n_workers, s->manager.tasks_queued, s->manager.tasks_running, s->manager.tasks_done,
               s->manager.tasks_failed, tty ? "   (q quits)" : "");
        table_print(pools, stdout, "", "", true);
        putchar('\n');
        table_print(workers, stdout, "", "", true);
        if (!tty)
                putchar('\n');
        fflush(stdout);

        g_hash_table_unref(h->ended);
        g_hash_table_unref(h->cpu);
        h->ended = g_hash_table_ref(ended);
        h->cpu = g_hash_table_ref(cpu);
        h->when = now;
}

int verb_top(sd_bus *bus, int argc, char **argv) {
        TopHistory h = {
                .ended = g_hash_table_new(g_str_hash, g_str_equal),
                .cpu = g_hash_table_new(g_str_hash, g_str_equal),
        };
        bool tty = isatty(STDOUT_FILENO) > 0, raw = false, stdin_open = true;
        struct termios saved;
        sigset_t mask;
        int sfd, ret = CTL_EXIT_SUCCESS;

        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 || (sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
                ctl_error("Failed to set up signals: %s", strerror(errno));
                return CTL_EXIT_FAILURE;
        }
        /* q without Enter: the terminal's line discipline off, restored however top ends. */
        if (isatty(STDIN_FILENO) > 0 && tcgetattr(STDIN_FILENO, &saved) == 0) {
                struct termios t = saved;

                t.c_lflag &= ~(tcflag_t) (ICANON | ECHO);
                t.c_cc[VMIN] = 1;
                t.c_cc[VTIME] = 0;
                raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
        }
        if (tty)
                fputs("\x1B[?25l", stdout);     /* no cursor */

        for (;;) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(snapshot_freep) Snapshot *s = NULL;
                usec_t deadline = now_usec(CLOCK_MONOTONIC) + TOP_INTERVAL_USEC;
                int r = snapshot_load(bus, &s, &error);
                bool quit = false;

                if (r < 0) {
                        ret = ctl_bus_error(r, &error, "Failed to read the state of apiaryd");
                        break;
                }
                draw(s, &h, tty);

                /* Until the next frame: a key, a signal, or the time. */
                while (!quit) {
                        struct pollfd p[2] = {
                                { .fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN },
                                { .fd = sfd, .events = POLLIN },
                        };
                        usec_t now = now_usec(CLOCK_MONOTONIC);
                        char c;

                        if (now >= deadline)
                                break;
                        r = poll(p, 2, (int) ((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC));
                        if (r < 0 && errno != EINTR) {
                                ctl_error("Failed to wait: %s", strerror(errno));
                                quit = true;
                                ret = CTL_EXIT_FAILURE;
                        } else if (r > 0 && (p[1].revents & POLLIN))
                                quit = true;
                        else if (r > 0 && (p[0].revents & (POLLIN | POLLHUP))) {
                                ssize_t k = read(STDIN_FILENO, &c, 1);

                                if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
                                        stdin_open = false;     /* no more keys: the time and signals */
                                if (k == 1 && (c == 'q' || c == 'Q'))
                                        quit = true;
                        }
                }
                if (quit)
                        break;
        }

        if (tty)
                fputs("\x1B[?25h", stdout);
        fflush(stdout);
        if (raw)
                (void) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
        close(sfd);
        g_hash_table_unref(h.ended);
        g_hash_table_unref(h.cpu);
        return ret;
}
