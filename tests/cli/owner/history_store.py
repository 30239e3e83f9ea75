"""The store as its operator sees it: snapshot and restore the ``history`` bucket, forge trusted-state files.

Shared by the DK6 tests of ``contrast verify`` and ``contrast recover``.
"""

from __future__ import annotations

import json

import nats

from contrast import subjects
from contrast.cli.trusted_state import TrustedState, encode_state
from contrast.coordinator.history import ZERO_HASH, Transition
from contrast.runtime.jetstream import ensure_kv


def rechained(state: TrustedState, manifests: list[str]) -> bytes:
    """A self-consistent state file with these manifest hashes (what a forged or stale memory looks like)."""
    transitions, previous = [], ZERO_HASH
    for h in manifests:
        previous = Transition(manifest_hash=bytes.fromhex(h), previous=previous).hash
        transitions.append(previous.hex())
    doc = json.loads(encode_state(state))
    doc.update(generation=len(manifests), head=transitions[-1], transitions=transitions, manifests=manifests)
    return json.dumps(doc).encode()


async def snapshot_history(url: str) -> dict[str, bytes]:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(subjects.HISTORY.bucket)
        out = {}
        for key in await kv.keys():
            entry = await kv.get(key)
            out[key] = entry.value or b""
        return out
    finally:
        await nc.close()


async def replace_history(url: str, contents: dict[str, bytes]) -> None:
    """Delete the bucket (and the pointer's KV history with it); write ``contents`` back, ``latest`` last."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.delete_key_value(subjects.HISTORY.bucket)
        kv = await ensure_kv(js, subjects.HISTORY)
        for key in sorted(contents, key=lambda k: k == "latest"):
            await kv.put(key, contents[key])
    finally:
        await nc.close()
