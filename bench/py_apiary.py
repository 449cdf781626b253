#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The Python client (python/apiary, docs/python.md) on an apiaryd pool, as a Python program uses it.

    py_apiary.py --address ADDRESS --pool POOL --tasks T [--size BYTES] [--runs R] [--warmup W]
                 [--chunksize C]

apiary.Pool(POOL).map() of T payloads: the same SIZE-byte payloads as py_pool.py and
bench/client.c (different for every task), echoed back by the echo plugin; each result is checked
against its payload, in order. One Pool object serves W warm-up runs and R measured runs. Prints
one line of KEY=VALUE pairs per measured run, like py_pool.py, and exits 1 if any result was wrong.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import apiary  # noqa: E402
from py_pool import make_payload  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--chunksize", type=int, default=None)
    a = ap.parse_args()

    payloads = [make_payload(i, a.size) for i in range(a.tasks)]
    all_right = True
    with apiary.Pool(a.pool, bus=a.address) as pool:
        for k in range(a.warmup + a.runs):
            start = time.perf_counter()
            results = pool.map(payloads, chunksize=a.chunksize)
            seconds = time.perf_counter() - start
            ok = sum(1 for r, p in zip(results, payloads) if r == p)
            all_right = all_right and ok == a.tasks
            if k >= a.warmup:
                print("tasks=%d finished=%d ok=%d bad=%d failed=0 seconds=%.6f rate=%.1f"
                      % (a.tasks, len(results), ok, a.tasks - ok, seconds, a.tasks / seconds), flush=True)
    return 0 if all_right else 1


if __name__ == "__main__":
    sys.exit(main())
