/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Whole-daemon test harness: a private dbus-daemon, the real apiaryd on a config written to a
 * temporary directory, a NOTIFY_SOCKET the test reads, and an sd-bus client. Every helper fails
 * the current cmocka test on error, so tests read as a list of expectations.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "util/time-util.h"

#define TEST_TIMEOUT_USEC (20 * USEC_PER_SEC)

typedef struct TestBus {
        pid_t pid;
        char *dir;
        char *address;
} TestBus;

typedef struct TestDaemon {
        pid_t pid;
        int pidfd;
        char *dir;
        char *config_path;
        int notify_fd;
        char **notify;          /* every notify datagram received so far, NULL-terminated */
        size_t n_notify;
        sd_bus *bus;            /* client connection on the test bus */
        int exit_status;        /* after test_daemon_wait(): exit code, or 128+signal */
        void *results;          /* GHashTable: task id → TestResult, from TaskFinished */
        uint64_t n_finished;    /* TaskFinished signals received, duplicates included */
        uint64_t n_batches;     /* TasksFinished signals received */
        bool private;           /* bus is a connection to apiaryd's private socket */
        char *log_path;         /* test_daemon_start_logged(): apiaryd's stderr, its workers' included */
        pid_t tee_pid;
} TestDaemon;

/* One TaskFinished, as received. */
typedef struct TestResult {
        bool ok;
        void *data;             /* the result, or the reason (NUL-terminated) */
        size_t size;
        unsigned count;         /* how many TaskFinished came for this id: must be 1 */
        uint64_t order;         /* how many other tasks' TaskFinished came before this one's */
} TestResult;

/* The usual fixture: a fresh bus per test, and the daemon the test starts on it. */
typedef struct TestFixture {
        TestBus bus;
        TestDaemon daemon;
} TestFixture;

/* cmocka setup/teardown for a TestFixture; teardown fails if apiaryd did not stop cleanly. */
int test_fixture_setup(void **state);
int test_fixture_teardown(void **state);

/* Starts a private dbus-daemon whose policy lets everyone own and call everything. */
void test_bus_start(TestBus *b);
void test_bus_stop(TestBus *b);

/* Writes CONFIG to DIR/apiary.conf, replacing @TEST_PLUGINS@ and @PLUGINS@ with the build's plugin
 * directories, starts apiaryd on the bus and, if WAIT_READY, waits for READY=1. */
void test_daemon_start(TestDaemon *d, const TestBus *b, const char *config, bool wait_ready);
/* The same, with apiaryd's stderr (and so its workers' and plugins') also copied to a file, for
 * tests that check what is logged. */
void test_daemon_start_logged(TestDaemon *d, const TestBus *b, const char *config, bool wait_ready);
/* What apiaryd logged so far (test_daemon_start_logged() only); g_free() it. */
char *test_daemon_log(TestDaemon *d);
/* Waits until apiaryd logs a line that contains NEEDLE; returns that line (g_free() it). Fails the
 * test after TIMEOUT. Event driven (inotify on the log file). */
char *test_daemon_wait_log(TestDaemon *d, const char *needle, usec_t timeout);
/* The same, but returns NULL after TIMEOUT. */
char *test_daemon_find_log(TestDaemon *d, const char *needle, usec_t timeout);
/* Rewrites apiaryd's configuration file (same substitutions), for reload tests. */
void test_daemon_write_config(TestDaemon *d, const char *config);
/* Writes the drop-in NAME (e.g. "50-x.conf") of apiaryd's configuration (same substitutions), or
 * removes it if CONFIG is NULL. */
void test_daemon_write_dropin(TestDaemon *d, const char *name, const char *config);
/* Sends SIG and waits (bounded) for apiaryd to exit, and for its log to be complete (with
 * test_daemon_start_logged()); returns d->exit_status. */
int test_daemon_kill_and_wait(TestDaemon *d, int sig);
/* Waits (bounded) for apiaryd to exit by itself; returns d->exit_status. */
int test_daemon_wait(TestDaemon *d);
/* Tears everything down, whatever state the test left it in. A running apiaryd gets SIGTERM and
 * must exit 0: returns -1 if it did not (a leak or error under APIARY_TEST_WRAPPER, say). */
int test_daemon_stop(TestDaemon *d);

/* Replaces d->bus with a peer-to-peer connection to apiaryd's private socket at PATH: every
 * helper below then talks to apiaryd there, without the bus daemon. */
void test_daemon_connect_private(TestDaemon *d, const char *path);

/* Waits for a notify message that contains the line LINE (e.g. "READY=1"); returns it. */
const char *test_daemon_wait_notify(TestDaemon *d, const char *prefix, usec_t timeout);
/* Returns the last notify message with a line starting PREFIX, or NULL; does not wait. */
const char *test_daemon_find_notify(TestDaemon *d, const char *prefix);

/* Object paths of the public API. */
char *test_pool_path(const char *pool);
char *test_worker_path(const char *pool, unsigned slot);

/* Property getters on org.apiary.Apiary1; the returned strings are malloc()ed. */
char *test_get_string(TestDaemon *d, const char *path, const char *interface, const char *property);
uint32_t test_get_u32(TestDaemon *d, const char *path, const char *interface, const char *property);
uint64_t test_get_u64(TestDaemon *d, const char *path, const char *interface, const char *property);
char **test_get_object_paths(TestDaemon *d, const char *path, const char *interface, const char *property);

char *test_pool_state(TestDaemon *d, const char *pool);
char *test_worker_state(TestDaemon *d, const char *pool, unsigned slot);
pid_t test_worker_pid(TestDaemon *d, const char *pool, unsigned slot);

/* Processes bus traffic until PRED(d, userdata) is true; fails the test after TIMEOUT. Event
 * driven: it wakes on PropertiesChanged signals, not on a timer. */
typedef bool (*TestPredicate)(TestDaemon *d, const void *userdata);
void test_wait_until(TestDaemon *d, TestPredicate pred, const void *userdata, usec_t timeout, const char *what);

/* Waits until slot SLOT of POOL is ready again in a process other than OLD_PID (which must then be
 * gone), and returns its PID. */
pid_t test_wait_worker_replaced(TestDaemon *d, const char *pool, unsigned slot, pid_t old_pid);

/* Waits until POOL's State is STATE. */
void test_wait_pool_state(TestDaemon *d, const char *pool, const char *state);

/* Manager.Run(POOL, DATA, {timeout: TIMEOUT_OPT if not 0}). Returns 0 with the result (free()),
 * or a negative errno with ERROR set to the D-Bus error. */
int test_run(TestDaemon *d, const char *pool, const void *data, size_t size, usec_t timeout_opt, void **ret,
             size_t *ret_size, sd_bus_error *error);
/* Run(POOL, TEXT), with the "timeout" option TIMEOUT_OPT if it is not 0: returns the result
 * (NUL-terminated, g_free() it), or fails the test naming the error. */
char *test_run_text(TestDaemon *d, const char *pool, const char *text, usec_t timeout_opt);
/* Run(POOL, TEXT) must fail: with ERROR_NAME (any name if NULL), and a message that contains
 * MESSAGE. Returns the message (g_free() it); fails the test otherwise. */
char *test_run_refused(TestDaemon *d, const char *pool, const char *text, usec_t timeout_opt, const char *error_name,
                       const char *message);

/* Manager.Submit; fails the test on error. */
uint64_t test_submit(TestDaemon *d, const char *pool, const void *data, size_t size);
/* Manager.SubmitBatch of N payloads; ids into RET_IDS (n of them). Fails the test on error. */
void test_submit_batch(TestDaemon *d, const char *pool, char **payloads, size_t n, uint64_t *ret_ids);
/* The same with the option batch-results: their ends come in TasksFinished signals. */
void test_submit_batch_results(TestDaemon *d, const char *pool, char **payloads, size_t n, uint64_t *ret_ids);
/* ... with the option "priority" (a byte). */
void test_submit_batch_priority(TestDaemon *d, const char *pool, char **payloads, size_t n, unsigned priority,
                                uint64_t *ret_ids);

/* Starts recording TaskFinished signals into d->results. */
void test_collect_results(TestDaemon *d);
/* Waits until N distinct tasks have finished. */
void test_wait_results(TestDaemon *d, size_t n);
const TestResult *test_result(TestDaemon *d, uint64_t id);
uint64_t test_get_manager_u64(TestDaemon *d, const char *property);

/* Runs tests/client.py (python3-dbus) with ARGS, as UID if it is not 0. Returns its exit status
 * and its output (stdout, without the trailing newline) in *RET_OUTPUT. Skips the calling test
 * unless run as root. */
int test_client(const TestBus *b, unsigned uid, char **ret_output, const char *const *args);
/* The same on ADDRESS; "peer:unix:path=..." makes client.py connect peer-to-peer. */
int test_client_at(const char *address, unsigned uid, char **ret_output, const char *const *args);

/* A private libdbus connection to the bus at ADDRESS, registered (Hello); fails the test on error. */
typedef struct DBusConnection DBusConnection;
DBusConnection *test_libdbus_connect(const char *address);
void test_libdbus_disconnect(DBusConnection *c);

/* Waits (bounded: the test fails) for our child PID to exit, reading the notify socket of the
 * running apiaryd meanwhile, as systemd would: apiaryd blocks on a full one (a reload's READY=1).
 * Returns its exit status, or 128 + the signal that killed it. */
int test_wait_child(pid_t pid, usec_t timeout);

/* Waits for a process that is not our child to be gone (pidfd). Returns true if it went. */
bool test_wait_pid_gone(pid_t pid, usec_t timeout);
bool test_pid_alive(pid_t pid);

/* What /proc says about a process: its children (g_free() the array), its state letter ('R', 'S',
 * 'Z', ...; 0 if it is gone), its open descriptors, its resident memory. */
pid_t *test_proc_children(pid_t pid, size_t *ret_n);
char test_proc_state(pid_t pid);
unsigned test_proc_count_fds(pid_t pid);
uint64_t test_proc_rss_kib(pid_t pid);

/* Whether apiaryd runs under $APIARY_TEST_WRAPPER (valgrind, say), and whether this build has
 * AddressSanitizer: tests scale their loads down, or skip what cannot work there. */
bool test_under_wrapper(void);
bool test_under_asan(void);
/* $NAME as a number, or DEF if it is unset or empty; fails the test if it is not a number. */
uint64_t test_env_u64(const char *name, uint64_t def);
