/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/macro.h"
#include "util/proc-usage.h"

/* utime and stime, fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends comm
 * (which may hold spaces and parentheses itself). */
static int read_cpu(pid_t pid, uint64_t *ret) {
        char path[64], buf[1024];
        unsigned long long utime, stime;
        long hz = sysconf(_SC_CLK_TCK);
        const char *p;
        FILE *f;
        size_t n;

        snprintf(path, sizeof(path), "/proc/%i/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        p = strrchr(buf, ')');
        /* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
        if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2 ||
            hz <= 0)
                return -EIO;
        *ret = (uint64_t) (utime + stime) * (UINT64_C(1000000000) / (uint64_t) hz);
        return 0;
}

/* resident, the second field of /proc/PID/statm, in pages. */
static int read_rss(pid_t pid, uint64_t *ret) {
        char path[64];
        unsigned long long size, resident;
        long page = sysconf(_SC_PAGESIZE);
        FILE *f;
        int k;

        snprintf(path, sizeof(path), "/proc/%i/statm", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        k = fscanf(f, "%llu %llu", &size, &resident);
        fclose(f);
        if (k != 2 || page <= 0)
                return -EIO;
        *ret = (uint64_t) resident * (uint64_t) page;
        return 0;
}

uint64_t proc_cpu_nsec(pid_t pid) {
        uint64_t v = UINT64_MAX;

        return pid > 0 && read_cpu(pid, &v) >= 0 ? v : UINT64_MAX;
}

uint64_t proc_rss_bytes(pid_t pid) {
        uint64_t v = UINT64_MAX;

        return pid > 0 && read_rss(pid, &v) >= 0 ? v : UINT64_MAX;
}
