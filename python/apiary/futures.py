# SPDX-License-Identifier: MIT
"""apiary.Executor: a pool of apiaryd as a concurrent.futures.Executor."""
import concurrent.futures
import threading
import time
import weakref

from ._core import Client, chunks, make_codec, make_options


class _TaskFuture(concurrent.futures.Future):
    """A Future of one task; cancel() cancels it in apiaryd if it is still queued there."""

    def __init__(self, executor):
        super().__init__()
        self._executor = executor
        self._task_id = None
        self._submitted = False
        self._on_submitted = []     # loop thread: run once the id is known (or the call refused)

    def cancel(self):
        """Cancels the task if apiaryd still has it queued (Cancel): True if it was. A task
        that runs already runs to its end, and False is returned, as concurrent.futures does."""
        if not self.done():
            self._executor._cancel([self])
        return self.cancelled()


class Executor(concurrent.futures.Executor):
    """A pool of apiaryd as a ``concurrent.futures.Executor``.

    ``submit(payload)`` takes a payload, not a function and its arguments: the function is the
    pool's plugin. The other parameters are those of ``apiary.Pool`` (pool_name is the pool's
    name, bus the bus, timeout, priority, serializer, chunksize). Done callbacks of the futures
    run in apiary's background thread.
    """

    def __init__(self, pool_name, bus=None, *, timeout=None, priority=None, serializer=None,
                 chunksize=1000):
        self.pool_name = pool_name
        self._encode, self._decode = make_codec(serializer)
        self._options = make_options(timeout, priority, batch_results=True)
        self._chunksize = chunksize
        self._client = Client(bus)
        # Forgotten without close(): the connection closes once its tasks have ended.
        weakref.finalize(self, self._client.close, False)
        self._lock = threading.Lock()
        self._shutdown = False
        self._futures = set()

    def submit(self, payload, /):
        """Submits a task; returns its Future (result: the task's result, exception: its
        TaskError, or the ApiaryError of a refusal)."""
        return self._submit([payload])[0]

    def map(self, payloads, *, timeout=None, chunksize=None):
        """Submits a task per payload at once (SubmitBatch, chunksize per call) and returns an
        iterator over their results in order. timeout: seconds from this call for all of them
        (TimeoutError). Closing the iterator early cancels the tasks not yet consumed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        futures = []
        for chunk in chunks(payloads, chunksize or self._chunksize):
            futures += self._submit(chunk)

        def results():
            futures.reverse()
            try:
                while futures:
                    future = futures[-1]
                    value = future.result(None if deadline is None else deadline - time.monotonic())
                    futures.pop()
                    yield value
            finally:
                if futures:
                    self._cancel(futures, wait=False)
        return results()

    def shutdown(self, wait=True, *, cancel_futures=False):
        """No more submissions. cancel_futures: cancel the tasks still queued in apiaryd
        (their futures are cancelled; running ones run on). wait: wait for every future, then
        close the connection (without wait, it is closed once the last task has ended)."""
        with self._lock:
            self._shutdown = True
            pending = [f for f in self._futures if not f.done()]
        if cancel_futures:
            self._cancel(pending, wait=wait)
        if wait:
            concurrent.futures.wait(pending)
        self._client.close(wait=wait)

    # -- internals

    def _submit(self, payloads):
        data = [self._encode(p) for p in payloads]
        futures = [_TaskFuture(self) for _ in data]
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._futures.update(futures)
        for future in futures:
            future.add_done_callback(self._forget)
        self._client.post(self._client.submit, self.pool_name, data, self._options,
                          lambda index, ok, value: self._end(futures[index], ok, value),
                          lambda exc: self._refused(futures, exc),
                          lambda ids: self._accepted(futures, ids))
        return futures

    def _forget(self, future):
        with self._lock:
            self._futures.discard(future)

    def _accepted(self, futures, ids):
        for future, task_id in zip(futures, ids):
            future._task_id, future._submitted = task_id or None, True
            for fn in future._on_submitted:
                fn()

    def _refused(self, futures, exc):
        for future in futures:
            future._submitted = True
            if not future.done():
                future.set_exception(exc)
            for fn in future._on_submitted:
                fn()

    def _end(self, future, ok, value):
        if future.done():  # cancelled
            return
        if ok:
            try:
                value = self._decode(value)
            except Exception as e:
                return future.set_exception(e)
            future.set_result(value)
        else:
            future.set_exception(value)

    def _cancel(self, futures, wait=True):
        """Sends Cancel for each future's task (once its id is known); waits for the replies
        if wait. A future is cancelled when apiaryd says its task was."""
        done = threading.Event()
        left = [len(futures) + 1]

        def one_done():
            left[0] -= 1
            if not left[0]:
                done.set()

        def cancel(future):
            if future.done() or future._task_id is None:
                return one_done()

            def reply(task_id, cancelled):
                if cancelled and not future.done():
                    concurrent.futures.Future.cancel(future)
                    future.set_running_or_notify_cancel()  # wakes wait() and as_completed()
                one_done()
            self._client.cancel([future._task_id], reply)

        def in_loop():
            for future in futures:
                if future._submitted or future.done():
                    cancel(future)
                else:
                    future._on_submitted.append(lambda f=future: cancel(f))
            one_done()
        self._client.post(in_loop)
        if wait and not self._client.loop.in_loop():
            done.wait()
