/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/*
 * The tables of state machines in docs/, read so that a unit test can hold them against the
 * code: a markdown table between <!-- NAME: begin --> and <!-- NAME: end -->, whose rows read
 * "| inside | shown as | takes |", the third cell a list of event names.
 */
typedef struct DocRow {
        char *inside;
        char *shown;
        char *takes;            /* "a, b, c", to split with doc_row_takes() */
} DocRow;

/* Calls ROW for each body row of table NAME in PATH; fails the test if the table is missing or a
 * row has not three cells. Returns the number of rows. */
unsigned doc_table_foreach(const char *path, const char *name, void (*row)(const DocRow *r, void *userdata),
                           void *userdata);

/* The events of R's third cell as a mask: bit e for the event whose name NAME_OF(e) gives, for e
 * below N. Fails the test on a name that is no event. */
unsigned doc_row_takes(const DocRow *r, const char *(*name_of)(unsigned e), unsigned n);

/* Fails the test with each event that DOCUMENTED and LEGAL disagree on, for the state named INSIDE. */
void doc_row_check(const char *inside, unsigned documented, unsigned legal, const char *(*name_of)(unsigned e),
                   unsigned n);
