/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Without journald (apiaryd run by hand, or by tools/run), what a plugin writes to stdout and
 * stderr reaches apiaryd's terminal among its lines and those of every other worker: each line
 * is prefixed with PREFIX (e.g. "echo/0[1234]: "), as journalctl would show the worker's
 * identifier. Through stdio (printf(), fputs(stderr), ...), which is how plugins write; a raw
 * write(2) on fd 1 or 2 is not prefixed. Calling it again (in a zygote's child) changes the prefix.
 */
void output_prefix_set(const char *prefix);
