/* SPDX-License-Identifier: MIT */
#pragma once

/* Output helpers of apiaryctl: colours, aligned tables, quoting of task data, minimal JSON. */

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-bus.h>

#include "util/macro.h"
#include "util/time-util.h"

/* True if S equals one of the strings that follow. */
#define STR_IN_SET(s, ...) g_strv_contains((const char *const[]) { __VA_ARGS__, NULL }, (s))

#define ANSI_NORMAL "\x1B[0m"
#define ANSI_RED "\x1B[0;1;31m"
#define ANSI_GREEN "\x1B[0;1;32m"
#define ANSI_YELLOW "\x1B[0;1;33m"
#define ANSI_GREY "\x1B[0;38;5;245m"
#define ANSI_BOLD "\x1B[0;1;39m"

/* Colours are on only if asked for here; the caller decides (tty, --no-color, $NO_COLOR). */
void colors_set(bool enabled);
bool colors_enabled(void);
/* ANSI if colours are on, else "". */
const char *ansi(const char *ansi_sequence);
/* The colour of a manager, pool or worker state: green when all is well, yellow on the way,
 * red when broken, grey when stopped on purpose. "" without colours. */
const char *state_color(const char *state);
/* "●", or "*" if the locale cannot show it. */
const char *glyph_bullet(void);

/* ---- tables: columns as wide as their widest cell, the last one unpadded ---- */

typedef struct Table Table;

/* HEADERS: one per column, NULL-terminated. */
Table *table_new(const char *const *headers);
Table *table_free(Table *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(Table *, table_free);
/* Appends a cell; rows fill left to right. COLOR may be NULL. */
void table_add(Table *t, const char *color, const char *text);
void table_addf(Table *t, const char *color, const char *format, ...) _printf_(3, 4);
size_t table_n_rows(const Table *t);
/* Prints every row, the header first if HEADER: the first line starts with FIRST_INDENT, the others
 * with INDENT (so that a table can follow a label). */
void table_print(const Table *t, FILE *f, const char *first_indent, const char *indent, bool header);

/* ---- task data ---- */

/* Appends DATA in double quotes: valid UTF-8 text as it is, except \" \\ \n \r \t, and any other
 * byte below 0x20, 0x7f or outside valid UTF-8 as \xHH. If MAX is not 0 and DATA is longer, only
 * its first MAX bytes are shown, followed by "...(N bytes)". */
void append_quoted(GString *s, const void *data, size_t size, size_t max);

/* "2026-11-24 14:09:39" in local time, or "-" if USEC is 0. */
#define FORMAT_TIMESTAMP_MAX 64
char *format_timestamp(char *buf, size_t size, uint64_t usec);
/* A span for people, its two largest units, ms only below a second, in one word for the columns
 * of a table: "5min3s", "2h", "3s", "850ms"; "-" for USEC_INFINITY. */
char *format_span_short(char *buf, size_t size, usec_t t);

/* ---- D-Bus values ---- */

typedef enum ValueStyle {
        VALUE_QUOTED,   /* monitor: strings quoted, true/false, arrays in [a, b], structures in (a b) */
        VALUE_PLAIN,    /* show, as systemctl show: as they are, yes/no, elements separated by a space,
                         * a byte array as text if it is UTF-8 text */
} ValueStyle;

/* Appends the next value of M, of any type, on one line. Returns 0 at the end of the enclosing
 * container, 1 after a value, or a negative errno. */
int ctl_append_value(sd_bus_message *m, GString *s, ValueStyle style);

/* ---- JSON, written by hand: D-Bus strings are valid UTF-8, so escaping is all it takes ---- */

void json_append_string(GString *s, const char *str);
/* Re-indents the compact JSON that json_append_*() built: two spaces a level. */
char *json_pretty(const char *compact);
