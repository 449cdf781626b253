/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib.h>
#include <systemd/sd-id128.h>

#include "build-config.h"
#include "config/config.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/time-util.h"

/*
 * Loading happens in two steps. First every file is read with GKeyFile and merged into a
 * ConfigSource: groups and keys in order of first appearance, each key holding its last value and
 * the file that value came from. Only then are the merged values parsed into a Config. So every
 * key is parsed once, PluginDirectory= is final before any Plugin= is resolved, and every error
 * names the file that set the offending value.
 */

#define WORKERS_MAX 4096U
#define CONFIG_FILE_SIZE_MAX (4U * 1024U * 1024U)

#define GROUP_EXPECTED "expected [Apiary], [Pool NAME] or [Pool NAME Plugin]"
#define POOL_NAME_EXPECTED "expected 1 to 64 characters from A-Z, a-z, 0-9, \"_\", \".\" and \"-\""

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

/* Adds a line to the malloc()ed message in *ret_error (when wanted) and returns ERROR. The
 * parser goes on after most errors, so that one run shows every problem of a file: the lines
 * accumulate, one per problem, in the order found. */
static int config_error(char **ret_error, int error, const char *format, ...) _printf_(3, 4);
static int config_error(char **ret_error, int error, const char *format, ...) {
        char *line, *joined;
        va_list ap;

        if (!ret_error)
                return error;

        va_start(ap, format);
        if (vasprintf(&line, format, ap) < 0)
                line = NULL;
        va_end(ap);
        if (!line)
                return error;
        if (!*ret_error) {
                *ret_error = line;
                return error;
        }
        if (asprintf(&joined, "%s\n%s", *ret_error, line) >= 0) {
                free(*ret_error);
                *ret_error = joined;
        }
        free(line);
        return error;
}

/* strerror() for file checks; -EBADFD stands for "exists, but is neither a directory nor a
 * regular file" (a FIFO, socket or device), which has no errno of its own. */
static const char *file_strerror(int error) {
        if (error == -EBADFD)
                return "not a regular file";
        return strerror(-error);
}

/* ---- merged source: groups and keys of all files ---- */

typedef struct SourceEntry {
        char *key;
        char *value;
        const char *file;       /* borrowed from ConfigSource.files */
        char *where;            /* "FILE:LINE" of the line that set it, for messages */
} SourceEntry;

typedef struct SourceGroup {
        char *name;
        const char *file;       /* the last file that contains this group */
        char *where;            /* "FILE:LINE" of its header in that file */
        GPtrArray *entries;     /* SourceEntry *, in order of first appearance */
} SourceGroup;

typedef struct ConfigSource {
        GPtrArray *files;       /* char *, every file read, in order */
        GPtrArray *groups;      /* SourceGroup *, in order of first appearance */
} ConfigSource;

static void source_entry_free(gpointer p) {
        SourceEntry *e = p;

        g_free(e->key);
        g_free(e->value);
        g_free(e->where);
        g_free(e);
}

static void source_group_free(gpointer p) {
        SourceGroup *g = p;

        g_ptr_array_unref(g->entries);
        g_free(g->name);
        g_free(g->where);
        g_free(g);
}

static ConfigSource *config_source_new(void) {
        ConfigSource *s = g_new0(ConfigSource, 1);

        s->files = g_ptr_array_new_with_free_func(g_free);
        s->groups = g_ptr_array_new_with_free_func(source_group_free);
        return s;
}

static ConfigSource *config_source_free(ConfigSource *s) {
        if (!s)
                return NULL;
        g_ptr_array_unref(s->groups);
        g_ptr_array_unref(s->files);
        g_free(s);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(ConfigSource *, config_source_free);

static SourceGroup *source_find_group(const ConfigSource *s, const char *name) {
        for (guint i = 0; i < s->groups->len; i++) {
                SourceGroup *g = s->groups->pdata[i];

                if (strcmp(g->name, name) == 0)
                        return g;
        }
        return NULL;
}

static SourceGroup *source_get_group(ConfigSource *s, const char *name) {
        SourceGroup *g = source_find_group(s, name);

        if (g)
                return g;

        g = g_new0(SourceGroup, 1);
        g->name = g_strdup(name);
        g->entries = g_ptr_array_new_with_free_func(source_entry_free);
        g_ptr_array_add(s->groups, g);
        return g;
}

static const SourceEntry *group_find_entry(const SourceGroup *g, const char *key) {
        for (guint i = 0; i < g->entries->len; i++) {
                const SourceEntry *e = g->entries->pdata[i];

                if (strcmp(e->key, key) == 0)
                        return e;
        }
        return NULL;
}

/* Sets KEY, keeping its place if an earlier file set it already. */
static void group_set(SourceGroup *g, const char *key, const char *value, const char *file, unsigned line) {
        SourceEntry *e = (SourceEntry *) group_find_entry(g, key);

        if (!e) {
                e = g_new0(SourceEntry, 1);
                e->key = g_strdup(key);
                g_ptr_array_add(g->entries, e);
        }
        g_free(e->value);
        e->value = g_strdup(value);
        e->file = file;
        g_free(e->where);
        e->where = line > 0 ? g_strdup_printf("%s:%u", file, line) : g_strdup(file);
}

/* Reads a whole regular file; returns -errno, -EBADFD for other file types, -EFBIG past the cap. */
static int read_file(const char *path, char **ret_data, size_t *ret_size) {
        _cleanup_(closep) int fd = -1;
        g_autoptr(GString) data = NULL;
        struct stat st;

        /* O_NONBLOCK: a FIFO must not block us before fstat() can reject it. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;

        data = g_string_sized_new(st.st_size < CONFIG_FILE_SIZE_MAX ? (gsize) st.st_size + 1 : 4096);
        for (;;) {
                char buf[4096];
                ssize_t n;

                n = read(fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                if (data->len + (size_t) n > CONFIG_FILE_SIZE_MAX)
                        return -EFBIG;
                g_string_append_len(data, buf, n);
        }

        *ret_size = data->len;
        *ret_data = g_string_free(g_steal_pointer(&data), FALSE);
        return 0;
}

/* Where each group and key of a file is written: "GROUP" → its header's line, "GROUP\x1eKEY" → the
 * line of its last value (GKeyFile keeps the last one too). */
/* How much of a bad line an error message repeats. */
#define LINE_SHOWN_MAX 80

static char *line_key(const char *group, const char *key) {
        return key ? g_strconcat(group, "\x1e", key, NULL) : g_strdup(group);
}

static unsigned line_of(GHashTable *lines, const char *group, const char *key) {
        g_autofree char *k = line_key(group, key);

        return GPOINTER_TO_UINT(g_hash_table_lookup(lines, k));
}

/*
 * Reads FILE's lines before GKeyFile does, for what GKeyFile cannot tell: the line of each group
 * and key (its messages name no line, and the parser's own name only the file), and every line
 * that is not KEY=VALUE, [GROUP], a comment or blank, all of them rather than the first. Also a
 * group that appears twice in one file, which GKeyFile silently merges. Fills LINES.
 */
static int scan_lines(const char *file, const char *data, GHashTable *lines, char **ret_error) {
        g_autofree char *group = NULL;
        unsigned n = 0;
        int r = 0;

        for (const char *line = data, *next; line; line = next) {
                const char *eol = strchr(line, '\n'), *end, *eq;
                size_t len;

                next = eol ? eol + 1 : NULL;
                n++;
                end = eol ? eol : line + strlen(line);
                while (line < end && g_ascii_isspace(*line))
                        line++;
                while (end > line && g_ascii_isspace(end[-1]))
                        end--;
                len = (size_t) (end - line);
                if (len == 0 || *line == '#')
                        continue;

                if (*line == '[') {
                        g_autofree char *name = NULL;

                        if (end[-1] != ']' || len < 3) {
                                r = config_error(ret_error, -EBADMSG, "%s:%u: expected a group header \"[NAME]\", got \"%.*s\"",
                                                 file, n, (int) MIN(len, (size_t) LINE_SHOWN_MAX), line);
                                continue;
                        }
                        name = g_strndup(line + 1, len - 2);
                        if (g_hash_table_contains(lines, name))
                                r = config_error(ret_error, -EINVAL,
                                                 "%s:%u: [%s]: group appears more than once in this file (first on line %u)",
                                                 file, n, name, line_of(lines, name, NULL));
                        else
                                g_hash_table_insert(lines, g_strdup(name), GUINT_TO_POINTER(n));
                        g_free(group);
                        group = TAKE_PTR(name);
                        continue;
                }

                eq = memchr(line, '=', len);
                if (!eq || eq == line) {
                        r = config_error(ret_error, -EBADMSG,
                                         "%s:%u: expected KEY=VALUE, a [GROUP] header or a # comment, got \"%.*s\"",
                                         file, n, (int) MIN(len, (size_t) LINE_SHOWN_MAX), line);
                        continue;
                }
                if (!group) {
                        r = config_error(ret_error, -EBADMSG, "%s:%u: \"%.*s\" comes before any [GROUP] header",
                                         file, n, (int) MIN(len, (size_t) LINE_SHOWN_MAX), line);
                        continue;
                }
                while (eq > line && g_ascii_isspace(eq[-1]))
                        eq--;
                {
                        g_autofree char *key = g_strndup(line, (size_t) (eq - line));

                        g_hash_table_insert(lines, line_key(group, key), GUINT_TO_POINTER(n));
                }
        }
        return r;
}

static int source_merge(ConfigSource *s, const char *file, GKeyFile *kf, GHashTable *lines, char **ret_error) {
        g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
        int r = 0;

        for (char **group = groups; *group; group++) {
                g_auto(GStrv) keys = g_key_file_get_keys(kf, *group, NULL, NULL);
                SourceGroup *g = source_get_group(s, *group);
                unsigned line = line_of(lines, *group, NULL);

                g->file = file;
                g_free(g->where);
                g->where = line > 0 ? g_strdup_printf("%s:%u", file, line) : g_strdup(file);
                for (char **key = keys; key && *key; key++) {
                        g_autoptr(GError) error = NULL;
                        g_autofree char *value = NULL;

                        value = g_key_file_get_string(kf, *group, *key, &error);
                        if (!value || error) {
                                g_autofree char *raw = g_key_file_get_value(kf, *group, *key, NULL);

                                r = config_error(ret_error, -EINVAL,
                                                 "%s:%u: [%s] %s=%s: expected UTF-8 text with valid escapes (\\s \\n \\t \\r \\\\)",
                                                 file, line_of(lines, *group, *key), *group, *key, strempty(raw));
                                continue;
                        }
                        group_set(g, *key, value, file, line_of(lines, *group, *key));
                }
        }
        return r;
}

static int source_add_file(ConfigSource *s, const char *path, char **ret_error) {
        g_autoptr(GHashTable) lines = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) error = NULL;
        g_autofree char *data = NULL;
        size_t size = 0;
        char *file;
        int r;

        r = read_file(path, &data, &size);
        if (r < 0)
                return config_error(ret_error, r, "%s: cannot read: %s", path, file_strerror(r));
        if (memchr(data, '\0', size))
                return config_error(ret_error, -EBADMSG, "%s: cannot parse: file contains a NUL byte", path);
        r = scan_lines(path, data, lines, ret_error);
        if (r < 0)
                return r;
        /* KEEP_TRANSLATIONS: else GKeyFile drops "Key[de]=" lines silently instead of letting us
         * reject them as unknown keys. */
        if (!g_key_file_load_from_data(kf, data, size, G_KEY_FILE_KEEP_TRANSLATIONS, &error))
                return config_error(ret_error, -EBADMSG, "%s: cannot parse: %s", path, error->message);

        file = g_strdup(path);
        g_ptr_array_add(s->files, file);
        return source_merge(s, file, kf, lines, ret_error);
}

static gint compare_strings(gconstpointer a, gconstpointer b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Adds DIR/\*.conf in strcmp() order. A missing DIR is fine; hidden files (".#x.conf" editor
 * locks and the like) and other names are ignored. */
static int source_add_dropins(ConfigSource *s, const char *dir, char **ret_error) {
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        int r;

        d = opendir(dir);
        if (!d) {
                if (errno == ENOENT)
                        return 0;
                r = negative_errno();
                return config_error(ret_error, r, "%s: cannot open drop-in directory: %s", dir, strerror(-r));
        }

        for (;;) {
                errno = 0;
                de = readdir(d);
                if (!de)
                        break;
                if (de->d_name[0] == '.' || !g_str_has_suffix(de->d_name, ".conf"))
                        continue;
                g_ptr_array_add(names, g_strdup(de->d_name));
        }
        if (errno != 0) {
                r = negative_errno();
                return config_error(ret_error, r, "%s: cannot read drop-in directory: %s", dir, strerror(-r));
        }

        g_ptr_array_sort(names, compare_strings);
        for (guint i = 0; i < names->len; i++) {
                g_autofree char *path = g_strconcat(dir, "/", (const char *) names->pdata[i], NULL);

                r = source_add_file(s, path, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- key parsers: 0, or -EINVAL/-ERANGE for a bad value, -ENOMEM ---- */

typedef int (*ConfigParser)(const char *value, void *base, size_t offset);

typedef struct ConfigKey {
        const char *key;
        ConfigParser parse;
        size_t offset;          /* of the field in the Config or PoolConfig the parser fills */
        const char *expected;   /* completes "expected ..." in the error message */
} ConfigKey;

#define FIELD(base, offset, type) ((type *) ((uint8_t *) (base) + (offset)))

/* Decimal digits only: no sign, no blanks, no trailing garbage. */
static int parse_unsigned(const char *s, unsigned *ret) {
        unsigned long v;
        char *end;

        if (!g_ascii_isdigit(s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (*end != '\0')
                return -EINVAL;
        if (errno == ERANGE || v > UINT_MAX)
                return -ERANGE;
        *ret = (unsigned) v;
        return 0;
}

static int replace_string(char **field, const char *value) {
        char *copy = strdup(value);

        if (!copy)
                return -ENOMEM;
        free(*field);
        *field = copy;
        return 0;
}

static int config_parse_unsigned(const char *value, void *base, size_t offset) {
        return parse_unsigned(value, FIELD(base, offset, unsigned));
}

static int parse_sec(const char *value, usec_t min, bool allow_infinity, usec_t *ret) {
        usec_t t;
        int r;

        r = parse_timespan(value, USEC_PER_SEC, &t);
        if (r < 0)
                return r;
        if (t == USEC_INFINITY ? !allow_infinity : t < min)
                return -ERANGE;
        *ret = t;
        return 0;
}

static int config_parse_bool(const char *value, void *base, size_t offset) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "f", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(value, yes[i]) == 0) {
                        *FIELD(base, offset, bool) = true;
                        return 0;
                }
                if (strcasecmp(value, no[i]) == 0) {
                        *FIELD(base, offset, bool) = false;
                        return 0;
                }
        }
        return -EINVAL;
}

static int config_parse_zygote(const char *value, void *base, size_t offset) {
        bool b;
        int r;

        if (strcasecmp(value, "auto") == 0) {
                *FIELD(base, offset, ZygoteMode) = ZYGOTE_AUTO;
                return 0;
        }
        r = config_parse_bool(value, &b, 0);
        if (r < 0)
                return r;
        *FIELD(base, offset, ZygoteMode) = b ? ZYGOTE_YES : ZYGOTE_NO;
        return 0;
}

static int config_parse_sec(const char *value, void *base, size_t offset) {
        return parse_sec(value, 0, false, FIELD(base, offset, usec_t));
}

static int config_parse_sec_positive(const char *value, void *base, size_t offset) {
        return parse_sec(value, 1, false, FIELD(base, offset, usec_t));
}

static int config_parse_sec_infinity(const char *value, void *base, size_t offset) {
        return parse_sec(value, 0, true, FIELD(base, offset, usec_t));
}

/* For timeouts: 0 is refused rather than meaning "no timeout" as in systemd; that is "infinity". */
static int config_parse_timeout(const char *value, void *base, size_t offset) {
        return parse_sec(value, 1, true, FIELD(base, offset, usec_t));
}

/* An absolute path, stored without trailing slashes (but "/" stays "/"). */
static int config_parse_directory(const char *value, void *base, size_t offset) {
        g_autofree char *path = NULL;
        size_t n;

        if (value[0] != '/')
                return -EINVAL;
        path = g_strdup(value);
        for (n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
                path[n - 1] = '\0';
        return replace_string(FIELD(base, offset, char *), path);
}

/* Fills Config.bus and Config.bus_address; BASE is the Config. */
static int config_parse_bus(const char *value, void *base, size_t offset) {
        Config *c = base;
        const char *colon;
        int r;

        if (strcmp(value, "system") == 0 || strcmp(value, "session") == 0) {
                c->bus = strcmp(value, "system") == 0 ? BUS_KIND_SYSTEM : BUS_KIND_SESSION;
                free(c->bus_address);
                c->bus_address = NULL;
                return 0;
        }

        /* TRANSPORT:KEY=VALUE[,...], e.g. unix:path=/run/x; sd-bus checks the rest when connecting. */
        colon = strchr(value, ':');
        if (!colon || colon == value || !strchr(colon, '='))
                return -EINVAL;
        r = replace_string(&c->bus_address, value);
        if (r < 0)
                return r;
        c->bus = BUS_KIND_ADDRESS;
        return 0;
}

/* Fills Config.private_socket(_set); BASE is the Config. */
static int config_parse_private_socket(const char *value, void *base, size_t offset) {
        Config *c = base;
        int r;

        if (value[0] == '\0' || strcmp(value, "no") == 0) {
                free(c->private_socket);
                c->private_socket = NULL;
                c->private_socket_set = true;
                return 0;
        }
        /* sun_path holds 108 bytes with its NUL. */
        if (value[0] != '/' || strlen(value) >= sizeof_field(struct sockaddr_un, sun_path))
                return -EINVAL;
        r = replace_string(&c->private_socket, value);
        if (r < 0)
                return r;
        c->private_socket_set = true;
        return 0;
}

char *config_private_socket(const Config *c) {
        const char *runtime;

        if (c->private_socket_set)
                return c->private_socket ? strdup(c->private_socket) : NULL;
        switch (c->bus) {
        case BUS_KIND_SYSTEM:
                return strdup(APIARY_PRIVATE_SOCKET);
        case BUS_KIND_SESSION:
                runtime = getenv("XDG_RUNTIME_DIR");
                if (!runtime || runtime[0] != '/')
                        return NULL;
                {
                        char *path;

                        return asprintf(&path, "%s/apiary/bus", runtime) < 0 ? NULL : path;
                }
        default:
                return NULL;
        }
}

static int config_parse_log_level(const char *value, void *base, size_t offset) {
        unsigned n;
        int level;

        if (parse_unsigned(value, &n) >= 0) {
                if (n > LOG_DEBUG)
                        return -ERANGE;
                level = (int) n;
        } else {
                level = log_level_from_string(value);
                if (level < 0)
                        return level;
        }
        *FIELD(base, offset, int) = level;
        return 0;
}

/* A list of users or groups: names resolved now (an unknown one is an error), or numbers. An
 * empty value empties the list, so a drop-in can take back what the main file granted. */
static int parse_id_list(const char *value, bool groups, IdList *ret) {
        g_auto(GStrv) words = g_strsplit_set(value, " \t", -1);
        IdList l = {};

        for (size_t i = 0; words[i]; i++) {
                unsigned id;

                if (words[i][0] == '\0')
                        continue;
                if (parse_unsigned(words[i], &id) < 0) {
                        if (groups) {
                                struct group *gr = getgrnam(words[i]);
                                if (!gr) {
                                        free(l.ids);
                                        return -ENOENT;
                                }
                                id = (unsigned) gr->gr_gid;
                        } else {
                                struct passwd *pw = getpwnam(words[i]);
                                if (!pw) {
                                        free(l.ids);
                                        return -ENOENT;
                                }
                                id = (unsigned) pw->pw_uid;
                        }
                }
                unsigned *ids = reallocarray(l.ids, l.n + 1, sizeof(unsigned));
                if (!ids) {
                        free(l.ids);
                        return -ENOMEM;
                }
                l.ids = ids;
                l.ids[l.n++] = id;
        }
        *ret = l;
        return 0;
}

static int config_parse_id_list(const char *value, void *base, size_t offset, bool groups) {
        IdList *field = FIELD(base, offset, IdList), l;
        int r;

        r = parse_id_list(value, groups, &l);
        if (r < 0)
                return r;
        free(field->ids);
        *field = l;
        return 0;
}

/* User=: a name or a UID; empty: none. Fills PoolConfig.user and .user_gid; BASE is the PoolConfig. */
static int config_parse_user(const char *value, void *base, size_t offset) {
        PoolConfig *c = base;
        struct passwd *pw;
        unsigned id;

        if (value[0] == '\0') {
                c->user = (uid_t) -1;
                c->user_gid = (gid_t) -1;
                return 0;
        }
        if (parse_unsigned(value, &id) >= 0) {
                if (id == (unsigned) (uid_t) -1)
                        return -ERANGE;
                pw = getpwuid((uid_t) id);
                c->user = (uid_t) id;
                c->user_gid = pw ? pw->pw_gid : (gid_t) id;
                return 0;
        }
        pw = getpwnam(value);
        if (!pw)
                return -ENOENT;
        c->user = pw->pw_uid;
        c->user_gid = pw->pw_gid;
        return 0;
}

/* Group=: a name or a GID; empty: the user's. */
static int config_parse_group(const char *value, void *base, size_t offset) {
        gid_t *field = FIELD(base, offset, gid_t);
        struct group *gr;
        unsigned id;

        if (value[0] == '\0') {
                *field = (gid_t) -1;
                return 0;
        }
        if (parse_unsigned(value, &id) >= 0) {
                if (id == (unsigned) (gid_t) -1)
                        return -ERANGE;
                *field = (gid_t) id;
                return 0;
        }
        gr = getgrnam(value);
        if (!gr)
                return -ENOENT;
        *field = gr->gr_gid;
        return 0;
}

uid_t pool_config_uid(const PoolConfig *c) {
        return c->user;
}

gid_t pool_config_gid(const PoolConfig *c) {
        return c->group != (gid_t) -1 ? c->group : c->user_gid;
}

static int config_parse_users(const char *value, void *base, size_t offset) {
        return config_parse_id_list(value, base, offset, false);
}

static int config_parse_groups(const char *value, void *base, size_t offset) {
        return config_parse_id_list(value, base, offset, true);
}

bool id_list_contains(const IdList *l, unsigned id) {
        for (size_t i = 0; i < l->n; i++)
                if (l->ids[i] == id)
                        return true;
        return false;
}

/* A file name looked up in PluginDirectory=, or an absolute path. */
/* SubmitFrom=: pool names or "*", separated by spaces; empty: only the pool's own plugin. The
 * pools need not exist yet (a reload may add them). */
static int config_parse_submit_from(const char *value, void *base, size_t offset) {
        g_auto(GStrv) words = g_strsplit_set(value, " \t", -1);
        char **field = FIELD(base, offset, char *);
        g_autoptr(GString) norm = g_string_new(NULL);

        for (size_t i = 0; words[i]; i++) {
                if (words[i][0] == '\0')
                        continue;
                if (!streq(words[i], "*") && !pool_name_is_valid(words[i]))
                        return -EINVAL;
                if (norm->len > 0)
                        g_string_append_c(norm, ' ');
                g_string_append(norm, words[i]);
        }
        if (norm->len == 0) {
                free(*field);
                *field = NULL;
                return 0;
        }
        return replace_string(field, norm->str);
}

bool pool_config_accepts_from(const PoolConfig *c, const char *from) {
        g_auto(GStrv) words = NULL;

        if (streq(c->name, from))
                return true;
        if (!c->submit_from)
                return false;
        words = g_strsplit(c->submit_from, " ", -1);
        for (size_t i = 0; words[i]; i++)
                if (streq(words[i], "*") || streq(words[i], from))
                        return true;
        return false;
}

static int config_parse_plugin(const char *value, void *base, size_t offset) {
        if (value[0] != '/' &&
            (value[0] == '\0' || strchr(value, '/') || strcmp(value, ".") == 0 || strcmp(value, "..") == 0))
                return -EINVAL;
        return replace_string(FIELD(base, offset, char *), value);
}

/* One side of Workers=MIN..MAX: a number from 1 to WORKERS_MAX, or "auto" (*RET_AUTO). */
static int parse_workers_bound(const char *value, unsigned *ret, bool *ret_auto) {
        unsigned n;
        int r;

        if (strcmp(value, "auto") == 0) {
                *ret = 0;
                *ret_auto = true;
                return 0;
        }
        r = parse_unsigned(value, &n);
        if (r < 0)
                return r;
        if (n < 1 || n > WORKERS_MAX)
                return -ERANGE;
        *ret = n;
        *ret_auto = false;
        return 0;
}

/* Fills PoolConfig.workers and .workers_auto, and for MIN..MAX .workers_max(_auto) too; "auto" is
 * resolved once Kind= is known. */
static int config_parse_workers(const char *value, void *base, size_t offset) {
        PoolConfig *p = base;
        const char *dots = strstr(value, "..");
        unsigned n;
        int r;

        if (dots) {
                g_autofree char *min = g_strndup(value, (gsize) (dots - value));

                r = parse_workers_bound(min, &p->workers, &p->workers_auto);
                if (r >= 0)
                        r = parse_workers_bound(dots + 2, &p->workers_max, &p->workers_max_auto);
                if (r < 0)
                        return r;
                if (!p->workers_auto && !p->workers_max_auto && p->workers_max < p->workers)
                        return -ERANGE;
                p->workers_range = true;
                return 0;
        }
        p->workers_range = false;
        if (strcmp(value, "auto") == 0) {
                p->workers = 0;
                p->workers_auto = true;
                return 0;
        }
        r = parse_unsigned(value, &n);
        if (r < 0)
                return r;
        if (n > WORKERS_MAX)
                return -ERANGE;
        /* 0: a host that only submits, which only a shared pool can be (checked once Source= is
         * known). */
        p->workers = n;
        p->workers_auto = false;
        return 0;
}

static int config_parse_positive(const char *value, void *base, size_t offset) {
        unsigned n;
        int r;

        r = parse_unsigned(value, &n);
        if (r < 0)
                return r;
        if (n < 1)
                return -ERANGE;
        *FIELD(base, offset, unsigned) = n;
        return 0;
}

/* Concurrency=: a positive number, or "auto" (0 here, resolved once Kind= is known). */
static int config_parse_concurrency(const char *value, void *base, size_t offset) {
        if (strcmp(value, "auto") == 0) {
                *FIELD(base, offset, unsigned) = 0;
                return 0;
        }
        return config_parse_positive(value, base, offset);
}

/* A size in bytes, > 0, or "infinity" (UINT64_MAX). */
static int config_parse_size_limit(const char *value, void *base, size_t offset) {
        uint64_t v;
        int r;

        r = parse_size(value, &v);
        if (r < 0)
                return r;
        if (v == 0)
                return -ERANGE;
        *FIELD(base, offset, uint64_t) = v;
        return 0;
}

static int config_parse_pool_kind(const char *value, void *base, size_t offset) {
        PoolKind k = pool_kind_from_string(value);

        if (k < 0)
                return k;
        *FIELD(base, offset, PoolKind) = k;
        return 0;
}

static int config_parse_restart(const char *value, void *base, size_t offset) {
        RestartPolicy p = restart_policy_from_string(value);

        if (p < 0)
                return p;
        *FIELD(base, offset, RestartPolicy) = p;
        return 0;
}

/* Source=: nats://HOST:PORT, tls://HOST:PORT or HOST:PORT, separated by commas. HOST may not
 * be empty; PORT is 1-65535. */
static int config_parse_source(const char *value, void *base, size_t offset) {
        g_auto(GStrv) servers = g_strsplit(value, ",", -1);
        unsigned n = 0;

        for (char **s = servers; *s; s++) {
                const char *server = g_strstrip(*s), *colon;
                unsigned port;

                if (g_str_has_prefix(server, "nats://"))
                        server += strlen("nats://");
                else if (g_str_has_prefix(server, "tls://"))
                        server += strlen("tls://");
                colon = strrchr(server, ':');
                if (!colon || colon == server || parse_unsigned(colon + 1, &port) < 0 || port < 1 || port > 65535)
                        return -EINVAL;
                for (const char *c = server; c < colon; c++)
                        if (!g_ascii_isalnum(*c) && !strchr(".-_[]:", *c))
                                return -EINVAL;
                n++;
        }
        if (n == 0)
                return -EINVAL;
        return replace_string(FIELD(base, offset, char *), value);
}

static int config_parse_replicas(const char *value, void *base, size_t offset) {
        unsigned n;
        int r;

        r = parse_unsigned(value, &n);
        if (r < 0)
                return r;
        if (!IN_SET(n, 1u, 3u, 5u))
                return -ERANGE;
        *FIELD(base, offset, unsigned) = n;
        return 0;
}

static int config_parse_path(const char *value, void *base, size_t offset) {
        if (value[0] != '/')
                return -EINVAL;
        return replace_string(FIELD(base, offset, char *), value);
}

static int config_parse_host_id(const char *value, void *base, size_t offset) {
        if (!engine_name_is_valid(value))
                return -EINVAL;
        return replace_string(FIELD(base, offset, char *), value);
}

#define SPAN_EXAMPLE " (e.g. 500ms, 30s, 5min)"

static const ConfigKey apiary_keys[] = {
        { "PluginDirectory", config_parse_directory, offsetof(Config, plugin_directory),
          "an absolute path" },
        { "Bus", config_parse_bus, offsetof(Config, bus),
          "\"system\", \"session\" or a D-Bus address such as unix:path=/run/bus" },
        { "PrivateSocket", config_parse_private_socket, offsetof(Config, private_socket),
          "an absolute path (of at most 107 bytes) or \"no\"" },
        { "MaxTasksPerCaller", config_parse_unsigned, offsetof(Config, max_tasks_per_caller),
          "a non-negative integer (0: no limit)" },
        { "MaxBytesPerCaller", config_parse_size_limit, offsetof(Config, max_bytes_per_caller),
          "a positive size (e.g. 64M, 1G) or \"infinity\"" },
        { "LogLevel", config_parse_log_level, offsetof(Config, log_level),
          "a log level: emerg, alert, crit, err, warning, notice, info, debug or 0-7" },
        { "SubmitUsers", config_parse_users, offsetof(Config, submit_users),
          "user names or numeric UIDs, separated by spaces" },
        { "SubmitGroups", config_parse_groups, offsetof(Config, submit_groups),
          "group names or numeric GIDs, separated by spaces" },
        { "ControlUsers", config_parse_users, offsetof(Config, control_users),
          "user names or numeric UIDs, separated by spaces" },
        { "ControlGroups", config_parse_groups, offsetof(Config, control_groups),
          "group names or numeric GIDs, separated by spaces" },
        { "HostId", config_parse_host_id, offsetof(Config, host_id),
          "1 to 64 characters of A-Z, a-z, 0-9, _ and -" },
};

/* To add a key: a field in PoolConfig, its default in pool_config_new(), a line here, a check in
 * pool_config_equal(), and its entry in docs/apiary.conf.md. */
static const ConfigKey pool_keys[] = {
        { "Plugin", config_parse_plugin, offsetof(PoolConfig, plugin),
          "a file name in PluginDirectory= or an absolute path" },
        { "Workers", config_parse_workers, offsetof(PoolConfig, workers),
          "a number from 1 to 4096 or \"auto\", or MIN..MAX of those (e.g. 2..16, 1..auto)" },
        { "ScaleDownIdleSec", config_parse_sec_positive, offsetof(PoolConfig, scale_down_idle_usec),
          "a positive time span" SPAN_EXAMPLE },
        { "Kind", config_parse_pool_kind, offsetof(PoolConfig, kind),
          "\"cpu\" or \"io\"" },
        { "Restart", config_parse_restart, offsetof(PoolConfig, restart),
          "\"always\", \"on-failure\" or \"no\"" },
        { "RestartSec", config_parse_sec, offsetof(PoolConfig, restart_usec),
          "a time span" SPAN_EXAMPLE },
        { "RestartMaxSec", config_parse_sec, offsetof(PoolConfig, restart_max_usec),
          "a time span" SPAN_EXAMPLE },
        { "StartLimitBurst", config_parse_unsigned, offsetof(PoolConfig, start_limit_burst),
          "a non-negative integer" },
        { "StartLimitIntervalSec", config_parse_sec_positive, offsetof(PoolConfig, start_limit_interval_usec),
          "a positive time span" SPAN_EXAMPLE },
        { "FailedRetrySec", config_parse_sec_infinity, offsetof(PoolConfig, failed_retry_usec),
          "a time span" SPAN_EXAMPLE " or \"infinity\"" },
        { "StartTimeoutSec", config_parse_timeout, offsetof(PoolConfig, start_timeout_usec),
          "a positive time span" SPAN_EXAMPLE " or \"infinity\"" },
        { "StopTimeoutSec", config_parse_timeout, offsetof(PoolConfig, stop_timeout_usec),
          "a positive time span" SPAN_EXAMPLE " or \"infinity\"" },
        { "QueueLimit", config_parse_positive, offsetof(PoolConfig, queue_limit),
          "a positive integer" },
        { "QueueBytesLimit", config_parse_size_limit, offsetof(PoolConfig, queue_bytes_limit),
          "a positive size (e.g. 512M, 2G) or \"infinity\"" },
        { "Concurrency", config_parse_concurrency, offsetof(PoolConfig, concurrency),
          "a positive integer or \"auto\"" },
        { "TaskRetries", config_parse_unsigned, offsetof(PoolConfig, task_retries),
          "a non-negative integer" },
        { "TaskTimeoutSec", config_parse_timeout, offsetof(PoolConfig, task_timeout_usec),
          "a positive time span" SPAN_EXAMPLE " or \"infinity\"" },
        { "MaxTasksPerWorker", config_parse_unsigned, offsetof(PoolConfig, max_tasks_per_worker),
          "a non-negative integer (0: no limit)" },
        { "MaxMemoryPerWorker", config_parse_size_limit, offsetof(PoolConfig, max_memory_per_worker),
          "a positive size (e.g. 512M, 2G) or \"infinity\"" },
        { "MaxWorkerAgeSec", config_parse_timeout, offsetof(PoolConfig, max_worker_age_usec),
          "a positive time span" SPAN_EXAMPLE " or \"infinity\"" },
        { "MaxWorkerAgeJitterSec", config_parse_sec, offsetof(PoolConfig, max_worker_age_jitter_usec),
          "a time span" SPAN_EXAMPLE },
        { "PriorityAgingSec", config_parse_timeout, offsetof(PoolConfig, priority_aging_usec),
          "a positive time span" SPAN_EXAMPLE " or \"infinity\"" },
        { "Zygote", config_parse_zygote, offsetof(PoolConfig, zygote),
          "a boolean (yes/no, true/false, on/off, 1/0) or \"auto\"" },
        { "SubmitFrom", config_parse_submit_from, offsetof(PoolConfig, submit_from),
          "pool names or \"*\", separated by spaces" },
        { "User", config_parse_user, offsetof(PoolConfig, user),
          "a user name that exists, or a numeric UID" },
        { "Group", config_parse_group, offsetof(PoolConfig, group),
          "a group name that exists, or a numeric GID" },
        { "LimitDATA", config_parse_size_limit, offsetof(PoolConfig, limit_data),
          "a positive size (e.g. 512M, 2G) or \"infinity\"" },
        { "Source", config_parse_source, offsetof(PoolConfig, source),
          "nats://HOST:PORT, or several separated by commas" },
        { "SourceReplicas", config_parse_replicas, offsetof(PoolConfig, source_replicas),
          "1, 3 or 5" },
        { "SourceLeaseSec", config_parse_sec_positive, offsetof(PoolConfig, source_lease_usec),
          "a positive time span" SPAN_EXAMPLE },
        { "SourceCredentials", config_parse_path, offsetof(PoolConfig, source_credentials),
          "an absolute path (a NATS .creds file)" },
        { "SourceTLSCA", config_parse_path, offsetof(PoolConfig, source_tls_ca),
          "an absolute path (CA certificates, PEM)" },
};

static const ConfigKey *config_key_find(const ConfigKey *table, size_t n, const char *key) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(table[i].key, key) == 0)
                        return &table[i];
        return NULL;
}

/* The edit distance of A and B, ignoring case, with a swap of two neighbours counting one
 * (optimal string alignment); anything above 3 is 3. */
static unsigned edit_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        g_autofree unsigned *d = NULL;
        unsigned dist;

        if (la > 64 || lb > 64 || (la > lb ? la - lb : lb - la) > 2)
                return 3;
        d = g_new(unsigned, (la + 1) * (lb + 1));
#define D(i, j) d[(i) * (lb + 1) + (j)]
        for (size_t i = 0; i <= la; i++)
                D(i, 0) = (unsigned) i;
        for (size_t j = 0; j <= lb; j++)
                D(0, j) = (unsigned) j;
        for (size_t i = 1; i <= la; i++)
                for (size_t j = 1; j <= lb; j++) {
                        unsigned cost = g_ascii_tolower(a[i - 1]) != g_ascii_tolower(b[j - 1]);

                        D(i, j) = MIN(MIN(D(i - 1, j) + 1, D(i, j - 1) + 1), D(i - 1, j - 1) + cost);
                        if (i > 1 && j > 1 && g_ascii_tolower(a[i - 1]) == g_ascii_tolower(b[j - 2]) &&
                            g_ascii_tolower(a[i - 2]) == g_ascii_tolower(b[j - 1]))
                                D(i, j) = MIN(D(i, j), D(i - 2, j - 2) + 1);
                }
        dist = MIN(D(la, lb), 3u);
#undef D
        return dist;
}

/* The key of TABLE that KEY is a typo of (a case or up to two letters apart), if exactly one is
 * nearest; NULL if none is near. */
static const char *config_key_near(const ConfigKey *table, size_t n, const char *key) {
        const char *best = NULL;
        unsigned best_d = strlen(key) < 5 ? 2 : 3;
        bool tie = false;

        for (size_t i = 0; i < n; i++) {
                unsigned d = edit_distance(key, table[i].key);

                if (d < best_d) {
                        best = table[i].key;
                        best_d = d;
                        tie = false;
                } else if (d == best_d && best)
                        tie = true;
        }
        return tie ? NULL : best;
}

/* Parses every key of G with TABLE into BASE, a Config or PoolConfig; goes on past a bad key, so
 * that all of them are reported. */
static int parse_group(const SourceGroup *g, const ConfigKey *table, size_t n_table, void *base,
                       char **ret_error) {
        int ret = 0;

        for (guint i = 0; i < g->entries->len; i++) {
                const SourceEntry *e = g->entries->pdata[i];
                const ConfigKey *k;
                int r;

                k = config_key_find(table, n_table, e->key);
                if (!k) {
                        const char *near = config_key_near(table, n_table, e->key);

                        if (near)
                                ret = config_error(ret_error, -EINVAL, "%s: [%s] %s=%s: unknown key; did you mean %s=?",
                                                   e->where, g->name, e->key, e->value, near);
                        else
                                ret = config_error(ret_error, -EINVAL, "%s: [%s] %s=%s: unknown key", e->where,
                                                   g->name, e->key, e->value);
                        continue;
                }
                r = k->parse(e->value, base, k->offset);
                if (r == -ENOMEM)
                        return config_error(ret_error, r, "%s: out of memory", e->file);
                if (r < 0)
                        ret = config_error(ret_error, -EINVAL, "%s: [%s] %s=%s: expected %s", e->where, g->name,
                                           e->key, e->value, k->expected);
        }
        return ret;
}

/* ---- building the Config ---- */

typedef enum GroupType {
        GROUP_APIARY,
        GROUP_POOL,
        GROUP_POOL_PLUGIN,
        GROUP_UNKNOWN,
} GroupType;

/* "Apiary", "Pool NAME" or "Pool NAME Plugin"; *ret_pool is NAME (not yet validated). */
static GroupType group_type(const char *group, char **ret_pool) {
        const char *name;

        *ret_pool = NULL;
        if (strcmp(group, "Apiary") == 0)
                return GROUP_APIARY;
        if (!g_str_has_prefix(group, "Pool "))
                return GROUP_UNKNOWN;

        name = group + strlen("Pool ");
        if (g_str_has_suffix(name, " Plugin")) {
                *ret_pool = g_strndup(name, strlen(name) - strlen(" Plugin"));
                return GROUP_POOL_PLUGIN;
        }
        *ret_pool = g_strdup(name);
        return GROUP_POOL;
}

static PoolConfig *config_get_pool(const Config *c, const char *name) {
        for (size_t i = 0; i < c->n_pools; i++)
                if (strcmp(c->pools[i]->name, name) == 0)
                        return c->pools[i];
        return NULL;
}

static int pool_config_new(const char *name, PoolConfig **ret) {
        _cleanup_(pool_config_freep) PoolConfig *p = NULL;

        p = malloc(sizeof(*p));
        if (!p)
                return -ENOMEM;
        *p = (PoolConfig) {
                .kind = POOL_KIND_CPU,
                .workers_auto = true,
                .scale_down_idle_usec = 30 * USEC_PER_SEC,
                .restart = RESTART_ALWAYS,
                .restart_usec = 100 * USEC_PER_MSEC,
                .restart_max_usec = 30 * USEC_PER_SEC,
                .start_limit_burst = 5,
                .start_limit_interval_usec = 10 * USEC_PER_SEC,
                .failed_retry_usec = 5 * USEC_PER_MINUTE,
                .start_timeout_usec = 30 * USEC_PER_SEC,
                .stop_timeout_usec = 10 * USEC_PER_SEC,
                .queue_limit = 65536,
                .queue_bytes_limit = QUEUE_BYTES_LIMIT_DEFAULT,
                .concurrency = 0,
                .task_retries = 2,
                .task_timeout_usec = USEC_INFINITY,
                .max_tasks_per_worker = 0,
                .max_memory_per_worker = UINT64_MAX,
                .max_worker_age_usec = USEC_INFINITY,
                .max_worker_age_jitter_usec = USEC_INFINITY,
                .priority_aging_usec = USEC_PER_SEC,
                .zygote = ZYGOTE_AUTO,
                .user = (uid_t) -1,
                .user_gid = (gid_t) -1,
                .group = (gid_t) -1,
                .limit_data = UINT64_MAX,
                .source_replicas = 1,
                .source_lease_usec = 30 * USEC_PER_SEC,
        };
        p->name = strdup(name);
        if (!p->name)
                return -ENOMEM;

        *ret = TAKE_PTR(p);
        return 0;
}

static unsigned workers_for_cpus(PoolKind kind, unsigned n_cpus) {
        uint64_t n = n_cpus > 0 ? n_cpus : 1;

        if (kind == POOL_KIND_IO)
                n *= 4;
        return (unsigned) MIN(n, (uint64_t) WORKERS_MAX);
}

static int pool_check_restart(const PoolConfig *p, const SourceGroup *g, char **ret_error) {
        char buf[FORMAT_TIMESPAN_MAX];
        const SourceEntry *e;

        if (p->restart_max_usec >= p->restart_usec)
                return 0;

        e = group_find_entry(g, "RestartMaxSec");
        if (e)
                return config_error(ret_error, -EINVAL,
                                    "%s: [%s] RestartMaxSec=%s: expected a time span >= RestartSec= (%s)",
                                    e->where, g->name, e->value,
                                    format_timespan(buf, sizeof(buf), p->restart_usec));

        /* RestartMaxSec= kept its default, so RestartSec= must have gone past it. */
        e = group_find_entry(g, "RestartSec");
        return config_error(ret_error, -EINVAL,
                            "%s: [%s] RestartSec=%s: expected a time span <= RestartMaxSec= (default %s)",
                            e ? e->where : g->where, g->name, e ? e->value : "",
                            format_timespan(buf, sizeof(buf), p->restart_max_usec));
}

/* The checks and resolutions that need all keys of the pool and the final [Apiary]. */
static int pool_config_finish(PoolConfig *p, const SourceGroup *g, const Config *c, unsigned n_cpus,
                              char **ret_error) {
        const SourceEntry *e;
        int r;

        e = group_find_entry(g, "Plugin");
        if (!e || !p->plugin)
                return config_error(ret_error, -EINVAL, "%s: [%s]: missing Plugin=", g->where, g->name);

        r = pool_check_restart(p, g, ret_error);
        if (r < 0)
                return r;

        const SourceEntry *source = group_find_entry(g, "Source");
        if (!p->workers_auto && p->workers == 0 && !p->source) {
                const SourceEntry *w = group_find_entry(g, "Workers");

                return config_error(ret_error, -EINVAL,
                                    "%s: [%s] Workers=%s: expected a number from 1 to 4096 or \"auto\" "
                                    "(0 only for a shared pool, with Source=: a host that only submits)",
                                    w ? w->where : g->where, g->name, w ? w->value : "0");
        }
        if (source && p->source && !engine_name_is_valid(p->name))
                return config_error(ret_error, -EINVAL,
                                    "%s: [%s] Source=%s: a shared pool's name names its stream in the engine: "
                                    "expected 1 to 64 characters of A-Z, a-z, 0-9, _ and - (no \".\")",
                                    source->where, g->name, source->value);

        if (p->workers_auto)
                p->workers = workers_for_cpus(p->kind, n_cpus);
        if (!p->workers_range)
                p->workers_max = p->workers;
        else {
                const SourceEntry *w = group_find_entry(g, "Workers");

                if (p->workers_max_auto)
                        p->workers_max = workers_for_cpus(p->kind, n_cpus);
                if (p->workers_max < p->workers)
                        return config_error(ret_error, -EINVAL,
                                            "%s: [%s] Workers=%s: MIN is above MAX here (\"auto\" is %u for Kind=%s)",
                                            w ? w->where : g->where, g->name, w ? w->value : "",
                                            workers_for_cpus(p->kind, n_cpus), pool_kind_to_string(p->kind));
                if (p->source)
                        return config_error(ret_error, -EINVAL,
                                            "%s: [%s] Workers=%s: a shared pool does not autoscale (its queue is the "
                                            "engine's); give it a number of workers",
                                            w ? w->where : g->where, g->name, w ? w->value : "");
        }
        if (p->concurrency == 0)
                p->concurrency = p->kind == POOL_KIND_IO ? CONCURRENCY_IO_DEFAULT : 1;

        if (p->plugin[0] == '/')
                r = replace_string(&p->plugin_path, p->plugin);
        else {
                g_autofree char *path = NULL;
                const char *dir = c->plugin_directory;

                path = g_strconcat(dir, g_str_has_suffix(dir, "/") ? "" : "/", p->plugin, NULL);
                r = replace_string(&p->plugin_path, path);
        }
        if (r >= 0)
                r = replace_string(&p->plugin_file, e->where);
        if (r < 0)
                return config_error(ret_error, r, "%s: out of memory", e->file);
        return 0;
}

/* Copies the keys of G and their values as written into *KEYS and *VALUES (NULL-terminated), in
 * order of first appearance; *N counts what is to be freed, also after a failure. */
static int copy_entries(const SourceGroup *g, char ***keys, char ***values, size_t *n) {
        size_t len = g->entries->len;

        *keys = calloc(len + 1, sizeof(char *));
        *values = calloc(len + 1, sizeof(char *));
        if (!*keys || !*values)
                return -ENOMEM;

        for (size_t i = 0; i < len; i++) {
                const SourceEntry *e = g->entries->pdata[i];

                (*keys)[i] = strdup(e->key);
                (*values)[i] = strdup(e->value);
                *n = i + 1;
                if (!(*keys)[i] || !(*values)[i])
                        return -ENOMEM;
        }
        return 0;
}

static int config_add_pool(Config *c, const SourceGroup *g, const char *name, unsigned n_cpus,
                           char **ret_error) {
        _cleanup_(pool_config_freep) PoolConfig *p = NULL;
        PoolConfig **pools;
        int r;

        r = pool_config_new(name, &p);
        if (r < 0)
                return config_error(ret_error, r, "%s: out of memory", g->file);
        r = parse_group(g, pool_keys, ELEMENTSOF(pool_keys), p, ret_error);
        if (r < 0)
                return r;
        r = pool_config_finish(p, g, c, n_cpus, ret_error);
        if (r < 0)
                return r;
        r = copy_entries(g, &p->written_keys, &p->written_values, &p->n_written);
        if (r < 0)
                return config_error(ret_error, r, "%s: out of memory", g->file);

        pools = reallocarray(c->pools, c->n_pools + 1, sizeof(*pools));
        if (!pools)
                return config_error(ret_error, -ENOMEM, "%s: out of memory", g->file);
        c->pools = pools;
        c->pools[c->n_pools++] = TAKE_PTR(p);
        return 0;
}

/* Copies [Pool NAME Plugin] into the pool, keys in order of first appearance. */
static int pool_set_plugin_settings(PoolConfig *p, const SourceGroup *g) {
        return copy_entries(g, &p->plugin_keys, &p->plugin_values, &p->n_plugin);
}

static int config_new(const char *path, Config **ret) {
        _cleanup_(config_freep) Config *c = NULL;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->bus = BUS_KIND_SYSTEM;
        c->log_level = LOG_INFO;
        c->max_tasks_per_caller = MAX_TASKS_PER_CALLER_DEFAULT;
        c->max_bytes_per_caller = MAX_BYTES_PER_CALLER_DEFAULT;
        c->path = strdup(path);
        c->plugin_directory = strdup(APIARY_PLUGIN_DIR);
        if (!c->path || !c->plugin_directory)
                return -ENOMEM;

        *ret = TAKE_PTR(c);
        return 0;
}

static int config_apply(Config *c, const ConfigSource *s, unsigned n_cpus, char **ret_error) {
        const SourceGroup *apiary;
        int r, ret = 0;

        /* [Apiary] first, wherever it appears: pools resolve Plugin= against its PluginDirectory=.
         * After an error, the groups that follow are still read, so that all errors are told. */
        apiary = source_find_group(s, "Apiary");
        if (apiary) {
                ret = parse_group(apiary, apiary_keys, ELEMENTSOF(apiary_keys), c, ret_error);
                if (ret == -ENOMEM)
                        return ret;
                r = copy_entries(apiary, &c->written_keys, &c->written_values, &c->n_written);
                if (r < 0)
                        return config_error(ret_error, r, "%s: out of memory", apiary->file);
        }

        for (guint i = 0; i < s->groups->len; i++) {
                const SourceGroup *g = s->groups->pdata[i];
                g_autofree char *name = NULL;
                GroupType type;

                type = group_type(g->name, &name);
                if (type == GROUP_APIARY)
                        continue;
                if (type == GROUP_UNKNOWN) {
                        ret = config_error(ret_error, -EINVAL, "%s: [%s]: unknown group; " GROUP_EXPECTED,
                                           g->where, g->name);
                        continue;
                }
                if (!pool_name_is_valid(name)) {
                        ret = config_error(ret_error, -EINVAL, "%s: [%s]: invalid pool name \"%s\"; " POOL_NAME_EXPECTED,
                                           g->where, g->name, name);
                        continue;
                }
                if (type == GROUP_POOL) {
                        r = config_add_pool(c, g, name, n_cpus, ret_error);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                ret = r;
                }
        }

        /* Then the plugin settings, once every pool exists (or was found wrong, and said so). */
        for (guint i = 0; i < s->groups->len; i++) {
                const SourceGroup *g = s->groups->pdata[i];
                g_autofree char *name = NULL, *pool_group = NULL;
                PoolConfig *p;

                if (group_type(g->name, &name) != GROUP_POOL_PLUGIN || !pool_name_is_valid(name))
                        continue;       /* the latter said so above */
                p = config_get_pool(c, name);
                if (!p) {
                        pool_group = g_strconcat("Pool ", name, NULL);
                        if (!source_find_group(s, pool_group))
                                ret = config_error(ret_error, -EINVAL, "%s: [%s]: no matching [Pool %s] group",
                                                   g->where, g->name, name);
                        continue;
                }
                r = pool_set_plugin_settings(p, g);
                if (r < 0)
                        return config_error(ret_error, r, "%s: out of memory", g->file);
        }
        if (ret < 0)
                return ret;

        /* HostId= defaults to the machine ID, for shared pools: without one, they need it set. */
        if (!c->host_id) {
                sd_id128_t id;
                char buf[SD_ID128_STRING_MAX];

                if (sd_id128_get_machine(&id) >= 0) {
                        c->host_id = strdup(sd_id128_to_string(id, buf));
                        if (!c->host_id)
                                return config_error(ret_error, -ENOMEM, "%s: out of memory", c->path);
                }
        }
        for (size_t i = 0; i < c->n_pools && !c->host_id; i++)
                if (c->pools[i]->source)
                        return config_error(ret_error, -EINVAL,
                                            "%s: [Pool %s] Source=%s: this machine has no machine ID "
                                            "(/etc/machine-id): set HostId= in [Apiary]",
                                            c->path, c->pools[i]->name, c->pools[i]->source);
        return 0;
}

int config_load(const char *path, unsigned n_cpus, Config **ret, char **ret_error) {
        _cleanup_(config_source_freep) ConfigSource *s = NULL;
        _cleanup_(config_freep) Config *c = NULL;
        g_autofree char *dropin_dir = NULL;
        int r;

        if (!path)
                return config_error(ret_error, -EINVAL, "no configuration file given");

        s = config_source_new();
        r = source_add_file(s, path, ret_error);
        if (r < 0)
                return r;
        dropin_dir = g_strconcat(path, ".d", NULL);
        r = source_add_dropins(s, dropin_dir, ret_error);
        if (r < 0)
                return r;

        r = config_new(path, &c);
        if (r < 0)
                return config_error(ret_error, r, "%s: out of memory", path);
        r = config_apply(c, s, n_cpus, ret_error);
        if (r < 0)
                return r;

        if (ret)
                *ret = TAKE_PTR(c);
        return 0;
}

/* ---- run-time checks ---- */

static int check_plugin_file(const char *path) {
        struct stat st;

        if (stat(path, &st) < 0)
                return negative_errno();
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if (access(path, R_OK) < 0)
                return negative_errno();
        return 0;
}

int config_check_plugins(const Config *c, char ***ret_errors) {
        g_autoptr(GPtrArray) errors = g_ptr_array_new_with_free_func(g_free);
        int n = 0;

        for (size_t i = 0; i < c->n_pools; i++) {
                const PoolConfig *p = c->pools[i];
                int r;

                r = check_plugin_file(p->plugin_path);
                if (r >= 0)
                        continue;
                n++;
                g_ptr_array_add(errors, g_strdup_printf("%s: [Pool %s] Plugin=%s: %s: %s",
                                                        strempty(p->plugin_file), p->name, p->plugin,
                                                        p->plugin_path, file_strerror(r)));
        }

        if (n > 0 && ret_errors) {
                /* Append to what the caller has already collected. */
                size_t m = *ret_errors ? g_strv_length(*ret_errors) : 0;
                char **strv = g_renew(char *, *ret_errors, m + errors->len + 1);

                for (guint i = 0; i < errors->len; i++)
                        strv[m + i] = g_steal_pointer(&errors->pdata[i]);
                strv[m + errors->len] = NULL;
                *ret_errors = strv;
        }
        return n;
}

/* ---- lifetime, lookup, comparison ---- */

PoolConfig *pool_config_free(PoolConfig *p) {
        if (!p)
                return NULL;

        for (size_t i = 0; i < p->n_plugin; i++) {
                free(p->plugin_keys[i]);
                free(p->plugin_values[i]);
        }
        free(p->plugin_keys);
        free(p->plugin_values);
        for (size_t i = 0; i < p->n_written; i++) {
                free(p->written_keys[i]);
                free(p->written_values[i]);
        }
        free(p->written_keys);
        free(p->written_values);
        free(p->plugin_file);
        free(p->plugin_path);
        free(p->plugin);
        free(p->submit_from);
        free(p->source);
        free(p->source_credentials);
        free(p->source_tls_ca);
        free(p->name);
        free(p);
        return NULL;
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;

        for (size_t i = 0; i < c->n_pools; i++)
                pool_config_free(c->pools[i]);
        free(c->pools);
        for (size_t i = 0; i < c->n_written; i++) {
                free(c->written_keys[i]);
                free(c->written_values[i]);
        }
        free(c->written_keys);
        free(c->written_values);
        free(c->bus_address);
        free(c->host_id);
        free(c->private_socket);
        free(c->plugin_directory);
        free(c->path);
        free(c->submit_users.ids);
        free(c->submit_groups.ids);
        free(c->control_users.ids);
        free(c->control_groups.ids);
        free(c);
        return NULL;
}

const PoolConfig *config_find_pool(const Config *c, const char *name) {
        if (!c || !name)
                return NULL;
        return config_get_pool(c, name);
}

static const char *plugin_setting(const PoolConfig *p, const char *key) {
        for (size_t i = 0; i < p->n_plugin; i++)
                if (strcmp(p->plugin_keys[i], key) == 0)
                        return p->plugin_values[i];
        return NULL;
}

/* Keys are unique within a pool, so equal counts and a match for each of A's keys suffice; their
 * order carries no meaning. */
static bool plugin_settings_equal(const PoolConfig *a, const PoolConfig *b) {
        if (a->n_plugin != b->n_plugin)
                return false;
        for (size_t i = 0; i < a->n_plugin; i++)
                if (!streq_ptr(a->plugin_values[i], plugin_setting(b, a->plugin_keys[i])))
                        return false;
        return true;
}

bool pool_config_same_source(const PoolConfig *a, const PoolConfig *b) {
        return streq_ptr(a->source, b->source) && a->source_replicas == b->source_replicas &&
                a->source_lease_usec == b->source_lease_usec &&
                streq_ptr(a->source_credentials, b->source_credentials) &&
                streq_ptr(a->source_tls_ca, b->source_tls_ca);
}

bool pool_config_same_code(const PoolConfig *a, const PoolConfig *b) {
        /* A running worker keeps the user and the limits it was started with: new ones need new
         * workers. */
        return streq_ptr(a->plugin_path, b->plugin_path) && plugin_settings_equal(a, b) &&
                pool_config_uid(a) == pool_config_uid(b) && pool_config_gid(a) == pool_config_gid(b) &&
                a->limit_data == b->limit_data;
}

void pool_config_plugin_settings(const PoolConfig *c, const char **ret_path, char *const **ret_keys,
                                 char *const **ret_values, size_t *ret_n) {
        *ret_path = c->plugin_path;
        *ret_keys = c->plugin_keys;
        *ret_values = c->plugin_values;
        *ret_n = c->n_plugin;
}

static const char *lookup(char *const *keys, char *const *values, size_t n, const char *key) {
        for (size_t i = 0; i < n; i++)
                if (streq(keys[i], key))
                        return values[i];
        return NULL;
}

/* FN for each key of A's and B's that is not in both with the same value, A's keys first. */
static void diff_entries(char *const *a_keys, char *const *a_values, size_t a_n, char *const *b_keys,
                         char *const *b_values, size_t b_n, bool plugin, ConfigChangeFn fn, void *userdata) {
        for (size_t i = 0; i < a_n; i++) {
                const char *new = lookup(b_keys, b_values, b_n, a_keys[i]);

                if (!streq_ptr(a_values[i], new))
                        fn(a_keys[i], plugin, a_values[i], new, userdata);
        }
        for (size_t i = 0; i < b_n; i++)
                if (!lookup(a_keys, a_values, a_n, b_keys[i]))
                        fn(b_keys[i], plugin, NULL, b_values[i], userdata);
}

void config_diff(const Config *a, const Config *b, ConfigChangeFn fn, void *userdata) {
        diff_entries(a->written_keys, a->written_values, a->n_written, b->written_keys, b->written_values,
                     b->n_written, false, fn, userdata);
}

void pool_config_diff(const PoolConfig *a, const PoolConfig *b, ConfigChangeFn fn, void *userdata) {
        diff_entries(a->written_keys, a->written_values, a->n_written, b->written_keys, b->written_values,
                     b->n_written, false, fn, userdata);
        diff_entries(a->plugin_keys, a->plugin_values, a->n_plugin, b->plugin_keys, b->plugin_values, b->n_plugin,
                     true, fn, userdata);
}

/* Every field but plugin_file, which only says where Plugin= was written. */
bool pool_config_equal(const PoolConfig *a, const PoolConfig *b) {
        if (a == b)
                return true;
        if (!a || !b)
                return false;

        return streq_ptr(a->name, b->name) &&
                streq_ptr(a->plugin, b->plugin) &&
                streq_ptr(a->plugin_path, b->plugin_path) &&
                a->kind == b->kind &&
                a->workers == b->workers &&
                a->workers_auto == b->workers_auto &&
                a->workers_max == b->workers_max &&
                a->workers_max_auto == b->workers_max_auto &&
                a->workers_range == b->workers_range &&
                a->scale_down_idle_usec == b->scale_down_idle_usec &&
                a->restart == b->restart &&
                a->restart_usec == b->restart_usec &&
                a->restart_max_usec == b->restart_max_usec &&
                a->start_limit_burst == b->start_limit_burst &&
                a->start_limit_interval_usec == b->start_limit_interval_usec &&
                a->failed_retry_usec == b->failed_retry_usec &&
                a->start_timeout_usec == b->start_timeout_usec &&
                a->stop_timeout_usec == b->stop_timeout_usec &&
                a->queue_limit == b->queue_limit &&
                a->queue_bytes_limit == b->queue_bytes_limit &&
                a->concurrency == b->concurrency &&
                a->task_retries == b->task_retries &&
                a->task_timeout_usec == b->task_timeout_usec &&
                a->max_tasks_per_worker == b->max_tasks_per_worker &&
                a->max_memory_per_worker == b->max_memory_per_worker &&
                a->max_worker_age_usec == b->max_worker_age_usec &&
                a->max_worker_age_jitter_usec == b->max_worker_age_jitter_usec &&
                a->priority_aging_usec == b->priority_aging_usec &&
                a->zygote == b->zygote &&
                pool_config_uid(a) == pool_config_uid(b) &&
                pool_config_gid(a) == pool_config_gid(b) &&
                a->limit_data == b->limit_data &&
                streq_ptr(a->submit_from, b->submit_from) &&
                pool_config_same_source(a, b) &&
                plugin_settings_equal(a, b);
}

/* ---- names ---- */

static const char *const pool_kind_table[_POOL_KIND_MAX] = {
        [POOL_KIND_CPU] = "cpu",
        [POOL_KIND_IO] = "io",
};

static const char *const restart_policy_table[_RESTART_POLICY_MAX] = {
        [RESTART_ALWAYS] = "always",
        [RESTART_ON_FAILURE] = "on-failure",
        [RESTART_NO] = "no",
};

static int string_table_lookup(const char *const *table, size_t n, const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (table[i] && strcmp(table[i], s) == 0)
                        return (int) i;
        return -EINVAL;
}

const char *pool_kind_to_string(PoolKind k) {
        if (k < 0 || k >= _POOL_KIND_MAX)
                return NULL;
        return pool_kind_table[k];
}

PoolKind pool_kind_from_string(const char *s) {
        return (PoolKind) string_table_lookup(pool_kind_table, ELEMENTSOF(pool_kind_table), s);
}

const char *restart_policy_to_string(RestartPolicy p) {
        if (p < 0 || p >= _RESTART_POLICY_MAX)
                return NULL;
        return restart_policy_table[p];
}

RestartPolicy restart_policy_from_string(const char *s) {
        return (RestartPolicy) string_table_lookup(restart_policy_table, ELEMENTSOF(restart_policy_table), s);
}

/* NAME is 1 to 64 bytes of [A-Za-z0-9] and of EXTRA. */
static bool name_is_valid(const char *name, const char *extra) {
        size_t n;

        if (!name)
                return false;
        n = strlen(name);
        if (n == 0 || n > 64)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!g_ascii_isalnum(name[i]) && !strchr(extra, name[i]))
                        return false;
        return true;
}

bool engine_name_is_valid(const char *name) {
        return name_is_valid(name, "_-");
}

bool pool_name_is_valid(const char *name) {
        return name_is_valid(name, "_.-");
}
