"""A small async key-value interface for the Coordinator's history, with in-memory and JetStream backends.

The interface is what the history needs and no more: get, put, create (fails if present), update with
compare-and-set on the revision, per-key history (oldest first, delete markers included) and key listing.
Revisions increase across the whole bucket, as JetStream's stream sequence does.

Keys use ``/`` as separator (``manifests/<hex>``); JetStream KV allows ``[-/_=.a-zA-Z0-9]`` in keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue as NatsKv


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


class MemoryKeyValue:
    """In-memory :class:`KeyValue` for unit tests. ``delete`` and ``purge`` let tests play the attacker."""

    def __init__(self) -> None:
        self._seq = 0
        self._hist: dict[str, list[KvEntry]] = {}

    def _append(self, key: str, value: bytes, deleted: bool = False) -> int:
        self._seq += 1
        self._hist.setdefault(key, []).append(KvEntry(key, bytes(value), self._seq, deleted))
        return self._seq

    async def get(self, key: str) -> KvEntry | None:
        h = self._hist.get(key)
        return h[-1] if h and not h[-1].deleted else None

    async def put(self, key: str, value: bytes) -> int:
        return self._append(key, value)

    async def create(self, key: str, value: bytes) -> int:
        if await self.get(key) is not None:
            raise KvConflict(key)
        return self._append(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        cur = await self.get(key)
        if cur is None or cur.revision != last:
            raise KvConflict(key)
        return self._append(key, value)

    async def history(self, key: str) -> list[KvEntry]:
        return list(self._hist.get(key, []))

    async def keys(self) -> list[str]:
        return sorted(k for k, h in self._hist.items() if h and not h[-1].deleted)

    async def entry_at(self, key: str, revision: int) -> KvEntry | None:
        return next((e for e in self._hist.get(key, []) if e.revision == revision), None)

    async def entry_after(self, key: str, revision: int) -> KvEntry | None:
        return next((e for e in self._hist.get(key, []) if e.revision > revision), None)

    async def delete(self, key: str) -> None:
        self._append(key, b"", deleted=True)

    async def purge(self, key: str) -> None:
        self._hist.pop(key, None)


class NatsKeyValue:
    """:class:`KeyValue` over a JetStream KV bucket (wrap the object ``js.key_value(bucket)`` returns).

    ``entry_at``/``entry_after`` read the bucket's backing stream directly (one ``STREAM.MSG.GET`` each,
    with ``next_by_subj`` for the latter).
    """

    def __init__(self, kv: NatsKv) -> None:
        self._kv = kv
        # nats-py keeps the bucket's context and its stream/subject names in private attributes (nats-py is
        # pinned below 3). The names follow JetStream's KV convention, checked here so a change fails loudly.
        self._js: JetStreamContext = kv._js
        self._stream: str = kv._stream
        self._prefix: str = kv._pre
        if not (self._stream.startswith("KV_") and self._prefix == f"$KV.{self._stream[3:]}."):
            raise RuntimeError(f"unexpected KV layout: stream {self._stream!r}, prefix {self._prefix!r}")

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str) -> NatsKeyValue:
        """Bind to an existing bucket (the runtime creates buckets from ``contrast.subjects``)."""
        return cls(await js.key_value(bucket))

    async def _raw(self, key: str, revision: int, *, next_: bool) -> KvEntry | None:
        subject = self._prefix + key
        try:
            if next_:
                msg = await self._js.get_msg(self._stream, seq=revision + 1, subject=subject, next=True)
            else:
                msg = await self._js.get_msg(self._stream, seq=revision)
        except NotFoundError:
            return None
        if msg.subject != subject or msg.seq is None:
            return None
        op = (msg.headers or {}).get("KV-Operation")
        return KvEntry(key, msg.data or b"", msg.seq, deleted=op in ("DEL", "PURGE"))

    async def entry_at(self, key: str, revision: int) -> KvEntry | None:
        if revision < 1:
            return None
        return await self._raw(key, revision, next_=False)

    async def entry_after(self, key: str, revision: int) -> KvEntry | None:
        return await self._raw(key, revision, next_=True)

    async def get(self, key: str) -> KvEntry | None:
        try:
            e = await self._kv.get(key)
        except KeyNotFoundError:  # KeyDeletedError is a subclass
            return None
        if e.revision is None:
            return None
        return KvEntry(key, e.value or b"", e.revision)

    async def put(self, key: str, value: bytes) -> int:
        return int(await self._kv.put(key, value))

    async def create(self, key: str, value: bytes) -> int:
        try:
            return int(await self._kv.create(key, value))
        except KeyWrongLastSequenceError as e:
            raise KvConflict(key) from e

    async def update(self, key: str, value: bytes, last: int) -> int:
        try:
            return int(await self._kv.update(key, value, last=last))
        except KeyWrongLastSequenceError as e:
            raise KvConflict(key) from e

    async def history(self, key: str) -> list[KvEntry]:
        try:
            entries = await self._kv.history(key)
        except NoKeysError:
            return []
        return [
            KvEntry(key, e.value or b"", e.revision or 0, deleted=e.operation in ("DEL", "PURGE"))
            for e in entries
        ]

    async def keys(self) -> list[str]:
        try:
            return sorted(await self._kv.keys())
        except NoKeysError:
            return []
