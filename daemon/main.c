/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "build-config.h"
#include "log.h"

static void help(void) {
        printf("%s [OPTIONS...]\n\n"
               "Supervises pools of plugin workers and queues their tasks over D-Bus.\n\n"
               "  -h --help                Show this help\n"
               "     --version             Show the version\n",
               program_invocation_short_name);
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {}
        };
        int c;

        log_setup("apiaryd");
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case 'V':
                        printf("apiaryd %s\n", APIARY_VERSION);
                        return EXIT_SUCCESS;
                default:
                        return EXIT_FAILURE;
                }
        return EXIT_SUCCESS;
}
