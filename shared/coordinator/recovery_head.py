"""The head a stale replica offers to recover at, as it read it from the store (threat DK6; no I/O here).

A stale replica holds no seed, so it cannot check the signature of the stored ``latest`` pointer. It reports
what it read, the pointer and every transition record from the first to the head, and its recovery
challenge binds exactly that into REPORT_DATA (:func:`head_transcript`). Then:

- the seed-share owner, who holds the seed, authenticates the head (:func:`authenticate_head`: the pointer is
  signed by the seed's history key) and checks it against the trusted state of ``contrast verify`` *before*
  sealing anything, and seals the seed bound to that head;
- the replica, once it holds the seed, adopts the stored history only if its own authenticated head is the
  bound one. An operator who swaps the store after the challenge was answered gets a refusal, not a replica
  that serves the swapped history.

Transition hashes chain every manifest hash back to the first, so the head's transition hash names the whole
history; the records let the owner compare every generation with its memory without reading the store.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from contrast.coordinator.history import ZERO_HASH, LatestPointer, Transition
from contrast.errors import AuthError, StoreError

_TRANSCRIPT_LABEL: Final = b"contrast recovery head v1\x00"
# A recovery challenge carries at most this many transitions (the bound of the ``get`` export).
MAX_RECOVERY_GENERATIONS: Final = 4096


@dataclass(frozen=True, slots=True)
class ClaimedHead:
    """A structurally consistent head: the pointer names the last transition, which chains to the first.

    Nothing here is authenticated: see :func:`authenticate_head`.
    """

    pointer: bytes
    transitions: tuple[bytes, ...]  # 64-byte records, oldest first

    @property
    def generation(self) -> int:
        return len(self.transitions)

    @property
    def transition_hash(self) -> bytes:
        return hashlib.sha256(self.transitions[-1]).digest()

    def transition_hashes(self) -> list[bytes]:
        return [hashlib.sha256(t).digest() for t in self.transitions]

    def manifest_hashes(self) -> list[bytes]:
        return [t[:32] for t in self.transitions]


def pointer_head(pointer: bytes) -> tuple[bytes, int]:
    """(transition hash, generation) named by a ``latest`` record, signature unchecked, within the bound."""
    ptr = LatestPointer.decode(pointer)
    if ptr.generation > MAX_RECOVERY_GENERATIONS:
        raise StoreError(
            "history_too_long",
            f"the history has {ptr.generation} generations; a recovery carries at most "
            f"{MAX_RECOVERY_GENERATIONS}",
        )
    return ptr.transition_hash, ptr.generation


def claimed_head(pointer: bytes, transitions: Sequence[bytes]) -> ClaimedHead:
    """Check that ``transitions`` (oldest first) is the one chain the pointer names; ``store.*`` otherwise."""
    head, generation = pointer_head(pointer)
    if generation != len(transitions):
        raise StoreError("generation_mismatch", "the pointer's generation is not the number of transitions")
    previous = ZERO_HASH
    for record in transitions:
        if Transition.decode(record).previous != previous:
            raise StoreError("broken_chain", "a transition does not follow the one before it")
        previous = hashlib.sha256(record).digest()
    if previous != head:
        raise StoreError("transition_hash_mismatch", "the pointer does not name the last transition")
    return ClaimedHead(pointer=pointer, transitions=tuple(transitions))


def head_transcript(pointer: bytes, transitions: Sequence[bytes]) -> bytes:
    """The 32-byte hash of a claimed head that the recovery challenge's REPORT_DATA binds.

    Label, then every element length-prefixed (u32), the list with its count, so no two different claims
    hash the same input.
    """
    h = hashlib.sha256(_TRANSCRIPT_LABEL)
    h.update(struct.pack(">I", len(pointer)) + pointer)
    h.update(struct.pack(">I", len(transitions)))
    for record in transitions:
        h.update(struct.pack(">I", len(record)) + record)
    return h.digest()


def authenticate_head(head: ClaimedHead, history_key: ed25519.Ed25519PublicKey) -> None:
    """The pointer is signed by ``history_key`` (the seed's): only a Coordinator holding the seed wrote it.

    ``auth.wrong_seed`` otherwise, as the replica names a seed that does not sign its history.
    """
    try:
        LatestPointer.verify(head.pointer, history_key)
    except StoreError as e:
        if e.code == "store.bad_latest_signature":
            raise AuthError(
                "wrong_seed", "the seed does not sign the history that the replica attests; nothing was sent"
            ) from e
        raise


def recovery_context(recovery_nonce: bytes, generation: int, transition_hash: bytes) -> bytes:
    """The HPKE context of the sealed seed: the recovery nonce and the head it may be adopted at."""
    if len(recovery_nonce) != 32 or len(transition_hash) != 32 or generation < 1:
        raise ValueError("recovery nonce and transition hash are 32 bytes, the generation is ≥ 1")
    return recovery_nonce + struct.pack(">Q", generation) + transition_hash
