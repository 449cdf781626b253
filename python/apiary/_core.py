# SPDX-License-Identifier: MIT
"""The machinery under the public classes: errors, the one background thread, a D-Bus connection
per client, and the submission of lists of payloads in chunks.

Threads: every D-Bus call, reply and signal of this package is handled in ONE daemon thread that
runs GLib's default main context (dbus-python's GLib main loop integration only attaches to that
context). Other threads never touch a connection: they post functions to that thread with
``_Loop.call()`` and wait on events. Since a ``SubmitBatch`` is sent and its reply handled in that
thread, and libdbus dispatches messages in the order they came, the reply that names the tasks is
handled before any signal of their ends, as ``docs/dbus-api.md`` promises, so every end can be
matched to a task we know; ends of ids we do not know are ignored.
"""
import collections
import functools
import logging
import os
import threading

import dbus
import dbus.bus
import dbus.connection
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.apiary.Apiary1"
PATH = "/org/apiary/Apiary1"
MANAGER = "org.apiary.Apiary1.Manager"
ERROR = "org.apiary.Apiary1.Error."
LOCAL_PATH = "/org/freedesktop/DBus/Local"
LOCAL_IFACE = "org.freedesktop.DBus.Local"
# libdbus's "no timeout" (DBUS_TIMEOUT_INFINITE, INT32_MAX ms): a Run lasts as long as its task.
RUN_CALL_TIMEOUT = 0x7FFFFFFF / 1000.0

log = logging.getLogger("apiary")


# ---------------------------------------------------------------------------------------------
# Errors

class ApiaryError(Exception):
    """An error from apiaryd or from the bus.

    ``name`` is the D-Bus error name (``org.apiary.Apiary1.Error.NoSuchPool``,
    ``org.freedesktop.DBus.Error.AccessDenied``, ...), ``message`` its text. The errors of
    apiaryd have subclasses of their own (``NoSuchPoolError``, ``QueueFullError``, ...).
    """
    name = "org.freedesktop.DBus.Error.Failed"

    def __init__(self, message, name=None):
        if name is not None:
            self.name = name
        super().__init__(message, self.name)
        self.message = message

    def __str__(self):
        return self.message


class TaskError(ApiaryError):
    """A task ended in failure. ``message`` (and ``reason``) is apiaryd's reason: the plugin's
    text, ``cancelled``, ``timeout: no result within 2s``, ... ``name`` is always
    ``org.apiary.Apiary1.Error.TaskFailed``, the error a ``Run`` caller gets."""
    name = ERROR + "TaskFailed"

    @property
    def reason(self):
        return self.message


class InvalidOptionError(ApiaryError):
    """An option (``timeout``, ``priority``) was refused."""
    name = ERROR + "InvalidOption"


class NoSuchPoolError(ApiaryError):
    """No pool has that name."""
    name = ERROR + "NoSuchPool"


class QueueFullError(ApiaryError):
    """The pool's queue has no room for the task(s)."""
    name = ERROR + "QueueFull"


class TooManyTasksError(ApiaryError):
    """The caller's user has too many unfinished tasks (``MaxTasksPerCaller=``)."""
    name = ERROR + "TooManyTasks"


class PoolFailedError(ApiaryError):
    """The pool has failed."""
    name = ERROR + "PoolFailed"


class PoolStoppedError(ApiaryError):
    """The pool is stopping or stopped."""
    name = ERROR + "PoolStopped"


class StoppingError(ApiaryError):
    """apiaryd is stopping."""
    name = ERROR + "Stopping"


class NoSuchTaskError(ApiaryError):
    """Cancel: no task has that id (any more)."""
    name = ERROR + "NoSuchTask"


_ERRORS = {cls.name: cls for cls in (TaskError, InvalidOptionError, NoSuchPoolError, QueueFullError,
                                     TooManyTasksError, PoolFailedError, PoolStoppedError,
                                     StoppingError, NoSuchTaskError)}


def error_from_dbus(exc):
    """The ApiaryError (subclass) for a dbus.DBusException; other exceptions are returned as
    they are."""
    if not isinstance(exc, dbus.DBusException):
        return exc
    name = exc.get_dbus_name() or ApiaryError.name
    return _ERRORS.get(name, ApiaryError)(exc.get_dbus_message() or str(exc), name)


# ---------------------------------------------------------------------------------------------
# Payloads and options

def _as_bytes(payload):
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    raise TypeError("a payload is bytes, not %s; give the pool a serializer= to send other objects"
                    % type(payload).__name__)


def make_codec(serializer):
    """(encode, decode) for a serializer: None (bytes in, bytes out), an object with
    dumps()/loads() (pickle, json, ...), or a pair (dumps, loads). A str from dumps() is sent
    as UTF-8."""
    if serializer is None:
        return _as_bytes, bytes
    if isinstance(serializer, tuple):
        dumps, loads = serializer
    else:
        dumps, loads = serializer.dumps, serializer.loads

    def encode(obj):
        data = dumps(obj)
        return data.encode() if isinstance(data, str) else _as_bytes(data)
    return encode, loads


def make_options(timeout=None, priority=None, batch_results=False):
    """The a{sv} of the task methods: timeout in seconds (sent in µs), priority 0-9."""
    options = {}
    if timeout is not None:
        if timeout < 0:
            raise ValueError("timeout must not be negative, got %r" % timeout)
        options["timeout"] = dbus.UInt64(max(1, round(timeout * 1e6)) if timeout else 0)
    if priority is not None:
        options["priority"] = dbus.Int32(priority)
    if batch_results:
        options["batch-results"] = dbus.Boolean(True)
    return dbus.Dictionary(options, signature="sv")


def chunks(iterable, size):
    """Lists of at most size items of iterable."""
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------------------
# The background thread

class _Loop:
    """The one daemon thread that runs GLib's default main context for every client."""
    _instance = None
    _lock = threading.Lock()

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            elif cls._instance.pid != os.getpid():
                # The parent's thread owned GLib's default main context, and a child cannot
                # take it over: refuse rather than hang.
                raise RuntimeError("apiary cannot be used in a process forked after apiary started "
                                   "its thread; create the pools after the fork, or use the "
                                   "multiprocessing start method 'spawn' or 'forkserver'")
            return cls._instance

    def __init__(self):
        self.pid = os.getpid()
        self.dbus_mainloop = DBusGMainLoop()
        # The open connections' clients, kept alive until they are closed: dbus-python must not
        # free a connection that the main loop still dispatches (loop thread only).
        self.clients = set()
        self._queue = collections.deque()
        self._queue_lock = threading.Lock()
        self._scheduled = False
        self._main = GLib.MainLoop()
        self.thread = threading.Thread(target=self._main.run, name="apiary-dbus", daemon=True)
        self.thread.start()

    def in_loop(self):
        return threading.current_thread() is self.thread

    def call(self, fn, *args):
        """Runs fn(*args) in the loop thread, after every function posted before it."""
        with self._queue_lock:
            self._queue.append((fn, args))
            if self._scheduled:
                return
            self._scheduled = True
        GLib.idle_add(self._drain, priority=GLib.PRIORITY_DEFAULT)

    def _drain(self):
        while True:
            try:
                with self._queue_lock:
                    if not self._queue:
                        self._scheduled = False
                        return False
                    fn, args = self._queue.popleft()
                fn(*args)
            except Exception:
                log.exception("apiary: unexpected error in the D-Bus thread")

    def call_wait(self, fn, *args):
        """Runs fn(*args) in the loop thread and returns what it returns (or raises)."""
        if self.in_loop():
            return fn(*args)
        box, done = [], threading.Event()

        def run():
            try:
                box.append((True, fn(*args)))
            except BaseException as e:
                box.append((False, e))
            done.set()
        self.call(run)
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value


def check_can_wait(loop):
    if loop.in_loop():
        raise RuntimeError("cannot wait for apiary results in a callback: callbacks run in "
                           "apiary's D-Bus thread, which would then never deliver them")


# ---------------------------------------------------------------------------------------------
# A connection

class Client:
    """One private D-Bus connection to apiaryd, and the tasks submitted on it.

    bus: None ($APIARY_BUS_ADDRESS, else the system bus), "system", "session", a D-Bus address
    of a bus, or "peer:ADDRESS" for apiaryd's private socket (e.g. "peer:unix:path=/run/apiary/bus").

    Methods whose docstring says "loop thread" may only be called there (through post()).
    """

    def __init__(self, bus=None):
        self.loop = _Loop.get()
        self.conn = None
        self._tasks = {}            # task id → (on_end, index): on_end(index, ok, value); loop thread only
        self._owner = None
        self._owner_watch = None
        self._refusing = None       # an exception for every new submission (terminate)
        self._cond = threading.Condition()
        self._pending = 0           # posted functions + calls awaiting a reply + tasks not ended
        self._close_when_idle = False
        self.loop.call_wait(self._connect, bus)

    def _connect(self, bus):
        bus = bus or os.environ.get("APIARY_BUS_ADDRESS") or "system"
        try:
            if bus.startswith("peer:"):
                conn = dbus.connection.Connection(bus[len("peer:"):], mainloop=self.loop.dbus_mainloop)
                self._dest = None
            else:
                kind = {"system": dbus.bus.BusConnection.TYPE_SYSTEM,
                        "session": dbus.bus.BusConnection.TYPE_SESSION}.get(bus, bus)
                conn = dbus.bus.BusConnection(kind, mainloop=self.loop.dbus_mainloop)
                self._dest = NAME
        except dbus.DBusException as e:
            raise error_from_dbus(e) from None
        try:
            conn.set_exit_on_disconnect(False)
            # Listen before anything is submitted. On a bus, bus_name makes dbus-python accept
            # the signals only from the owner of NAME.
            conn.add_signal_receiver(self._on_task_finished, "TaskFinished", MANAGER, self._dest, PATH,
                                     byte_arrays=True)
            conn.add_signal_receiver(self._on_tasks_finished, "TasksFinished", MANAGER, self._dest, PATH,
                                     byte_arrays=True)
            conn.add_signal_receiver(self._on_disconnected, "Disconnected", LOCAL_IFACE, None, LOCAL_PATH)
            if self._dest:
                self._owner_watch = conn.watch_name_owner(NAME, self._on_owner)
        except dbus.DBusException as e:
            conn.close()
            raise error_from_dbus(e) from None
        self.conn = conn
        self.loop.clients.add(self)

    # -- bookkeeping, so that join()/shutdown() know when nothing is left (any thread)

    def _hold(self, n=1):
        with self._cond:
            self._pending += n

    def _release(self, n=1):
        with self._cond:
            self._pending -= n
            idle = not self._pending
            if idle:
                self._cond.notify_all()
        if idle and self._close_when_idle:
            self.loop.call(self._close)

    def post(self, fn, *args):
        """Runs fn(*args) in the loop thread; until it has run, the client is not idle."""
        self._hold()

        def run():
            try:
                fn(*args)
            finally:
                self._release()
        self.loop.call(run)

    def wait_idle(self, timeout=None):
        """Waits until no call, task or posted function is left; False on timeout."""
        check_can_wait(self.loop)
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    def close(self, wait=True):
        """Closes the connection: now if wait, else once the client is idle."""
        if wait:
            self.wait_idle()
            self.loop.call_wait(self._close)
        else:
            self._close_when_idle = True
            self.post(lambda: None)  # the release closes it if it is idle already

    def _close(self):
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        if self._owner_watch is not None:
            self._owner_watch.cancel()
        conn.close()
        self.loop.clients.discard(self)

    # -- calls (loop thread)

    def call(self, method, signature, args, on_reply, on_error, timeout=-1.0):
        """Loop thread: an asynchronous call of the Manager; on_reply(*values) or
        on_error(ApiaryError)."""
        self._hold()

        def reply(*values):
            try:
                on_reply(*values)
            finally:
                self._release()

        def error(exc):
            try:
                on_error(error_from_dbus(exc))
            finally:
                self._release()
        if self.conn is None:
            return error(ApiaryError("The connection to apiaryd is closed.",
                                     "org.freedesktop.DBus.Error.Disconnected"))
        try:
            self.conn.call_async(self._dest, PATH, MANAGER, method, signature, args, reply, error,
                                 timeout=timeout, byte_arrays=True)
        except Exception as e:  # a closed connection, an argument of the wrong type, ...
            error(e)

    def submit(self, pool, payloads, options, on_end, on_error, on_ids=None, first=0):
        """Loop thread: SubmitBatch. on_ids(ids) comes with the reply, then on_end(first + index,
        ok, value) once per task (value: the result's bytes, or a TaskError); on_error(exc) if
        the call was refused (no task exists then)."""
        if self._refusing is not None:
            return on_error(self._refusing)

        def reply(ids):
            ids = [int(i) for i in ids]
            self._hold(len(ids))
            tasks = self._tasks
            for index, task_id in enumerate(ids, first):
                if task_id:
                    tasks[task_id] = (on_end, index)
            if on_ids:
                on_ids(ids)
            for index, task_id in enumerate(ids, first):
                if not task_id:  # a shared pool's engine did not store this one
                    self._finish(functools.partial(on_end, index), False, ApiaryError(
                        "The task was not stored by the shared pool's engine.", ERROR + "SourceUnavailable"))
            if self._refusing is not None:
                self.cancel([i for i in ids if i])
        self.call("SubmitBatch", "saaya{sv}", (pool, payloads, options), reply, on_error)

    def run(self, pool, payload, options, on_end):
        """Loop thread: Run. on_end(ok, value) with the result's bytes or an ApiaryError."""
        self.call("Run", "saya{sv}", (pool, payload, options),
                  lambda result: on_end(True, bytes(result)), lambda exc: on_end(False, exc),
                  timeout=RUN_CALL_TIMEOUT)

    def cancel(self, ids, on_reply=None):
        """Loop thread: Cancel each id; on_reply(id, cancelled) for each (False on any error)."""
        for task_id in ids:
            self.call("Cancel", "t", (dbus.UInt64(task_id),),
                      lambda ok, i=task_id: on_reply and on_reply(i, bool(ok)),
                      lambda exc, i=task_id: on_reply and on_reply(i, False))

    def terminate(self, exc):
        """Loop thread: refuse new submissions with exc, and cancel every task of this
        connection (queued ones fail with "cancelled"; running ones run to their end)."""
        self._refusing = exc
        self.cancel(list(self._tasks))

    # -- ends (loop thread)

    def _finish(self, on_end, ok, value):
        try:
            on_end(ok, value)
        except Exception:
            log.exception("apiary: error in a task's end callback")
        finally:
            self._release()

    def _on_task_finished(self, task_id, pool, ok, result):
        self._on_tasks_finished(((task_id, pool, ok, result),))

    def _on_tasks_finished(self, results):
        # The hot path of map(): one pass, one release for the whole signal.
        pop, ended = self._tasks.pop, 0
        try:
            for task_id, _pool, ok, result in results:
                entry = pop(task_id, None)
                if entry is None:
                    continue  # not a task of ours, or already ended
                ended += 1
                on_end, index = entry
                try:
                    if ok:
                        on_end(index, True, bytes(result))
                    else:
                        on_end(index, False, TaskError(bytes(result).decode("utf-8", "replace")))
                except Exception:
                    log.exception("apiary: error in a task's end callback")
        finally:
            if ended:
                self._release(ended)

    def _fail_all(self, exc):
        tasks, self._tasks = self._tasks, {}
        for on_end, index in tasks.values():
            self._finish(functools.partial(on_end, index), False, exc)

    def _on_owner(self, owner):
        if self._owner is not None and owner != self._owner and self._tasks:
            self._fail_all(ApiaryError("apiaryd left the bus before the task ended.",
                                       "org.freedesktop.DBus.Error.NoReply"))
        self._owner = owner

    def _on_disconnected(self):
        self.conn = None
        self.loop.clients.discard(self)
        self._fail_all(ApiaryError("The connection to apiaryd was closed before the task ended.",
                                   "org.freedesktop.DBus.Error.Disconnected"))


# ---------------------------------------------------------------------------------------------
# Lists of payloads

class Feeder:
    """Submits the chunks of one job in order, one SubmitBatch at a time (loop thread only).

    push(first, payloads) queues a chunk whose first payload has index first. on_end(index, ok,
    value) reports each task's end. A chunk refused for lack of room (QueueFull, TooManyTasks)
    while tasks of this job are unended is sent again once one of them ends; any other refusal
    stops the feeder and is reported as on_error(first, exc). stop(cancel=True) also cancels the
    job's unended tasks, including those of a chunk whose reply is still on its way.
    """

    def __init__(self, client, pool, options, on_end, on_error, on_accepted=None):
        self.client, self.pool, self.options = client, pool, options
        self.on_end, self.on_error, self.on_accepted = on_end, on_error, on_accepted
        self._chunks = collections.deque()
        self._ids = {}              # index → task id, of unended tasks
        self._busy = False          # a SubmitBatch awaits its reply
        self._waiting_room = False  # the head chunk waits for an end to be sent again
        self._cancel = False
        self.stopped = False
        self.unended = 0

    def push(self, first, payloads):
        if not self.stopped:
            self._chunks.append((first, payloads))
            self._next()

    def stop(self, cancel=False):
        self.stopped = True
        self._chunks.clear()
        if cancel:
            self._cancel = True
            self.client.cancel(list(self._ids.values()))

    def _next(self):
        if self._busy or self._waiting_room or self.stopped or not self._chunks:
            return
        first, payloads = self._chunks[0]
        self._busy = True
        self.client.submit(self.pool, payloads, self.options, self._end,
                           lambda exc: self._refused(first, exc),
                           lambda ids: self._accepted(first, ids), first)

    def _accepted(self, first, ids):
        self._busy = False
        if self._chunks:
            self._chunks.popleft()
        self.unended += len(ids)
        for index, task_id in enumerate(ids):
            if task_id:
                self._ids[first + index] = task_id
        if self._cancel:
            self.client.cancel([i for i in ids if i])
        if self.on_accepted:
            self.on_accepted(len(ids))
        self._next()

    def _refused(self, first, exc):
        self._busy = False
        if isinstance(exc, (QueueFullError, TooManyTasksError)) and self.unended and not self.stopped:
            self._waiting_room = True
            return
        self.stop()
        self.on_error(first, exc)

    def _end(self, index, ok, value):
        self.unended -= 1
        self._ids.pop(index, None)
        self._waiting_room = False
        self.on_end(index, ok, value)
        self._next()


class MapJob:
    """A list of payloads run through a Feeder with at most `window` tasks unended, in chunks
    of `chunksize`. done(ok, value) is called once, in the loop thread: (True, [results' bytes])
    in the payloads' order, or (False, exc) at the first failure, after which the job's other
    tasks are cancelled."""

    def __init__(self, client, pool, options, payloads, chunksize, window, done):
        self.payloads, self.done_cb = payloads, done
        self.chunksize = max(1, chunksize)
        self.window = max(window, self.chunksize)
        self.results = [None] * len(payloads)
        self.left = len(payloads)
        self.pushed = 0             # payloads handed to the feeder
        self.ended = 0
        self.finished = False
        self.feeder = Feeder(client, pool, options, self._end, self._error)

    def start(self):
        """Loop thread."""
        if not self.payloads:
            self._done(True, [])
        self._refill()

    def cancel(self, exc):
        """Loop thread: ends the job with exc and cancels its tasks."""
        self._done(False, exc)

    def _refill(self):
        while not self.finished and self.pushed < len(self.payloads):
            n = min(self.chunksize, len(self.payloads) - self.pushed)
            if self.pushed - self.ended + n > self.window:
                return
            self.feeder.push(self.pushed, self.payloads[self.pushed:self.pushed + n])
            self.pushed += n

    def _end(self, index, ok, value):
        self.ended += 1
        if self.finished:
            return
        if not ok:
            return self._done(False, value)
        self.results[index] = value
        self.left -= 1
        if not self.left:
            return self._done(True, self.results)
        todo = len(self.payloads) - self.pushed
        if todo and self.pushed - self.ended + min(self.chunksize, todo) <= self.window:
            self._refill()

    def _error(self, index, exc):
        self._done(False, exc)

    def _done(self, ok, value):
        if self.finished:
            return
        self.finished = True
        self.payloads = None
        if not ok:
            self.feeder.stop(cancel=True)
        self.done_cb(ok, value)
