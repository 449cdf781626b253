/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "util/signal-util.h"

const char *signal_to_string(int sig, char buf[static SIGNAL_NAME_MAX]) {
        const char *abbrev;

        if (sig >= SIGRTMIN && sig <= SIGRTMAX) {
                /* The offset from SIGRTMIN is what programs agree on; the number itself is libc's. */
                if (sig == SIGRTMIN)
                        snprintf(buf, SIGNAL_NAME_MAX, "SIGRTMIN");
                else
                        snprintf(buf, SIGNAL_NAME_MAX, "SIGRTMIN+%d", sig - SIGRTMIN);
                return buf;
        }
        abbrev = sigabbrev_np(sig);
        if (abbrev)
                snprintf(buf, SIGNAL_NAME_MAX, "SIG%s", abbrev);
        else
                snprintf(buf, SIGNAL_NAME_MAX, "signal %d", sig);
        return buf;
}
