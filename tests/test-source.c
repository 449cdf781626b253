/* SPDX-License-Identifier: MIT */
/*
 * apiary-source on its own, against a real nats-server on 127.0.0.1: the test plays apiaryd on
 * the private link (docs/source-protocol.md) and checks what the engine does with each call:
 * a write answered only once stored, a repeated id stored once, a pull that brings exactly the
 * places asked for, a result that reaches its submitter's helper, a release and a lapsed lease
 * that deliver again (and count it), a renewed lease that does not.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <nats/nats.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "ipc/link.h"
#include "ipc/protocol.h"
#include "ipc/source-protocol.h"
#include "tests/nats.h"
#include "util/macro.h"
#include "util/time-util.h"

#define WAIT_USEC (20 * USEC_PER_SEC)

typedef struct SrcTask {
        char *token, *id, *reply;
        uint64_t timeout_usec;
        unsigned deliveries;
        char *payload;
} SrcTask;

typedef struct SrcResult {
        char *id;
        bool ok;
        char *data;
} SrcResult;

/* One helper, and the test in apiaryd's place on its link. */
typedef struct Src {
        const char *host;
        const char *servers;
        usec_t lease_usec;
        sd_event *event;
        sd_bus *link;
        pid_t pid;
        char *state, *error;
        GPtrArray *tasks;               /* of SrcTask, as they came */
        GPtrArray *results;             /* of SrcResult */
        unsigned n_stats;
        sd_bus_message *reply;          /* of the last call made with src_call() */
} Src;

static TestNats nats;

static void src_task_free(gpointer p) {
        SrcTask *t = p;

        g_free(t->token);
        g_free(t->id);
        g_free(t->reply);
        g_free(t->payload);
        g_free(t);
}

static void src_result_free(gpointer p) {
        SrcResult *r = p;

        g_free(r->id);
        g_free(r->data);
        g_free(r);
}

/* ---- apiaryd's side of the link ---- */

static int on_hello(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Src *s = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        char lease[32];
        uint32_t version;

        assert_true(sd_bus_message_read(m, SOURCE_HELLO_IN, &version) > 0);
        assert_int_equal(version, SOURCE_PROTOCOL_VERSION);
        snprintf(lease, sizeof(lease), "%" PRIu64, s->lease_usec);
        assert_true(sd_bus_message_new_method_return(m, &reply) >= 0);
        assert_true(sd_bus_message_append(reply, SOURCE_HELLO_OUT, 6, SOURCE_SETTING_SERVERS, s->servers,
                                          SOURCE_SETTING_HOST, s->host, SOURCE_SETTING_REPLICAS, "1",
                                          SOURCE_SETTING_LEASE_USEC, lease, SOURCE_SETTING_TIMEOUT_USEC, "3000000",
                                          SOURCE_SETTING_CREDENTIALS, "") >= 0);
        return sd_bus_send(NULL, reply, NULL);
}

static int on_state(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Src *s = userdata;
        const char *state, *err;

        assert_true(sd_bus_message_read(m, SOURCE_STATE_IN, &state, &err) > 0);
        g_free(s->state);
        g_free(s->error);
        s->state = g_strdup(state);
        s->error = g_strdup(err);
        return 1;
}

static int on_tasks(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Src *s = userdata;
        int r;

        assert_true(sd_bus_message_enter_container(m, 'a', "(" SOURCE_TASK ")") > 0);
        while ((r = sd_bus_message_enter_container(m, 'r', SOURCE_TASK)) > 0) {
                SrcTask *t = g_new0(SrcTask, 1);
                const char *token, *id, *reply;
                const void *p;
                size_t n;

                assert_true(sd_bus_message_read(m, "ssstu", &token, &id, &reply, &t->timeout_usec,
                                                &t->deliveries) > 0);
                assert_true(sd_bus_message_read_array(m, 'y', &p, &n) >= 0);
                assert_true(sd_bus_message_exit_container(m) >= 0);
                t->token = g_strdup(token);
                t->id = g_strdup(id);
                t->reply = g_strdup(reply);
                t->payload = g_strndup(p, n);
                g_ptr_array_add(s->tasks, t);
        }
        assert_true(r >= 0);
        return 1;
}

static int on_results(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Src *s = userdata;
        int r;

        assert_true(sd_bus_message_enter_container(m, 'a', "(" SOURCE_RESULT ")") > 0);
        while ((r = sd_bus_message_enter_container(m, 'r', SOURCE_RESULT)) > 0) {
                SrcResult *res = g_new0(SrcResult, 1);
                const char *id;
                int ok;
                const void *p;
                size_t n;

                assert_true(sd_bus_message_read(m, "sb", &id, &ok) > 0);
                assert_true(sd_bus_message_read_array(m, 'y', &p, &n) >= 0);
                assert_true(sd_bus_message_exit_container(m) >= 0);
                res->id = g_strdup(id);
                res->ok = ok;
                res->data = g_strndup(p, n);
                g_ptr_array_add(s->results, res);
        }
        assert_true(r >= 0);
        return 1;
}

static int on_stats(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Src *s = userdata;

        s->n_stats++;
        return 1;
}

static const sd_bus_vtable supervisor_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Hello", SOURCE_HELLO_IN, SOURCE_HELLO_OUT, on_hello, 0),
        SD_BUS_METHOD("State", SOURCE_STATE_IN, NULL, on_state, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_METHOD("Tasks", SOURCE_TASKS_IN, NULL, on_tasks, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_METHOD("Results", SOURCE_RESULTS_IN, NULL, on_results, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_METHOD("Stats", SOURCE_STATS_IN, NULL, on_stats, SD_BUS_VTABLE_METHOD_NO_REPLY),
        SD_BUS_VTABLE_END
};

static void src_start(Src *s, const char *host, const char *servers, usec_t lease_usec) {
        const char *path = getenv("APIARY_SOURCE_PATH");
        char arg_pid[32];
        char *argv[] = { (char *) "apiary-source", (char *) "--pool=echo", (char *) "--bus-fd=3", arg_pid, NULL };
        posix_spawn_file_actions_t fa;
        sd_id128_t id;
        int sv[2];

        assert_non_null(path);
        *s = (Src) { .host = host, .servers = servers, .lease_usec = lease_usec };
        s->tasks = g_ptr_array_new_with_free_func(src_task_free);
        s->results = g_ptr_array_new_with_free_func(src_result_free);
        assert_int_equal(sd_event_new(&s->event), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);

        snprintf(arg_pid, sizeof(arg_pid), "--supervisor-pid=%i", (int) getpid());
        assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
        assert_int_equal(posix_spawn_file_actions_adddup2(&fa, sv[1], 3), 0);
        assert_int_equal(posix_spawn(&s->pid, path, &fa, NULL, argv, environ), 0);
        posix_spawn_file_actions_destroy(&fa);
        close(sv[1]);

        assert_int_equal(sd_id128_randomize(&id), 0);
        assert_int_equal(link_server_new(&s->link, sv[0], id, s->event, "source"), 0);
        assert_true(sd_bus_add_object_vtable(s->link, NULL, SOURCE_SUPERVISOR_OBJECT_PATH, SOURCE_SUPERVISOR_INTERFACE,
                                             supervisor_vtable, s) >= 0);
}

static void src_stop(Src *s) {
        int status;

        if (s->pid > 0) {
                (void) kill(s->pid, SIGTERM);
                assert_int_equal(waitpid(s->pid, &status, 0), s->pid);
                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
        }
        s->link = sd_bus_flush_close_unref(s->link);
        s->event = sd_event_unref(s->event);
        g_ptr_array_unref(s->tasks);
        g_ptr_array_unref(s->results);
        sd_bus_message_unref(s->reply);
        g_free(s->state);
        g_free(s->error);
}

typedef bool (*SrcPredicate)(Src *s, const void *arg);

/* Runs the link until PRED holds; fails after TIMEOUT. */
static void src_wait(Src *s, SrcPredicate pred, const void *arg, usec_t timeout, const char *what) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;

        while (!pred(s, arg)) {
                usec_t now = now_usec(CLOCK_MONOTONIC);

                if (now >= deadline)
                        fail_msg("timed out waiting for %s (state %s: %s)", what, strempty(s->state),
                                 strempty(s->error));
                assert_true(sd_event_run(s->event, deadline - now) >= 0);
        }
}

/* Runs the link for USEC, whatever comes: to see that something does NOT happen. */
static void src_idle(Src *s, usec_t usec) {
        usec_t deadline = now_usec(CLOCK_MONOTONIC) + usec, now;

        while ((now = now_usec(CLOCK_MONOTONIC)) < deadline)
                assert_true(sd_event_run(s->event, deadline - now) >= 0);
}

static bool is_state(Src *s, const void *arg) {
        return s->state && streq(s->state, arg);
}

static bool has_tasks(Src *s, const void *arg) {
        return s->tasks->len >= GPOINTER_TO_UINT(arg);
}

static bool has_results(Src *s, const void *arg) {
        return s->results->len >= GPOINTER_TO_UINT(arg);
}

static bool has_reply(Src *s, const void *arg) {
        return s->reply;
}

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Src *s = userdata;

        s->reply = sd_bus_message_ref(m);
        return 1;
}

/* Calls METHOD with M's arguments, runs the link until the answer comes, and returns it in
 * s->reply. */
static sd_bus_message *src_call(Src *s, sd_bus_message *m) {
        s->reply = sd_bus_message_unref(s->reply);
        assert_true(sd_bus_call_async(s->link, NULL, m, on_reply, s, 30 * USEC_PER_SEC) >= 0);
        src_wait(s, has_reply, NULL, WAIT_USEC, sd_bus_message_get_member(m));
        assert_false(sd_bus_message_is_method_error(s->reply, NULL));
        return s->reply;
}

static sd_bus_message *src_new_call(Src *s, const char *member) {
        sd_bus_message *m = NULL;

        assert_true(sd_bus_message_new_method_call(s->link, &m, NULL, SOURCE_OBJECT_PATH, SOURCE_INTERFACE,
                                                   member) >= 0);
        return m;
}

/* Reads an a(ss) of outcomes; returns the number of items, and the first error name seen. */
static unsigned read_outcomes(sd_bus_message *reply, char **ret_first_error) {
        const char *name, *message;
        unsigned n = 0;

        *ret_first_error = NULL;
        assert_true(sd_bus_message_enter_container(reply, 'a', "(ss)") > 0);
        while (sd_bus_message_read(reply, "(ss)", &name, &message) > 0) {
                if (*name && !*ret_first_error)
                        *ret_first_error = g_strdup_printf("%s: %s", name, message);
                n++;
        }
        return n;
}

/* Publish(ID=PAYLOAD, ...): all must be stored. */
static void src_publish(Src *s, const char *const *ids, const char *const *payloads, unsigned n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = src_new_call(s, "Publish");
        g_autofree char *error = NULL;

        assert_true(sd_bus_message_open_container(m, 'a', "(" SOURCE_PUBLISH_ITEM ")") >= 0);
        for (unsigned i = 0; i < n; i++) {
                assert_true(sd_bus_message_open_container(m, 'r', SOURCE_PUBLISH_ITEM) >= 0);
                assert_true(sd_bus_message_append(m, "st", ids[i], (uint64_t) 0) >= 0);
                assert_true(sd_bus_message_append_array(m, 'y', payloads[i], strlen(payloads[i])) >= 0);
                assert_true(sd_bus_message_close_container(m) >= 0);
        }
        assert_true(sd_bus_message_close_container(m) >= 0);
        assert_int_equal(read_outcomes(src_call(s, m), &error), n);
        if (error)
                fail_msg("publish: %s", error);
}

static void src_want_awaiting(Src *s, unsigned want, bool awaiting) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = src_new_call(s, "Want");

        assert_true(sd_bus_message_append(m, SOURCE_WANT_IN, want, (uint64_t) s->tasks->len, awaiting) >= 0);
        assert_true(sd_bus_message_set_expect_reply(m, false) >= 0);
        assert_true(sd_bus_send(s->link, m, NULL) >= 0);
}

static void src_want(Src *s, unsigned want) {
        src_want_awaiting(s, want, false);
}

/* Finish(task I of S, ok, DATA). */
static void src_finish(Src *s, unsigned i, bool ok, const char *data) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = src_new_call(s, "Finish");
        SrcTask *t = s->tasks->pdata[i];
        g_autofree char *error = NULL;

        assert_true(sd_bus_message_open_container(m, 'a', "(" SOURCE_FINISH_ITEM ")") >= 0);
        assert_true(sd_bus_message_open_container(m, 'r', SOURCE_FINISH_ITEM) >= 0);
        assert_true(sd_bus_message_append(m, "sssbb", t->token, t->reply, t->id, ok, false) >= 0);
        assert_true(sd_bus_message_append_array(m, 'y', data, strlen(data)) >= 0);
        assert_true(sd_bus_message_close_container(m) >= 0);
        assert_true(sd_bus_message_close_container(m) >= 0);
        assert_int_equal(read_outcomes(src_call(s, m), &error), 1);
        if (error)
                fail_msg("finish: %s", error);
}

static void src_tokens(Src *s, const char *member, unsigned i) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = src_new_call(s, member);
        SrcTask *t = s->tasks->pdata[i];

        assert_true(sd_bus_message_append(m, "as", 1, t->token) >= 0);
        if (streq(member, "Release"))
                (void) src_call(s, m);
        else {
                assert_true(sd_bus_message_set_expect_reply(m, false) >= 0);
                assert_true(sd_bus_send(s->link, m, NULL) >= 0);
        }
}

static SrcTask *task_at(Src *s, unsigned i) {
        return s->tasks->pdata[i];
}

/* ---- the tests ---- */

static int setup(void **state) {
        if (!test_nats_available()) {
                print_message("nats-server is not installed (tools/deps installs it)\n");
                return -1;
        }
        test_nats_start(&nats, 1);
        return 0;
}

static int teardown(void **state) {
        test_nats_stop(&nats);
        return 0;
}

/* A unique pool-wide id per test, so that the tests share one engine without meeting. */
static char *new_id(const char *host, unsigned n) {
        static unsigned counter;

        return g_strdup_printf("%s.%u.%u", host, ++counter, n);
}

/* Stored, pulled exactly as asked, finished, and the result back at the submitter (itself). */
static void test_publish_pull_finish(void **state) {
        Src s;
        g_autofree char *i1 = new_id("a", 1), *i2 = new_id("a", 2), *i3 = new_id("a", 3);
        const char *ids[] = { i1, i2, i3 }, *payloads[] = { "one", "two", "three" };

        src_start(&s, "a", nats.servers, 30 * USEC_PER_SEC);
        src_wait(&s, is_state, SOURCE_STATE_READY, WAIT_USEC, "ready");
        src_publish(&s, ids, payloads, 3);

        src_want(&s, 2);
        src_wait(&s, has_tasks, GUINT_TO_POINTER(2), WAIT_USEC, "2 tasks");
        /* Two places, two tasks: the third stays in the stream. */
        src_idle(&s, 300 * USEC_PER_MSEC);
        assert_int_equal(s.tasks->len, 2);
        src_want(&s, 1);
        src_wait(&s, has_tasks, GUINT_TO_POINTER(3), WAIT_USEC, "the 3rd task");

        for (unsigned i = 0; i < 3; i++) {
                assert_string_equal(task_at(&s, i)->id, ids[i]);
                assert_string_equal(task_at(&s, i)->payload, payloads[i]);
                assert_string_equal(task_at(&s, i)->reply, "apiary.echo.r.a");
                assert_int_equal(task_at(&s, i)->deliveries, 1);
        }
        src_want(&s, 0);
        for (unsigned i = 0; i < 3; i++) {
                g_autofree char *r = g_strdup_printf("result %u", i);

                src_finish(&s, i, i != 1, r);
        }
        src_wait(&s, has_results, GUINT_TO_POINTER(3), WAIT_USEC, "3 results");
        for (unsigned i = 0; i < 3; i++) {
                SrcResult *r = s.results->pdata[i];
                g_autofree char *expect = g_strdup_printf("result %u", i);

                assert_string_equal(r->id, ids[i]);
                assert_int_equal(r->ok, i != 1);
                assert_string_equal(r->data, expect);
        }
        src_stop(&s);
}

/* The same id published twice is one task. */
static void test_duplicate_publish(void **state) {
        Src s;
        g_autofree char *id = new_id("a", 1), *other = new_id("a", 2);
        const char *ids[] = { id }, *again[] = { id, other }, *p1[] = { "first" }, *p2[] = { "second", "other" };

        src_start(&s, "a", nats.servers, 30 * USEC_PER_SEC);
        src_wait(&s, is_state, SOURCE_STATE_READY, WAIT_USEC, "ready");
        src_publish(&s, ids, p1, 1);
        src_publish(&s, again, p2, 2);
        src_want(&s, 5);
        src_wait(&s, has_tasks, GUINT_TO_POINTER(2), WAIT_USEC, "2 tasks");
        src_idle(&s, 300 * USEC_PER_MSEC);
        assert_int_equal(s.tasks->len, 2);
        assert_string_equal(task_at(&s, 0)->payload, "first");
        assert_string_equal(task_at(&s, 1)->payload, "other");
        src_want(&s, 0);
        src_finish(&s, 0, true, "");
        src_finish(&s, 1, true, "");
        src_wait(&s, has_results, GUINT_TO_POINTER(2), WAIT_USEC, "2 results");
        src_stop(&s);
}

/* Released: delivered again at once, and counted. */
static void test_release(void **state) {
        Src s;
        g_autofree char *id = new_id("a", 1);
        const char *ids[] = { id }, *payloads[] = { "again" };

        src_start(&s, "a", nats.servers, 30 * USEC_PER_SEC);
        src_wait(&s, is_state, SOURCE_STATE_READY, WAIT_USEC, "ready");
        src_publish(&s, ids, payloads, 1);
        src_want(&s, 1);
        src_wait(&s, has_tasks, GUINT_TO_POINTER(1), WAIT_USEC, "the task");
        src_tokens(&s, "Release", 0);
        src_want(&s, 1);
        src_wait(&s, has_tasks, GUINT_TO_POINTER(2), WAIT_USEC, "the task again");
        assert_string_equal(task_at(&s, 1)->id, id);
        assert_int_equal(task_at(&s, 1)->deliveries, 2);
        src_want(&s, 0);
        src_finish(&s, 1, true, "done");
        src_wait(&s, has_results, GUINT_TO_POINTER(1), WAIT_USEC, "the result");
        src_stop(&s);
}

/* A lease renewed keeps the task; one left to lapse brings it back. */
static void test_lease(void **state) {
        Src s;
        g_autofree char *id = new_id("a", 1);
        const char *ids[] = { id }, *payloads[] = { "slow" };

        src_start(&s, "a", nats.servers, USEC_PER_SEC);
        src_wait(&s, is_state, SOURCE_STATE_READY, WAIT_USEC, "ready");
        src_publish(&s, ids, payloads, 1);
        src_want(&s, 1);
        src_wait(&s, has_tasks, GUINT_TO_POINTER(1), WAIT_USEC, "the task");
        src_want(&s, 1);        /* room for it again, should it come back */
        for (unsigned i = 0; i < 8; i++) {
                src_tokens(&s, "Renew", 0);
                src_idle(&s, 300 * USEC_PER_MSEC);
        }
        assert_int_equal(s.tasks->len, 1);
        /* No more renewals: back after the lease. */
        src_wait(&s, has_tasks, GUINT_TO_POINTER(2), WAIT_USEC, "the task after its lease");
        assert_int_equal(task_at(&s, 1)->deliveries, 2);
        src_want(&s, 0);
        src_finish(&s, 1, true, "");
        src_stop(&s);
}

/* Host a submits, host b runs: the result goes to a's stream, and only a gets it. */
static void test_two_hosts(void **state) {
        Src a, b;
        g_autofree char *id = new_id("a", 1);
        const char *ids[] = { id }, *payloads[] = { "from a" };

        src_start(&a, "a", nats.servers, 30 * USEC_PER_SEC);
        src_start(&b, "b", nats.servers, 30 * USEC_PER_SEC);
        src_wait(&a, is_state, SOURCE_STATE_READY, WAIT_USEC, "a ready");
        src_wait(&b, is_state, SOURCE_STATE_READY, WAIT_USEC, "b ready");
        src_publish(&a, ids, payloads, 1);
        src_want(&b, 1);
        src_wait(&b, has_tasks, GUINT_TO_POINTER(1), WAIT_USEC, "b's task");
        assert_string_equal(task_at(&b, 0)->reply, "apiary.echo.r.a");
        src_want(&b, 0);
        src_finish(&b, 0, true, "ran on b");
        src_wait(&a, has_results, GUINT_TO_POINTER(1), WAIT_USEC, "a's result");
        assert_string_equal(((SrcResult *) a.results->pdata[0])->data, "ran on b");
        src_idle(&b, 200 * USEC_PER_MSEC);
        assert_int_equal(b.results->len, 0);
        src_stop(&a);
        src_stop(&b);
}

/* A message in the task stream that is not one of ours (its Apiary-Reply is no result subject of
 * the pool): dropped and terminated, never handed on; the pull goes on with the next task. */
static void test_foreign_message(void **state) {
        Src s;
        g_autofree char *url = g_strdup_printf("nats://%s", nats.servers), *good = new_id("a", 1);
        const char *ids[] = { good }, *payloads[] = { "good" };
        natsConnection *nc = NULL;
        natsMsg *m = NULL;

        src_start(&s, "a", nats.servers, 30 * USEC_PER_SEC);
        src_wait(&s, is_state, SOURCE_STATE_READY, WAIT_USEC, "ready");

        assert_int_equal(natsConnection_ConnectTo(&nc, url), NATS_OK);
        assert_int_equal(natsMsg_Create(&m, "apiary.echo.t", NULL, "evil", 4), NATS_OK);
        assert_int_equal(natsMsgHeader_Set(m, SOURCE_HEADER_ID, "x.1.1"), NATS_OK);
        assert_int_equal(natsMsgHeader_Set(m, SOURCE_HEADER_REPLY, "$JS.API.STREAM.DELETE.APIARY_echo"), NATS_OK);
        assert_int_equal(natsConnection_PublishMsg(nc, m), NATS_OK);
        assert_int_equal(natsConnection_Flush(nc), NATS_OK);
        natsMsg_Destroy(m);
        natsConnection_Destroy(nc);

        src_publish(&s, ids, payloads, 1);
        src_want(&s, 1);
        src_wait(&s, has_tasks, GUINT_TO_POINTER(1), WAIT_USEC, "the good task");
        assert_string_equal(task_at(&s, 0)->payload, "good");
        src_want(&s, 1);
        src_idle(&s, 300 * USEC_PER_MSEC);
        assert_int_equal(s.tasks->len, 1);
        src_want(&s, 0);
        src_finish(&s, 0, true, "");
        src_wait(&s, has_results, GUINT_TO_POINTER(1), WAIT_USEC, "its result");
        src_stop(&s);
}

/* A result the results stream holds and its consumer will never deliver (the engine lost its
 * record of it) is read back by the audit while apiaryd awaits results, handed on once, and
 * deleted from the stream; a result delivered as usual is not read back. The stranded one is made
 * by a consumer whose filter leaves it out (on a work-queue stream a consumer must start at the
 * first message): once the consumer has delivered and acked the result after it, the stranded
 * one lies below its ack floor and is still there, as after the engine's loss. */
static void test_stranded_result(void **state) {
        Src s;
        g_autofree char *url = g_strdup_printf("nats://%s", nats.servers), *id = new_id("l", 1);
        g_autofree char *normal = new_id("l", 2);
        const char *subjects[] = { "apiary.echo.r.l", "stranded.l" };
        const char *message_ids[] = { id, normal }, *message_subjects[] = { "stranded.l", "apiary.echo.r.l" };
        const char *message_data[] = { "stranded", "normal" };
        natsConnection *nc = NULL;
        jsCtx *js = NULL;
        jsStreamConfig sc;
        jsConsumerConfig cc;
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        SrcResult *r;

        assert_int_equal(natsConnection_ConnectTo(&nc, url), NATS_OK);
        assert_int_equal(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
        /* The stream as apiary-source makes it (it keeps one that exists)... */
        jsStreamConfig_Init(&sc);
        sc.Name = "APIARY_echo_R_l";
        sc.Subjects = subjects;
        sc.SubjectsLen = 2;
        sc.Retention = js_WorkQueuePolicy;
        sc.Storage = js_FileStorage;
        sc.MaxAge = (int64_t) 24 * 3600 * 1000000000;
        assert_int_equal(js_AddStream(NULL, js, &sc, NULL, &jerr), NATS_OK);
        /* ... with a consumer that leaves the first result out (apiary-source keeps it: same
         * settings)... */
        jsConsumerConfig_Init(&cc);
        cc.Durable = "submitter";
        cc.FilterSubject = "apiary.echo.r.l";
        cc.AckPolicy = js_AckExplicit;
        cc.AckWait = (int64_t) 30 * 1000000000;
        cc.MaxDeliver = -1;
        cc.MaxAckPending = 1 << 20;
        assert_int_equal(js_AddConsumer(NULL, js, "APIARY_echo_R_l", &cc, NULL, &jerr), NATS_OK);
        /* ... and two results: the stranded one, and one the consumer delivers. */
        for (unsigned i = 0; i < 2; i++) {
                natsMsg *m = NULL;

                assert_int_equal(natsMsg_Create(&m, message_subjects[i], NULL, message_data[i],
                                                (int) strlen(message_data[i])), NATS_OK);
                assert_int_equal(natsMsgHeader_Set(m, SOURCE_HEADER_ID, message_ids[i]), NATS_OK);
                assert_int_equal(natsMsgHeader_Set(m, SOURCE_HEADER_OK, "1"), NATS_OK);
                assert_int_equal(js_PublishMsg(NULL, js, m, NULL, &jerr), NATS_OK);
                natsMsg_Destroy(m);
        }

        src_start(&s, "l", nats.servers, 30 * USEC_PER_SEC);
        src_wait(&s, is_state, SOURCE_STATE_READY, WAIT_USEC, "ready");
        src_want_awaiting(&s, 0, true);
        src_wait(&s, has_results, GUINT_TO_POINTER(1), WAIT_USEC, "the delivered result");
        assert_string_equal(((SrcResult *) s.results->pdata[0])->id, normal);
        /* Two audits 5 s apart find the other stranded; read back after the second. */
        src_wait(&s, has_results, GUINT_TO_POINTER(2), 3 * WAIT_USEC, "the stranded result");
        r = s.results->pdata[1];
        assert_string_equal(r->id, id);
        assert_true(r->ok);
        assert_string_equal(r->data, "stranded");
        /* Deleted once handed on: the next audits find nothing, and nothing comes twice. */
        src_idle(&s, 11 * USEC_PER_SEC);
        assert_int_equal(s.results->len, 2);
        src_stop(&s);

        assert_int_equal(js_GetStreamInfo(&si, js, "APIARY_echo_R_l", NULL, &jerr), NATS_OK);
        assert_int_equal(si->State.Msgs, 0);
        jsStreamInfo_Destroy(si);
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
}

/* No engine: unavailable, and a write says so by name. */
static void test_unavailable(void **state) {
        Src s;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        g_autofree char *error = NULL;

        src_start(&s, "a", "127.0.0.1:1", 30 * USEC_PER_SEC);
        src_wait(&s, is_state, SOURCE_STATE_UNAVAILABLE, WAIT_USEC, "unavailable");
        assert_non_null(strstr(s.error, "127.0.0.1:1"));

        m = src_new_call(&s, "Publish");
        assert_true(sd_bus_message_append(m, SOURCE_PUBLISH_IN, 1, "a.0.1", (uint64_t) 0, 1, "x") >= 0);
        assert_int_equal(read_outcomes(src_call(&s, m), &error), 1);
        assert_non_null(error);
        assert_non_null(strstr(error, SOURCE_ERROR_UNAVAILABLE));
        src_stop(&s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_publish_pull_finish),
                cmocka_unit_test(test_duplicate_publish),
                cmocka_unit_test(test_release),
                cmocka_unit_test(test_lease),
                cmocka_unit_test(test_two_hosts),
                cmocka_unit_test(test_foreign_message),
                cmocka_unit_test(test_stranded_result),
                cmocka_unit_test(test_unavailable),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
