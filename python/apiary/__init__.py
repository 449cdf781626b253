# SPDX-License-Identifier: MIT
"""apiary: a Python client of apiaryd, the supervisor of pools of plugin workers.

A pool of apiaryd runs tasks: a task is a payload (bytes) that one worker hands to the pool's
plugin, and it ends with a result (bytes) or fails with a reason. This package submits tasks
over D-Bus (org.apiary.Apiary1, docs/dbus-api.md) with the interfaces Python programs know:

* ``apiary.Pool``: like ``multiprocessing.Pool`` (apply, apply_async, map, map_async, imap,
  imap_unordered, close, terminate, join, ``with``), for a remote pool;
* ``apiary.Executor``: a ``concurrent.futures.Executor`` (submit, map, shutdown);
* ``apiary.AsyncPool``: for asyncio (``await pool.run(payload)``, ``await pool.map(payloads)``).

A failed task raises ``TaskError``; a refusal of apiaryd, or an error of the bus, raises an
``ApiaryError`` whose ``name`` is the D-Bus error name. It runs on python3-dbus and python3-gi:
one background daemon thread runs a GLib main loop for every connection of the process, so that
the calling threads need no main loop of their own. See docs/python.md.
"""
from ._core import (ApiaryError, InvalidOptionError, NoSuchPoolError, NoSuchTaskError,
                    PoolFailedError, PoolStoppedError, QueueFullError, StoppingError, TaskError,
                    TooManyTasksError)
from .aio import AsyncPool
from .futures import Executor
from .pool import AsyncResult, IMapIterator, Pool

__version__ = "0.1.0"

__all__ = ["Pool", "AsyncResult", "IMapIterator", "Executor", "AsyncPool",
           "ApiaryError", "TaskError", "InvalidOptionError", "NoSuchPoolError", "QueueFullError",
           "TooManyTasksError", "PoolFailedError", "PoolStoppedError", "StoppingError",
           "NoSuchTaskError"]

# Shown as apiary.X in reprs and tracebacks, not as the module that defines them.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
