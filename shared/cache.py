"""One small bounded cache for the whole code base: a least-recently-used map with a fixed size.

Verifiers keep what they already checked (parsed certificates, verified chains, prepared X.509 verifiers)
so that the steady state of a verification costs one signature check. Every such table is a
:class:`BoundedCache`: keyed by the exact bytes that were checked, bounded so that an attacker who sends
endless distinct inputs only evicts entries, and safe to share between threads. A cache never decides
anything: callers re-check what depends on time at every hit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``size`` entries; a hit makes its entry the most recently used, an insert evicts the least."""

    __slots__ = ("_data", "_lock", "_size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a bounded cache holds at least one entry")
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The cached value, or ``compute()`` stored under ``key``. ``compute`` runs outside the lock (two
        threads that miss together both compute; one result is kept), and an exception it raises is not
        cached."""
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
