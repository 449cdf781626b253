/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define sizeof_field(type, member) sizeof(((type *) 0)->member)
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

/* Hands ownership of *ptr out of a _cleanup_ scope: returns the pointer and leaves NULL behind. */
#define TAKE_PTR(ptr)                                   \
        ({                                              \
                __typeof__(ptr) *_pptr_ = &(ptr);       \
                __typeof__(ptr) _ptr_ = *_pptr_;        \
                *_pptr_ = NULL;                         \
                _ptr_;                                  \
        })

#define TAKE_FD(fd)                                     \
        ({                                              \
                int *_pfd_ = &(fd);                     \
                int _fd_ = *_pfd_;                      \
                *_pfd_ = -1;                            \
                _fd_;                                   \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}

/* free() that says so: p = mfree(p). */
static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -1;
}

static inline void closep(int *fd) {
        safe_close(*fd);
}

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)         \
        static inline void func##p(type *p) {           \
                if (*p)                                 \
                        func(*p);                       \
        }

static inline const char *strempty(const char *s) {
        return s ?: "";
}

static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

/* True if X equals any of the following values. */
#define IN_SET(x, first, ...)                                                   \
        ({                                                                      \
                __typeof__(x) _x_ = (x);                                        \
                const __typeof__(x) _set_[] = { first, __VA_ARGS__ };           \
                bool _found_ = false;                                           \
                for (size_t _i_ = 0; _i_ < ELEMENTSOF(_set_); _i_++)            \
                        if (_set_[_i_] == _x_) {                                \
                                _found_ = true;                                 \
                                break;                                          \
                        }                                                       \
                _found_;                                                        \
        })

#include <string.h>
static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

/* Equal strings, or both NULL. */
static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}
