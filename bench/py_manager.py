#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What a Python user would write for tasks shared between machines without Apiary: a
multiprocessing.managers.BaseManager serving a task queue and a result queue over TCP, with
worker processes that connect to it (the pattern of the Python docs' "Using a remote manager").

    py_manager.py --workers N --tasks T [--size BYTES] [--runs R] [--warmup W]

Everything on 127.0.0.1: the manager in a process of its own on a free port, N worker processes
that connect to it as remote workers would, and this process as the client that puts the tasks
and gets the results. The same payloads as bench/client.c, each result compared with its
payload. Prints one line of KEY=VALUE pairs per measured run, like bench-client. Note what it
does not do: a task a worker dies with, or every queued task when the manager dies, is lost
without a word.
"""
import argparse
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from multiprocessing.managers import BaseManager

AUTHKEY = b"apiary-bench"


def die_with_parent():
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def make_payload(i, size):
    head = b"%010d:" % i
    return head + bytes(ord("A") + (i * 7 + j) % 26 for j in range(len(head), size))


tasks_q = queue.Queue()
results_q = queue.Queue()


class QueueManager(BaseManager):
    pass


QueueManager.register("tasks", callable=lambda: tasks_q)
QueueManager.register("results", callable=lambda: results_q)


def serve(port_pipe):
    die_with_parent()
    m = QueueManager(address=("127.0.0.1", 0), authkey=AUTHKEY)
    server = m.get_server()
    port_pipe.send(server.address[1])
    server.serve_forever()


class Client(BaseManager):
    pass


Client.register("tasks")
Client.register("results")


def worker(port):
    die_with_parent()
    c = Client(address=("127.0.0.1", port), authkey=AUTHKEY)
    c.connect()
    tasks, results = c.tasks(), c.results()
    while True:
        i, payload = tasks.get()
        results.put((i, payload))       # the echo plugin's work


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    args = ap.parse_args()

    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    manager = ctx.Process(target=serve, args=(child,), daemon=True)
    manager.start()
    port = parent.recv()
    workers = [ctx.Process(target=worker, args=(port,), daemon=True) for _ in range(args.workers)]
    for w in workers:
        w.start()
    # A proxy call waits for its answer with no time limit: should the manager or a worker end
    # (it has been seen killed by SIGKILL, cause unknown), say so and exit instead of hanging.
    def watch():
        while True:
            for name, p in [("manager", manager)] + [("worker %d" % k, w) for k, w in enumerate(workers)]:
                if p.exitcode is not None:
                    print("py_manager: the %s process ended (exit code %s)" % (name, p.exitcode),
                          file=sys.stderr, flush=True)
                    os._exit(3)
            time.sleep(0.2)
    threading.Thread(target=watch, daemon=True).start()
    c = Client(address=("127.0.0.1", port), authkey=AUTHKEY)
    c.connect()
    tasks, results = c.tasks(), c.results()

    bad_total = 0
    for run in range(args.warmup + args.runs):
        payloads = [make_payload(i, args.size) for i in range(args.tasks)]
        seen = bytearray(args.tasks)
        ok = bad = 0
        t0 = time.monotonic()
        for i, p in enumerate(payloads):
            tasks.put((i, p))
        for _ in range(args.tasks):
            i, r = results.get()
            if 0 <= i < args.tasks and not seen[i] and r == payloads[i]:
                seen[i] = 1
                ok += 1
            else:
                bad += 1
        t1 = time.monotonic()
        if run >= args.warmup:
            print("tasks=%d finished=%d ok=%d bad=%d failed=0 unknown=0 seconds=%f rate=%.1f"
                  % (args.tasks, ok + bad, ok, bad, t1 - t0, args.tasks / (t1 - t0)), flush=True)
            bad_total += bad
    sys.stdout.flush()
    # Not through the watch thread's eyes: the workers and the manager end here, and so does this.
    os._exit(1 if bad_total else 0)


if __name__ == "__main__":
    sys.exit(main())
