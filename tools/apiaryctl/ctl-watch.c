/* SPDX-License-Identifier: MIT */
/* wait and monitor: the verbs that follow apiaryd's signals. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "tools/apiaryctl/ctl-format.h"
#include "tools/apiaryctl/ctl.h"

/* The bytes of a result shown by monitor; wait shows them all. */
#define MONITOR_RESULT_MAX 256

#define MATCH_TASK_FINISHED                                                                                  \
        "type='signal',sender='" APIARY_BUS_NAME "',path='" APIARY_OBJECT_PATH "',interface='"              \
        APIARY_MANAGER_INTERFACE "',member='TaskFinished'"
#define MATCH_NAME_OWNER                                                                                     \
        "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"                           \
        "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" APIARY_BUS_NAME "'"
#define MATCH_PROPERTIES_CHANGED                                                                             \
        "type='signal',sender='" APIARY_BUS_NAME "',interface='org.freedesktop.DBus.Properties',"            \
        "member='PropertiesChanged',path_namespace='" APIARY_OBJECT_PATH "'"
#define MATCH_OBJECT_MANAGER                                                                                 \
        "type='signal',sender='" APIARY_BUS_NAME "',path='" APIARY_OBJECT_PATH "',"                          \
        "interface='org.freedesktop.DBus.ObjectManager'"

static void event_unrefp(sd_event **e) {
        if (*e)
                sd_event_unref(*e);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        /* Ctrl-C is how monitor ends (0); it interrupts a wait (130, as the shell would say). */
        return sd_event_exit(sd_event_source_get_event(s), GPOINTER_TO_INT(userdata));
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        /* The event loop comes as USERDATA: sd-bus has detached the bus from it by now. */
        ctl_error("Lost the connection to the bus.");
        return sd_event_exit(userdata, CTL_EXIT_UNREACHABLE);
}

/* An event loop with BUS attached, which SIGINT and SIGTERM end with EXIT_STATUS, and losing the
 * bus with CTL_EXIT_UNREACHABLE; RET_SLOT gets the match for the latter. */
static int event_setup(sd_bus *bus, int exit_status, sd_event **ret, sd_bus_slot **ret_slot) {
        _cleanup_(event_unrefp) sd_event *e = NULL;
        sigset_t mask;
        int r;

        r = sd_event_new(&e);
        if (r < 0)
                return r;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        r = sd_event_add_signal(e, NULL, SIGINT, on_signal, GINT_TO_POINTER(exit_status));
        if (r < 0)
                return r;
        r = sd_event_add_signal(e, NULL, SIGTERM, on_signal, GINT_TO_POINTER(exit_status));
        if (r < 0)
                return r;
        r = sd_bus_attach_event(bus, e, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        /* A local match: sd-bus synthesizes this signal, nothing goes to the bus. */
        r = sd_bus_match_signal(bus, ret_slot, NULL, "/org/freedesktop/DBus/Local", "org.freedesktop.DBus.Local",
                                "Disconnected", on_disconnected, e);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(e);
        return 0;
}

static int name_has_owner(sd_bus *bus, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int has = 0, r;

        r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "NameHasOwner", error, &reply, "s", APIARY_BUS_NAME);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "b", &has);
        if (r < 0)
                return r;
        return has;
}

/* A second connection to the same bus that sees what RULES match, including signals addressed to
 * other connections (TaskFinished goes to its submitter only). dbus-daemon allows this to root, and
 * to the user it runs as (the user of a session bus or of tools/run's private bus). A monitor
 * connection can send nothing more, so everything else goes through the first connection. */
static int monitor_open(char **rules, sd_bus **ret, sd_bus_error *error) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        int r;

        r = ctl_bus_open(&bus);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                           "org.freedesktop.DBus.Monitoring", "BecomeMonitor");
        if (r < 0)
                return r;
        r = sd_bus_message_append_strv(call, rules);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "u", UINT32_C(0));
        if (r < 0)
                return r;
        r = sd_bus_call(bus, call, 0, error, NULL);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(bus);
        return 0;
}

/* ---- waiting for tasks: wait, and submit --wait ---- */

struct TaskWait {
        GHashTable *pending;            /* task id (uint64_t) → itself: not finished yet */
        unsigned n_asked;
        int status;                     /* CTL_EXIT_FAILURE once a task failed */
        sd_event *event;
        sd_bus *bus;                    /* where the signals come in */
        bool bus_is_ours;               /* a monitor connection of our own, to be closed */
        sd_bus_slot *filter_slot;       /* on BUS, pointing at us */
        sd_bus_slot *disconnected_slot; /* on BUS, pointing at EVENT */
};

TaskWait *task_wait_free(TaskWait *w) {
        if (!w)
                return NULL;
        /* BUS may outlive W (it is the caller's, without a monitor): nothing on it may point here. */
        sd_bus_slot_unref(w->filter_slot);
        sd_bus_slot_unref(w->disconnected_slot);
        if (w->bus) {
                sd_bus_detach_event(w->bus);
                if (w->bus_is_ours)
                        sd_bus_flush_close_unref(w->bus);
                else
                        sd_bus_unref(w->bus);
        }
        if (w->event)
                sd_event_unref(w->event);
        if (w->pending)
                g_hash_table_destroy(w->pending);
        free(w);
        return NULL;
}

void task_wait_add(TaskWait *w, uint64_t id) {
        uint64_t *key;

        if (g_hash_table_contains(w->pending, &id))
                return;
        key = g_new(uint64_t, 1);
        *key = id;
        g_hash_table_add(w->pending, key);
        w->n_asked++;
}

static void append_task_line(GString *s, uint64_t id, const char *pool, bool ok, const void *data, size_t size,
                             size_t max) {
        g_string_append_printf(s, "%" PRIu64 " %s %s%s%s ", id, pool, ok ? "" : ansi(ANSI_RED),
                               ok ? "done" : "failed", ok ? "" : ansi(ANSI_NORMAL));
        append_quoted(s, data, size, max);
}

static int on_wait_task_finished(sd_bus_message *m, TaskWait *w) {
        const char *pool;
        const void *data;
        size_t size;
        uint64_t id;
        int ok, r;

        r = sd_bus_message_read(m, "tsb", &id, &pool, &ok);
        if (r >= 0)
                r = sd_bus_message_read_array(m, 'y', &data, &size);
        if (r < 0) {
                ctl_error("Failed to read a TaskFinished signal, ignoring: %s", strerror(-r));
                return 0;
        }
        if (!g_hash_table_remove(w->pending, &id))
                return 0;

        if (!ok)
                w->status = CTL_EXIT_FAILURE;
        if (w->n_asked == 1) {
                /* Just like run: the result exactly, or the reason on stderr. */
                if (!ok)
                        ctl_error("Task %" PRIu64 " failed: %.*s", id, (int) size, (const char *) data);
                else {
                        r = write_all(STDOUT_FILENO, data, size);
                        if (r < 0) {
                                ctl_error("Failed to write the result: %s", strerror(-r));
                                w->status = CTL_EXIT_FAILURE;
                        }
                }
        } else {
                g_autoptr(GString) line = g_string_new(NULL);

                append_task_line(line, id, pool, ok, data, size, 0);
                puts(line->str);
                fflush(stdout);
        }

        if (g_hash_table_size(w->pending) == 0)
                return sd_event_exit(w->event, w->status);
        return 0;
}

static char *pending_list(GHashTable *pending) {
        g_autoptr(GList) ids = g_hash_table_get_keys(pending);
        GString *s = g_string_new(NULL);

        for (GList *i = ids; i; i = i->next)
                g_string_append_printf(s, "%s%" PRIu64, s->len > 0 ? ", " : "", *(const uint64_t *) i->data);
        return g_string_free(s, false);
}

static int on_wait_name_owner_changed(sd_bus_message *m, TaskWait *w) {
        const char *name, *old_owner, *new_owner;
        g_autofree char *ids = NULL;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !streq(name, APIARY_BUS_NAME) ||
            new_owner[0] != '\0')
                return 0;
        ids = pending_list(w->pending);
        ctl_error("apiaryd left the bus before task%s %s finished.", g_hash_table_size(w->pending) == 1 ? "" : "s",
                  ids);
        return sd_event_exit(w->event, CTL_EXIT_UNREACHABLE);
}

/* A filter rather than match callbacks: a monitor connection gets its messages from the rules of
 * BecomeMonitor(), which sd-bus knows nothing of. */
static int on_wait_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        TaskWait *w = userdata;

        if (sd_bus_message_is_signal(m, APIARY_MANAGER_INTERFACE, "TaskFinished") &&
            streq_ptr(sd_bus_message_get_path(m), APIARY_OBJECT_PATH))
                return on_wait_task_finished(m, w);
        if (sd_bus_message_is_signal(m, "org.freedesktop.DBus", "NameOwnerChanged") &&
            streq_ptr(sd_bus_message_get_sender(m), "org.freedesktop.DBus"))
                return on_wait_name_owner_changed(m, w);
        return 0;
}

static int on_wait_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        TaskWait *w = userdata;
        g_autofree char *ids = pending_list(w->pending);

        ctl_error("Timed out waiting for task%s %s.", g_hash_table_size(w->pending) == 1 ? "" : "s", ids);
        return sd_event_exit(w->event, CTL_EXIT_FAILURE);
}

int task_wait_new(sd_bus *bus, bool monitor, TaskWait **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        TaskWait *w;
        int r;

        w = calloc(1, sizeof(TaskWait));
        if (!w)
                return ctl_oom();
        w->pending = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);

        /* Subscribe first, then look: whatever finishes from now on is seen. A task that finished
         * before this point is never seen again, and the API has no way to ask about it. */
        if (monitor && ctl_bus_is_private()) {
                task_wait_free(w);
                ctl_error("Cannot follow tasks that another connection submitted on the private socket: "
                          "TaskFinished goes to the submitter only. Use 'apiaryctl submit --wait' or "
                          "'apiaryctl run', or the bus.");
                return CTL_EXIT_USAGE;
        } else if (ctl_bus_is_private()) {
                /* Peer-to-peer, our TaskFinished come to us unasked; the filter sees them. */
                w->bus = sd_bus_ref(bus);
        } else if (monitor) {
                char *rules[] = { (char *) MATCH_TASK_FINISHED, (char *) MATCH_NAME_OWNER, NULL };

                r = monitor_open(rules, &w->bus, &error);
                w->bus_is_ours = r >= 0;
                if (r < 0) {
                        task_wait_free(w);
                        if (sd_bus_error_has_name(&error, SD_BUS_ERROR_ACCESS_DENIED)) {
                                ctl_error("Cannot follow tasks that another connection submitted: TaskFinished goes "
                                          "to the submitter only, and this bus lets only root or its own user "
                                          "monitor it (%s). Use 'apiaryctl submit --wait' or 'apiaryctl run'.",
                                          error.message);
                                return CTL_EXIT_ACCESS_DENIED;
                        }
                        return ctl_bus_error(r, &error, "Failed to monitor the bus for TaskFinished");
                }
        } else {
                /* Our own tasks: their TaskFinished is addressed to us, the match only dispatches it. */
                w->bus = sd_bus_ref(bus);
                r = sd_bus_add_match(bus, NULL, MATCH_TASK_FINISHED, NULL, NULL);
                if (r >= 0)
                        r = sd_bus_add_match(bus, NULL, MATCH_NAME_OWNER, NULL, NULL);
                if (r < 0) {
                        task_wait_free(w);
                        return ctl_bus_error(r, NULL, "Failed to subscribe to TaskFinished");
                }
        }

        r = event_setup(w->bus, 128 + SIGINT, &w->event, &w->disconnected_slot);
        if (r >= 0)
                r = sd_bus_add_filter(w->bus, &w->filter_slot, on_wait_message, w);
        if (r < 0) {
                task_wait_free(w);
                return ctl_bus_error(r, NULL, "Failed to set up the event loop");
        }

        *ret = w;
        return CTL_EXIT_SUCCESS;
}

int task_wait_run(TaskWait *w, sd_bus *bus, usec_t timeout) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r, status;

        if (g_hash_table_size(w->pending) == 0)
                return CTL_EXIT_SUCCESS;

        /* Subscribed: now make sure that there is an apiaryd to wait for (on the private socket,
         * apiaryd is the peer itself). */
        r = ctl_bus_is_private() ? 1 : name_has_owner(bus, &error);
        if (r < 0)
                return ctl_bus_error(r, &error, "Failed to ask the bus whether apiaryd is running");
        if (r == 0) {
                ctl_error("apiaryd is not running on this bus (nobody owns " APIARY_BUS_NAME ").");
                return CTL_EXIT_UNREACHABLE;
        }

        if (timeout != USEC_INFINITY) {
                r = sd_event_add_time_relative(w->event, NULL, CLOCK_MONOTONIC, timeout, 0, on_wait_timeout, w);
                if (r < 0)
                        return ctl_bus_error(r, NULL, "Failed to set up the timeout");
        }

        if (arg_verbose)
                ctl_error("Waiting for %u task%s...", w->n_asked, w->n_asked == 1 ? "" : "s");
        r = sd_event_loop(w->event);
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to wait for the tasks");
        status = r;
        if (fflush(stdout) != 0 && status == CTL_EXIT_SUCCESS) {
                ctl_error("Failed to write the results: %s", strerror(errno));
                status = CTL_EXIT_FAILURE;
        }
        return status;
}

int verb_wait(sd_bus *bus, int argc, char **argv) {
        _cleanup_(task_wait_freep) TaskWait *w = NULL;
        int r;

        for (int i = 1; i < argc; i++) {
                uint64_t id;

                if (parse_task_id(argv[i], &id) < 0)
                        return ctl_usage_error("Expected a task id (a number above 0), got \"%s\".", argv[i]);
        }

        r = task_wait_new(bus, /* monitor= */ true, &w);
        if (r != 0)
                return r;
        for (int i = 1; i < argc; i++) {
                uint64_t id = 0;

                (void) parse_task_id(argv[i], &id);
                task_wait_add(w, id);
        }
        return task_wait_run(w, bus, arg_timeout);
}

/* ---- monitor ---- */

static void append_now(GString *s) {
        struct timespec ts;
        struct tm tm;
        char buf[32];

        clock_gettime(CLOCK_REALTIME, &ts);
        if (!localtime_r(&ts.tv_sec, &tm) || strftime(buf, sizeof(buf), "%H:%M:%S", &tm) == 0)
                g_strlcpy(buf, "??:??:??", sizeof(buf));
        g_string_append_printf(s, "%s.%03ld ", buf, ts.tv_nsec / 1000000);
}

/* "manager", "pool echo", "worker echo/0", or the path itself. */
static void append_object(GString *s, const char *path) {
        _cleanup_(freep) char *name = NULL, *pool_path = NULL;
        const char *slash;

        if (streq(path, APIARY_OBJECT_PATH)) {
                g_string_append(s, "manager");
                return;
        }

        /* sd_bus_path_decode() would decode "echo/0" below the prefix as a pool name too. */
        slash = strrchr(path, '/');
        if (slash && (size_t) (slash - path) > strlen(APIARY_POOL_PREFIX "/")) {
                pool_path = strndup(path, (size_t) (slash - path));
                if (pool_path && sd_bus_path_decode(pool_path, APIARY_POOL_PREFIX, &name) > 0 &&
                    !strchr(name, '/')) {
                        g_string_append_printf(s, "worker %s/%s", name, slash + 1);
                        return;
                }
        } else if (sd_bus_path_decode(path, APIARY_POOL_PREFIX, &name) > 0) {
                g_string_append_printf(s, "pool %s", name);
                return;
        }
        g_string_append(s, path);
}

static void monitor_print(GString *line) {
        puts(line->str);
        fflush(stdout);
}

static int on_monitor_task_finished(sd_bus_message *m) {
        g_autoptr(GString) line = g_string_new(NULL);
        const char *pool;
        const void *data;
        size_t size;
        uint64_t id;
        int ok, r;

        r = sd_bus_message_read(m, "tsb", &id, &pool, &ok);
        if (r >= 0)
                r = sd_bus_message_read_array(m, 'y', &data, &size);
        if (r < 0) {
                ctl_error("Failed to read a TaskFinished signal, ignoring: %s", strerror(-r));
                return 0;
        }
        append_now(line);
        g_string_append(line, "task ");
        append_task_line(line, id, pool, ok, data, size, MONITOR_RESULT_MAX);
        monitor_print(line);
        return 0;
}

/* A time property (µs since the epoch, in a variant) as local time; 0 is "never". */
static int append_time(sd_bus_message *m, GString *s) {
        uint64_t usec;
        time_t sec;
        struct tm tm;
        char buf[32];
        int r;

        r = sd_bus_message_enter_container(m, 'v', "t");
        if (r <= 0)
                return r < 0 ? r : ctl_append_value(m, s, VALUE_QUOTED);
        r = sd_bus_message_read(m, "t", &usec);
        if (r < 0)
                return r;
        sec = (time_t) (usec / USEC_PER_SEC);
        if (usec == 0)
                g_string_append(s, "never");
        else if (localtime_r(&sec, &tm) && strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm) > 0)
                g_string_append_printf(s, "\"%s.%03" PRIu64 "\"", buf, (usec % USEC_PER_SEC) / USEC_PER_MSEC);
        else
                g_string_append_printf(s, "%" PRIu64, usec);
        return sd_bus_message_exit_container(m);
}

static int on_monitor_properties_changed(sd_bus_message *m) {
        g_autoptr(GString) line = g_string_new(NULL);
        const char *interface, *name;
        int r;

        append_now(line);
        append_object(line, sd_bus_message_get_path(m));

        r = sd_bus_message_read(m, "s", &interface);
        if (r >= 0)
                r = sd_bus_message_enter_container(m, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        break;
                g_string_append_printf(line, " %s=", name);
                if (streq(name, "StartedAt"))
                        r = append_time(m, line);
                else
                        r = ctl_append_value(m, line, VALUE_QUOTED);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r >= 0)
                r = sd_bus_message_enter_container(m, 'a', "s");
        while (r >= 0 && (r = sd_bus_message_read(m, "s", &name)) > 0)
                g_string_append_printf(line, " %s=(invalidated)", name);
        if (r < 0) {
                ctl_error("Failed to read a PropertiesChanged signal, ignoring: %s", strerror(-r));
                return 0;
        }
        monitor_print(line);
        return 0;
}

static int on_monitor_object_manager(sd_bus_message *m) {
        g_autoptr(GString) line = g_string_new(NULL);
        const char *member = sd_bus_message_get_member(m), *path;
        int r;

        if (!member || !STR_IN_SET(member, "InterfacesAdded", "InterfacesRemoved"))
                return 0;
        r = sd_bus_message_read(m, "o", &path);
        if (r < 0) {
                ctl_error("Failed to read an %s signal, ignoring: %s", member, strerror(-r));
                return 0;
        }
        append_now(line);
        append_object(line, path);
        g_string_append(line, streq(member, "InterfacesAdded") ? " added" : " removed");
        monitor_print(line);
        return 0;
}

static int on_monitor_name_owner_changed(sd_bus_message *m) {
        g_autoptr(GString) line = g_string_new(NULL);
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !streq(name, APIARY_BUS_NAME))
                return 0;
        append_now(line);
        if (new_owner[0] == '\0')
                g_string_append(line, "apiaryd left the bus");
        else
                g_string_append_printf(line, "apiaryd is on the bus as %s", new_owner);
        monitor_print(line);
        return 0;
}

static int on_monitor_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const char *path = sd_bus_message_get_path(m);

        if (!path)
                return 0;
        if (sd_bus_message_is_signal(m, APIARY_MANAGER_INTERFACE, "TaskFinished") && streq(path, APIARY_OBJECT_PATH))
                return on_monitor_task_finished(m);
        if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.Properties", "PropertiesChanged") &&
            (streq(path, APIARY_OBJECT_PATH) || g_str_has_prefix(path, APIARY_OBJECT_PATH "/")))
                return on_monitor_properties_changed(m);
        if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.ObjectManager", NULL) && streq(path, APIARY_OBJECT_PATH))
                return on_monitor_object_manager(m);
        if (sd_bus_message_is_signal(m, "org.freedesktop.DBus", "NameOwnerChanged") &&
            streq_ptr(sd_bus_message_get_sender(m), "org.freedesktop.DBus"))
                return on_monitor_name_owner_changed(m);
        return 0;
}

int verb_monitor(sd_bus *bus, int argc, char **argv) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *monitor = NULL;
        _cleanup_(event_unrefp) sd_event *event = NULL;
        char *rules[] = {
                (char *) MATCH_TASK_FINISHED,
                (char *) MATCH_PROPERTIES_CHANGED,
                (char *) MATCH_OBJECT_MANAGER,
                (char *) MATCH_NAME_OWNER,
                NULL,
        };
        sd_bus *listen;
        int r;

        /* TaskFinished goes to each submitter only: only a monitor of the bus sees them all. Where
         * that is not allowed, the broadcast signals are still worth following. */
        if (ctl_bus_is_private()) {
                r = sd_bus_call_method(bus, APIARY_BUS_NAME, APIARY_OBJECT_PATH, APIARY_MANAGER_INTERFACE, "Subscribe",
                                       &error, NULL, NULL);
                if (r < 0)
                        return ctl_bus_error(r, &error, "Failed to subscribe to the signals of apiaryd");
                ctl_error("On the private socket: task results, which go to their submitters only, are not shown.");
                listen = bus;
        } else if ((r = monitor_open(rules, &monitor, &error)) < 0) {
                if (!sd_bus_error_has_name(&error, SD_BUS_ERROR_ACCESS_DENIED))
                        return ctl_bus_error(r, &error, "Failed to monitor the bus");
                ctl_error("Not allowed to monitor this bus (only root or the bus's own user is): task results, "
                          "which go to their submitters only, are not shown.");
                for (char **i = rules; *i; i++) {
                        r = sd_bus_add_match(bus, NULL, *i, NULL, NULL);
                        if (r < 0)
                                return ctl_bus_error(r, NULL, "Failed to subscribe to the signals of apiaryd");
                }
                listen = bus;
        } else
                listen = monitor;

        r = event_setup(listen, CTL_EXIT_SUCCESS, &event, NULL);
        if (r >= 0)
                r = sd_bus_add_filter(listen, NULL, on_monitor_message, NULL);
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to set up the event loop");

        /* Not an error: monitor also waits for an apiaryd that has yet to start. */
        sd_bus_error_free(&error);
        r = ctl_bus_is_private() ? 1 : name_has_owner(bus, &error);
        if (r == 0)
                ctl_error("apiaryd is not running on this bus yet (nobody owns " APIARY_BUS_NAME ").");

        if (arg_verbose || isatty(STDERR_FILENO) > 0)
                ctl_error("Monitoring apiaryd; Ctrl-C stops.");
        r = sd_event_loop(event);
        sd_bus_detach_event(listen);
        if (r < 0)
                return ctl_bus_error(r, NULL, "Failed to monitor apiaryd");
        return r;
}
