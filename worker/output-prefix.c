/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "worker/output-prefix.h"

/* One of stdout and stderr, in front of its file descriptor. */
typedef struct Prefixed {
        int fd;
        bool mid_line;          /* the last write did not end a line: no prefix before the next */
} Prefixed;

static char prefix[256];
static size_t prefix_len;
static Prefixed out = { .fd = STDOUT_FILENO }, err = { .fd = STDERR_FILENO };
static bool installed;

static int write_all(int fd, struct iovec *iov, int n) {
        while (n > 0) {
                ssize_t k = writev(fd, iov, n);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -1;
                while (n > 0 && (size_t) k >= iov->iov_len) {
                        k -= (ssize_t) iov->iov_len;
                        iov++;
                        n--;
                }
                if (n > 0) {
                        iov->iov_base = (char *) iov->iov_base + k;
                        iov->iov_len -= (size_t) k;
                }
        }
        return 0;
}

/* Each line of BUF with the prefix in front, unless it continues one begun before. */
static ssize_t prefixed_write(void *cookie, const char *buf, size_t size) {
        Prefixed *p = cookie;
        size_t done = 0;

        while (done < size) {
                const char *nl = memchr(buf + done, '\n', size - done);
                size_t len = nl ? (size_t) (nl - (buf + done)) + 1 : size - done;
                struct iovec iov[2];
                int n = 0;

                if (!p->mid_line)
                        iov[n++] = (struct iovec) { prefix, prefix_len };
                iov[n++] = (struct iovec) { (char *) buf + done, len };
                if (write_all(p->fd, iov, n) < 0)
                        return done > 0 ? (ssize_t) done : -1;
                p->mid_line = !nl;
                done += len;
        }
        return (ssize_t) size;
}

static FILE *open_prefixed(Prefixed *p, int mode) {
        FILE *f = fopencookie(p, "w", (cookie_io_functions_t) { .write = prefixed_write });

        if (f)
                (void) setvbuf(f, NULL, mode, 0);
        return f;
}

void output_prefix_set(const char *new_prefix) {
        FILE *o, *e;

        if (installed) {
                (void) fflush(stdout);
                (void) fflush(stderr);
        }
        prefix_len = (size_t) snprintf(prefix, sizeof(prefix), "%s", new_prefix);
        if (prefix_len >= sizeof(prefix))
                prefix_len = sizeof(prefix) - 1;
        if (installed)
                return;

        /* stdout line-buffered, as on a terminal; stderr unbuffered, as always. */
        o = open_prefixed(&out, _IOLBF);
        e = open_prefixed(&err, _IONBF);
        if (!o || !e) {
                if (o)
                        fclose(o);
                if (e)
                        fclose(e);
                return;
        }
        stdout = o;
        stderr = e;
        installed = true;
}
