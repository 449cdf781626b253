# SPDX-License-Identifier: MIT
"""apiary.AsyncPool: a pool of apiaryd for asyncio."""
import asyncio
import weakref

from ._core import Client, MapJob, make_codec, make_options


class AsyncPool:
    """A pool of apiaryd for asyncio: ``await pool.run(payload)``, ``await pool.map(payloads)``.

    The parameters are those of ``apiary.Pool``. The D-Bus work happens in apiary's background
    thread; results come back to the event loop with ``loop.call_soon_threadsafe()``. Cancelling
    the awaiting task cancels the tasks apiaryd still has queued. Creating an AsyncPool connects
    to the bus, which blocks for a moment: create it once.
    """

    def __init__(self, name, bus=None, *, timeout=None, priority=None, serializer=None,
                 chunksize=1000, max_in_flight=8192):
        self.name = name
        self._encode, self._decode = make_codec(serializer)
        self._options = make_options(timeout, priority, batch_results=True)
        self._chunksize = chunksize
        self._window = max_in_flight
        self._client = Client(bus)
        # Forgotten without close(): the connection closes once its tasks have ended.
        weakref.finalize(self, self._client.close, False)
        self._closed = False

    async def run(self, payload):
        """Runs one task; returns its result, or raises its TaskError (ApiaryError if refused)."""
        return (await self._map([self._encode(payload)]))[0]

    async def map(self, payloads, chunksize=None):
        """Runs a task per payload (at most max_in_flight unended at a time) and returns the
        results in order; raises the first failure, and cancels the job's other tasks."""
        return await self._map([self._encode(p) for p in payloads], chunksize)

    async def _map(self, data, chunksize=None):
        if self._closed:
            raise ValueError("AsyncPool is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(ok, value):  # apiary's thread
            try:
                loop.call_soon_threadsafe(self._settle, future, ok, value)
            except RuntimeError:  # the event loop is closed: nobody waits any more
                pass
        job = MapJob(self._client, self.name, self._options, data, chunksize or self._chunksize,
                     self._window, done)
        self._client.post(job.start)
        try:
            return await future
        except asyncio.CancelledError:
            self._client.post(job.cancel, asyncio.CancelledError())
            raise

    def _settle(self, future, ok, value):  # the event loop's thread
        if future.done():
            return
        if not ok:
            return future.set_exception(value)
        try:
            future.set_result([self._decode(v) for v in value])
        except Exception as e:
            future.set_exception(e)

    async def close(self):
        """Waits until every task has ended, then closes the connection."""
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._client.close)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.close()
