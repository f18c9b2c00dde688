"""Sharing what the families of one tick read.

A pass needs the same rollup sums in several families: shift, accuracy and
proxies all want the class x label counts of the same windows, every family
the traffic per version. `AggregateCache` lets the families of one tick share
them: the scheduler installs one (`shared`) around each job, and `cached`
computes a key once per cache; without a cache installed everything is
computed afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")


# -- sharing between the families of one tick ---------------------------------------------


class AggregateCache:
    """A small, thread-safe memo of aggregates; each key is computed once.

    Keys are (kind, model, tick, ...): storing a model's aggregate of a new
    tick drops that model's older ticks, so only the current tick's sums stay
    in memory (found through a per-model index, not a scan of every key).
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._ticks: dict[Hashable, tuple[Hashable, list[Hashable]]] = {}  # model -> (tick, keys)

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = compute()  # a failure is not cached
            with self._lock:
                if isinstance(key, tuple) and len(key) > 2:
                    tick, keys = self._ticks.get(key[1], (key[2], []))
                    if tick != key[2]:  # a new tick of this model: drop the older one
                        for old in keys:
                            self._values.pop(old, None)
                            self._key_locks.pop(old, None)
                        tick, keys = key[2], []
                    keys.append(key)
                    self._ticks[key[1]] = (tick, keys)
                self._values[key] = value
                while len(self._values) > self.size:
                    old, _ = self._values.popitem(last=False)
                    self._key_locks.pop(old, None)
            return value


_current: ContextVar[AggregateCache | None] = ContextVar("modelmon_aggregates", default=None)


@contextmanager
def shared(cache: AggregateCache) -> Iterator[None]:
    token = _current.set(cache)
    try:
        yield
    finally:
        _current.reset(token)


def cached(key: Hashable, compute: Callable[[], T]) -> T:
    cache = _current.get()
    return compute() if cache is None else cache.get(key, compute)
