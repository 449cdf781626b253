/* SPDX-License-Identifier: MIT */
/*
 * Replays inputs through LLVMFuzzerTestOneInput(), like systemd's src/fuzz/fuzz-main.c, so the
 * seed corpus (and every crash ever found, once fixed) runs as an ordinary test without libFuzzer.
 * Arguments are files, or directories whose files (not starting with '.') are replayed in strcmp()
 * order. A crash, sanitizer report or abort() in the target fails the test; a directory with no
 * inputs in it fails too, so a misplaced corpus does not pass silently.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

static int read_full_file(const char *path, uint8_t **ret, size_t *ret_size) {
        FILE *f;
        uint8_t *buf = NULL;
        size_t n = 0, allocated = 0;

        f = fopen(path, "re");
        if (!f)
                return -errno;
        for (;;) {
                size_t k;

                if (allocated - n < 4096) {
                        uint8_t *p = realloc(buf, allocated + 65536);

                        if (!p) {
                                free(buf);
                                fclose(f);
                                return -ENOMEM;
                        }
                        buf = p;
                        allocated += 65536;
                }
                k = fread(buf + n, 1, allocated - n, f);
                n += k;
                if (k == 0)
                        break;
        }
        if (ferror(f)) {
                free(buf);
                fclose(f);
                return -EIO;
        }
        fclose(f);
        *ret = buf;
        *ret_size = n;
        return 0;
}

static int run_file(const char *path) {
        uint8_t *data = NULL;
        size_t size = 0;
        int r;

        r = read_full_file(path, &data, &size);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(-r));
                return r;
        }
        printf("%s (%zu bytes)\n", path, size);
        fflush(stdout);
        /* A copy of exactly SIZE bytes, so ASan sees reads past the input as in libFuzzer. */
        uint8_t *copy = malloc(size > 0 ? size : 1);
        if (!copy) {
                free(data);
                return -ENOMEM;
        }
        memcpy(copy, data, size);
        free(data);
        (void) LLVMFuzzerTestOneInput(copy, size);
        free(copy);
        return 0;
}


static int run_dir(const char *path, size_t *n_run) {
        struct dirent **entries = NULL;
        int n, r = 0;

        n = scandir(path, &entries, NULL, alphasort);
        if (n < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -errno;
        }
        for (int i = 0; i < n; i++) {
                char *file;
                struct stat st;

                if (entries[i]->d_name[0] != '.' &&
                    asprintf(&file, "%s/%s", path, entries[i]->d_name) >= 0) {
                        if (stat(file, &st) == 0 && S_ISREG(st.st_mode)) {
                                if (run_file(file) < 0)
                                        r = -EIO;
                                else
                                        (*n_run)++;
                        }
                        free(file);
                }
                free(entries[i]);
        }
        free(entries);
        return r;
}

int main(int argc, char *argv[]) {
        int status = EXIT_SUCCESS;

        if (argc < 2) {
                fprintf(stderr, "Usage: %s FILE|DIRECTORY...\n", argv[0]);
                return EXIT_FAILURE;
        }

        for (int i = 1; i < argc; i++) {
                struct stat st;
                size_t n_run = 0;

                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
                        status = EXIT_FAILURE;
                        continue;
                }
                if (S_ISDIR(st.st_mode)) {
                        if (run_dir(argv[i], &n_run) < 0)
                                status = EXIT_FAILURE;
                        if (n_run == 0) {
                                fprintf(stderr, "%s: no inputs\n", argv[i]);
                                status = EXIT_FAILURE;
                        }
                        printf("%s: %zu inputs replayed\n", argv[i], n_run);
                } else if (run_file(argv[i]) < 0)
                        status = EXIT_FAILURE;
        }
        return status;
}
