"""The JetStream backend of :class:`contrast.kv.KeyValue`: one KV bucket, read and written through nats-py."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue as NatsKv

from contrast.kv import KvConflict, KvEntry


class NatsKeyValue:
    """:class:`KeyValue` over a JetStream KV bucket (wrap the object ``js.key_value(bucket)`` returns).

    ``entry_at``/``entry_after``/``history`` read the bucket's backing stream directly (one
    ``STREAM.MSG.GET`` per entry, with ``next_by_subj`` for the latter two).
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
        except KeyNotFoundError as e:
            # Refused for another write to the key that a cluster has not applied yet: nats-py then looks for
            # a deleted entry to write over, finds none yet, and says so. The key is taken all the same.
            raise KvConflict(key) from e

    async def update(self, key: str, value: bytes, last: int) -> int:
        try:
            return int(await self._kv.update(key, value, last=last))
        except KeyWrongLastSequenceError as e:
            raise KvConflict(key) from e

    async def history(self, key: str) -> list[KvEntry]:
        # One STREAM.MSG.GET per version, oldest first. nats-py's own history() runs a watcher that can end
        # empty when the server has delivered every message before the client counted any (a busy machine).
        out: list[KvEntry] = []
        revision = 0
        while (entry := await self.entry_after(key, revision)) is not None:
            out.append(entry)
            revision = entry.revision
        return out

    async def keys(self) -> list[str]:
        try:
            return sorted(await self._kv.keys())
        except NoKeysError:
            return []
