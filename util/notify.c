/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/macro.h"
#include "util/notify.h"

int notify_nonblocking(const char *message) {
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_(closep) int fd = -1;
        socklen_t len;
        size_t n;

        if (!path || path[0] == '\0')
                return 0;
        if (path[0] != '/' && path[0] != '@')
                return -EAFNOSUPPORT;   /* vsock and the like: leave them to sd_notify() */
        n = strlen(path);
        if (n >= sizeof(sa.sun_path))
                return -EINVAL;
        memcpy(sa.sun_path, path, n);
        if (path[0] == '@')
                sa.sun_path[0] = '\0';  /* abstract namespace */
        len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '@' ? 0 : 1));

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (sendto(fd, message, strlen(message), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *) &sa, len) < 0)
                return -errno;
        return 0;
}
