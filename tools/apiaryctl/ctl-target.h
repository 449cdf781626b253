/* SPDX-License-Identifier: MIT */
#pragma once

/* A target of a command: a pool (POOL) or a worker slot (POOL/SLOT), and its object path. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

typedef struct Target {
        char *pool;
        bool has_slot;
        uint32_t slot;
        char *path;
        char *description;      /* pool "echo", worker echo/1 */
} Target;

void target_done(Target *t);
/* Parses S: POOL, or POOL/SLOT if SLOT_ALLOWED (and only that if SLOT_REQUIRED). Prints a usage
 * error and returns CTL_EXIT_USAGE if S is neither. */
int target_parse(const char *s, bool slot_allowed, bool slot_required, Target *ret);
/* After UnknownObject from T's object: says whether the pool or only its slot is missing, and
 * returns CTL_EXIT_NOT_FOUND. */
int target_not_found(sd_bus *bus, const Target *t, const char *verb, const sd_bus_error *error);
