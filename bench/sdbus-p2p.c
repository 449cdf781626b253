/* SPDX-License-Identifier: MIT */
/*
 * bench-sdbus-p2p: the floor for an sd-bus transport. The same shape as bench-bare (one process
 * forks CHILDREN children, each with a socketpair, and keeps up to DEPTH echoes in flight per
 * child), but every echo is a D-Bus method call: each child is an sd-bus server on its end of the
 * socketpair, serving Echo(ay) → ay on /bench (org.apiary.Bench1) from a vtable, and the parent
 * holds one peer-to-peer sd-bus connection per child (no bus daemon, no Hello) and pipelines its
 * calls with sd_bus_call_async(). No plugin, no supervisor: only sd-bus's marshalling, dispatch
 * and reply matching on top of bench-bare's socket round trips. The difference to bench-bare is
 * what sd-bus costs; the difference to apiaryd is what Apiary adds on top of sd-bus.
 *
 *   bench-sdbus-p2p CHILDREN TASKS DEPTH SIZE
 *
 * Before the clock starts, the parent makes one synchronous Echo call per child: it finishes the
 * handshake, so that the timed part is only the calls (bench-bare has no handshake either). The
 * clock runs from the first timed call sent to the last reply dispatched.
 *
 * Prints one line of KEY=VALUE pairs like bench-bare, and exits 1 if any result was wrong or any
 * call failed. The payloads are the same as bench-bare and bench-client send, and every result is
 * compared with its payload.
 */
#include <errno.h>
#include <limits.h>
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
#include <systemd/sd-bus.h>
#include <systemd/sd-id128.h>

#define MAX_CHILDREN 64
#define MAX_SIZE 4096

#define BENCH_PATH "/bench"
#define BENCH_IFACE "org.apiary.Bench1"

/* A call that gets no answer within this time fails (and the run with it), instead of hanging. */
#define CALL_TIMEOUT_USEC (10 * 1000000ull)

#define _cleanup_(f) __attribute__((cleanup(f)))

typedef struct Context Context;
typedef struct Child Child;

typedef struct Call {
        Child *child;
        unsigned long index;    /* the task this call carries */
} Call;

struct Child {
        Context *context;
        pid_t pid;
        int fd;                 /* the parent's end, until the bus takes it over */
        sd_bus *bus;
        Call *calls;            /* DEPTH of them */
        Call **free_calls;      /* stack of the calls not in flight */
        size_t n_free;
};

struct Context {
        unsigned long n_children, n_tasks, depth;
        size_t size;
        unsigned long next;     /* the next task to send */
        unsigned long finished, ok, bad, failed;
        Child children[MAX_CHILDREN];
};

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

static bool result_is_right(unsigned long i, size_t size, const void *data, size_t data_size) {
        char expect[MAX_SIZE];

        make_payload(i, size, expect);
        return data_size == size && memcmp(data, expect, size) == 0;
}

/* How sd_bus_process() and sd_bus_wait() report that the peer closed the connection. */
static bool errno_is_disconnect(int r) {
        return r == -ENOTCONN || r == -ECONNRESET || r == -EPIPE || r == -ESHUTDOWN || r == -ECONNABORTED;
}

/* The child: an sd-bus server on its end of the socketpair. */

static int method_echo(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const void *data;
        size_t size;
        int r;

        r = sd_bus_message_read_array(m, 'y', &data, &size);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append_array(reply, 'y', data, size);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static const sd_bus_vtable bench_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Echo", SD_BUS_ARGS("ay", payload), SD_BUS_RESULT("ay", result), method_echo,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

/* Serves Echo until the parent closes its end, then _exit(0). Never returns. */
static _Noreturn void child_serve(int fd) {
        sd_bus *bus = NULL;
        sd_id128_t id;
        int r;

        r = sd_id128_randomize(&id);
        if (r >= 0)
                r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_fd(bus, fd, fd);        /* consumes FD */
        if (r >= 0)
                r = sd_bus_set_server(bus, 1, id);
        if (r >= 0)
                r = sd_bus_add_object_vtable(bus, NULL, BENCH_PATH, BENCH_IFACE, bench_vtable, NULL);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r < 0) {
                fprintf(stderr, "bench-sdbus-p2p: child: cannot start the server: %s\n", strerror(-r));
                _exit(1);
        }

        /* sd_bus_process() until it has nothing left before every wait: in sd-bus 252 a server that
         * reads BEGIN while its OK is still being written finishes the handshake only on a later
         * sd_bus_process() call, and no new input may come to wake sd_bus_wait() (systemd PR #24875). */
        for (;;) {
                r = sd_bus_process(bus, NULL);
                if (r > 0)
                        continue;
                if (r == 0)
                        r = sd_bus_wait(bus, UINT64_MAX);
                if (r < 0 && r != -EINTR)
                        _exit(errno_is_disconnect(r) ? 0 : 1);
        }
}

/* The parent: one peer-to-peer client connection per child. */

static int on_echo_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Call *call = userdata;
        Child *ch = call->child;
        Context *c = ch->context;
        const void *data;
        size_t size;

        if (sd_bus_message_is_method_error(m, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(m);

                c->failed++;
                if (c->failed <= 3)
                        fprintf(stderr, "bench-sdbus-p2p: task %lu failed: %s: %s\n", call->index,
                                e && e->name ? e->name : "?", e && e->message ? e->message : "");
        } else if (sd_bus_message_read_array(m, 'y', &data, &size) >= 0 &&
                   result_is_right(call->index, c->size, data, size))
                c->ok++;
        else {
                c->bad++;
                if (c->bad <= 3)
                        fprintf(stderr, "bench-sdbus-p2p: task %lu: wrong result\n", call->index);
        }
        c->finished++;
        ch->free_calls[ch->n_free++] = call;
        return 0;
}

static int child_send_echo(Child *ch, Call *call) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        char buf[MAX_SIZE];
        size_t l;
        int r;

        r = sd_bus_message_new_method_call(ch->bus, &m, NULL, BENCH_PATH, BENCH_IFACE, "Echo");
        if (r < 0)
                return r;
        l = make_payload(call->index, ch->context->size, buf);
        r = sd_bus_message_append_array(m, 'y', buf, l);
        if (r < 0)
                return r;
        return sd_bus_call_async(ch->bus, NULL, m, on_echo_reply, call, CALL_TIMEOUT_USEC);
}

/* Tops CH up to DEPTH calls in flight, from the tasks not yet sent. */
static int child_top_up(Child *ch) {
        Context *c = ch->context;
        int r;

        while (ch->n_free > 0 && c->next < c->n_tasks) {
                Call *call = ch->free_calls[ch->n_free - 1];

                call->index = c->next;
                r = child_send_echo(ch, call);
                if (r < 0)
                        return r;
                ch->n_free--;
                c->next++;
        }
        return 0;
}

/* Not timed: finishes the handshake, and checks that the child answers at all. */
static int child_warm_up(Child *ch) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        char buf[MAX_SIZE];
        const void *data;
        size_t l, size;
        int r;

        r = sd_bus_message_new_method_call(ch->bus, &m, NULL, BENCH_PATH, BENCH_IFACE, "Echo");
        if (r < 0)
                return r;
        l = make_payload(0, ch->context->size, buf);
        r = sd_bus_message_append_array(m, 'y', buf, l);
        if (r < 0)
                return r;
        r = sd_bus_call(ch->bus, m, CALL_TIMEOUT_USEC, &error, &reply);
        if (r < 0) {
                fprintf(stderr, "bench-sdbus-p2p: warm-up call: %s\n", error.message ?: strerror(-r));
                return r;
        }
        r = sd_bus_message_read_array(reply, 'y', &data, &size);
        if (r < 0)
                return r;
        if (!result_is_right(0, ch->context->size, data, size))
                return -EBADMSG;
        return 0;
}

static int child_connect(Child *ch) {
        int r;

        r = sd_bus_new(&ch->bus);
        if (r < 0)
                return r;
        r = sd_bus_set_fd(ch->bus, ch->fd, ch->fd);
        if (r < 0)
                return r;
        ch->fd = -1;    /* the bus owns it now, and closes it on unref */
        r = sd_bus_start(ch->bus);
        if (r < 0)
                return r;
        return child_warm_up(ch);
}

/* Waits until some bus has something to do: input, room for output, or a timeout due. */
static int context_wait(Context *c) {
        struct pollfd pfd[MAX_CHILDREN];
        uint64_t until = UINT64_MAX, now;
        int timeout_ms, r;

        for (unsigned long i = 0; i < c->n_children; i++) {
                sd_bus *bus = c->children[i].bus;
                uint64_t t;
                int fd, events;

                fd = sd_bus_get_fd(bus);
                if (fd < 0)
                        return fd;
                events = sd_bus_get_events(bus);
                if (events < 0)
                        return events;
                r = sd_bus_get_timeout(bus, &t);
                if (r < 0)
                        return r;
                if (t < until)
                        until = t;
                pfd[i] = (struct pollfd) { .fd = fd, .events = (short) events };
        }

        now = now_ns() / 1000;
        if (until == UINT64_MAX)
                timeout_ms = -1;
        else if (until <= now)
                timeout_ms = 0;
        else if ((until - now + 999) / 1000 > INT_MAX)
                timeout_ms = INT_MAX;
        else
                timeout_ms = (int) ((until - now + 999) / 1000);

        if (poll(pfd, c->n_children, timeout_ms) < 0 && errno != EINTR)
                return -errno;
        return 0;
}

static int context_run(Context *c) {
        int r;

        for (;;) {
                /* Dispatch everything each bus has: replies free slots, and due timeouts fail calls. */
                for (unsigned long i = 0; i < c->n_children; i++)
                        while ((r = sd_bus_process(c->children[i].bus, NULL)) != 0)
                                if (r < 0) {
                                        fprintf(stderr, "bench-sdbus-p2p: child %lu: %s\n", i, strerror(-r));
                                        return r;
                                }
                if (c->finished >= c->n_tasks)
                        return 0;

                for (unsigned long i = 0; i < c->n_children; i++) {
                        r = child_top_up(&c->children[i]);
                        if (r < 0) {
                                fprintf(stderr, "bench-sdbus-p2p: child %lu: cannot send: %s\n", i, strerror(-r));
                                return r;
                        }
                }

                r = context_wait(c);
                if (r < 0) {
                        fprintf(stderr, "bench-sdbus-p2p: waiting on the buses: %s\n", strerror(-r));
                        return r;
                }
        }
}

static int context_fork_children(Context *c) {
        pid_t parent = getpid();

        /* All children are forked before the parent creates any sd_bus: a child inherits no bus
         * object, only the fds, and it closes those of the earlier children so that each child
         * sees EOF as soon as the parent closes its own connection. */
        for (unsigned long i = 0; i < c->n_children; i++) {
                Child *ch = &c->children[i];
                int sv[2];

                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                        return -errno;
                ch->pid = fork();
                if (ch->pid < 0)
                        return -errno;
                if (ch->pid == 0) {
                        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                        if (getppid() != parent)
                                _exit(1);
                        close(sv[0]);
                        for (unsigned long j = 0; j < i; j++)
                                close(c->children[j].fd);
                        child_serve(sv[1]);
                }
                close(sv[1]);
                ch->fd = sv[0];
        }
        return 0;
}

static int context_init_calls(Context *c) {
        for (unsigned long i = 0; i < c->n_children; i++) {
                Child *ch = &c->children[i];

                ch->context = c;
                ch->fd = -1;
                ch->calls = calloc(c->depth, sizeof(Call));
                ch->free_calls = calloc(c->depth, sizeof(Call *));
                if (!ch->calls || !ch->free_calls)
                        return -ENOMEM;
                for (unsigned long k = 0; k < c->depth; k++) {
                        ch->calls[k].child = ch;
                        ch->free_calls[k] = &ch->calls[k];
                }
                ch->n_free = c->depth;
        }
        return 0;
}

/* Closing a connection is what tells its child to exit; then it is reaped. */
static void context_done(Context *c) {
        for (unsigned long i = 0; i < c->n_children; i++) {
                Child *ch = &c->children[i];

                if (!ch->context)
                        continue;       /* never set up: its fd is 0, not ours */
                ch->bus = sd_bus_flush_close_unref(ch->bus);
                if (ch->fd >= 0)
                        close(ch->fd);
                ch->fd = -1;
        }
        for (unsigned long i = 0; i < c->n_children; i++) {
                Child *ch = &c->children[i];

                if (ch->pid > 0)
                        (void) waitpid(ch->pid, NULL, 0);
                free(ch->calls);
                free(ch->free_calls);
        }
}

int main(int argc, char *argv[]) {
        _cleanup_(context_done) Context c = {};
        unsigned long n_children;
        uint64_t start, elapsed;
        int r;

        if (argc != 5) {
                fprintf(stderr, "usage: %s CHILDREN TASKS DEPTH SIZE\n", argv[0]);
                return 2;
        }
        n_children = strtoul(argv[1], NULL, 10);
        c.n_tasks = strtoul(argv[2], NULL, 10);
        c.depth = strtoul(argv[3], NULL, 10);
        c.size = strtoul(argv[4], NULL, 10);
        if (n_children < 1 || n_children > MAX_CHILDREN || c.depth < 1 || c.size < 12 || c.size > MAX_SIZE) {
                fprintf(stderr, "bench-sdbus-p2p: bad arguments\n");
                return 2;
        }
        c.n_children = n_children;     /* only now: context_done() walks this many children */

        r = context_init_calls(&c);
        if (r < 0)
                return 1;
        r = context_fork_children(&c);
        if (r < 0) {
                fprintf(stderr, "bench-sdbus-p2p: cannot start the children: %s\n", strerror(-r));
                return 1;
        }
        for (unsigned long i = 0; i < c.n_children; i++) {
                r = child_connect(&c.children[i]);
                if (r < 0) {
                        fprintf(stderr, "bench-sdbus-p2p: child %lu: cannot connect: %s\n", i, strerror(-r));
                        return 1;
                }
        }

        start = now_ns();
        r = context_run(&c);
        elapsed = now_ns() - start;
        if (r < 0)
                return 1;

        printf("tasks=%lu finished=%lu ok=%lu bad=%lu failed=%lu seconds=%.6f rate=%.1f\n", c.n_tasks, c.finished,
               c.ok, c.bad, c.failed, elapsed / 1e9, (double) c.finished * 1e9 / (double) elapsed);
        return c.ok == c.n_tasks ? 0 : 1;
}
