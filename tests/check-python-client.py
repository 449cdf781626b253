#!/usr/bin/python3
# SPDX-License-Identifier: MIT
#
# The Python package `apiary` (python/apiary) against the real apiaryd on a private dbus-daemon:
# Pool (apply, apply_async, map, imap, imap_unordered, serializers, terminate, with), errors
# (TaskError, ApiaryError names), the timeout and priority options, Executor, AsyncPool, the
# private socket, spoofed ends, apiaryd going away; then every ```python block of
# docs/python.md is run and its `# → ` comments compared with what it prints.
#
# Usage: check-python-client.py   ($APIARYD, $APIARY_WORKER_PATH, $APIARY_PLUGIN_DIR and
#        $APIARY_TEST_PLUGIN_DIR set; $APIARY_PYTHONPATH: where `apiary` is, default ../python)
import asyncio
import concurrent.futures
import itertools
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHONPATH = os.environ.get("APIARY_PYTHONPATH") or os.path.join(HERE, "..", "python")
sys.path.insert(0, PYTHONPATH)

import dbus  # noqa: E402
import dbus.lowlevel  # noqa: E402

import apiary  # noqa: E402

NAME = "org.apiary.Apiary1"
MANAGER = "org.apiary.Apiary1.Manager"
DOC = os.path.join(HERE, "..", "docs", "python.md")
failed = []


class Deadline(Exception):
    pass


def check(what):
    """Decorator: runs the check now, prints ok/not ok."""
    def run(fn):
        start = time.monotonic()
        try:
            fn()
        except Deadline:
            raise
        except BaseException:
            failed.append(what)
            print("not ok - %s\n%s" % (what, "".join("#   " + line + "\n" for line in
                                                     traceback.format_exc().rstrip().split("\n"))))
        else:
            print("ok - %s (%.2f s)" % (what, time.monotonic() - start))
        sys.stdout.flush()
    return run


def expect_raises(cls, fn, *args):
    try:
        fn(*args)
    except cls as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), cls.__name__))


def wait_until(what, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (dbus.DBusException, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def doc_blocks(path):
    """The ```python blocks of a Markdown file, with their line numbers."""
    with open(path) as f:
        text = f.read()
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S):
        yield text.count("\n", 0, m.start()) + 2, m.group(1)


def main():
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(Deadline("the test ran out of its 55 s")))
    signal.alarm(55)
    tmp = tempfile.mkdtemp(prefix="apiary-python-test-")
    procs = []
    try:
        bus_proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                                    stdout=subprocess.PIPE, text=True)
        procs.append(bus_proc)
        address = bus_proc.stdout.readline().strip()
        private = os.path.join(tmp, "private.sock")
        conf = os.path.join(tmp, "apiary.conf")
        with open(conf, "w") as f:
            f.write("[Apiary]\nPluginDirectory=%s\nPrivateSocket=%s\n"
                    "[Pool echo]\nPlugin=echo.so\nWorkers=2\n"
                    "[Pool nap]\nPlugin=sleep.so\nKind=io\nWorkers=2\n"
                    # one task at a time and a queue of 5: for queueing, cancelling, QueueFull
                    "[Pool nap1]\nPlugin=sleep.so\nKind=io\nWorkers=1\nConcurrency=1\nQueueLimit=5\n"
                    # for timeouts, whose kills must not disturb the other pools
                    "[Pool slow]\nPlugin=sleep.so\nKind=io\nWorkers=1\n"
                    "[Pool control]\nPlugin=%s\nWorkers=1\n"
                    % (os.environ["APIARY_PLUGIN_DIR"], private,
                       os.path.join(os.environ["APIARY_TEST_PLUGIN_DIR"], "control.so")))
        apiaryd = subprocess.Popen([os.environ["APIARYD"], "--config=" + conf, "--bus=" + address,
                                    "--worker-path=" + os.environ["APIARY_WORKER_PATH"]],
                                   stdin=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "w"),
                                   env={k: v for k, v in os.environ.items()
                                        if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")})
        procs.append(apiaryd)
        bus = dbus.bus.BusConnection(address)
        wait_until("apiaryd to run", lambda: bus.get_object(NAME, "/org/apiary/Apiary1").Get(
            MANAGER, "State", dbus_interface=dbus.PROPERTIES_IFACE) == "running")
        os.environ["APIARY_BUS_ADDRESS"] = address  # the default bus of apiary.Pool() from here on
        run_checks(bus, address, private, apiaryd)
    except Deadline as e:
        failed.append(str(e))
        print("not ok - " + str(e))
    finally:
        signal.alarm(0)
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if failed:
            with open(os.path.join(tmp, "log")) as f:
                print("# apiaryd's log:\n" + "".join("#   " + line for line in f.readlines()[-30:]))
        subprocess.run(["rm", "-rf", tmp])
    if failed:
        print("FAIL: %d check(s) failed: %s" % (len(failed), "; ".join(failed)))
        sys.exit(1)


def run_checks(bus, address, private, apiaryd):
    def counter(pool, name):
        return int(bus.get_object(NAME, "/org/apiary/Apiary1/pool/" + pool).Get(
            "org.apiary.Apiary1.Pool", name, dbus_interface=dbus.PROPERTIES_IFACE))

    def wait_running(pool, n=1):
        """Waits until n tasks of the pool run (nap1 runs one at a time: the others queue)."""
        wait_until("%d task(s) of %s to run" % (n, pool), lambda: counter(pool, "TasksRunning") >= n, 10)

    @check("apply returns the result; a str payload is refused without a serializer")
    def _():
        with apiary.Pool("echo") as pool:
            assert pool.apply(b"hello") == b"hello"
            assert pool.apply(bytearray(b"ba")) == b"ba"
            expect_raises(TypeError, pool.apply, "text")
        expect_raises(ValueError, pool.apply, b"closed")

    @check("apply_async: callback, error_callback, ready/successful/wait/get(timeout)")
    def _():
        got, errors = [], []
        with apiary.Pool("nap") as nap, apiary.Pool("control") as control:
            r = nap.apply_async(b"200", callback=got.append, error_callback=errors.append)
            assert not r.ready()
            expect_raises(ValueError, r.successful)
            expect_raises(TimeoutError, r.get, 0.01)
            r.wait(5)
            assert r.ready() and r.successful() and r.get() == b"200" and got == [b"200"], (r, got)
            f = control.apply_async(b"fail oops", callback=got.append, error_callback=errors.append)
            e = expect_raises(apiary.TaskError, f.get, 5)
            assert not f.successful() and str(e) == "oops" and errors == [e] and got == [b"200"], errors

    @check("map keeps the order of 2,000 payloads (SubmitBatch, batch-results, chunks of 300)")
    def _():
        payloads = [b"%d" % i for i in range(2000)]
        with apiary.Pool("echo") as pool:
            assert pool.map(payloads, chunksize=300) == payloads
            assert pool.map(payloads) == payloads
            assert pool.map([]) == []
            r = pool.map_async(payloads[:10])
            assert r.get(5) == payloads[:10] and r.successful()

    @check("imap yields in order although the tasks end out of order; imap_unordered yields all")
    def _():
        payloads = [b"%d" % ms for ms in (120, 0, 60, 0, 90, 30, 0, 10)] * 3
        with apiary.Pool("nap", chunksize=5) as pool:
            assert list(pool.imap(payloads)) == payloads
            unordered = list(pool.imap_unordered(payloads, chunksize=2))
            assert unordered != payloads and sorted(unordered) == sorted(payloads), unordered
            assert list(pool.imap([])) == [] and list(pool.imap_unordered([])) == []

    @check("imap reads an infinite iterable lazily, at most max_in_flight ahead")
    def _():
        pulled = [0]

        def numbers():
            for i in itertools.count():
                pulled[0] += 1
                yield b"%d" % i
        with apiary.Pool("echo", chunksize=20, max_in_flight=100) as pool:
            got = list(itertools.islice(pool.imap(numbers()), 1000))
            assert got == [b"%d" % i for i in range(1000)]
            assert pulled[0] <= 1000 + 100, pulled[0]
            it = pool.imap_unordered(numbers())
            assert len({next(it) for _ in range(500)}) == 500

    @check("imap: a failed task raises in its place and iteration goes on; an iterable's error ends it")
    def _():
        def payloads():
            yield b"a"
            yield b"fail bad"
            yield b"c"
            raise KeyError("from the iterable")
        with apiary.Pool("control", chunksize=1) as pool:
            it = pool.imap(payloads())
            assert next(it) == b"a"
            e = expect_raises(apiary.TaskError, next, it)
            assert e.reason == "bad", e
            assert next(it) == b"c"
            expect_raises(KeyError, next, it)
            expect_raises(StopIteration, next, it)

    @check("serializers: json, pickle, a (dumps, loads) pair")
    def _():
        with apiary.Pool("echo", serializer=json) as pool:
            assert pool.map([{"n": 1}, [2, 3], "four", None]) == [{"n": 1}, [2, 3], "four", None]
            assert list(pool.imap([{"i": i} for i in range(50)])) == [{"i": i} for i in range(50)]
        with apiary.Pool("echo", serializer=pickle) as pool:
            assert pool.apply({1, 2, (3, b"4")}) == {1, 2, (3, b"4")}
            assert pool.apply_async(range(3)).get(5) == range(3)
        with apiary.Pool("echo", serializer=(str.encode, bytes.decode)) as pool:
            assert pool.map(["x", "é"]) == ["x", "é"]

    @check("TaskError carries the reason and the name org.apiary.Apiary1.Error.TaskFailed")
    def _():
        with apiary.Pool("control") as pool:
            e = expect_raises(apiary.TaskError, pool.apply, b"fail the reason")  # Run
            assert e.reason == str(e) == e.message == "the reason", e
            assert e.name == "org.apiary.Apiary1.Error.TaskFailed" and isinstance(e, apiary.ApiaryError)
            e = expect_raises(apiary.TaskError, pool.map, [b"1", b"fail in map", b"3"])  # SubmitBatch
            assert str(e) == "in map" and e.name == "org.apiary.Apiary1.Error.TaskFailed", e

    @check("ApiaryError .name: NoSuchPool, InvalidOption (priority 10, timeout 0)")
    def _():
        with apiary.Pool("nope") as pool:
            for fn in (pool.apply, lambda p: pool.apply_async(p).get(5), lambda p: pool.map([p]),
                       lambda p: list(pool.imap([p]))):
                e = expect_raises(apiary.NoSuchPoolError, fn, b"x")
                assert e.name == "org.apiary.Apiary1.Error.NoSuchPool" and str(e) == 'No pool named "nope".', e
        for kwargs, text in (({"priority": 10}, 'Option "priority" is 10'),
                             ({"timeout": 0}, 'Option "timeout" must be positive')):
            with apiary.Pool("echo", **kwargs) as pool:
                for fn in (pool.apply, lambda p: pool.map([p])):
                    e = expect_raises(apiary.ApiaryError, fn, b"x")
                    assert isinstance(e, apiary.InvalidOptionError), repr(e)
                    assert e.name == "org.apiary.Apiary1.Error.InvalidOption" and text in str(e), e
        with apiary.Pool("echo", priority=9, timeout=5) as pool:
            assert pool.apply(b"p") == b"p" and pool.map([b"q"]) == [b"q"]

    @check("the timeout option fails a task with timeout: ... (Run and Submit)")
    def _():
        with apiary.Pool("slow", timeout=0.2) as pool:
            e = expect_raises(apiary.TaskError, pool.apply, b"3000")
            assert str(e) == "timeout: no result within 200ms", e
            e = expect_raises(apiary.TaskError, pool.apply_async(b"3000").get, 5)
            assert str(e).startswith("timeout: "), e
            assert pool.apply(b"10") == b"10"

    @check("map waits for room when the queue is full (QueueFull) and retries; Executor gets QueueFullError")
    def _():
        payloads = [b"15"] * 24
        with apiary.Pool("nap1", chunksize=4) as pool:
            assert pool.map(payloads) == payloads
        with apiary.Executor("nap1") as executor:
            results = executor.map([b"10"] * 10)  # one SubmitBatch of 10 > QueueLimit=5
            e = expect_raises(apiary.QueueFullError, next, results)
            assert e.name == "org.apiary.Apiary1.Error.QueueFull", e

    @check("terminate cancels the queued tasks (TaskError cancelled), the running one ends")
    def _():
        pool = apiary.Pool("nap1")
        results = [pool.apply_async(b"300") for _ in range(4)]
        wait_running("nap1")
        pool.terminate()
        pool.join()
        assert results[0].get(0) == b"300"
        for r in results[1:]:
            assert str(expect_raises(apiary.TaskError, r.get, 0)) == "cancelled"
        expect_raises(ValueError, pool.apply_async, b"1")

    @check("with Pool: close+join on leaving; terminate+join if the block raised")
    def _():
        with apiary.Pool("nap") as pool:
            r = pool.apply_async(b"150")
        assert r.ready() and r.get(0) == b"150"
        try:
            with apiary.Pool("nap1") as pool:
                first, second = pool.apply_async(b"200"), pool.apply_async(b"200")
                wait_running("nap1")
                raise KeyError("out")
        except KeyError:
            pass
        assert first.get(0) == b"200" and str(expect_raises(apiary.TaskError, second.get, 0)) == "cancelled"

    @check("Executor: submit, map, Future.cancel of a queued task, shutdown(cancel_futures=True)")
    def _():
        with apiary.Executor("echo") as executor:
            assert executor.submit(b"one").result(5) == b"one"
            payloads = [b"%d" % i for i in range(500)]
            assert list(executor.map(payloads, timeout=10)) == payloads
        expect_raises(RuntimeError, executor.submit, b"late")
        executor = apiary.Executor("nap1", serializer=json)
        running, queued = executor.submit(300), executor.submit(300)
        wait_running("nap1")
        assert not running.cancel() and queued.cancel() and queued.cancelled()
        assert running.result(5) == 300
        futures = [executor.submit(200) for _ in range(4)]
        wait_running("nap1")
        executor.shutdown(wait=True, cancel_futures=True)
        assert futures[0].result(0) == 200 and all(f.cancelled() for f in futures[1:]), futures
        done, _ = concurrent.futures.wait(futures, timeout=1)
        assert len(done) == 4

    @check("AsyncPool: run, map, gather, TaskError, cancellation")
    def _():
        async def main():
            async with apiary.AsyncPool("echo") as pool:
                assert await pool.run(b"aio") == b"aio"
                payloads = [b"%d" % i for i in range(2000)]
                assert await pool.map(payloads) == payloads
                assert await asyncio.gather(*(pool.run(b"%d" % i) for i in range(20))) == payloads[:20]
            async with apiary.AsyncPool("control") as pool:
                try:
                    await pool.run(b"fail async")
                    raise AssertionError("no TaskError")
                except apiary.TaskError as e:
                    assert str(e) == "async", e
            async with apiary.AsyncPool("nap1", serializer=json) as pool:
                done, failed = counter("nap1", "TasksDone"), counter("nap1", "TasksFailed")
                running = asyncio.ensure_future(pool.run(400))
                while counter("nap1", "TasksRunning") < 1:
                    await asyncio.sleep(0.01)
                try:
                    await asyncio.wait_for(pool.map([100, 100]), 0.1)
                    raise AssertionError("no timeout")
                except asyncio.TimeoutError:
                    pass
                assert await running == 400
                assert await pool.run(1) == 1
            # The map's two tasks were cancelled while queued, and did not run.
            assert (counter("nap1", "TasksDone") - done, counter("nap1", "TasksFailed") - failed) == (2, 2)
        asyncio.run(main())

    @check("the private socket: bus=\"peer:unix:path=...\"")
    def _():
        with apiary.Pool("echo", "peer:unix:path=" + private) as pool:
            assert pool.apply(b"peer") == b"peer"
            assert pool.map([b"%d" % i for i in range(100)]) == [b"%d" % i for i in range(100)]
        with apiary.Executor("control", "peer:unix:path=" + private) as executor:
            e = expect_raises(apiary.TaskError, executor.submit(b"fail p2p").result, 5)
            assert str(e) == "p2p"

    @check("an end signal from another connection than apiaryd's is ignored")
    def _():
        spoofer = dbus.bus.BusConnection(address)
        with apiary.Executor("nap") as executor:
            future = executor.submit(b"300")
            wait_until("the task's id", lambda: future._task_id is not None, 5)
            for member, signature, args in (
                    ("TaskFinished", "tsbay", (future._task_id, "nap", True, b"forged")),
                    ("TasksFinished", "a(tsbay)", ([(future._task_id, "nap", True, b"forged")],))):
                message = dbus.lowlevel.SignalMessage("/org/apiary/Apiary1", MANAGER, member)
                message.set_destination(executor._client.conn.get_unique_name())
                message.append(*args, signature=signature)
                spoofer.send_message(message)
            spoofer.flush()
            assert future.result(5) == b"300"
        spoofer.close()

    @check("every ```python example of docs/python.md runs and prints what its # → comments say")
    def _():
        blocks = list(doc_blocks(DOC))
        assert len(blocks) >= 8, "only %d python blocks in %s" % (len(blocks), DOC)
        env = dict(os.environ, PYTHONPATH=PYTHONPATH, APIARY_BUS_ADDRESS=address,
                   APIARY_PRIVATE_SOCKET=private)

        def run(block):
            line, code = block
            p = subprocess.run([sys.executable, "-"], input=code, env=env, capture_output=True,
                               text=True, timeout=20)
            expected = re.findall(r"# → (.*)$", code, re.M)
            out = p.stdout.rstrip("\n").split("\n") if p.stdout else []
            if p.returncode != 0 or (expected and out != [e.rstrip() for e in expected]):
                return "docs/python.md:%d: exit %d\n  expected: %r\n  printed:  %r\n  stderr: %s" % (
                    line, p.returncode, expected, out, p.stderr.strip())
        with concurrent.futures.ThreadPoolExecutor(4) as runner:
            errors = [e for e in runner.map(run, blocks) if e]
        assert not errors, "\n".join(errors)
        print("# %d examples" % len(blocks))

    @check("when apiaryd goes away, waiting callers get an ApiaryError instead of waiting forever")
    def _():
        pool = apiary.Pool("nap")
        submitted = pool.apply_async(b"5000")
        ran = []
        thread = threading.Thread(target=lambda: ran.append(expect_raises(apiary.ApiaryError, pool.apply, b"5000")))
        thread.start()
        wait_running("nap", 2)
        apiaryd.kill()
        apiaryd.wait()
        e = expect_raises(apiary.ApiaryError, submitted.get, 5)
        assert not isinstance(e, apiary.TaskError) and e.name == "org.freedesktop.DBus.Error.NoReply", repr(e)
        thread.join(5)
        assert ran and not isinstance(ran[0], apiary.TaskError), ran
        pool.close()
        pool.join()


if __name__ == "__main__":
    main()
