/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the decoding of the private link's task messages on both sides: task_codec_read_dispatch()
 * (Worker1.Dispatch(ua(tay)), read by apiary-worker) and task_codec_read_results()
 * (Supervisor1.Results(a(tbtay)), read by apiaryd).
 *
 * sd-bus cannot parse raw bytes into a message, so the bytes go through a real connection: a
 * socketpair with an sd-bus server on one end (like apiaryd's side of the link) and an sd-bus
 * client on the other (like the worker's), authenticated once per process. For every input the
 * harness writes one hand-built D-Bus message straight to the client's socket, bypassing the
 * client's sd-bus, and lets the server dispatch it to an object whose methods run the codec.
 *
 * The input: byte 0 chooses the message, the rest is its body, unchecked.
 *   bit 0     0: Worker1.Dispatch, signature ua(tay); 1: Supervisor1.Results, signature a(tbtay)
 *   bits 1-7  N: the callback stops the walk (returns -ECANCELED) at the Nth element; 0: never
 * The callbacks read every byte of each payload or result, so ASan sees reads outside the message.
 * The codec must hand on the callback's error unchanged, and a successful walk must end at the end
 * of the message's signature. If sd-bus drops the connection over a message, the next input gets
 * a new one.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "ipc/protocol.h"
#include "ipc/task-codec.h"
#include "tests/fuzz/fuzz.h"
#include "util/macro.h"

/* From the D-Bus specification; sd-bus keeps these private. */
#define HEADER_FLAG_NO_REPLY_EXPECTED 0x1
#define HEADER_FIELD_PATH 1
#define HEADER_FIELD_INTERFACE 2
#define HEADER_FIELD_MEMBER 3
#define HEADER_FIELD_SIGNATURE 8

#define BODY_MAX (64u * 1024u)          /* longer inputs only slow the fuzzer down */
#define HEADER_MAX 256u
/* sd_bus_process() calls before a connection that does not settle counts as a harness bug. */
#define PROCESS_MAX 100000u

/* The connection pair, made lazily and remade when sd-bus closed it. */
static sd_bus *server, *client;

/* What the method handlers need to know about the current input. */
static struct {
        size_t body_size;
        unsigned stop_after;            /* 0: never */
        unsigned n_elements;            /* callback calls so far */
        bool stopped;
        volatile uint64_t sum;          /* of every payload byte, so that each is read */
} state;

static void touch(const void *p, size_t size) {
        const uint8_t *b = p;
        uint64_t s = 0;

        /* A payload lies inside the message body: it cannot be longer. */
        if (size > state.body_size) {
                fprintf(stderr, "fuzz-link: %zu-byte payload in a %zu-byte body\n", size, state.body_size);
                abort();
        }
        if (size > 0 && !p)
                abort();
        for (size_t i = 0; i < size; i++)
                s += b[i];
        state.sum += s;
}

static int next_element(void) {
        state.n_elements++;
        if (state.stop_after > 0 && state.n_elements == state.stop_after) {
                state.stopped = true;
                return -ECANCELED;
        }
        return 0;
}

static int on_task(uint64_t id, const void *payload, size_t size, _unused_ void *userdata) {
        touch(payload, size);
        state.sum += id;
        return next_element();
}

static int on_result(uint64_t id, bool ok, uint64_t run_usec, const void *data, size_t size,
                     _unused_ void *userdata) {
        touch(data, size);
        state.sum += id + ok + run_usec;
        return next_element();
}

static void check_walk(sd_bus_message *m, int r) {
        if (state.stopped != (r == -ECANCELED)) {
                fprintf(stderr, "fuzz-link: callback %s, codec returned %d\n",
                        state.stopped ? "stopped the walk" : "did not stop", r);
                abort();
        }
        if (r >= 0 && sd_bus_message_at_end(m, true) <= 0) {
                fprintf(stderr, "fuzz-link: the codec succeeded short of the end of the message\n");
                abort();
        }
}

static int method_dispatch(sd_bus_message *m, _unused_ void *userdata, _unused_ sd_bus_error *error) {
        uint32_t max_running;

        check_walk(m, task_codec_read_dispatch(m, &max_running, on_task, NULL));
        return 1;
}

static int method_results(sd_bus_message *m, _unused_ void *userdata, _unused_ sd_bus_error *error) {
        check_walk(m, task_codec_read_results(m, on_result, NULL));
        return 1;
}

static const sd_bus_vtable worker_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Dispatch", LINK_DISPATCH_IN, "", method_dispatch, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

static const sd_bus_vtable supervisor_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Results", LINK_RESULTS_IN, "", method_results, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

static void teardown(void) {
        server = sd_bus_flush_close_unref(server);
        client = sd_bus_flush_close_unref(client);
}

/* Processes BUS until it has nothing left to do and nothing waits in its socket. Returns
 * negative if the connection is gone. */
static int process_until_idle(sd_bus *bus) {
        for (unsigned i = 0; i < PROCESS_MAX; i++) {
                int r, n = 0;

                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (sd_bus_is_open(bus) <= 0)
                        return -ENOTCONN;
                if (r > 0)
                        continue;
                /* A 0 is not idle while bytes still wait in the socket: whatever sd-bus reads per
                 * call (its server mode has had quirks there), the message must be taken whole. */
                if (ioctl(sd_bus_get_fd(bus), FIONREAD, &n) < 0)
                        return -errno;
                if (n == 0)
                        return 0;
        }
        fprintf(stderr, "fuzz-link: sd-bus connection does not settle\n");
        abort();
}

static int on_ping_reply(sd_bus_message *m, void *userdata, _unused_ sd_bus_error *error) {
        *(int *) userdata = sd_bus_message_is_method_error(m, NULL) ? -EPROTO : 1;
        return 1;
}

static sd_bus *bus_make(int fd, bool is_server) {
        sd_bus *bus = NULL;

        if (sd_bus_new(&bus) < 0)
                abort();
        if (sd_bus_set_fd(bus, fd, fd) < 0)
                abort();
        if (is_server) {
                if (sd_bus_set_server(bus, 1, SD_ID128_MAKE(6d,2b,0e,8a,41,c7,4f,93,a0,5e,1d,77,c3,92,b8,14)) < 0 ||
                    sd_bus_add_object_vtable(bus, NULL, WORKER_OBJECT_PATH, WORKER_INTERFACE,
                                             worker_vtable, NULL) < 0 ||
                    sd_bus_add_object_vtable(bus, NULL, SUPERVISOR_OBJECT_PATH, SUPERVISOR_INTERFACE,
                                             supervisor_vtable, NULL) < 0)
                        abort();
        }
        if (sd_bus_start(bus) < 0)
                abort();
        return bus;
}

static void setup(void) {
        static bool registered;
        int fds[2], done = 0;

        if (server && client && sd_bus_is_open(server) > 0 && sd_bus_is_open(client) > 0)
                return;
        teardown();
        if (!registered) {
                atexit(teardown);
                registered = true;
        }

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) < 0)
                abort();
        server = bus_make(fds[0], true);        /* each bus owns its fd from here on */
        client = bus_make(fds[1], false);

        /* The SASL handshake, finished by a warm-up call that the server answers itself. */
        if (sd_bus_call_method_async(client, NULL, NULL, "/", "org.freedesktop.DBus.Peer", "Ping",
                                     on_ping_reply, &done, "") < 0)
                abort();
        for (unsigned i = 0; i < PROCESS_MAX && done == 0; i++)
                if (sd_bus_process(server, NULL) < 0 || sd_bus_process(client, NULL) < 0)
                        break;
        if (done <= 0) {
                fprintf(stderr, "fuzz-link: cannot set up the connection\n");
                abort();
        }
}

static void put_u32(uint8_t *p, uint32_t v) {
        p[0] = v & 0xff;
        p[1] = (v >> 8) & 0xff;
        p[2] = (v >> 16) & 0xff;
        p[3] = (v >> 24) & 0xff;
}

static size_t align8(uint8_t *buf, size_t n) {
        while (n % 8 != 0)
                buf[n++] = 0;
        return n;
}

/* Appends one header field (code, variant of TYPE: 'o', 's' or 'g') at N, 8-aligned. */
static size_t put_field(uint8_t *buf, size_t n, uint8_t code, char type, const char *value) {
        size_t len = strlen(value);

        n = align8(buf, n);
        buf[n++] = code;
        buf[n++] = 1;
        buf[n++] = (uint8_t) type;
        buf[n++] = 0;
        if (type == 'g')
                buf[n++] = (uint8_t) len;
        else {
                put_u32(buf + n, (uint32_t) len);       /* 4-aligned already */
                n += 4;
        }
        memcpy(buf + n, value, len + 1);
        return n + len + 1;
}

/* A little-endian method call without reply, of BODY_SIZE bytes whose header is written to BUF.
 * Returns the header's length, 8-aligned. */
static size_t build_header(uint8_t *buf, bool results, size_t body_size) {
        static uint32_t serial = 0x10000;
        size_t n;

        if (++serial == 0)
                serial = 1;
        buf[0] = 'l';
        buf[1] = SD_BUS_MESSAGE_METHOD_CALL;
        buf[2] = HEADER_FLAG_NO_REPLY_EXPECTED;
        buf[3] = 1;                             /* protocol version */
        put_u32(buf + 4, (uint32_t) body_size);
        put_u32(buf + 8, serial);
        n = 16;                                 /* after the header fields' array length, at 12 */
        n = put_field(buf, n, HEADER_FIELD_PATH, 'o', results ? SUPERVISOR_OBJECT_PATH : WORKER_OBJECT_PATH);
        n = put_field(buf, n, HEADER_FIELD_INTERFACE, 's', results ? SUPERVISOR_INTERFACE : WORKER_INTERFACE);
        n = put_field(buf, n, HEADER_FIELD_MEMBER, 's', results ? "Results" : "Dispatch");
        n = put_field(buf, n, HEADER_FIELD_SIGNATURE, 'g', results ? LINK_RESULTS_IN : LINK_DISPATCH_IN);
        put_u32(buf + 12, (uint32_t) (n - 16)); /* without the padding after the last field */
        return align8(buf, n);
}

/* Writes the message to the client's socket, letting the server read when the socket is full. */
static int send_raw(const uint8_t *buf, size_t size) {
        int fd = sd_bus_get_fd(client);

        if (fd < 0)
                return fd;
        for (unsigned i = 0; size > 0; i++) {
                ssize_t k;
                int r;

                if (i >= PROCESS_MAX)
                        return -EAGAIN;
                k = send(fd, buf, size, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                return -errno;
                        r = process_until_idle(server);
                        if (r < 0)
                                return r;
                        continue;
                }
                buf += k;
                size -= (size_t) k;
        }
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static uint8_t msg[HEADER_MAX + BODY_MAX];
        size_t body_size, header_size;
        bool results;

        if (size < 1 || size - 1 > BODY_MAX)
                return 0;
        setup();

        results = data[0] & 1;
        body_size = size - 1;
        state.body_size = body_size;
        state.stop_after = data[0] >> 1;
        state.n_elements = 0;
        state.stopped = false;

        header_size = build_header(msg, results, body_size);
        if (body_size > 0)
                memcpy(msg + header_size, data + 1, body_size);

        if (send_raw(msg, header_size + body_size) < 0 ||
            process_until_idle(server) < 0 ||
            process_until_idle(client) < 0)
                /* sd-bus hung up over this message: the next input gets a new connection. */
                teardown();
        return 0;
}
