/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * NATS JetStream engines for the shared-pool tests: real nats-server processes on 127.0.0.1,
 * each on ports of its own, with their stores in a temporary directory. One node (R1) or a
 * cluster of three (R3). Nothing listens on any other address. Every helper fails the current
 * cmocka test on error.
 */

#include <stdbool.h>
#include <sys/types.h>

#include "util/time-util.h"

#define TEST_NATS_NODES_MAX 5

typedef struct TestNatsNode {
        pid_t pid;
        unsigned port;          /* clients */
        unsigned cluster_port;  /* routes, in a cluster */
        char *store;
        char *config;
        char *log;
} TestNatsNode;

typedef struct TestNats {
        char *dir;
        unsigned n;
        TestNatsNode nodes[TEST_NATS_NODES_MAX];
        char *servers;          /* 127.0.0.1:P1,127.0.0.1:P2,...: what Source= takes */
        const char *extra;      /* set before test_nats_start(): added to every node's configuration */
} TestNats;

/* Whether nats-server is installed; tests skip without it (CI installs it). */
bool test_nats_available(void);

/* Starts N nodes (1, or 3 for a cluster) and waits until each takes connections and, in a
 * cluster, until JetStream has a meta leader. n->extra (may be NULL) goes into each node's
 * configuration; with TLS in it, readiness is waited for by the port alone. */
void test_nats_start(TestNats *n, unsigned n_nodes);
/* SIGKILLs node I, or starts it again on its ports and store. */
void test_nats_kill(TestNats *n, unsigned i);
void test_nats_restart(TestNats *n, unsigned i);
void test_nats_stop(TestNats *n);

/* For a failing test's output: STREAM's message count and leader, and its CONSUMER's counts. */
char *test_nats_describe(TestNats *n, const char *stream, const char *consumer);
/* The index of the node that leads stream STREAM now, from the engine's API; -1 if none does. */
int test_nats_stream_leader(TestNats *n, const char *stream);
