#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Celery with a Redis broker and result backend, the usual Python answer for tasks shared between
machines, set up so that a task is not lost with its worker (acks_late).

    py_celery.py --workers N --tasks T [--size BYTES] [--runs R] [--warmup W] [--redis-server PATH]

Starts redis-server on a free port of 127.0.0.1 (no persistence) and a Celery worker with N
prefork processes; this process sends the tasks (echo.delay) and waits for every result
(AsyncResult.get(), one after the other). The same payloads as bench/client.c (as text: Celery's
JSON serializer carries no bytes), each result compared with its payload. Prints one line of
KEY=VALUE pairs per measured run, like bench-client.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from celery import Celery

app = Celery("py_celery")
app.conf.update(
    broker_url=os.environ.get("APIARY_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
    result_backend=os.environ.get("APIARY_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
    # A task is acked when it has run: a dead worker loses none. The prefetch stays Celery's
    # default (4 per process): with 1, Celery on Redis runs some 8 tasks/s on this kind of machine.
    task_acks_late=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="echo")
def echo(payload):
    return payload


def make_payload(i, size):
    head = "%010d:" % i
    return head + "".join(chr(ord("A") + (i * 7 + j) % 26) for j in range(len(head), size))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="apiary-celery-")
    port = free_port()
    url = "redis://127.0.0.1:%d/0" % port
    procs = []
    try:
        procs.append(subprocess.Popen([args.redis_server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                       "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        if not wait_port(port, 10):
            print("redis-server did not start", file=sys.stderr)
            return 1
        env = dict(os.environ, APIARY_BENCH_REDIS=url, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
        procs.append(subprocess.Popen([sys.executable, "-m", "celery", "-A", "py_celery", "worker",
                                       "--concurrency", str(args.workers), "--pool", "prefork", "--loglevel",
                                       "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        app.conf.broker_url = url
        app.conf.result_backend = url
        # The worker is up once it runs a task.
        if echo.delay("ping").get(timeout=60) != "ping":
            print("celery worker did not answer", file=sys.stderr)
            return 1

        bad_total = 0
        for run in range(args.warmup + args.runs):
            payloads = [make_payload(i, args.size) for i in range(args.tasks)]
            t0 = time.monotonic()
            results = [echo.delay(p) for p in payloads]
            values = [r.get(timeout=600) for r in results]
            t1 = time.monotonic()
            ok = sum(1 for v, p in zip(values, payloads) if v == p)
            bad = args.tasks - ok
            for r in results:
                r.forget()
            if run >= args.warmup:
                print("tasks=%d finished=%d ok=%d bad=%d failed=0 unknown=0 seconds=%f rate=%.1f"
                      % (args.tasks, len(values), ok, bad, t1 - t0, args.tasks / (t1 - t0)), flush=True)
                bad_total += bad
        return 1 if bad_total else 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    code = main()
    # Without the interpreter's teardown: Celery's results would reach for the Redis just stopped.
    sys.stdout.flush()
    os._exit(code)
