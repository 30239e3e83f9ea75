"""The key-value interface that the Coordinator's state is written through (history, nonces, results).

The interface is what its users need and no more: get, put, create (fails if present), update with
compare-and-set on the revision, per-key history (oldest first, delete markers included) and key listing.
Revisions increase across the whole bucket, as JetStream's stream sequence does.

Keys use ``/`` as separator (``manifests/<hex>``); JetStream KV allows ``[-/_=.a-zA-Z0-9]`` in keys.
The JetStream backend is :class:`contrast.runtime.kv.NatsKeyValue`; tests use
:class:`contrast.testing.kv.MemoryKeyValue`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class KvConflict(Exception):
    """``create`` found the key present, or ``update`` found another revision (someone else wrote first)."""


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes
    revision: int
    deleted: bool = False  # a delete or purge marker in the key's history


class KeyValue(Protocol):
    async def get(self, key: str) -> KvEntry | None:
        """The current value, or None if the key is absent or deleted."""
        ...

    async def put(self, key: str, value: bytes) -> int: ...

    async def create(self, key: str, value: bytes) -> int:
        """Write only if the key is absent (or deleted); else raise :class:`KvConflict`."""
        ...

    async def update(self, key: str, value: bytes, last: int) -> int:
        """Write only if the key's current revision is ``last``; else raise :class:`KvConflict`."""
        ...

    async def history(self, key: str) -> list[KvEntry]:
        """Every retained version of ``key``, oldest first, delete markers included."""
        ...

    async def entry_at(self, key: str, revision: int) -> KvEntry | None:
        """The version of ``key`` written at exactly ``revision`` (delete markers included), else None."""
        ...

    async def entry_after(self, key: str, revision: int) -> KvEntry | None:
        """The first retained version of ``key`` with a revision above ``revision`` (markers included)."""
        ...

    async def keys(self) -> list[str]:
        """Every key that currently has a value."""
        ...
