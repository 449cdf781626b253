/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "util/log.h"

static int max_level = LOG_INFO;
static const char *log_identifier = "apiary";
static int use_journal = -1;

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg",
        [LOG_ALERT] = "alert",
        [LOG_CRIT] = "crit",
        [LOG_ERR] = "err",
        [LOG_WARNING] = "warning",
        [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",
        [LOG_DEBUG] = "debug",
};

/* stderr is journald's when JOURNAL_STREAM names the device and inode of our fd 2. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_setup(const char *identifier) {
        if (identifier)
                log_identifier = identifier;
        use_journal = stderr_is_journal();
}

bool log_to_journal(void) {
        if (use_journal < 0)
                use_journal = stderr_is_journal();
        return use_journal;
}

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

int log_level_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (strcasecmp(s, level_names[i]) == 0)
                        return (int) i;
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        if (strcasecmp(s, "warn") == 0)
                return LOG_WARNING;
        return -EINVAL;
}

const char *log_level_to_string(int level) {
        if (level < 0 || (size_t) level >= ELEMENTSOF(level_names))
                return NULL;
        return level_names[level];
}

int log_internalv(int level, int error, const LogContext *ctx, const char *file, int line,
                  const char *func, const char *format, va_list ap) {
        char msg[2048], prefix[320] = "";
        int saved_errno = errno;

        if (error < 0)
                error = -error;
        if (level > max_level)
                return -error;

        /* %m in FORMAT means the error passed in, not whatever errno happens to hold. */
        errno = error;
        (void) vsnprintf(msg, sizeof(msg), format, ap);

        /* The pool, slot and worker PID lead the message in the journal too, as systemd's "UNIT: "
         * does, so that `journalctl -u apiary` tells the workers apart without -o verbose. */
        if (ctx && ctx->pool && ctx->slot >= 0 && ctx->pid > 0)
                snprintf(prefix, sizeof(prefix), "%s/%i[%i]: ", ctx->pool, ctx->slot, ctx->pid);
        else if (ctx && ctx->pool && ctx->slot >= 0)
                snprintf(prefix, sizeof(prefix), "%s/%i: ", ctx->pool, ctx->slot);
        else if (ctx && ctx->pool)
                snprintf(prefix, sizeof(prefix), "%s: ", ctx->pool);

        if (log_to_journal()) {
                char f_msg[sizeof(prefix) + sizeof(msg) + 16], f_prio[32], f_file[256], f_line[32],
                        f_func[256], f_id[128], f_errno[32], f_pool[256], f_slot[32], f_pid[32];
                struct iovec iov[10];
                size_t n = 0;

#define IOV_PRINTF(buf, ...)                                                            \
                do {                                                                    \
                        int _k = snprintf(buf, sizeof(buf), __VA_ARGS__);               \
                        iov[n++] = (struct iovec) {                                     \
                                .iov_base = buf,                                        \
                                .iov_len = _k < (int) sizeof(buf) ? (size_t) _k : sizeof(buf) - 1, \
                        };                                                              \
                } while (0)

                IOV_PRINTF(f_msg, "MESSAGE=%s%s", prefix, msg);
                IOV_PRINTF(f_prio, "PRIORITY=%i", level);
                IOV_PRINTF(f_id, "SYSLOG_IDENTIFIER=%s", log_identifier);
                IOV_PRINTF(f_file, "CODE_FILE=%s", file);
                IOV_PRINTF(f_line, "CODE_LINE=%i", line);
                IOV_PRINTF(f_func, "CODE_FUNC=%s", func);
                if (error > 0)
                        IOV_PRINTF(f_errno, "ERRNO=%i", error);
                if (ctx && ctx->pool)
                        IOV_PRINTF(f_pool, "APIARY_POOL=%s", ctx->pool);
                if (ctx && ctx->slot >= 0)
                        IOV_PRINTF(f_slot, "APIARY_SLOT=%i", ctx->slot);
                if (ctx && ctx->pid > 0)
                        IOV_PRINTF(f_pid, "APIARY_WORKER_PID=%i", ctx->pid);
#undef IOV_PRINTF
                (void) sd_journal_sendv(iov, (int) n);
        } else
                /* To the descriptor, not through stdio: a worker's stderr FILE prefixes what its
                 * plugin writes (worker/output-prefix.c), and these lines name themselves. */
                (void) dprintf(STDERR_FILENO, "%s[%i]: %s%s\n", log_identifier, (int) getpid(), prefix, msg);

        errno = saved_errno;
        return -error;
}

int log_internal(int level, int error, const LogContext *ctx, const char *file, int line,
                 const char *func, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = log_internalv(level, error, ctx, file, line, func, format, ap);
        va_end(ap);
        return r;
}

int log_oom_internal(const char *file, int line, const char *func) {
        return log_internal(LOG_ERR, ENOMEM, NULL, file, line, func, "Out of memory.");
}
