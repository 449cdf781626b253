/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes config_load(). The input is split on the line "--dropin--": the first part becomes the
 * main file apiary.conf, the next two (if any) drop-ins apiary.conf.d/10-a.conf and 20-b.conf, so
 * merging is fuzzed too; a third marker stays in the second drop-in's text. Files live in a private
 * directory made once per process and removed at exit. Every input must load or fail cleanly:
 * no crash, no sanitizer report, no leak, and an error message exactly when loading fails.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "config/config.h"
#include "tests/fuzz/fuzz.h"

#define DROPIN_MARKER "\n--dropin--\n"
#define N_DROPINS 2

static char *dir, *main_path, *dropin_dir, *dropin_paths[N_DROPINS];

static void cleanup(void) {
        for (size_t i = 0; i < N_DROPINS; i++) {
                if (dropin_paths[i])
                        (void) unlink(dropin_paths[i]);
                free(dropin_paths[i]);
        }
        if (dropin_dir)
                (void) rmdir(dropin_dir);
        if (main_path)
                (void) unlink(main_path);
        if (dir)
                (void) rmdir(dir);
        free(dropin_dir);
        free(main_path);
        free(dir);
}

static void setup(void) {
        char template[] = "/tmp/fuzz-config-XXXXXX";
        const char *tmp = getenv("TMPDIR");
        char *t;

        if (dir)
                return;
        if (tmp && *tmp && asprintf(&t, "%s/fuzz-config-XXXXXX", tmp) >= 0) {
                if (mkdtemp(t))
                        dir = t;
                else
                        free(t);
        }
        if (!dir) {
                if (!mkdtemp(template))
                        abort();
                dir = strdup(template);
        }
        if (!dir ||
            asprintf(&main_path, "%s/apiary.conf", dir) < 0 ||
            asprintf(&dropin_dir, "%s/apiary.conf.d", dir) < 0 ||
            asprintf(&dropin_paths[0], "%s/10-a.conf", dropin_dir) < 0 ||
            asprintf(&dropin_paths[1], "%s/20-b.conf", dropin_dir) < 0)
                abort();
        atexit(cleanup);
}

static void write_file(const char *path, const uint8_t *data, size_t size) {
        FILE *f = fopen(path, "we");

        if (!f || (size > 0 && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *part = data, *end = data + size;
        size_t n_dropins = 0;
        Config *c = NULL;
        char *error = NULL;
        int r;

        if (size > 64 * 1024)   /* longer inputs only slow the fuzzer down */
                return 0;
        setup();

        /* Drop-ins from the previous input must not leak into this one. */
        for (size_t i = 0; i < N_DROPINS; i++)
                (void) unlink(dropin_paths[i]);

        for (size_t i = 0; i <= N_DROPINS; i++) {
                const uint8_t *m = i < N_DROPINS ?
                        memmem(part, (size_t) (end - part), DROPIN_MARKER, strlen(DROPIN_MARKER)) : NULL;
                const uint8_t *part_end = m ? m + 1 : end;   /* keep the newline before the marker */

                if (i == 0)
                        write_file(main_path, part, (size_t) (part_end - part));
                else {
                        if (n_dropins == 0 && mkdir(dropin_dir, 0755) < 0 && errno != EEXIST)
                                abort();
                        write_file(dropin_paths[i - 1], part, (size_t) (part_end - part));
                        n_dropins++;
                }
                if (!m)
                        break;
                part = m + strlen(DROPIN_MARKER);
        }
        /* Without drop-ins, also fuzz the path where PATH.d does not exist. */
        if (n_dropins == 0)
                (void) rmdir(dropin_dir);

        r = config_load(main_path, 2, &c, &error);
        if (r < 0) {
                /* The contract: a message on failure, *ret untouched. */
                if (!error || c)
                        abort();
        } else {
                if (!c || error)
                        abort();
                for (size_t i = 0; i < c->n_pools; i++) {
                        const PoolConfig *p = c->pools[i];

                        if (config_find_pool(c, p->name) != p ||
                            !pool_config_same_code(p, p) || !pool_config_equal(p, p))
                                abort();
                }
                char **errors = NULL;
                (void) config_check_plugins(c, &errors);
                g_strfreev(errors);
                config_free(c);
        }
        free(error);
        return 0;
}
