/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <sys/types.h>

/* What a process has used so far, each read alone (a property Get asks for one): CPU time, user
 * and system, in ns at the kernel's clock tick (/proc/PID/stat), and resident memory in bytes
 * (/proc/PID/statm). UINT64_MAX if it cannot be read (no such process). */
uint64_t proc_cpu_nsec(pid_t pid);
uint64_t proc_rss_bytes(pid_t pid);
