/* SPDX-License-Identifier: MIT */
/*
 * bench-bare: the floor for the echo benchmarks. One process forks CHILDREN children, each with a
 * socketpair, and sends them framed payloads (a 4-byte length, then the bytes), keeping up to
 * DEPTH in flight per child; the children echo every frame back. No bus, no plugin, no
 * supervisor: only the kernel's socket round trips and two context switches per batch of frames.
 *
 *   bench-bare CHILDREN TASKS DEPTH SIZE
 *
 * Prints one line of KEY=VALUE pairs like bench-client, and exits 1 if any result was wrong.
 * The payloads are the same as bench-client sends, and every result is compared with its payload.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 64
#define MAX_SIZE 4096
#define BUF_SIZE (256 * 1024)

typedef struct Child {
        pid_t pid;
        int fd;
        /* FIFO of the task indexes in flight: the child answers in order. */
        unsigned long *fifo;
        size_t head, n;
        char *in;               /* bytes read, not yet parsed */
        size_t in_len;
} Child;

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static size_t make_payload(unsigned long i, size_t size, char *buf) {
        int k = snprintf(buf, size + 1, "%010lu:", i);
        for (size_t j = (size_t) k; j < size; j++)
                buf[j] = (char) ('A' + (i * 7 + j) % 26);
        return size;
}

static int write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

/* The child: echo every frame, in batches, until the parent closes its end. */
static void child_loop(int fd) {
        static char in[BUF_SIZE], out[BUF_SIZE];
        size_t in_len = 0;

        for (;;) {
                size_t out_len = 0, pos = 0;
                ssize_t k = read(fd, in + in_len, sizeof(in) - in_len);
                if (k <= 0)
                        _exit(k == 0 ? 0 : 1);
                in_len += (size_t) k;
                while (in_len - pos >= 4) {
                        uint32_t l;
                        memcpy(&l, in + pos, 4);
                        if (in_len - pos < 4 + l)
                                break;
                        memcpy(out + out_len, in + pos, 4 + l);
                        out_len += 4 + l;
                        pos += 4 + l;
                }
                memmove(in, in + pos, in_len - pos);
                in_len -= pos;
                if (write_all(fd, out, out_len) < 0)
                        _exit(1);
        }
}

int main(int argc, char *argv[]) {
        Child children[MAX_CHILDREN] = {};
        struct pollfd pfd[MAX_CHILDREN];
        unsigned long n_children, n_tasks, depth, next = 0, finished = 0, ok = 0, bad = 0;
        size_t size;
        char expect[MAX_SIZE], *out;
        uint64_t start, elapsed;

        if (argc != 5) {
                fprintf(stderr, "usage: %s CHILDREN TASKS DEPTH SIZE\n", argv[0]);
                return 2;
        }
        n_children = strtoul(argv[1], NULL, 10);
        n_tasks = strtoul(argv[2], NULL, 10);
        depth = strtoul(argv[3], NULL, 10);
        size = strtoul(argv[4], NULL, 10);
        if (n_children < 1 || n_children > MAX_CHILDREN || depth < 1 || size < 12 || size > MAX_SIZE) {
                fprintf(stderr, "bench-bare: bad arguments\n");
                return 2;
        }
        out = malloc(depth * (4 + size));
        if (!out)
                return 1;

        for (unsigned long c = 0; c < n_children; c++) {
                int sv[2];

                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                        return 1;
                children[c].pid = fork();
                if (children[c].pid < 0)
                        return 1;
                if (children[c].pid == 0) {
                        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                        close(sv[0]);
                        for (unsigned long d = 0; d < c; d++)
                                close(children[d].fd);
                        child_loop(sv[1]);
                }
                close(sv[1]);
                children[c].fd = sv[0];
                children[c].fifo = calloc(depth, sizeof(unsigned long));
                children[c].in = malloc(BUF_SIZE);
                if (!children[c].fifo || !children[c].in)
                        return 1;
                pfd[c] = (struct pollfd) { .fd = sv[0], .events = POLLIN };
        }

        start = now_ns();
        while (finished < n_tasks) {
                /* Top up every child to DEPTH in flight, with one write each. */
                for (unsigned long c = 0; c < n_children; c++) {
                        Child *ch = &children[c];
                        size_t out_len = 0;

                        while (ch->n < depth && next < n_tasks) {
                                uint32_t l = (uint32_t) size;
                                memcpy(out + out_len, &l, 4);
                                make_payload(next, size, out + out_len + 4);
                                out_len += 4 + size;
                                ch->fifo[(ch->head + ch->n) % depth] = next++;
                                ch->n++;
                        }
                        if (out_len > 0 && write_all(ch->fd, out, out_len) < 0)
                                return 1;
                }
                if (poll(pfd, n_children, 10000) <= 0) {
                        fprintf(stderr, "bench-bare: no answer within 10s\n");
                        return 1;
                }
                for (unsigned long c = 0; c < n_children; c++) {
                        Child *ch = &children[c];
                        size_t pos = 0;
                        ssize_t k;

                        if (!(pfd[c].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        k = read(ch->fd, ch->in + ch->in_len, BUF_SIZE - ch->in_len);
                        if (k <= 0) {
                                fprintf(stderr, "bench-bare: child %lu went away\n", c);
                                return 1;
                        }
                        ch->in_len += (size_t) k;
                        while (ch->in_len - pos >= 4) {
                                uint32_t l;
                                memcpy(&l, ch->in + pos, 4);
                                if (ch->in_len - pos < 4 + l)
                                        break;
                                if (ch->n == 0)
                                        return 1;
                                unsigned long i = ch->fifo[ch->head];
                                ch->head = (ch->head + 1) % depth;
                                ch->n--;
                                make_payload(i, size, expect);
                                if (l == size && memcmp(ch->in + pos + 4, expect, size) == 0)
                                        ok++;
                                else
                                        bad++;
                                finished++;
                                pos += 4 + l;
                        }
                        memmove(ch->in, ch->in + pos, ch->in_len - pos);
                        ch->in_len -= pos;
                }
        }
        elapsed = now_ns() - start;

        for (unsigned long c = 0; c < n_children; c++) {
                close(children[c].fd);
                (void) waitpid(children[c].pid, NULL, 0);
                free(children[c].fifo);
                free(children[c].in);
        }
        free(out);
        printf("tasks=%lu finished=%lu ok=%lu bad=%lu failed=0 seconds=%.6f rate=%.1f\n", n_tasks, finished, ok, bad,
               elapsed / 1e9, (double) finished * 1e9 / (double) elapsed);
        return ok == n_tasks ? 0 : 1;
}
