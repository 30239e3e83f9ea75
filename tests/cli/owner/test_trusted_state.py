"""The trusted state of ``contrast verify``: the pure comparison (no I/O), its file format, the file shell."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path

import msgspec
import msgspec.structs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.cli.exitcodes import UsageError
from contrast.cli.trusted_state import (
    FORMAT,
    MAX_STATE_FILE,
    Continuity,
    TrustedState,
    VerifyError,
    assess,
    check_continuity,
    decode_state,
    encode_state,
    observed_state,
)
from contrast.cli.trusted_state_file import load_state, locked, save_state
from contrast.cli.verify import load_approved
from contrast.coordinator.history import ZERO_HASH, Transition

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
ROOT_A, ROOT_B = b"root certificate A (DER)", b"root certificate B (DER)"


def m(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def history(*manifests: str, root: bytes = ROOT_A) -> TrustedState:
    """A consistent record: transition hashes chained exactly as the Coordinator chains them."""
    transitions, previous = [], ZERO_HASH
    for name in manifests:
        previous = Transition(manifest_hash=m(name), previous=previous).hash
        transitions.append(previous)
    return observed_state(
        root_ca_der=root, transitions=transitions, manifests=[m(x) for x in manifests], verified_at=T0
    )


def code_of(
    recorded: TrustedState | None,
    served: TrustedState,
    *,
    accept_new_root: bool = False,
    approved: set[str] | None = None,
) -> str:
    with pytest.raises(VerifyError) as e:
        assess(recorded, served, accept_new_root=accept_new_root, approved=approved)
    return e.value.code


# ---- continuity -------------------------------------------------------------------------------------------


def test_first_use_unchanged_and_extended() -> None:
    v1, v12, v123 = history("a"), history("a", "b"), history("a", "b", "c")
    first = assess(None, v12, accept_new_root=False, approved=None)
    assert (first.continuity, first.new_generations) == (Continuity.FIRST_USE, 2)
    same = assess(v12, v12, accept_new_root=False, approved=None)
    assert (same.continuity, same.new_generations) == (Continuity.UNCHANGED, 0)
    ext = assess(v1, v123, accept_new_root=False, approved=None)
    assert (ext.continuity, ext.new_generations) == (Continuity.EXTENDED, 2)
    # Without approvals, new generations before the active one are flagged; the active one is the caller's.
    assert (first.unreviewed, same.unreviewed, ext.unreviewed) == ((1,), (), (2,))
    assert assess(v1, v123, accept_new_root=False, approved={m("b").hex(), m("c").hex()}).unreviewed == ()


def test_an_earlier_consistent_snapshot_is_a_rollback() -> None:
    assert code_of(history("a", "b", "c"), history("a", "b")) == "verify.rollback"
    assert code_of(history("a", "b"), history("a")) == "verify.rollback"


@pytest.mark.parametrize(
    ("recorded", "served"),
    [
        (("a", "b"), ("a", "x")),  # same generation, another head
        (("a", "b"), ("a", "x", "y")),  # newer, but not on top of the recorded head
        (("a", "b", "c"), ("x",)),  # older and different: the fork is named, not only the rollback
        (("a", "b"), ("x", "b")),  # same manifest at the head, another chain below it
    ],
)
def test_a_different_hash_at_a_recorded_generation_is_a_fork(
    recorded: tuple[str, ...], served: tuple[str, ...]
) -> None:
    assert code_of(history(*recorded), history(*served)) == "verify.history_forked"


def test_a_new_root_is_refused_unless_accepted() -> None:
    recorded, fresh = history("a", "b"), history("a", root=ROOT_B)
    assert code_of(recorded, fresh) == "verify.root_changed"
    accepted = assess(recorded, fresh, accept_new_root=True, approved=None)
    assert (accepted.continuity, accepted.new_generations) == (Continuity.NEW_ROOT_ACCEPTED, 1)
    grown = assess(recorded, history("x", "y", "z", root=ROOT_B), accept_new_root=True, approved=None)
    assert grown.unreviewed == (1, 2)  # the old record reviews nothing in a new deployment
    # The flag changes nothing for the same root: a rollback stays a rollback.
    assert code_of(recorded, history("a"), accept_new_root=True) == "verify.rollback"


# ---- approvals (CP12) ------------------------------------------------------------------------------------


def test_an_unapproved_earlier_manifest_is_refused() -> None:
    operator_first = history("operator", "owner")
    assert code_of(None, operator_first, approved={m("owner").hex()}) == "verify.unapproved_history"
    ok = assess(None, operator_first, accept_new_root=False, approved={m("owner").hex(), m("operator").hex()})
    assert ok.continuity is Continuity.FIRST_USE


def test_recorded_manifests_count_as_approved_but_not_across_a_new_root() -> None:
    recorded = history("a")
    ok = assess(recorded, history("a", "b"), accept_new_root=False, approved={m("b").hex()})
    assert ok.continuity is Continuity.EXTENDED
    assert code_of(recorded, history("a", "b", "c"), approved={m("b").hex()}) == "verify.unapproved_history"
    # After a new root, the old record approves nothing.
    fresh = history("a", root=ROOT_B)
    assert code_of(recorded, fresh, accept_new_root=True, approved=set()) == "verify.unapproved_history"


# ---- a model of "extends" --------------------------------------------------------------------------------

names = st.lists(st.sampled_from("abcd"), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(recorded=names, served=names, same_root=st.booleans())
def test_continuity_matches_the_prefix_model(recorded: list[str], served: list[str], same_root: bool) -> None:
    r = history(*recorded)
    s = history(*served, root=ROOT_A if same_root else ROOT_B)
    if not same_root:
        expected = "verify.root_changed"
    elif served[: len(recorded)] == recorded:
        expected = "extended" if len(served) > len(recorded) else "unchanged"
    elif recorded[: len(served)] == served:
        expected = "verify.rollback"
    else:
        expected = "verify.history_forked"
    try:
        got = check_continuity(r, s, accept_new_root=False).value
    except VerifyError as e:
        got = e.code
    assert got == expected


# ---- the file format --------------------------------------------------------------------------------------


def test_round_trip_and_format() -> None:
    s = history("a", "b")
    data = encode_state(s)
    assert decode_state(data) == s
    doc = json.loads(data)
    assert doc["format"] == FORMAT
    assert doc["generation"] == 2
    assert doc["head"] == doc["transitions"][-1]
    assert doc["root_ca_sha256"] == hashlib.sha256(ROOT_A).hexdigest()
    assert doc["verified_at"] == "2026-11-29T12:00:00Z"


def _edit(**changes: object) -> bytes:
    doc = json.loads(encode_state(history("a", "b")))
    doc.update(changes)
    return json.dumps(doc).encode()


GOOD = json.loads(encode_state(history("a", "b")))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"null",
        b"[]",
        _edit(format="contrast-verify-trusted-state/v2"),
        _edit(extra=1),
        _edit(generation=3),  # claims more than it records
        _edit(generation=0),
        _edit(head=GOOD["transitions"][0]),  # head is not the last transition
        _edit(root_ca_sha256="AB" * 32),  # upper-case hex
        _edit(transitions=[GOOD["transitions"][0], "00" * 32], head="00" * 32),  # broken chain
        _edit(manifests=[GOOD["manifests"][1], GOOD["manifests"][0]]),  # manifests swapped
        _edit(transitions=[], manifests=[], generation=0, head="00" * 32),
        json.dumps({k: v for k, v in GOOD.items() if k != "verified_at"}).encode(),
        b" " * (MAX_STATE_FILE + 1),
    ],
    ids=lambda d: d[:40].decode(errors="replace") if len(d) < 1000 else f"{len(d)} bytes",
)
def test_corrupt_state_is_named(data: bytes) -> None:
    with pytest.raises(VerifyError) as e:
        decode_state(data)
    assert e.value.code == "verify.state_corrupt"


GOOD_BYTES = encode_state(history("a"))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400)
    | st.integers(0, len(GOOD_BYTES) - 1).map(lambda i: GOOD_BYTES[:i])
    | st.tuples(st.integers(0, len(GOOD_BYTES) - 1), st.integers(1, 255)).map(
        lambda p: GOOD_BYTES[: p[0]] + bytes([GOOD_BYTES[p[0]] ^ p[1]]) + GOOD_BYTES[p[0] + 1 :]
    )
)
def test_damaged_bytes_never_pass_for_another_state(data: bytes) -> None:
    """Truncated, flipped or random bytes fail as ``verify.state_corrupt`` or keep the recorded chain.

    The chain (generation, head, transitions, manifests) is self-checking; the root hash and the time are
    not (the file is the owner's own storage, not an authenticated message), so a flip there may decode.
    """
    try:
        s = decode_state(data)
    except VerifyError as e:
        code = e.code
    else:
        code = "decoded"
        blank = {"root_ca_sha256": "00" * 32, "verified_at": ""}
        assert msgspec.structs.replace(s, **blank) == msgspec.structs.replace(history("a"), **blank)
    assert code in ("decoded", "verify.state_corrupt")


# ---- the file shell -----------------------------------------------------------------------------------


async def test_load_save_missing_unreadable_and_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "verify" / "trusted-state.json"
    assert await load_state(path) is None  # no file: first use
    s = history("a")
    await save_state(path, s)
    assert await load_state(path) == s
    assert path.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["trusted-state.json"]  # no temporary left
    path.write_bytes(encode_state(s)[:-20])
    with pytest.raises(VerifyError) as e:
        await load_state(path)
    assert e.value.code == "verify.state_corrupt"
    path.unlink()
    path.mkdir()  # something that exists but cannot be read as a file
    with pytest.raises(VerifyError) as e:
        await load_state(path)
    assert e.value.code == "verify.state_unreadable"
    with pytest.raises(VerifyError) as e:
        await save_state(path, s)
    assert e.value.code == "verify.state_write_failed"


async def test_a_second_writer_waits_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "trusted-state.json"
    async with locked(path, timeout=1.0):
        with pytest.raises(VerifyError) as e:
            async with locked(path, timeout=0.2):
                pass
        assert e.value.code == "verify.state_locked"
    order: list[str] = []
    held = asyncio.Event()

    async def holder() -> None:
        async with locked(path, timeout=1.0):
            order.append("first")
            held.set()
            await asyncio.sleep(0.3)  # holds the lock while the second writer tries
            order.append("first done")

    async def waiter() -> None:
        await held.wait()
        async with locked(path, timeout=5.0):
            order.append("second")

    await asyncio.gather(holder(), waiter())
    assert order == ["first", "first done", "second"]
    assert path.with_name(path.name + ".lock").is_file()


def test_approved_directory_is_hashed_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b"manifest a")
    (tmp_path / "b").write_bytes(b"manifest b")
    (tmp_path / ".a.json.swp").write_bytes(b"editor junk")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.json").write_bytes(b"manifest c")
    assert load_approved(str(tmp_path)) == {
        hashlib.sha256(b"manifest a").hexdigest(): "a.json",
        hashlib.sha256(b"manifest b").hexdigest(): "b",
    }
    with pytest.raises(UsageError):
        load_approved(str(tmp_path / "a.json"))
    with pytest.raises(UsageError):
        load_approved(str(tmp_path / "missing"))
