/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/auth.h"
#include "daemon/bus-api.h"
#include "daemon/manager.h"
#include "daemon/peer.h"
#include "ipc/link.h"
#include "util/log.h"
#include "util/macro.h"

/* Enough for every local client at once; past it a new one is turned away, not the old ones. */
#define PEERS_MAX 1024u
/* What one user without control rights may hold of them, so that no user locks out the others;
 * and what is kept beyond PEERS_MAX for those with control rights, whom nobody locks out. */
#define PEERS_PER_UID_MAX 64u
#define PEERS_RESERVED 64u
/* A connection that has not completed its handshake by then is closed. */
#define PEER_HANDSHAKE_USEC (5 * USEC_PER_SEC)
/* Replies and signals queued for a peer that does not read them: past this many, it is
 * disconnected (as dbus-daemon does past max_outgoing_bytes). The kernel takes megabytes before
 * anything queues in apiaryd at all, so a client that reads never gets near it. */
#define PEER_QUEUED_MAX 1024u
/* Accepting failed (out of descriptors, say): wait this long, doubling, before trying again. */
#define ACCEPT_RETRY_USEC (100 * USEC_PER_MSEC)
#define ACCEPT_RETRY_MAX_USEC (5 * USEC_PER_SEC)
/* How long apiaryd's exit waits for peers to read what it still has for them. */
#define PEER_FLUSH_USEC (1 * USEC_PER_SEC)

/* Writes what is queued for the peer until DEADLINE (CLOCK_MONOTONIC) at most: a peer that does
 * not read must not hold apiaryd's exit forever, as sd_bus_flush() would. What it sends meanwhile
 * is answered as usual (apiaryd is stopping: tasks are refused). */
static void peer_flush_until(Peer *p, usec_t deadline) {
        uint64_t n;
        int r;

        while (sd_bus_get_n_queued_write(p->bus, &n) >= 0 && n > 0) {
                usec_t now = now_usec(CLOCK_MONOTONIC);

                if (now >= deadline)
                        return;
                r = sd_bus_process(p->bus, NULL);
                if (r < 0)
                        return;
                if (r == 0 && sd_bus_wait(p->bus, deadline - now) < 0)
                        return;
        }
}

static void peer_free(Peer *p) {
        if (!p)
                return;
        if (p->bus) {
                (void) sd_bus_detach_event(p->bus);
                /* Nothing is flushed here: see peer_flush_until(). */
                p->bus = sd_bus_close_unref(p->bus);
        }
        auth_caller_free(p->caller);
        sd_event_source_disable_unref(p->handshake_source);
        sd_event_source_disable_unref(p->deadline_source);
        free(p);
}

Peer *peer_find(Manager *m, sd_bus *bus) {
        return m->peers ? g_hash_table_lookup(m->peers, bus) : NULL;
}

static int set_subscribed(sd_bus_message *msg, Manager *m, bool b) {
        Peer *p = peer_find(m, sd_bus_message_get_bus(msg));

        if (p)
                p->subscribed = b;
        return sd_bus_reply_method_return(msg, NULL);
}

int bus_method_subscribe(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return set_subscribed(msg, userdata, true);
}

int bus_method_unsubscribe(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return set_subscribed(msg, userdata, false);
}

static int on_peer_disconnected(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Peer *p = userdata;
        Manager *m = p->manager;

        if (!m->peer_source)
                return 0;       /* peer_server_stop() is closing them all, this one included */
        log_debug("Private connection closed.");
        /* Its tasks run on; what they send it is dropped. */
        g_hash_table_remove(m->peers, p->bus);
        return 0;
}

/*
 * sd-bus (as of systemd 252) as a server may leave the handshake unfinished: a client's BEGIN,
 * and the call right behind it, read while our OK was still being written, wait in its buffer
 * with the socket quiet, and nothing wakes it up again (systemd#24875). So until the handshake
 * is done, after each loop iteration that did something, let it go on where it stopped, then
 * dispatch what it had buffered. No wakeups of our own: this runs only after other events.
 */
static int on_handshake(sd_event_source *s, void *userdata) {
        Peer *p = userdata;
        /* A Disconnected callback run from here frees P: keep what we touch after it. */
        _cleanup_(sd_event_source_unrefp) sd_event_source *self = sd_event_source_ref(s);
        _cleanup_(sd_bus_unrefp) sd_bus *bus = sd_bus_ref(p->bus);
        int r;

        do
                r = sd_bus_process(bus, NULL);
        while (r > 0);
        if (r < 0 || sd_bus_is_ready(bus) > 0)
                (void) sd_event_source_set_enabled(self, SD_EVENT_OFF);
        return 0;
}

static int on_handshake_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        Peer *p = userdata;

        p->deadline_source = sd_event_source_disable_unref(p->deadline_source);
        if (sd_bus_is_ready(p->bus) > 0)
                return 0;
        log_notice("Closing %s: no handshake within %s.", p->caller->label,
                   format_timespan((char[FORMAT_TIMESPAN_MAX]) {}, FORMAT_TIMESPAN_MAX, PEER_HANDSHAKE_USEC));
        g_hash_table_remove(p->manager->peers, p->bus);
        return 0;
}

/* Before each message a peer sends is dispatched: one that does not read what it is sent is cut
 * off, before it makes apiaryd queue more. */
static int peer_filter(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Peer *p = userdata;
        uint64_t n;

        if (!link_queue_exceeded(p->bus, PEER_QUEUED_MAX, &n))
                return 0;
        log_warning("Disconnecting %s: it does not read its replies (%" PRIu64 " messages queued for it).",
                    p->caller->label, n);
        sd_bus_close(p->bus);   /* its Disconnected message frees it */
        return 1;               /* and this message is not handled */
}

/*
 * The private socket serves only callers that may submit or control. sd-bus reads each message
 * whole (up to its 128 MiB) before apiaryd sees any of it, so a caller that could do nothing with
 * a call must not get to send one: it is turned away before the handshake, with the REJECTED an
 * authentication failure gets (sd-bus clients see EPERM), and reads the state on the bus, where
 * the bus daemon bounds what it buffers for it.
 */
static int peer_check_admission(Manager *m, const Caller *c, int fd) {
        static const char rejected[] = "REJECTED EXTERNAL\r\n";

        if (auth_caller_may_submit(m, c) || auth_caller_may_control(m, c))
                return 0;
        log_notice("Refusing %s: it may neither submit tasks nor control (SubmitUsers=, SubmitGroups=, "
                   "ControlUsers=, ControlGroups=); it can read the state on the bus.", c->label);
        (void) send(fd, rejected, strlen(rejected), MSG_DONTWAIT | MSG_NOSIGNAL);
        return -EACCES;
}

/* Whether a connection of C may be taken now: see PEERS_MAX and PEERS_PER_UID_MAX. */
static int peer_check_limits(Manager *m, const Caller *c) {
        unsigned total = g_hash_table_size(m->peers), mine = 0;
        GHashTableIter it;
        gpointer v;

        if (auth_caller_may_control(m, c)) {
                if (total < PEERS_MAX + PEERS_RESERVED)
                        return 0;
                log_warning("Refusing %s: %u connections are open already.", c->label, total);
                return -EUSERS;
        }
        if (total >= PEERS_MAX) {
                log_warning("Refusing %s: %u connections are open already.", c->label, total);
                return -EUSERS;
        }
        g_hash_table_iter_init(&it, m->peers);
        while (g_hash_table_iter_next(&it, NULL, &v))
                if (((Peer *) v)->caller->uid == c->uid)
                        mine++;
        if (mine >= PEERS_PER_UID_MAX) {
                log_warning("Refusing %s: UID %u has %u connections open already.", c->label, (unsigned) c->uid,
                            mine);
                return -EUSERS;
        }
        return 0;
}

static int peer_new(Manager *m, int fd) {
        _cleanup_(closep) int fd_close = fd;
        Peer *p;
        int r;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->manager = m;
        p->id = ++m->next_peer_id;

        /* Who connected, as of now: what it does later (exec a setgid binary, say) changes nothing. */
        r = auth_caller_from_socket(fd, p->id, &p->caller);
        if (r < 0)
                goto fail;
        r = peer_check_admission(m, p->caller, fd);
        if (r < 0)
                goto fail;
        r = peer_check_limits(m, p->caller);
        if (r < 0)
                goto fail;

        r = sd_bus_new(&p->bus);
        if (r < 0)
                goto fail;
        r = sd_bus_set_fd(p->bus, fd, fd);
        if (r < 0)
                goto fail;
        fd_close = -EBADF;              /* the bus owns it now */
        r = sd_bus_set_server(p->bus, true, m->link_id);
        if (r < 0)
                goto fail;
        r = sd_bus_set_description(p->bus, "private");
        if (r < 0)
                goto fail;
        r = sd_bus_set_exit_on_disconnect(p->bus, false);
        if (r < 0)
                goto fail;
        r = bus_api_register(m, p->bus);
        if (r < 0)
                goto fail;
        r = sd_bus_match_signal(p->bus, NULL, "org.freedesktop.DBus.Local", NULL, "org.freedesktop.DBus.Local",
                                "Disconnected", on_peer_disconnected, p);
        if (r < 0)
                goto fail;
        r = sd_bus_add_filter(p->bus, NULL, peer_filter, p);
        if (r < 0)
                goto fail;
        r = sd_bus_start(p->bus);
        if (r < 0)
                goto fail;
        r = sd_bus_attach_event(p->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                goto fail;

        /* See on_handshake(). */
        r = sd_event_add_post(m->event, &p->handshake_source, on_handshake, p);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(m->event, &p->deadline_source, CLOCK_MONOTONIC, PEER_HANDSHAKE_USEC,
                                       USEC_PER_MSEC, on_handshake_deadline, p);
        if (r < 0)
                goto fail;

        g_hash_table_insert(m->peers, p->bus, p);
        return 0;

fail:
        peer_free(p);
        return r;
}

static int on_accept_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        m->peer_retry_source = sd_event_source_disable_unref(m->peer_retry_source);
        (void) sd_event_source_set_enabled(m->peer_source, SD_EVENT_ON);
        return 0;
}

static int on_connection(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        int nfd, r;

        nfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (nfd < 0) {
                if (IN_SET(errno, EAGAIN, EINTR, ECONNABORTED))
                        return 0;
                /* Out of descriptors or memory: the connection stays in the backlog, and the socket
                 * stays readable. Stop listening for a while, instead of spinning on it. */
                m->peer_retry_usec = m->peer_retry_usec == 0 ? ACCEPT_RETRY_USEC :
                                     MIN(m->peer_retry_usec * 2, ACCEPT_RETRY_MAX_USEC);
                log_warning_errno(errno, "Failed to accept a private connection, trying again in %s: %m",
                                  format_timespan((char[FORMAT_TIMESPAN_MAX]) {}, FORMAT_TIMESPAN_MAX,
                                                  m->peer_retry_usec));
                r = sd_event_add_time_relative(m->event, &m->peer_retry_source, CLOCK_MONOTONIC, m->peer_retry_usec,
                                               USEC_PER_MSEC, on_accept_retry, m);
                if (r >= 0)
                        (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
                return 0;
        }
        m->peer_retry_usec = 0;

        r = peer_new(m, nfd);
        if (r < 0 && !IN_SET(r, -EUSERS, -EACCES))      /* those said why */
                log_warning_errno(r, "Failed to set up a private connection: %m");
        return 0;
}

/* Makes the socket's directory if missing, e.g. /run/apiary outside systemd's RuntimeDirectory=. */
static int make_parent(const char *path) {
        _cleanup_(freep) char *dir = strdup(path);
        char *slash;

        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                return 0;
        *slash = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int peer_server_start(Manager *m) {
        _cleanup_(freep) char *path = NULL;
        _cleanup_(closep) int fd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int r;

        errno = 0;
        path = config_private_socket(m->config);
        if (!path)
                return errno == ENOMEM ? log_oom() : 0;

        m->peers = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, (GDestroyNotify) peer_free);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(errno, "Failed to create the private socket: %m");
        r = make_parent(path);
        if (r < 0)
                return log_error_errno(r, "Failed to create the directory of %s: %m", path);

        /* We own the bus name by now, so a socket left here is a dead apiaryd's. */
        (void) unlink(path);
        memcpy(sa.sun_path, path, strlen(path) + 1);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return log_error_errno(errno, "Failed to bind the private socket %s: %m", path);
        m->peer_path = TAKE_PTR(path);
        /* Anyone may connect; each call is authorized from the caller's credentials. */
        if (chmod(m->peer_path, 0666) < 0)
                return log_error_errno(errno, "Failed to make %s accessible: %m", m->peer_path);
        if (listen(fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "Failed to listen on %s: %m", m->peer_path);

        r = sd_event_add_io(m->event, &m->peer_source, fd, EPOLLIN, on_connection, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch %s: %m", m->peer_path);
        r = sd_event_source_set_io_fd_own(m->peer_source, true);
        if (r < 0)
                return log_error_errno(r, "Failed to watch %s: %m", m->peer_path);
        fd = -EBADF;

        log_debug("Serving the API privately on %s.", m->peer_path);
        return 0;
}

void peer_server_stop(Manager *m) {
        m->peer_source = sd_event_source_disable_unref(m->peer_source);
        m->peer_retry_source = sd_event_source_disable_unref(m->peer_retry_source);
        if (m->peer_path) {
                (void) unlink(m->peer_path);
                free(m->peer_path);
                m->peer_path = NULL;
        }
        if (m->peers) {
                usec_t deadline = now_usec(CLOCK_MONOTONIC) + PEER_FLUSH_USEC;
                GHashTableIter it;
                gpointer peer;

                /* The replies of a stop (Stopping errors, the last TaskFinished) go out to every
                 * peer that reads them, within PEER_FLUSH_USEC for all of them together. */
                g_hash_table_iter_init(&it, m->peers);
                while (g_hash_table_iter_next(&it, NULL, &peer))
                        peer_flush_until(peer, deadline);
                g_hash_table_destroy(m->peers);
                m->peers = NULL;
        }
}
