/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/doc-table.h"

/* One cell of a markdown row, without its backquotes and spaces; advances *P past it. */
static char *next_cell(char **p) {
        char *cell = *p, *end = strchr(cell, '|');

        if (!end)
                return NULL;
        *end = '\0';
        *p = end + 1;
        while (*cell == ' ' || *cell == '`')
                cell++;
        for (char *e = cell + strlen(cell); e > cell && (e[-1] == ' ' || e[-1] == '`');)
                *--e = '\0';
        return cell;
}

unsigned doc_table_foreach(const char *path, const char *name, void (*row)(const DocRow *r, void *userdata),
                           void *userdata) {
        char begin[128], end[128], line[1024];
        bool in_table = false, ended = false;
        unsigned n = 0;
        FILE *f;

        snprintf(begin, sizeof(begin), "<!-- %s: begin -->", name);
        snprintf(end, sizeof(end), "<!-- %s: end -->", name);
        f = fopen(path, "re");
        if (!f)
                fail_msg("%s: %m", path);
        while (fgets(line, sizeof(line), f)) {
                char *p = line;
                DocRow r;

                if (strstr(line, begin))
                        in_table = true;
                else if (strstr(line, end)) {
                        ended = in_table;
                        break;
                }
                if (!in_table || line[0] != '|' || strstr(line, "| inside |") || strstr(line, "| --- |"))
                        continue;
                p++;
                r.inside = next_cell(&p);
                r.shown = next_cell(&p);
                r.takes = next_cell(&p);
                if (!r.takes)
                        fail_msg("%s: a row of %s has not three cells", path, name);
                row(&r, userdata);
                n++;
        }
        fclose(f);
        if (!ended)
                fail_msg("%s: no table %s", path, name);
        return n;
}

unsigned doc_row_takes(const DocRow *r, const char *(*name_of)(unsigned e), unsigned n) {
        char *list = strdup(r->takes), *save = NULL;
        unsigned mask = 0;

        assert_non_null(list);
        for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
                unsigned e;

                for (e = 0; e < n; e++)
                        if (strcmp(name_of(e), tok) == 0)
                                break;
                if (e == n)
                        fail_msg("docs: %s takes \"%s\", which is no event", r->inside, tok);
                mask |= 1u << e;
        }
        free(list);
        return mask;
}

void doc_row_check(const char *inside, unsigned documented, unsigned legal, const char *(*name_of)(unsigned e),
                   unsigned n) {
        for (unsigned e = 0; e < n; e++)
                if (((documented ^ legal) >> e) & 1)
                        fail_msg("docs: %s %s %s, the code %s", inside, (documented >> e) & 1 ? "takes" : "does not take",
                                 name_of(e), (legal >> e) & 1 ? "does" : "does not");
}
