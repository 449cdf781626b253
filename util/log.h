/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

#include "util/macro.h"

/*
 * Logging for apiaryd and apiary-worker: to the journal with structured fields when stderr is
 * connected to journald (JOURNAL_STREAM), else one line per message to stderr. Helpers in config/
 * and ipc/ never log; they return errors and leave the logging to their callers.
 */

/* Fields that tie a message to a pool and worker; any of them may be unset (NULL / -1 / 0). */
typedef struct LogContext {
        const char *pool;
        int slot;
        int pid;
} LogContext;

#define LOG_CONTEXT_NULL ((LogContext) { .pool = NULL, .slot = -1, .pid = 0 })

void log_setup(const char *identifier);
void log_set_max_level(int level);
int log_get_max_level(void);
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);
bool log_to_journal(void);

/* Logs and returns -abs(error) (or 0 if error is 0), so callers can "return log_error_errno(r, ...)". */
int log_internal(int level, int error, const LogContext *ctx, const char *file, int line,
                 const char *func, const char *format, ...) _printf_(7, 8);
int log_internalv(int level, int error, const LogContext *ctx, const char *file, int line,
                  const char *func, const char *format, va_list ap) _printf_(7, 0);

#define log_full_errno(level, error, ...) \
        log_internal((level), (error), NULL, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_full(level, ...) ((void) log_full_errno((level), 0, __VA_ARGS__))

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, (e), __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_INFO, (e), __VA_ARGS__)
#define log_notice_errno(e, ...) log_full_errno(LOG_NOTICE, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, (e), __VA_ARGS__)

/* The same with pool/slot/PID fields attached. */
#define log_ctx_errno(level, error, ctx, ...) \
        log_internal((level), (error), (ctx), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_ctx(level, ctx, ...) ((void) log_ctx_errno((level), 0, (ctx), __VA_ARGS__))

int log_oom_internal(const char *file, int line, const char *func);
#define log_oom() log_oom_internal(__FILE__, __LINE__, __func__)
