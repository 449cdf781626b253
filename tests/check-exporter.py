#!/usr/bin/python3
# SPDX-License-Identifier: MIT
#
# apiary-exporter as Prometheus would meet it: the real apiaryd on a private dbus-daemon, tasks run,
# apiary-exporter socket-activated on 127.0.0.1 (systemd-socket-activate, as apiary-exporter.socket
# would), scraped over HTTP and parsed with Prometheus' own parser (python3-prometheus-client);
# every value is compared with what the bus says (python3-dbus). Then: a 404, and apiary_up 0 once
# apiaryd is gone.
#
# Usage: check-exporter.py APIARY_EXPORTER   ($APIARYD, $APIARY_WORKER_PATH, $APIARY_PLUGIN_DIR set)
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import dbus
from prometheus_client.parser import text_string_to_metric_families

NAME = "org.apiary.Apiary1"
POOL_IFACE = "org.apiary.Apiary1.Pool"


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def wait_until(what, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (dbus.DBusException, OSError):
            pass
        time.sleep(0.05)
    fail("timed out waiting for " + what)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port, path="/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.headers.get("Content-Type"), r.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} for every sample of the page."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def main():
    exporter = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="apiary-exporter-test-")
    procs = []
    try:
        bus_proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                                    stdout=subprocess.PIPE, text=True)
        procs.append(bus_proc)
        address = bus_proc.stdout.readline().strip()
        conf = os.path.join(tmp, "apiary.conf")
        with open(conf, "w") as f:
            f.write("[Apiary]\nPluginDirectory=%s\n[Pool nap]\nPlugin=sleep.so\nWorkers=1..3\n"
                    "[Pool echo]\nPlugin=echo.so\nWorkers=2\n" % os.environ["APIARY_PLUGIN_DIR"])
        apiaryd = subprocess.Popen([os.environ["APIARYD"], "--config=" + conf, "--bus=" + address,
                                    "--worker-path=" + os.environ["APIARY_WORKER_PATH"]],
                                   stdin=subprocess.DEVNULL, env={k: v for k, v in os.environ.items()
                                                                  if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")})
        procs.append(apiaryd)
        bus = dbus.bus.BusConnection(address)

        def prop(path, name):
            return bus.get_object(NAME, path).Get(POOL_IFACE, name, dbus_interface=dbus.PROPERTIES_IFACE)

        manager = lambda: bus.get_object(NAME, "/org/apiary/Apiary1")
        wait_until("apiaryd to run", lambda: manager().Get("org.apiary.Apiary1.Manager", "State",
                                                             dbus_interface=dbus.PROPERTIES_IFACE) == "running")
        run = manager().get_dbus_method("Run", "org.apiary.Apiary1.Manager")
        for payload in (b"30", b"30", b"0"):
            run("nap", dbus.ByteArray(payload), dbus.Dictionary({}, signature="sv"))
        for payload in (b"a", b"b", b"c", b"d"):
            run("echo", dbus.ByteArray(payload), dbus.Dictionary({}, signature="sv"))

        port = free_port()
        activate = subprocess.Popen(["systemd-socket-activate", "-l", "127.0.0.1:%d" % port,
                                     exporter, "--bus=" + address], stderr=subprocess.PIPE, text=True)
        procs.append(activate)
        wait_until("the exporter's socket", lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True)

        content_type, text = scrape(port)
        if not content_type.startswith("text/plain; version=0.0.4"):
            fail("Content-Type: " + content_type)
        got = samples(text)

        def value(name, **labels):
            key = (name, frozenset(labels.items()))
            if key not in got:
                fail("no sample %s%s in:\n%s" % (name, labels, text))
            return got[key]

        checks = 0
        if value("apiary_up") != 1:
            fail("apiary_up is not 1")
        for pool in ("nap", "echo"):
            path = "/org/apiary/Apiary1/pool/" + pool
            for metric, prop_name, labels in (
                    ("apiary_tasks_submitted_total", "TasksSubmitted", {}),
                    ("apiary_tasks_ended_total", "TasksDone", {"outcome": "done"}),
                    ("apiary_tasks_ended_total", "TasksFailed", {"outcome": "failed"}),
                    ("apiary_tasks_queued", "TasksQueued", {}),
                    ("apiary_workers_ready", "WorkersReady", {}),
                    ("apiary_workers_wanted", "WorkersWanted", {}),
                    ("apiary_worker_restarts_total", "Restarts", {}),
                    ("apiary_workers_min", "WorkersMin", {}),
                    ("apiary_workers_max", "WorkersMax", {}),
                    ("apiary_pool_scale_steps_total", "ScaleUps", {"direction": "up"}),
                    ("apiary_pool_scale_steps_total", "ScaleDowns", {"direction": "down"}),
                    ("apiary_worker_recycles_total", "MemoryRecycles", {"reason": "memory"}),
                    ("apiary_worker_recycles_total", "AgeRecycles", {"reason": "age"})):
                if value(metric, pool=pool, **labels) != int(prop(path, prop_name)):
                    fail("%s{pool=%s} is %s, the bus's %s %s" % (metric, pool, value(metric, pool=pool, **labels),
                                                                   prop_name, prop(path, prop_name)))
                checks += 1
            for priority, n in enumerate(prop(path, "QueuedByPriority")):
                if value("apiary_tasks_queued_by_priority", pool=pool, priority=str(priority)) != int(n):
                    fail("apiary_tasks_queued_by_priority{pool=%s,priority=%d} differs from the bus" % (pool, priority))
                checks += 1
            for metric, buckets, total in (("apiary_task_run_seconds", "TaskRunTimeBuckets", "TaskRunTimeSumUSec"),
                                           ("apiary_task_queue_wait_seconds", "QueueWaitBuckets", "QueueWaitSumUSec")):
                pairs = prop(path, buckets)
                for le, count in pairs:
                    label = "+Inf" if int(le) == 2 ** 64 - 1 else "%g" % (int(le) / 1e6)
                    if value(metric + "_bucket", pool=pool, le=label) != int(count):
                        fail("%s_bucket{pool=%s,le=%s} differs from the bus's %s" % (metric, pool, label, buckets))
                    checks += 1
                if value(metric + "_count", pool=pool) != int(pairs[-1][1]):
                    fail("%s_count{pool=%s} differs from the bus" % (metric, pool))
                if abs(value(metric + "_sum", pool=pool) - int(prop(path, total)) / 1e6) > 1e-6:
                    fail("%s_sum{pool=%s} differs from the bus's %s" % (metric, pool, total))
                checks += 2
        # What the tasks were: 2 naps of 30 ms past 25 ms, 3 + 4 done.
        if value("apiary_task_run_seconds_bucket", pool="nap", le="0.025") != 1 or \
                value("apiary_task_run_seconds_count", pool="nap") != 3:
            fail("the nap pool's run-time histogram does not show 1 task under 25 ms of 3")
        if value("apiary_tasks_ended_total", pool="echo", outcome="done") != 4:
            fail("echo did not end 4 tasks")

        try:
            scrape(port, "/nope")
            fail("GET /nope did not fail")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                fail("GET /nope: %d" % e.code)

        apiaryd.send_signal(signal.SIGTERM)
        apiaryd.wait(timeout=20)
        _, text = scrape(port)
        if samples(text).get(("apiary_up", frozenset())) != 0:
            fail("apiary_up is not 0 without apiaryd:\n" + text)
        print("ok - %d values scraped from apiary-exporter equal the bus's; 404 elsewhere; apiary_up 0 without apiaryd"
              % checks)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
