# SPDX-License-Identifier: MIT
"""apiary.Pool: a pool of apiaryd used like multiprocessing.Pool."""
import collections
import itertools
import threading
import time
import weakref

from ._core import (Client, Feeder, MapJob, check_can_wait, log, make_codec, make_options)

RUN, CLOSE, TERMINATE = "running", "closed", "terminated"


class Pool:
    """A pool of apiaryd, used like ``multiprocessing.Pool``; a task is a payload, not a function.

    name: the pool's name (``[Pool NAME]`` of apiary.conf).
    bus: None ($APIARY_BUS_ADDRESS if set, else the system bus), ``"system"``, ``"session"``, a
    D-Bus address, or ``"peer:ADDRESS"`` for apiaryd's private socket
    (``"peer:unix:path=/run/apiary/bus"``).
    timeout: seconds per task (the ``timeout`` option: from the moment a worker starts the task).
    priority: 0 (the lowest, the default) to 9.
    serializer: None (payloads and results are bytes; a str is refused with TypeError), an
    object with dumps() and loads() such as ``pickle`` or ``json``, or a pair (dumps, loads).
    chunksize: the default number of payloads per SubmitBatch of map() and imap().
    max_in_flight: at most this many tasks of one map() are unended (of one imap(): not yet
    consumed) at a time, so that a long or infinite iterable works.

    Each Pool has a connection of its own. Callbacks run in apiary's one background thread:
    keep them short, and do not wait for results there.
    """

    def __init__(self, name, bus=None, *, timeout=None, priority=None, serializer=None,
                 chunksize=1000, max_in_flight=8192):
        self.name = name
        self._encode, self._decode = make_codec(serializer)
        self._run_options = make_options(timeout, priority)
        self._submit_options = make_options(timeout, priority, batch_results=True)
        self._chunksize = chunksize
        self._window = max_in_flight
        self._client = Client(bus)
        self._state = RUN
        # Forgotten without close(): the connection closes once its tasks have ended.
        weakref.finalize(self, self._client.close, False)

    def __repr__(self):
        return "<apiary.Pool %r %s>" % (self.name, self._state)

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    def apply(self, payload):
        """Runs one task (the Run method) and returns its result; raises TaskError if it
        failed, or another ApiaryError if apiaryd refused it."""
        self._check_running()
        check_can_wait(self._client.loop)
        result = AsyncResult(self)
        self._client.post(self._client.run, self.name, self._encode(payload), self._run_options,
                          result._complete)
        return result.get()

    def apply_async(self, payload, callback=None, error_callback=None):
        """Submits one task and returns an AsyncResult. callback(result) or
        error_callback(exception) is called in the background thread when it ends."""
        return self._map_async([payload], AsyncResult(self, callback, error_callback, single=True))

    def map(self, iterable, chunksize=None):
        """Runs a task per payload and returns their results in order; raises the first
        failure (the job's other tasks are then cancelled)."""
        check_can_wait(self._client.loop)
        return self.map_async(iterable, chunksize).get()

    def map_async(self, iterable, chunksize=None, callback=None, error_callback=None):
        """map() without waiting: an AsyncResult whose get() returns the list. The iterable
        is read at once."""
        return self._map_async(iterable, AsyncResult(self, callback, error_callback), chunksize)

    def _map_async(self, iterable, result, chunksize=None):
        self._check_running()
        payloads = [self._encode(p) for p in iterable]
        job = MapJob(self._client, self.name, self._submit_options, payloads,
                     chunksize or self._chunksize, self._window, result._complete)
        self._client.post(job.start)
        return result

    def imap(self, iterable, chunksize=None):
        """An iterator over the results, in order, reading the iterable lazily as results are
        consumed (at most max_in_flight ahead). A failed task raises its TaskError in its
        place, and iteration may go on; next(timeout) is accepted as in multiprocessing."""
        self._check_running()
        return IMapIterator(self, iterable, chunksize or self._chunksize, ordered=True)

    def imap_unordered(self, iterable, chunksize=None):
        """imap(), with results in the order the tasks end."""
        self._check_running()
        return IMapIterator(self, iterable, chunksize or self._chunksize, ordered=False)

    def close(self):
        """No more tasks may be submitted; those submitted run to their end."""
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self):
        """close(), and cancel every task of this pool object still queued in apiaryd (they
        fail with "cancelled"); running tasks cannot be stopped and run to their end."""
        if self._state != TERMINATE:
            self._state = TERMINATE
            self._client.post(self._client.terminate, ValueError("Pool not running"))

    def join(self):
        """After close() or terminate(): waits until every task has ended, then closes the
        connection."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._client.close()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        """Unlike multiprocessing.Pool, which terminates: close() and join(), so that the
        tasks submitted in the block end; terminate() and join() if the block raised."""
        if exc_type is None:
            self.close()
        else:
            self.terminate()
        self.join()


class AsyncResult:
    """The result of apply_async() or map_async(), as in multiprocessing."""

    def __init__(self, pool, callback=None, error_callback=None, single=False):
        self._decode = pool._decode
        self._loop = pool._client.loop
        self._callback, self._error_callback = callback, error_callback
        self._single = single
        self._event = threading.Event()
        self._ok = self._value = None

    def _complete(self, ok, value):
        """Loop thread: the raw end (bytes, a list of bytes, or an exception)."""
        if ok:
            try:
                if self._single:
                    value = self._decode(value[0])
                elif isinstance(value, list):
                    value = [self._decode(v) for v in value]
                else:
                    value = self._decode(value)
            except Exception as e:
                ok, value = False, e
        self._ok, self._value = ok, value
        callback = self._callback if ok else self._error_callback
        if callback is not None:
            try:
                callback(value)
            except Exception:
                log.exception("apiary: error in a %s", "callback" if ok else "error_callback")
        self._event.set()

    def ready(self):
        """Whether the task (all tasks of a map) has ended."""
        return self._event.is_set()

    def successful(self):
        """Whether it ended without an error; ValueError if it is not ready."""
        if not self.ready():
            raise ValueError("%r not ready" % self)
        return self._ok

    def wait(self, timeout=None):
        """Waits until it is ready, or timeout seconds."""
        if not self.ready():
            check_can_wait(self._loop)
        self._event.wait(timeout)

    def get(self, timeout=None):
        """The result; raises its error, or TimeoutError if not ready within timeout seconds."""
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError("the task has not ended within %s s" % timeout)
        if not self._ok:
            raise self._value
        return self._value


class IMapIterator:
    """The iterator of imap() and imap_unordered(). The iterable is read, and its payloads
    submitted, in the consumer's thread as it iterates, keeping at most max_in_flight tasks not
    yet consumed."""

    def __init__(self, pool, iterable, chunksize, ordered):
        self._client = pool._client
        self._encode, self._decode = pool._encode, pool._decode
        self._it = iter(iterable)
        self._chunksize = max(1, chunksize)
        self._window = max(pool._window, self._chunksize)
        self._ordered = ordered
        self._pushed = self._yielded = 0   # consumer thread only
        self._exhausted = False
        self._cond = threading.Condition()
        self._ready = {} if ordered else collections.deque()
        self._stop = None                  # (index, exc): nothing from index on will come
        self._feeder = Feeder(self._client, pool.name, pool._submit_options, self._end, self._error)

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def _end(self, index, ok, value):
        with self._cond:
            if self._ordered:
                self._ready[index] = (ok, value)
            else:
                self._ready.append((ok, value))
            self._cond.notify_all()

    def _error(self, index, exc):
        with self._cond:
            if self._stop is None or index < self._stop[0]:
                self._stop = (index, exc)
            self._cond.notify_all()

    def _top_up(self):
        """Consumer thread: reads and submits chunks while there is room."""
        while not self._exhausted and self._pushed - self._yielded + self._chunksize <= self._window:
            if self._stop is not None:
                self._exhausted = True
                return
            chunk = []
            try:
                for item in itertools.islice(self._it, self._chunksize):
                    chunk.append(self._encode(item))
            except Exception as exc:  # the iterable or the serializer: raised in its place
                self._exhausted = True
                self._error(self._pushed + len(chunk), exc)
            if len(chunk) < self._chunksize:
                self._exhausted = True
            if chunk:
                self._client.post(self._feeder.push, self._pushed, chunk)
                self._pushed += len(chunk)

    def _take(self):
        if self._ordered:
            return self._ready.pop(self._yielded, None)
        return self._ready.popleft() if self._ready else None

    def next(self, timeout=None):
        """The next result; TimeoutError if none comes within timeout seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._top_up()
        with self._cond:
            while True:
                item = self._take()
                if item is not None:
                    break
                if self._stop is not None and self._yielded >= self._stop[0]:
                    index, exc = self._stop
                    self._stop, self._exhausted, self._pushed = (index, StopIteration()), True, index
                    raise exc
                if self._exhausted and self._yielded >= self._pushed:
                    raise StopIteration
                check_can_wait(self._client.loop)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("no result within %s s" % timeout)
                self._cond.wait(remaining)
        self._yielded += 1
        ok, value = item
        if not ok:
            raise value
        return self._decode(value)
