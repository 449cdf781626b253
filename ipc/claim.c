/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ipc/claim.h"
#include "util/macro.h"

#define LOW(w) ((uint32_t) (w))
#define HIGH(w) ((uint32_t) ((w) >> 32))
#define WORD(consumed, limit) ((uint64_t) (consumed) | ((uint64_t) (limit) << 32))

bool link_claim_start(LinkClaim *c, uint32_t n) {
        uint64_t w = atomic_load_explicit(&c->word, memory_order_acquire);

        for (;;) {
                uint32_t consumed = LOW(w), limit = HIGH(w);

                if (n != consumed || (int32_t) (limit - consumed) <= 0)
                        return false;
                if (atomic_compare_exchange_weak_explicit(&c->word, &w, WORD(consumed + 1, limit),
                                                          memory_order_acq_rel, memory_order_acquire))
                        return true;
        }
}

void link_claim_reset(LinkClaim *c) {
        atomic_store_explicit(&c->word, 0, memory_order_release);
}

void link_claim_allow(LinkClaim *c, uint32_t n) {
        /* Only apiaryd moves the high half: adding there cannot carry into the worker's half. */
        atomic_fetch_add_explicit(&c->word, (uint64_t) n << 32, memory_order_release);
}

uint32_t link_claim_take_back(LinkClaim *c) {
        uint64_t w = atomic_load_explicit(&c->word, memory_order_acquire);

        for (;;) {
                uint32_t consumed = LOW(w);

                if (atomic_compare_exchange_weak_explicit(&c->word, &w, WORD(consumed, consumed),
                                                          memory_order_acq_rel, memory_order_acquire))
                        return consumed;
        }
}

void link_claim_resume(LinkClaim *c, uint32_t next, uint32_t n) {
        /* The worker cannot move a word whose limit is its count: a plain store is safe. */
        atomic_store_explicit(&c->word, WORD(next, next + n), memory_order_release);
}

uint32_t link_claim_consumed(const LinkClaim *c) {
        return LOW(atomic_load_explicit(&((LinkClaim *) c)->word, memory_order_acquire));
}

int link_claim_page_new(LinkClaimPage **ret) {
        _cleanup_(closep) int fd = -EBADF;
        LinkClaimPage *p;
        void *m;

        fd = memfd_create("apiary-claims", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, LINK_CLAIM_PAGE_SIZE) < 0)
                return -errno;
        /* A worker holds the fd too: it must not shrink the page under our mapping (SIGBUS). */
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
                return -errno;
        m = mmap(NULL, LINK_CLAIM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
                return -errno;
        p = malloc(sizeof(*p));
        if (!p) {
                (void) munmap(m, LINK_CLAIM_PAGE_SIZE);
                return -ENOMEM;
        }
        *p = (LinkClaimPage) { .fd = TAKE_FD(fd), .claims = m };
        *ret = p;
        return 0;
}

LinkClaimPage *link_claim_page_free(LinkClaimPage *p) {
        if (!p)
                return NULL;
        (void) munmap(p->claims, LINK_CLAIM_PAGE_SIZE);
        safe_close(p->fd);
        free(p);
        return NULL;
}

int link_claim_map(int fd, uint32_t index, LinkClaim **ret) {
        void *m;

        if (index >= LINK_CLAIMS_PER_PAGE)
                return -EINVAL;
        m = mmap(NULL, LINK_CLAIM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
                return -errno;
        *ret = (LinkClaim *) m + index;
        return 0;
}
