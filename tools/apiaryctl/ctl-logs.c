/* SPDX-License-Identifier: MIT */
/*
 * logs [POOL[/SLOT]]: what apiaryd and the workers wrote to the journal, read with sd-journal, as
 * journalctl -u would show it. apiaryd's own lines carry APIARY_POOL= and APIARY_SLOT=; what a
 * plugin writes to stdout and stderr goes to the journal as SYSLOG_IDENTIFIER=apiary-worker[POOL/SLOT]
 * (worker/main.c). The journal read is this machine's: with -H, there is none to read.
 */
#include <errno.h>
#include <glib.h>
#include <poll.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <systemd/sd-journal.h>
#include <unistd.h>
#include <time.h>

#include "tools/apiaryctl/ctl-format.h"
#include "tools/apiaryctl/ctl-target.h"
#include "tools/apiaryctl/ctl.h"

#define WORKER_IDENTIFIER_PREFIX "apiary-worker["

static bool identifier_wanted(const char *id, const Target *t) {
        g_autofree char *want = NULL;

        if (!g_str_has_prefix(id, WORKER_IDENTIFIER_PREFIX))
                return false;
        if (!t)
                return true;
        /* apiary-worker[POOL/SLOT] or apiary-worker[POOL/zygote] */
        if (t->has_slot) {
                want = g_strdup_printf(WORKER_IDENTIFIER_PREFIX "%s/%" PRIu32 "]", t->pool, t->slot);
                return streq(id, want);
        }
        want = g_strdup_printf(WORKER_IDENTIFIER_PREFIX "%s/", t->pool);
        return g_str_has_prefix(id, want);
}

/* The matches for T (NULL: all of Apiary): apiaryd's lines about it, OR the output of its
 * workers, whose identifiers are looked up among those the journal has seen. */
static int add_matches(sd_journal *j, const Target *t) {
        g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
        const void *data;
        size_t size;
        int r;

        r = sd_journal_query_unique(j, "SYSLOG_IDENTIFIER");
        if (r < 0)
                return r;
        SD_JOURNAL_FOREACH_UNIQUE(j, data, size) {
                const char *v = (const char *) data + strlen("SYSLOG_IDENTIFIER=");
                g_autofree char *id = g_strndup(v, size - strlen("SYSLOG_IDENTIFIER="));

                if (identifier_wanted(id, t))
                        g_ptr_array_add(ids, g_steal_pointer(&id));
        }
        sd_journal_restart_unique(j);

        if (!t)
                r = sd_journal_add_match(j, "SYSLOG_IDENTIFIER=apiaryd", 0);
        else {
                g_autofree char *pool = g_strdup_printf("APIARY_POOL=%s", t->pool);

                r = sd_journal_add_match(j, pool, 0);
                if (r >= 0 && t->has_slot) {
                        g_autofree char *slot = g_strdup_printf("APIARY_SLOT=%" PRIu32, t->slot);

                        r = sd_journal_add_match(j, slot, 0);
                }
        }
        for (guint i = 0; r >= 0 && i < ids->len; i++) {
                g_autofree char *m = g_strdup_printf("SYSLOG_IDENTIFIER=%s", (const char *) ids->pdata[i]);

                r = sd_journal_add_disjunction(j);
                if (r >= 0)
                        r = sd_journal_add_match(j, m, 0);
        }
        return r;
}

static const char *field(sd_journal *j, const char *name, char *buf, size_t size) {
        const void *data;
        size_t len, prefix = strlen(name) + 1;

        if (sd_journal_get_data(j, name, &data, &len) < 0 || len < prefix)
                return NULL;
        len -= prefix;
        if (len >= size)
                len = size - 1;
        memcpy(buf, (const char *) data + prefix, len);
        buf[len] = '\0';
        return buf;
}

/* "Dec 07 15:10:39 IDENTIFIER[PID]: MESSAGE", as journalctl -o short. */
static void print_short(sd_journal *j) {
        char id[256], pid[32], message[16384], ts[64];
        uint64_t usec = 0;
        time_t sec;
        struct tm tm;

        (void) sd_journal_get_realtime_usec(j, &usec);
        sec = (time_t) (usec / USEC_PER_SEC);
        if (!localtime_r(&sec, &tm) || strftime(ts, sizeof(ts), "%b %d %H:%M:%S", &tm) == 0)
                g_strlcpy(ts, "-", sizeof(ts));
        printf("%s %s", ts, field(j, "SYSLOG_IDENTIFIER", id, sizeof(id)) ?: "?");
        if (field(j, "_PID", pid, sizeof(pid)) || field(j, "SYSLOG_PID", pid, sizeof(pid)))
                printf("[%s]", pid);
        printf(": %s\n", field(j, "MESSAGE", message, sizeof(message)) ?: "");
}

/* One JSON object per line, every text field of the entry, as journalctl -o json (fields that
 * are not UTF-8 text are left out), plus __REALTIME_TIMESTAMP. */
static void print_json_entry(sd_journal *j) {
        g_autoptr(GString) s = g_string_new("{");
        const void *data;
        size_t size;
        uint64_t usec = 0;

        (void) sd_journal_get_realtime_usec(j, &usec);
        g_string_append_printf(s, "\"__REALTIME_TIMESTAMP\":\"%" PRIu64 "\"", usec);
        SD_JOURNAL_FOREACH_DATA(j, data, size) {
                const char *eq = memchr(data, '=', size);
                g_autofree char *name = NULL, *value = NULL;

                if (!eq || !g_utf8_validate((const char *) data, (gssize) size, NULL) || memchr(data, '\0', size))
                        continue;
                name = g_strndup(data, (gsize) (eq - (const char *) data));
                value = g_strndup(eq + 1, size - (size_t) (eq + 1 - (const char *) data));
                g_string_append_c(s, ',');
                json_append_string(s, name);
                g_string_append_c(s, ':');
                json_append_string(s, value);
        }
        g_string_append_c(s, '}');
        puts(s->str);
}

static void print_entry(sd_journal *j) {
        if (arg_output_json)
                print_json_entry(j);
        else
                print_short(j);
}

/* Waits until the journal changes (> 0), or SIGINT or SIGTERM comes (0): -f ends there with
 * exit status 0, as monitor does. */
static int wait_journal_or_signal(sd_journal *j, int sfd) {
        struct pollfd p[2] = {
                { .fd = sd_journal_get_fd(j), .events = (short) sd_journal_get_events(j) },
                { .fd = sfd, .events = POLLIN },
        };
        uint64_t timeout = UINT64_MAX;
        int r;

        if (p[0].fd < 0)
                return p[0].fd;
        (void) sd_journal_get_timeout(j, &timeout);
        for (;;) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                int ms = timeout == UINT64_MAX ? -1 :
                         timeout <= now ? 0 : (int) MIN((timeout - now + 999) / 1000, (uint64_t) INT32_MAX);

                r = poll(p, 2, ms);
                if (r >= 0 || errno != EINTR)
                        break;
        }
        if (r < 0)
                return -errno;
        if (p[1].revents & POLLIN)
                return 0;
        r = sd_journal_process(j);
        return r < 0 ? r : 1;
}

/* --since: "2026-12-07 15:10[:39]", "15:10[:39]" today, or a span back from now ("-5min",
 * "5min ago"). Returns CLOCK_REALTIME µs, or 0 on a syntax error. */
static uint64_t parse_since(const char *s) {
        g_autofree char *span = NULL;
        usec_t back;
        struct tm tm = {};
        const char *end;
        time_t now = time(NULL), t;

        if (s[0] == '-')
                span = g_strdup(s + 1);
        else if (g_str_has_suffix(s, " ago"))
                span = g_strndup(s, strlen(s) - strlen(" ago"));
        if (span) {
                if (parse_timespan(span, USEC_PER_SEC, &back) < 0 || back == USEC_INFINITY)
                        return 0;
                return now_usec(CLOCK_REALTIME) - MIN(back, now_usec(CLOCK_REALTIME) - 1);
        }

        if (!localtime_r(&now, &tm))
                return 0;
        tm.tm_sec = 0;
        tm.tm_isdst = -1;
        end = strptime(s, "%Y-%m-%d", &tm);
        if (end) {
                tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
                if (*end == ' ' || *end == 'T')
                        end++;
                else if (*end != '\0')
                        return 0;
        } else
                end = s;
        if (*end != '\0') {
                const char *e = strptime(end, "%H:%M:%S", &tm);

                if (!e || *e != '\0') {
                        tm.tm_sec = 0;
                        e = strptime(end, "%H:%M", &tm);
                }
                if (!e || *e != '\0')
                        return 0;
        }
        t = mktime(&tm);
        return t > 0 ? (uint64_t) t * USEC_PER_SEC : 0;
}

int verb_logs(sd_bus *bus, int argc, char **argv) {
        _cleanup_(target_done) Target t = {};
        sd_journal *j = NULL;
        uint64_t since = 0;
        unsigned n = arg_lines, shown = 0;
        int r, sfd = -1, ret = CTL_EXIT_SUCCESS;

        if (argc > 1) {
                r = target_parse(argv[1], true, false, &t);
                if (r != 0)
                        return r;
        }
        if (arg_since && n != UINT_MAX)
                return ctl_usage_error("logs takes -n or --since, not both.");
        if (arg_since) {
                since = parse_since(arg_since);
                if (since == 0)
                        return ctl_usage_error("Invalid --since=%s: expected \"2026-12-07 15:10:00\", \"15:10\", "
                                               "\"-5min\" or \"5min ago\".", arg_since);
        }
        if (ctl_bus_is_remote()) {
                ctl_error("logs reads this machine's journal: with -H, run journalctl there "
                          "(ssh HOST journalctl -u apiary).");
                return CTL_EXIT_USAGE;
        }

        if (arg_follow) {
                sigset_t mask;

                sigemptyset(&mask);
                sigaddset(&mask, SIGINT);
                sigaddset(&mask, SIGTERM);
                if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
                    (sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
                        ctl_error("Failed to set up signals: %s", strerror(errno));
                        return CTL_EXIT_FAILURE;
                }
        }
        r = sd_journal_open(&j, (ctl_bus_is_user() ? SD_JOURNAL_CURRENT_USER : SD_JOURNAL_SYSTEM) |
                                        SD_JOURNAL_LOCAL_ONLY);
        if (r < 0) {
                ctl_error("Failed to open the journal: %s", strerror(-r));
                return CTL_EXIT_FAILURE;
        }
        r = add_matches(j, argc > 1 ? &t : NULL);
        if (r < 0) {
                ctl_error("Failed to read the journal: %s", strerror(-r));
                ret = CTL_EXIT_FAILURE;
                goto finish;
        }

        /* Where to begin: since a time, the last N entries (-n, or 10 with -f), or the first. */
        if (since > 0)
                r = sd_journal_seek_realtime_usec(j, since);
        else if (n == UINT_MAX && !arg_follow)
                r = sd_journal_seek_head(j);
        else {
                r = sd_journal_seek_tail(j);
                /* On the Nth entry from the end (or the first, if there are fewer): shown first. */
                if (n == 0) {
                        /* Nothing old: on the last entry, which is not shown, so that
                         * sd_journal_next() finds the new ones only. */
                        if (r >= 0)
                                r = sd_journal_previous(j);
                } else {
                        if (r >= 0)
                                r = sd_journal_previous_skip(j, n == UINT_MAX ? 10 : n);
                        if (r > 0) {
                                print_entry(j);
                                shown++;
                        }
                }
        }
        while (r >= 0) {
                r = sd_journal_next(j);
                if (r < 0)
                        break;
                if (r > 0) {
                        print_entry(j);
                        shown++;
                        continue;
                }
                if (!arg_follow)
                        break;
                fflush(stdout);
                r = wait_journal_or_signal(j, sfd);
                if (r == 0)
                        break;  /* Ctrl-C, SIGTERM */
        }
        if (r < 0) {
                ctl_error("Failed to read the journal: %s", strerror(-r));
                ret = CTL_EXIT_FAILURE;
        } else if (shown == 0 && !arg_output_json && !arg_follow)
                /* As journalctl says it; under tools/run, apiaryd logs to its stderr instead. */
                fprintf(stderr, "-- No entries --\n");
finish:
        sd_journal_close(j);
        if (sfd >= 0)
                close(sfd);
        return ret;
}

/* The last N lines about POOL, under its status, as systemctl status shows a unit's; nothing if
 * the journal cannot be read or has none. */
void ctl_print_pool_log_tail(const char *pool, unsigned n) {
        Target t = { .pool = (char *) pool };
        sd_journal *j = NULL;
        int r;

        if (ctl_bus_is_remote() || sd_journal_open(&j, (ctl_bus_is_user() ? SD_JOURNAL_CURRENT_USER :
                                                                              SD_JOURNAL_SYSTEM) |
                                                                SD_JOURNAL_LOCAL_ONLY) < 0)
                return;
        r = add_matches(j, &t);
        if (r >= 0)
                r = sd_journal_seek_tail(j);
        if (r >= 0)
                r = sd_journal_previous_skip(j, n);
        if (r > 0) {
                putchar('\n');
                do
                        print_short(j);
                while (sd_journal_next(j) > 0);
        }
        sd_journal_close(j);
}
