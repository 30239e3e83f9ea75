"""The head a stale replica attests for recovery (DK6): its transcript, its checks, and its adoption.

The transcript and the HPKE context are checked as pure functions (any field change changes them); the
replica's adoption rule runs on a real state machine over an in-memory store and through the user API with
emulated SNP evidence.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from contrast.coordinator.history import ZERO_HASH, LatestPointer, ReplicaState, Transition
from contrast.coordinator.manifest_format import parse_manifest
from contrast.coordinator.recovery_head import (
    MAX_RECOVERY_GENERATIONS,
    ClaimedHead,
    authenticate_head,
    claimed_head,
    recovery_context,
)
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.coordinator.user_protocol import (
    open_recovery_secret,
    recovery_report_data,
    seal_recovery_secret,
)
from contrast.crypto.hpke import HpkePrivateKey
from contrast.crypto.ownerkeys import sign_transition
from contrast.crypto.seedshare import (
    decode_seed_shares,
    decrypt_share,
    recovery_signing_message,
    sign_recovery,
)
from contrast.errors import ContrastError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.manifest.state import ManifestReplica
from contrast.manifest.userapi import UserApi
from contrast.testing.kv import MemoryKeyValue
from contrast.wire.v1 import RecoverRequest, RecoveryChallengeRequest
from tests.services.manifest.mfs_helpers import (
    POLICIES,
    encode,
    manifest_obj,
    owner_key,
    platform_factory,
    share_key,
)

HISTORY_KEY = ed25519.Ed25519PrivateKey.generate()


def signed_chain(manifests: list[bytes], key: ed25519.Ed25519PrivateKey = HISTORY_KEY) -> ClaimedHead:
    records, previous = [], ZERO_HASH
    for m in manifests:
        t = Transition(manifest_hash=hashlib.sha256(m).digest(), previous=previous)
        records.append(t.encode())
        previous = t.hash
    pointer = LatestPointer.sign(key, previous, len(records), len(records)).encode()
    return claimed_head(pointer, records)


# ---- the transcript -------------------------------------------------------------------------------------


def _flip(data: bytes, i: int) -> bytes:
    i %= len(data)
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


record = st.binary(min_size=64, max_size=64)


@given(
    nonce=st.binary(min_size=32, max_size=32),
    hpke_key=st.binary(min_size=1, max_size=64),
    recovery_nonce=st.binary(min_size=32, max_size=32),
    pointer=st.binary(min_size=1, max_size=116),
    transitions=st.lists(record, min_size=1, max_size=4),
    field=st.sampled_from(
        ["nonce", "hpke_key", "recovery_nonce", "pointer", "record", "drop", "add", "move"]
    ),
    at=st.integers(0, 1 << 16),
)
def test_every_field_change_changes_the_recovery_report_data(
    nonce: bytes,
    hpke_key: bytes,
    recovery_nonce: bytes,
    pointer: bytes,
    transitions: list[bytes],
    field: str,
    at: int,
) -> None:
    original = (nonce, hpke_key, recovery_nonce, pointer, transitions)
    changed = {
        "nonce": (_flip(nonce, at), hpke_key, recovery_nonce, pointer, transitions),
        "hpke_key": (nonce, _flip(hpke_key, at), recovery_nonce, pointer, transitions),
        "recovery_nonce": (nonce, hpke_key, _flip(recovery_nonce, at), pointer, transitions),
        "pointer": (nonce, hpke_key, recovery_nonce, _flip(pointer, at), transitions),
        "record": (
            nonce,
            hpke_key,
            recovery_nonce,
            pointer,
            [_flip(t, at) if i == at % len(transitions) else t for i, t in enumerate(transitions)],
        ),
        "drop": (nonce, hpke_key, recovery_nonce, pointer, transitions[:-1]),
        "add": (nonce, hpke_key, recovery_nonce, pointer, [*transitions, transitions[0]]),
        # The same bytes, split differently between the pointer and the first record.
        "move": (nonce, hpke_key, recovery_nonce, pointer + transitions[0][:1], [transitions[0][1:]]),
    }[field]
    assert changed != original
    assert recovery_report_data(*changed) != recovery_report_data(*original)


def test_the_recovery_report_data_is_not_the_headless_one() -> None:
    """The label and the arity differ from every other REPORT_DATA: a head is always bound."""
    from contrast.evidence.binding import Label, report_data

    head = signed_chain([b"m1"])
    n, k, r = secrets.token_bytes(32), b"key", secrets.token_bytes(32)
    bound = recovery_report_data(n, k, r, head.pointer, list(head.transitions))
    assert bound != report_data(Label.RECOVERY, n, k, r)
    assert bound != report_data(Label.USER_API, n, k, r, head.pointer)


@given(
    nonce=st.binary(min_size=32, max_size=32),
    generation=st.integers(1, 2**64 - 1),
    head=st.binary(min_size=32, max_size=32),
    other_generation=st.integers(1, 2**64 - 1),
    other_head=st.binary(min_size=32, max_size=32),
)
def test_the_hpke_context_names_the_head(
    nonce: bytes, generation: int, head: bytes, other_generation: int, other_head: bytes
) -> None:
    same = (generation, head) == (other_generation, other_head)
    assert (
        recovery_context(nonce, generation, head) == recovery_context(nonce, other_generation, other_head)
    ) == same


def test_the_sealed_seed_opens_only_for_the_bound_head() -> None:
    key = HpkePrivateKey.generate()
    nonce, head = secrets.token_bytes(32), secrets.token_bytes(32)
    seed, salt = secrets.token_bytes(64), secrets.token_bytes(32)
    sealed = seal_recovery_secret(key.public_bytes(), nonce, 2, head, seed, salt)
    assert open_recovery_secret(key, nonce, 2, head, sealed) == (seed, salt)
    for generation, h in [(1, head), (3, head), (2, secrets.token_bytes(32))]:
        with pytest.raises(ContrastError) as e:
            open_recovery_secret(key, nonce, generation, h, sealed)
        assert e.value.code == "auth.hpke_open_failed"


# ---- the structural check and the authentication ----------------------------------------------------------


def test_a_claimed_head_must_be_the_chain_its_pointer_names() -> None:
    head = signed_chain([b"m1", b"m2", b"m3"])
    assert (head.generation, head.transition_hashes()[-1]) == (3, head.transition_hash)
    assert head.manifest_hashes() == [hashlib.sha256(m).digest() for m in (b"m1", b"m2", b"m3")]
    other = signed_chain([b"m1", b"x2", b"m3"])
    records = list(head.transitions)
    # The right predecessor, another manifest: a consistent chain, but not the one the pointer names.
    swapped = Transition(manifest_hash=bytes(32), previous=head.transition_hashes()[1]).encode()
    for pointer, transitions, code in [
        (head.pointer, records[:-1], "store.generation_mismatch"),
        (head.pointer, [records[0], other.transitions[1], records[2]], "store.broken_chain"),
        (head.pointer, [*records[:2], other.transitions[2]], "store.broken_chain"),
        (head.pointer, [*records[:2], swapped], "store.transition_hash_mismatch"),
        (other.pointer, records, "store.transition_hash_mismatch"),
        (head.pointer[:-1], records, "store.malformed_latest"),
        (b"XLP1" + head.pointer[4:], records, "store.malformed_latest"),
        (head.pointer, [records[0][:63], *records[1:]], "store.malformed_transition"),
    ]:
        with pytest.raises(ContrastError) as e:
            claimed_head(pointer, transitions)
        assert e.value.code == code
    too_long = LatestPointer.sign(HISTORY_KEY, bytes(32), MAX_RECOVERY_GENERATIONS + 1, 1).encode()
    with pytest.raises(ContrastError) as e:
        claimed_head(too_long, records)
    assert e.value.code == "store.history_too_long"


def test_only_the_seeds_history_key_authenticates_a_head() -> None:
    head = signed_chain([b"m1", b"m2"])
    authenticate_head(head, HISTORY_KEY.public_key())
    with pytest.raises(ContrastError) as e:
        authenticate_head(head, ed25519.Ed25519PrivateKey.generate().public_key())
    assert e.value.code == "auth.wrong_seed"


# ---- the replica adopts the bound head only ---------------------------------------------------------------


async def test_the_replica_adopts_only_the_bound_head(emulator_dir: Path) -> None:
    kv = MemoryKeyValue()
    writer = ManifestReplica(kv)
    m1 = encode(manifest_obj(emulator_dir))
    first = await writer.set_manifest(m1, list(POLICIES.values()), signature=b"", expected_previous=b"")
    seed, salt = decrypt_share(share_key(), decode_seed_shares(first.seed_shares))

    platform = await platform_factory(emulator_dir)()
    identity = await CoordinatorIdentity.create(platform, EvidenceVerifier(), dt.datetime.now(dt.UTC))
    stale = ManifestReplica(kv)

    async def no_peer() -> bool:
        return False

    api = UserApi(stale, platform=platform, identity=identity, replica_name="m2", ready_peer_exists=no_peer)
    hpke = identity.hpke_key.public_bytes()

    async def challenge() -> tuple[bytes, ClaimedHead]:
        c = await api.recover_challenge(RecoveryChallengeRequest(nonce=secrets.token_bytes(32)), None)  # type: ignore[arg-type]
        return c.recovery_nonce, claimed_head(c.head_pointer, c.head_transitions)

    def step2(nonce: bytes, head: ClaimedHead, named: ClaimedHead | None = None) -> RecoverRequest:
        named = named or head
        return RecoverRequest(
            nonce=secrets.token_bytes(32),
            recovery_nonce=nonce,
            head_generation=named.generation,
            head_transition=named.transition_hash,
            sealed_secret=seal_recovery_secret(
                hpke, nonce, head.generation, head.transition_hash, seed, salt
            ),
            signature=sign_recovery(share_key(), recovery_signing_message(seed, salt, hpke, nonce)),
        )

    # The challenge attests generation 1; the store moves to generation 2 before the sealed seed arrives.
    nonce, head_1 = await challenge()
    assert (head_1.generation, head_1.transition_hash) == (1, first.view.latest.transition_hash)
    m2 = encode(manifest_obj(emulator_dir, db_sans=["db", "v2"]))
    signature = sign_transition(owner_key(), parse_manifest(m2).hash, head_1.transition_hash)
    await writer.set_manifest(m2, list(POLICIES.values()), signature=signature, expected_previous=b"")
    with pytest.raises(ContrastError) as e:
        await api.recover(step2(nonce, head_1), None)  # type: ignore[arg-type]
    assert e.value.code == "state.recovery_head_changed"
    assert await stale.refresh() is ReplicaState.STALE
    with pytest.raises(ContrastError) as e:  # the nonce was used up by the refusal
        await api.recover(step2(nonce, head_1), None)  # type: ignore[arg-type]
    assert e.value.code == "policy.nonce_unknown"

    # A request naming another head than its challenge attested is refused before anything is opened.
    nonce, head_2 = await challenge()
    with pytest.raises(ContrastError) as e:
        await api.recover(step2(nonce, head_2, named=head_1), None)  # type: ignore[arg-type]
    assert e.value.code == "policy.recovery_head_mismatch"
    # A seed sealed to another head than the one attested for the nonce does not open.
    nonce, head_2 = await challenge()
    with pytest.raises(ContrastError) as e:
        await api.recover(step2(nonce, head_1, named=head_2), None)  # type: ignore[arg-type]
    assert e.value.code == "auth.hpke_open_failed"
    assert await stale.refresh() is ReplicaState.STALE

    # The attested head, unchanged: adopted.
    nonce, head_2 = await challenge()
    assert head_2.generation == 2
    await api.recover(step2(nonce, head_2), None)  # type: ignore[arg-type]
    assert stale.state is ReplicaState.READY
    assert (stale.generation, (await stale.ready_view()).latest.transition_hash) == (
        2,
        head_2.transition_hash,
    )
