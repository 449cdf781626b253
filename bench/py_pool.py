#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What a Python user would pick instead of Apiary for trivial tasks: multiprocessing.Pool.

    py_pool.py --workers N --tasks T --mode apply_async|imap_unordered|map|apply [--chunksize C]
               [--size BYTES] [--runs R] [--warmup W]

The same work as the echo plugin: each task gets a SIZE-byte payload, different for every task
(the same bytes as bench/client.c sends), and returns it. One pool serves W warm-up runs and R
measured runs; pool start-up is not timed, just as apiaryd's is not in the throughput figures.
--mode apply calls Pool.apply() one task at a time, the counterpart of Apiary's Run(), and also
prints the latency percentiles. Prints one line of KEY=VALUE pairs per measured run, like
bench-client, and exits 1 if any result was wrong.
"""
import argparse
import collections
import ctypes
import functools
import multiprocessing
import signal
import sys
import threading
import time


def die_with_parent():
    """Pool workers die with this process, even if it is killed: nothing is left behind."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def echo(payload):
    return payload


def make_payload(i, size):
    head = b"%010d:" % i
    return head + bytes(ord("A") + (i * 7 + j) % 26 for j in range(len(head), size))


def run_apply_async(pool, payloads):
    """apply_async() with a callback per task, all submitted at once."""
    n = len(payloads)
    results = [None] * n
    left = [n]
    failures = []
    done = threading.Event()
    lock = threading.Lock()

    def store(i, value):
        results[i] = value
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    def failed(exc):
        failures.append(exc)
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    start = time.perf_counter()
    for i, p in enumerate(payloads):
        pool.apply_async(echo, (p,), callback=functools.partial(store, i), error_callback=failed)
    if not done.wait(300):
        raise SystemExit("py_pool: timed out")
    seconds = time.perf_counter() - start
    ok = sum(1 for i, p in enumerate(payloads) if results[i] == p)
    return seconds, ok, n - ok - len(failures), len(failures)


def run_imap_unordered(pool, payloads, chunksize):
    """imap_unordered(): results in any order, checked as a multiset (the payloads are unique)."""
    start = time.perf_counter()
    results = list(pool.imap_unordered(echo, payloads, chunksize))
    seconds = time.perf_counter() - start
    want = collections.Counter(payloads)
    got = collections.Counter(results)
    ok = sum(min(c, want[r]) for r, c in got.items())
    return seconds, ok, len(payloads) - ok, 0


def run_map(pool, payloads):
    """map(), with its default chunksize: results in order."""
    start = time.perf_counter()
    results = pool.map(echo, payloads)
    seconds = time.perf_counter() - start
    ok = sum(1 for r, p in zip(results, payloads) if r == p)
    return seconds, ok, len(payloads) - ok, 0


def run_apply(pool, payloads):
    """apply(), one task at a time: the round-trip latency."""
    latencies = []
    ok = 0
    start = time.perf_counter()
    for p in payloads:
        t0 = time.perf_counter()
        r = pool.apply(echo, (p,))
        latencies.append(time.perf_counter() - t0)
        ok += r == p
    seconds = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    pct = {q: latencies[min(n - 1, int(q / 100 * (n - 1) + 0.5))] * 1e6 for q in (50, 99)}
    return seconds, ok, len(payloads) - ok, 0, " p50_us=%.1f p99_us=%.1f" % (pct[50], pct[99])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--mode", choices=["apply_async", "imap_unordered", "map", "apply"], required=True)
    ap.add_argument("--chunksize", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()

    payloads = [make_payload(i, a.size) for i in range(a.tasks)]
    all_right = True
    with multiprocessing.get_context("fork").Pool(a.workers, initializer=die_with_parent) as pool:
        for k in range(a.warmup + a.runs):
            extra = ""
            if a.mode == "apply_async":
                seconds, ok, bad, failed = run_apply_async(pool, payloads)
            elif a.mode == "map":
                seconds, ok, bad, failed = run_map(pool, payloads)
            elif a.mode == "apply":
                seconds, ok, bad, failed, extra = run_apply(pool, payloads)
            else:
                seconds, ok, bad, failed = run_imap_unordered(pool, payloads, a.chunksize)
            all_right = all_right and ok == a.tasks
            if k >= a.warmup:
                print("tasks=%d finished=%d ok=%d bad=%d failed=%d seconds=%.6f rate=%.1f%s"
                      % (a.tasks, a.tasks, ok, bad, failed, seconds, a.tasks / seconds, extra), flush=True)
    return 0 if all_right else 1


if __name__ == "__main__":
    sys.exit(main())
