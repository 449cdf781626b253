/* SPDX-License-Identifier: MIT */
#include <langinfo.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tools/apiaryctl/ctl-format.h"
#include "util/time-util.h"

static bool use_colors = false;

void colors_set(bool enabled) {
        use_colors = enabled;
}

bool colors_enabled(void) {
        return use_colors;
}

const char *ansi(const char *ansi_sequence) {
        return use_colors ? ansi_sequence : "";
}

const char *state_color(const char *state) {
        if (!use_colors || !state)
                return "";
        if (STR_IN_SET(state, "running", "ready", "busy"))
                return ANSI_GREEN;
        if (STR_IN_SET(state, "starting", "degraded", "stopping", "backoff", "reloading"))
                return ANSI_YELLOW;
        if (STR_IN_SET(state, "failed", "dead"))
                return ANSI_RED;
        if (streq(state, "stopped"))
                return ANSI_GREY;
        return "";
}

const char *glyph_bullet(void) {
        return streq(nl_langinfo(CODESET), "UTF-8") ? "\u25CF" : "*";
}

/* ---- tables ---- */

typedef struct Cell {
        char *text;
        const char *color;
} Cell;

struct Table {
        size_t n_columns;
        GArray *cells;          /* of Cell, row by row, the header row first */
};

Table *table_new(const char *const *headers) {
        Table *t = g_new0(Table, 1);

        t->cells = g_array_new(false, false, sizeof(Cell));
        for (size_t i = 0; headers[i]; i++) {
                table_add(t, NULL, headers[i]);
                t->n_columns++;
        }
        return t;
}

Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (guint i = 0; i < t->cells->len; i++)
                g_free(g_array_index(t->cells, Cell, i).text);
        g_array_free(t->cells, true);
        g_free(t);
        return NULL;
}

void table_add(Table *t, const char *color, const char *text) {
        Cell c = { .text = g_strdup(text), .color = color };

        g_array_append_val(t->cells, c);
}

void table_addf(Table *t, const char *color, const char *format, ...) {
        Cell c = { .color = color };
        va_list ap;

        va_start(ap, format);
        c.text = g_strdup_vprintf(format, ap);
        va_end(ap);
        g_array_append_val(t->cells, c);
}

size_t table_n_rows(const Table *t) {
        return t->n_columns == 0 ? 0 : t->cells->len / t->n_columns - 1;
}

static size_t text_width(const char *s) {
        return g_utf8_validate(s, -1, NULL) ? (size_t) g_utf8_strlen(s, -1) : strlen(s);
}

void table_print(const Table *t, FILE *f, const char *first_indent, const char *indent, bool header) {
        g_autofree size_t *width = g_new0(size_t, t->n_columns);
        size_t n_cells = t->cells->len - t->cells->len % t->n_columns;
        size_t first = header ? 0 : t->n_columns;

        for (size_t i = first; i < n_cells; i++) {
                const Cell *c = &g_array_index(t->cells, Cell, i);
                size_t w = text_width(c->text);

                if (w > width[i % t->n_columns])
                        width[i % t->n_columns] = w;
        }

        for (size_t i = first; i < n_cells; i++) {
                const Cell *c = &g_array_index(t->cells, Cell, i);
                size_t col = i % t->n_columns;
                bool last = col == t->n_columns - 1;
                const char *color = i < t->n_columns ? ansi(ANSI_BOLD) : c->color ?: "";

                if (col == 0)
                        fputs(strempty(i == first ? first_indent : indent), f);
                fprintf(f, "%s%s%s", color, c->text, color[0] ? ANSI_NORMAL : "");
                if (last)
                        fputc('\n', f);
                else
                        fprintf(f, "%*s", (int) (width[col] - text_width(c->text) + 1), "");
        }
}

/* ---- task data ---- */

void append_quoted(GString *s, const void *data, size_t size, size_t max) {
        const char *p = data, *end;
        size_t shown = max > 0 && size > max ? max : size;

        end = p + shown;
        g_string_append_c(s, '"');
        while (p < end) {
                unsigned char c = (unsigned char) *p;

                if (c >= 0x80) {
                        gunichar u = g_utf8_get_char_validated(p, end - p);

                        if (u != (gunichar) -1 && u != (gunichar) -2) {
                                const char *next = g_utf8_next_char(p);

                                g_string_append_len(s, p, next - p);
                                p = next;
                                continue;
                        }
                        g_string_append_printf(s, "\\x%02x", c);
                } else if (c == '"' || c == '\\')
                        g_string_append_printf(s, "\\%c", c);
                else if (c == '\n')
                        g_string_append(s, "\\n");
                else if (c == '\r')
                        g_string_append(s, "\\r");
                else if (c == '\t')
                        g_string_append(s, "\\t");
                else if (c < 0x20 || c == 0x7f)
                        g_string_append_printf(s, "\\x%02x", c);
                else
                        g_string_append_c(s, (char) c);
                p++;
        }
        g_string_append_c(s, '"');
        if (shown < size)
                g_string_append_printf(s, "...(%zu bytes)", size);
}

char *format_timestamp(char *buf, size_t size, uint64_t usec) {
        time_t sec = (time_t) (usec / 1000000);
        struct tm tm;

        if (usec == 0 || !localtime_r(&sec, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                g_strlcpy(buf, "-", size);
        return buf;
}

char *format_span_short(char *buf, size_t size, usec_t t) {
        static const struct {
                const char *suffix;
                usec_t usec;
        } table[] = {
                { "d", USEC_PER_DAY },
                { "h", USEC_PER_HOUR },
                { "min", USEC_PER_MINUTE },
                { "s", USEC_PER_SEC },
                { "ms", USEC_PER_MSEC },
        };
        size_t l = 0;
        unsigned shown = 0;

        if (t == USEC_INFINITY) {
                g_strlcpy(buf, "-", size);
                return buf;
        }
        buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(table) && shown < 2; i++) {
                usec_t n = t / table[i].usec;
                int k;

                if (n == 0 || (shown > 0 && table[i].usec < USEC_PER_SEC)) {
                        if (shown > 0)
                                break;  /* "2h 0min" says no more than "2h", "3s 12ms" than "3s" */
                        continue;
                }
                t -= n * table[i].usec;
                k = snprintf(buf + l, size - l, "%llu%s", (unsigned long long) n, table[i].suffix);
                if (k < 0 || (size_t) k >= size - l)
                        break;
                l += (size_t) k;
                shown++;
        }
        if (shown == 0)
                g_strlcpy(buf, "0", size);
        return buf;
}

/* ---- D-Bus values ---- */

static int append_basic(sd_bus_message *m, char type, GString *s, ValueStyle style) {
        union {
                uint8_t y;
                int b;
                int16_t n;
                uint16_t q;
                int32_t i;
                uint32_t u;
                int64_t x;
                uint64_t t;
                double d;
                const char *str;
        } v;
        int r;

        r = sd_bus_message_read_basic(m, type, &v);
        if (r < 0)
                return r;
        switch (type) {
        case SD_BUS_TYPE_STRING:
        case SD_BUS_TYPE_OBJECT_PATH:
        case SD_BUS_TYPE_SIGNATURE:
                if (style == VALUE_QUOTED)
                        append_quoted(s, v.str, strlen(v.str), 0);
                else
                        g_string_append(s, v.str);
                break;
        case SD_BUS_TYPE_BOOLEAN:
                g_string_append(s, style == VALUE_QUOTED ? (v.b ? "true" : "false") : (v.b ? "yes" : "no"));
                break;
        case SD_BUS_TYPE_BYTE:
                g_string_append_printf(s, "%u", v.y);
                break;
        case SD_BUS_TYPE_UINT16:
                g_string_append_printf(s, "%u", v.q);
                break;
        case SD_BUS_TYPE_UINT32:
                g_string_append_printf(s, "%" PRIu32, v.u);
                break;
        case SD_BUS_TYPE_UINT64:
                g_string_append_printf(s, "%" PRIu64, v.t);
                break;
        case SD_BUS_TYPE_INT16:
                g_string_append_printf(s, "%d", v.n);
                break;
        case SD_BUS_TYPE_INT32:
                g_string_append_printf(s, "%" PRIi32, v.i);
                break;
        case SD_BUS_TYPE_INT64:
                g_string_append_printf(s, "%" PRIi64, v.x);
                break;
        case SD_BUS_TYPE_DOUBLE:
                g_string_append_printf(s, "%g", v.d);
                break;
        }
        return 1;
}

int ctl_append_value(sd_bus_message *m, GString *s, ValueStyle style) {
        const char *contents, *open = "", *close = "", *sep = " ";
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r <= 0)
                return r;

        switch (type) {
        case SD_BUS_TYPE_VARIANT:
                r = sd_bus_message_enter_container(m, type, contents);
                if (r >= 0)
                        r = ctl_append_value(m, s, style);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                return r < 0 ? r : 1;
        case SD_BUS_TYPE_ARRAY:
                if (style == VALUE_PLAIN && streq(contents, "y")) {
                        const void *data;
                        size_t size;

                        r = sd_bus_message_read_array(m, 'y', &data, &size);
                        if (r < 0)
                                return r;
                        if (g_utf8_validate(data, (gssize) size, NULL) && !memchr(data, '\0', size))
                                g_string_append_len(s, data, (gssize) size);
                        else
                                for (size_t i = 0; i < size; i++)
                                        g_string_append_printf(s, "%s%02x", i > 0 ? " " : "",
                                                               ((const uint8_t *) data)[i]);
                        return 1;
                }
                if (style == VALUE_QUOTED) {
                        open = "[";
                        close = "]";
                        sep = ", ";
                }
                break;
        case SD_BUS_TYPE_STRUCT:
        case SD_BUS_TYPE_DICT_ENTRY:
                if (style == VALUE_QUOTED) {
                        open = "(";
                        close = ")";
                }
                break;
        case SD_BUS_TYPE_UNIX_FD:
                /* A file descriptor: nothing that can be printed. */
                r = sd_bus_message_skip(m, "h");
                if (r < 0)
                        return r;
                g_string_append(s, "?");
                return 1;
        default:
                return append_basic(m, type, s, style);
        }

        r = sd_bus_message_enter_container(m, type, contents);
        if (r < 0)
                return r;
        g_string_append(s, open);
        for (bool first = true;; first = false) {
                gsize len = s->len;

                if (!first)
                        g_string_append(s, sep);
                r = ctl_append_value(m, s, style);
                if (r < 0)
                        return r;
                if (r == 0) {
                        g_string_truncate(s, len);
                        break;
                }
        }
        g_string_append(s, close);
        r = sd_bus_message_exit_container(m);
        return r < 0 ? r : 1;
}

/* ---- JSON ---- */

void json_append_string(GString *s, const char *str) {
        g_string_append_c(s, '"');
        for (const char *p = str; *p; p++) {
                unsigned char c = (unsigned char) *p;

                switch (c) {
                case '"':
                        g_string_append(s, "\\\"");
                        break;
                case '\\':
                        g_string_append(s, "\\\\");
                        break;
                case '\n':
                        g_string_append(s, "\\n");
                        break;
                case '\r':
                        g_string_append(s, "\\r");
                        break;
                case '\t':
                        g_string_append(s, "\\t");
                        break;
                case '\b':
                        g_string_append(s, "\\b");
                        break;
                case '\f':
                        g_string_append(s, "\\f");
                        break;
                default:
                        if (c < 0x20)
                                g_string_append_printf(s, "\\u%04x", c);
                        else
                                g_string_append_c(s, (char) c);
                }
        }
        g_string_append_c(s, '"');
}

static void newline_indent(GString *s, unsigned level) {
        g_string_append_c(s, '\n');
        for (unsigned i = 0; i < level; i++)
                g_string_append(s, "  ");
}

char *json_pretty(const char *compact) {
        GString *s = g_string_new(NULL);
        bool in_string = false;
        unsigned level = 0;

        for (const char *p = compact; *p; p++) {
                char c = *p;

                if (in_string) {
                        g_string_append_c(s, c);
                        if (c == '\\' && p[1]) {
                                g_string_append_c(s, *++p);
                                continue;
                        }
                        if (c == '"')
                                in_string = false;
                        continue;
                }

                switch (c) {
                case '"':
                        in_string = true;
                        g_string_append_c(s, c);
                        break;
                case '{':
                case '[':
                        g_string_append_c(s, c);
                        /* An empty object or array stays on one line. */
                        if (p[1] == (c == '{' ? '}' : ']')) {
                                g_string_append_c(s, *++p);
                                break;
                        }
                        newline_indent(s, ++level);
                        break;
                case '}':
                case ']':
                        newline_indent(s, level > 0 ? --level : 0);
                        g_string_append_c(s, c);
                        break;
                case ',':
                        g_string_append_c(s, c);
                        newline_indent(s, level);
                        break;
                case ':':
                        g_string_append(s, ": ");
                        break;
                default:
                        g_string_append_c(s, c);
                }
        }
        return g_string_free(s, false);
}
