/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Claims: which of the tasks apiaryd sent a worker it has started, in one 64-bit word of memory
 * that both map. With it apiaryd takes back the tasks that wait in a worker's window (behind a long
 * task, while another worker is free) without asking the worker, whose synchronous plugin may be
 * busy in run() for seconds; and neither side can lose the race: a task runs once.
 *
 * The tasks apiaryd sends a worker's process are numbered in order from 0 (mod 2^32). The low half
 * of the word counts the tasks the worker has consumed (started, or skipped after a take-back),
 * the high half how many it may start (the limit). apiaryd raises the limit before it sends; the
 * worker starts task N only if N is the next to consume and under the limit, and counts it in the
 * same compare-and-swap; apiaryd takes back what waits by lowering the limit to the count, in a
 * compare-and-swap too. The worker cannot move a word whose limit is its count, so apiaryd's next
 * send after a take-back simply moves both halves past what it took back (link_claim_resume()),
 * and the worker skips those tasks when it comes to them.
 *
 * The memory is a sealed memfd page of a pool, LINK_CLAIMS_PER_PAGE words: its workers run the
 * same plugin as the same user, and apiaryd believes none of what it reads there beyond that
 * pool's tasks' order.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct LinkClaim {
        _Atomic uint64_t word;
        uint8_t pad[56];                /* a cache line each: workers do not share one */
} LinkClaim;

#define LINK_CLAIM_PAGE_SIZE 4096u
#define LINK_CLAIMS_PER_PAGE (LINK_CLAIM_PAGE_SIZE / sizeof(LinkClaim))

/* The worker's side: whether it may start task N (and it counts as started), or was taken back. */
bool link_claim_start(LinkClaim *c, uint32_t n);

/* apiaryd's side. */
void link_claim_reset(LinkClaim *c);
/* Allows N more tasks, before they are sent. */
void link_claim_allow(LinkClaim *c, uint32_t n);
/* Takes back every task not started yet; returns the number of the first one taken back. */
uint32_t link_claim_take_back(LinkClaim *c);
/* The first send after a take-back: the next task sent is NEXT, and N of them are allowed. */
void link_claim_resume(LinkClaim *c, uint32_t next, uint32_t n);
/* How many tasks the worker has consumed. */
uint32_t link_claim_consumed(const LinkClaim *c);

/* A page of claims: a sealed memfd (its size cannot change under apiaryd) and apiaryd's mapping. */
typedef struct LinkClaimPage {
        int fd;
        LinkClaim *claims;
} LinkClaimPage;

int link_claim_page_new(LinkClaimPage **ret);
LinkClaimPage *link_claim_page_free(LinkClaimPage *p);
/* The worker's side: maps claim INDEX of the page FD. */
int link_claim_map(int fd, uint32_t index, LinkClaim **ret);
