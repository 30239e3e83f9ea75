"""An in-memory :class:`contrast.kv.KeyValue` for tests, with the attacker's moves (delete, purge)."""

from __future__ import annotations

from contrast.kv import KvConflict, KvEntry


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
