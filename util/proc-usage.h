/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <sys/types.h>

/* What a process has used so far, from /proc/PID/stat and /proc/PID/statm: CPU time (user and
 * system, in ns, at the kernel's clock tick resolution) and resident memory (bytes). Either is
 * UINT64_MAX if it could not be read. Returns -errno if neither could (the process is gone). */
typedef struct ProcUsage {
        uint64_t cpu_nsec;
        uint64_t rss_bytes;
} ProcUsage;

int proc_usage_read(pid_t pid, ProcUsage *ret);
