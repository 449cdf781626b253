/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <cmocka.h>
#include <glib.h>
#include <nats/nats.h>

#include "tests/nats.h"
#include "util/macro.h"

#define NATS_SERVER "/usr/sbin/nats-server"
#define NATS_START_TIMEOUT_USEC (20 * USEC_PER_SEC)

bool test_nats_available(void) {
        return access(NATS_SERVER, X_OK) == 0;
}

/* A port nothing on 127.0.0.1 listens on now (the kernel's pick for port 0). */
static unsigned free_port(void) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &a, &len), 0);
        close(fd);
        return ntohs(a.sin_port);
}

static void node_write_config(TestNats *n, unsigned i) {
        TestNatsNode *node = &n->nodes[i];
        g_autoptr(GString) c = g_string_new(NULL);

        g_string_append_printf(c,
                               "server_name: n%u\n"
                               "listen: 127.0.0.1:%u\n"
                               "jetstream { store_dir: \"%s\" }\n",
                               i, node->port, node->store);
        if (n->extra)
                g_string_append_printf(c, "%s\n", n->extra);
        if (n->n > 1) {
                g_string_append_printf(c, "cluster {\n  name: apiary-test\n  listen: 127.0.0.1:%u\n  routes: [\n",
                                       node->cluster_port);
                for (unsigned j = 0; j < n->n; j++)
                        if (j != i)
                                g_string_append_printf(c, "    nats-route://127.0.0.1:%u\n", n->nodes[j].cluster_port);
                g_string_append(c, "  ]\n}\n");
        }
        assert_true(g_file_set_contents(node->config, c->str, -1, NULL));
}

static void node_spawn(TestNatsNode *node) {
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(node->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                execl(NATS_SERVER, "nats-server", "-c", node->config, NULL);
                _exit(127);
        }
        node->pid = pid;
}

/* Connects to node I, or returns NULL while it does not take connections. */
static natsConnection *node_connect(TestNats *n, unsigned i) {
        g_autofree char *url = g_strdup_printf("nats://127.0.0.1:%u", n->nodes[i].port);
        natsConnection *nc = NULL;
        natsOptions *o = NULL;

        if (natsOptions_Create(&o) != NATS_OK)
                return NULL;
        (void) natsOptions_SetURL(o, url);
        (void) natsOptions_SetTimeout(o, 500);
        (void) natsOptions_SetAllowReconnect(o, false);
        if (natsConnection_Connect(&nc, o) != NATS_OK)
                nc = NULL;
        natsOptions_Destroy(o);
        return nc;
}

/* Whether node I answers JetStream's account info: it runs JetStream and, in a cluster, knows a
 * meta leader. */
static bool node_jetstream_ready(TestNats *n, unsigned i) {
        natsConnection *nc = node_connect(n, i);
        jsAccountInfo *ai = NULL;
        jsOptions o;
        jsCtx *js = NULL;
        jsErrCode jerr = 0;
        bool ok = false;

        if (!nc)
                return false;
        jsOptions_Init(&o);
        o.Wait = 500;
        if (natsConnection_JetStream(&js, nc, &o) == NATS_OK && js_GetAccountInfo(&ai, js, NULL, &jerr) == NATS_OK)
                ok = true;
        jsAccountInfo_Destroy(ai);
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
        return ok;
}

/* Whether node I's client port takes TCP connections. */
static bool node_port_open(TestNats *n, unsigned i) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                 .sin_port = htons(n->nodes[i].port) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok;

        assert_true(fd >= 0);
        ok = connect(fd, (struct sockaddr *) &a, sizeof(a)) == 0;
        close(fd);
        return ok;
}

static void node_wait_ready(TestNats *n, unsigned i) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + NATS_START_TIMEOUT_USEC;

        while (n->extra && strstr(n->extra, "tls") ? !node_port_open(n, i) : !node_jetstream_ready(n, i)) {
                int status;

                if (waitpid(n->nodes[i].pid, &status, WNOHANG) == n->nodes[i].pid) {
                        g_autofree char *log = NULL;

                        (void) g_file_get_contents(n->nodes[i].log, &log, NULL, NULL);
                        fail_msg("nats-server n%u exited while starting:\n%s", i, strempty(log));
                }
                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        fail_msg("nats-server n%u (port %u) not ready within %ds", i, n->nodes[i].port,
                                 (int) (NATS_START_TIMEOUT_USEC / USEC_PER_SEC));
                /* A test waits on a process it does not control the events of: polling is the
                 * only way to ask JetStream whether it has elected its leader. */
                (void) usleep(20 * 1000);
        }
}

void test_nats_start(TestNats *n, unsigned n_nodes) {
        g_autoptr(GString) servers = g_string_new(NULL);
        const char *extra = n->extra;

        assert_true(n_nodes >= 1 && n_nodes <= TEST_NATS_NODES_MAX);
        *n = (TestNats) { .n = n_nodes, .extra = extra };
        n->dir = g_dir_make_tmp("apiary-nats-XXXXXX", NULL);
        assert_non_null(n->dir);

        for (unsigned i = 0; i < n_nodes; i++) {
                TestNatsNode *node = &n->nodes[i];

                node->port = free_port();
                node->cluster_port = n_nodes > 1 ? free_port() : 0;
                node->store = g_strdup_printf("%s/n%u", n->dir, i);
                node->config = g_strdup_printf("%s/n%u.conf", n->dir, i);
                node->log = g_strdup_printf("%s/n%u.log", n->dir, i);
                g_string_append_printf(servers, "%s127.0.0.1:%u", i ? "," : "", node->port);
        }
        n->servers = g_string_free(g_steal_pointer(&servers), false);

        for (unsigned i = 0; i < n_nodes; i++) {
                node_write_config(n, i);
                node_spawn(&n->nodes[i]);
        }
        for (unsigned i = 0; i < n_nodes; i++)
                node_wait_ready(n, i);
}

void test_nats_kill(TestNats *n, unsigned i) {
        TestNatsNode *node = &n->nodes[i];

        if (node->pid <= 0)
                return;
        (void) kill(node->pid, SIGKILL);
        (void) waitpid(node->pid, NULL, 0);
        node->pid = 0;
}

void test_nats_restart(TestNats *n, unsigned i) {
        test_nats_kill(n, i);
        node_spawn(&n->nodes[i]);
        node_wait_ready(n, i);
}

void test_nats_stop(TestNats *n) {
        for (unsigned i = 0; i < n->n; i++) {
                TestNatsNode *node = &n->nodes[i];

                if (node->pid > 0) {
                        (void) kill(node->pid, SIGTERM);
                        (void) waitpid(node->pid, NULL, 0);
                }
                g_free(node->store);
                g_free(node->config);
                g_free(node->log);
        }
        if (n->dir) {
                g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", n->dir);

                (void) system(cmd);
        }
        g_free(n->dir);
        g_free(n->servers);
        *n = (TestNats) {};
}

char *test_nats_describe(TestNats *n, const char *stream, const char *consumer) {
        for (unsigned i = 0; i < n->n; i++) {
                natsConnection *nc;
                jsStreamInfo *si = NULL;
                jsConsumerInfo *ci = NULL;
                jsCtx *js = NULL;
                jsErrCode jerr = 0;
                char *text = NULL;

                if (n->nodes[i].pid <= 0 || !(nc = node_connect(n, i)))
                        continue;
                if (natsConnection_JetStream(&js, nc, NULL) == NATS_OK &&
                    js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK &&
                    js_GetConsumerInfo(&ci, js, stream, consumer, NULL, &jerr) == NATS_OK)
                        text = g_strdup_printf("%s: %" PRIu64 " messages, leader %s; consumer %s: pending %" PRIu64
                                               ", ack pending %" PRId64 ", redelivered %" PRId64 ", waiting %" PRId64
                                               ", delivered up to %" PRIu64 ", acked up to %" PRIu64 ", leader %s",
                                               stream, si->State.Msgs,
                                               si->Cluster && si->Cluster->Leader ? si->Cluster->Leader : "-",
                                               consumer, ci->NumPending, ci->NumAckPending, ci->NumRedelivered,
                                               ci->NumWaiting, ci->Delivered.Stream, ci->AckFloor.Stream,
                                               ci->Cluster && ci->Cluster->Leader ? ci->Cluster->Leader : "-");
                else
                        text = g_strdup_printf("%s/%s: no answer from node %u (error %d)", stream, consumer, i,
                                               (int) jerr);
                jsConsumerInfo_Destroy(ci);
                jsStreamInfo_Destroy(si);
                jsCtx_Destroy(js);
                natsConnection_Destroy(nc);
                return text;
        }
        return g_strdup_printf("%s/%s: no node answers", stream, consumer);
}

int test_nats_stream_leader(TestNats *n, const char *stream) {
        for (unsigned i = 0; i < n->n; i++) {
                natsConnection *nc;
                jsStreamInfo *si = NULL;
                jsCtx *js = NULL;
                jsErrCode jerr = 0;
                int leader = -1;

                if (n->nodes[i].pid <= 0 || !(nc = node_connect(n, i)))
                        continue;
                if (natsConnection_JetStream(&js, nc, NULL) == NATS_OK &&
                    js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK && si->Cluster && si->Cluster->Leader)
                        (void) sscanf(si->Cluster->Leader, "n%d", &leader);
                if (!si || !si->Cluster)
                        leader = si ? 0 : -1;   /* one node: it leads */
                jsStreamInfo_Destroy(si);
                jsCtx_Destroy(js);
                natsConnection_Destroy(nc);
                if (leader >= 0)
                        return leader;
        }
        return -1;
}
