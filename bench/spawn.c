/* SPDX-License-Identifier: MIT */
/*
 * bench-spawn: local anchors for the crash-to-ready benchmark, measured on this machine in the
 * same run: how long one process start costs with nothing else around it.
 *
 *   bench-spawn fork N                 fork(), the child _exit(0)s at once, waitpid()
 *   bench-spawn exec N PATH [ARGS...]  fork(), execv(PATH), waitpid()
 *   bench-spawn spawn N PATH [ARGS...] posix_spawn(PATH) (vfork+exec, as apiaryd does), waitpid()
 *
 * The child's stdout and stderr go to /dev/null. Each of N iterations is timed from before the
 * fork to after waitpid() returns; the first 10% (at least 1) are warm-up and not counted. Prints
 * one line of KEY=VALUE pairs with the percentiles in µs. Exits 1 if any child did not exit 0,
 * unless the mode is "spawn-any" (same as spawn, any exit status is fine: for programs such as
 * apiary-worker that refuse to run without their arguments, which still measures exec and
 * dynamic linking).
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static double percentile(const uint64_t *sorted, size_t n, double p) {
        size_t i = (size_t) (p / 100.0 * (double) (n - 1) + 0.5);
        return (double) sorted[i < n ? i : n - 1] / 1e3;
}

int main(int argc, char *argv[]) {
        posix_spawn_file_actions_t actions;
        unsigned long n, warmup, bad = 0;
        bool any_status;
        const char *mode;
        uint64_t *t;
        int devnull;

        if (argc < 3) {
                fprintf(stderr, "usage: %s fork|exec|spawn|spawn-any N [PATH ARGS...]\n", argv[0]);
                return 2;
        }
        mode = argv[1];
        n = strtoul(argv[2], NULL, 10);
        any_status = strcmp(mode, "spawn-any") == 0;
        if (n < 2 || (strcmp(mode, "fork") != 0 && argc < 4)) {
                fprintf(stderr, "bench-spawn: bad arguments\n");
                return 2;
        }
        warmup = n / 10 ? n / 10 : 1;
        t = calloc(n, sizeof(uint64_t));
        devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (!t || devnull < 0)
                return 1;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, devnull, STDOUT_FILENO);
        posix_spawn_file_actions_adddup2(&actions, devnull, STDERR_FILENO);

        for (unsigned long i = 0; i < n; i++) {
                uint64_t t0 = now_ns();
                int status;
                pid_t pid;

                if (strcmp(mode, "fork") == 0) {
                        pid = fork();
                        if (pid == 0)
                                _exit(0);
                } else if (strcmp(mode, "exec") == 0) {
                        pid = fork();
                        if (pid == 0) {
                                dup2(devnull, STDOUT_FILENO);
                                dup2(devnull, STDERR_FILENO);
                                execv(argv[3], argv + 3);
                                _exit(127);
                        }
                } else if (strncmp(mode, "spawn", 5) == 0) {
                        if (posix_spawn(&pid, argv[3], &actions, NULL, argv + 3, environ) != 0)
                                pid = -1;
                } else {
                        fprintf(stderr, "bench-spawn: unknown mode %s\n", mode);
                        return 2;
                }
                if (pid < 0 || waitpid(pid, &status, 0) != pid)
                        return 1;
                t[i] = now_ns() - t0;
                if (!any_status && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
                        bad++;
                if (any_status && !WIFEXITED(status))
                        bad++;
        }

        qsort(t + warmup, n - warmup, sizeof(uint64_t), cmp_u64);
        printf("runs=%lu bad=%lu min_us=%.1f p50_us=%.1f p99_us=%.1f max_us=%.1f\n", n - warmup, bad,
               (double) t[warmup] / 1e3, percentile(t + warmup, n - warmup, 50), percentile(t + warmup, n - warmup, 99),
               (double) t[n - 1] / 1e3);
        posix_spawn_file_actions_destroy(&actions);
        free(t);
        return bad == 0 ? 0 : 1;
}
