/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

/*
 * apiary-worker --oneshot PLUGIN [--set KEY=VALUE]... [--pool NAME] [--slot N] [--log-level LEVEL]:
 * runs one task of PLUGIN without apiaryd or a bus, for plugin authors' tests and for gdb and
 * valgrind. See docs/writing-plugins.md.
 */

/* True if the command line asks for --oneshot (before any "--"). */
bool oneshot_requested(int argc, char *argv[]);

/* Runs the whole --oneshot mode; returns the process's exit status. */
int oneshot_main(int argc, char *argv[]);
