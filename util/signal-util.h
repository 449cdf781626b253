/* SPDX-License-Identifier: MIT */
#pragma once

/* A signal's name as people write it: "SIGSEGV", "SIGRTMIN+3" (real-time signals, which have no
 * abbreviation of their own), or "signal 99" for a number that names none. */
#define SIGNAL_NAME_MAX 24
const char *signal_to_string(int sig, char buf[static SIGNAL_NAME_MAX]);
