"""What ``contrast verify`` remembers between runs, and the pure checks against it (no I/O here).

The Coordinator's store belongs to the workload operator, who can restore a complete, consistent earlier
snapshot of the history once every replica restarted (threat DK6): the served history is then genuine, signed
and attested, only *old*. Like a TUF client's trusted metadata, the data owner's memory catches it. After a
fully successful verification ``verify`` records the root CA it attested and every transition and manifest
hash of the history; the next history it is served must *extend* that record:

1. the same root CA (a different one is a fresh deployment, e.g. a wiped store: ``verify.root_changed``,
   unless the owner accepts the new root explicitly);
2. the same transition and manifest hash at every recorded generation (``verify.history_forked``);
3. a generation no lower than the recorded one (``verify.rollback``): the head is the recorded one or newer;
4. a history at all: a Coordinator that says it has none lost the recorded one (``verify.history_lost``,
   :func:`check_history_kept`; ``contrast set`` refuses a first set then too).

Separately (threat CP12), the owner may name the manifests they approved: then every manifest in the history
must be one of them or one the trusted state already records (``verify.unapproved_history``, naming the
generation), so an operator who won the first ``set`` with a manifest of its own cannot hide it behind a
later update to the owner's manifest.

``contrast recover`` reads the same state and only checks: before the seed is sealed, the seed's root CA
and the history the stale replica attests it will adopt must pass :func:`check_recovery_root` and
:func:`check_continuity`, and the head the recovered replica attests must be the one checked
(:func:`check_recovered_head`). It never writes the state.

File format (JSON, ``trusted-state.json``)::

    {"format": "contrast-verify-trusted-state/v1",
     "root_ca_sha256": <hex SHA-256 of the root CA certificate's DER>,
     "generation": <int ≥ 1>, "head": <hex transition hash of the head>,
     "transitions": [<hex transition hash of generation 1>, …],   # oldest first; head last
     "manifests": [<hex SHA-256 of the manifest of generation 1>, …],
     "verified_at": <RFC 3339 UTC time of the verification that wrote it>}

It decodes strictly (unknown fields, bad hashes or an inconsistent record are ``verify.state_corrupt``);
a corrupt file is never mistaken for "no file", which is the only first use. Each recorded transition must
chain its manifest to its predecessor, so a damaged history record is corrupt, not a "fork". The file is
the owner's own storage, as trusted as the manifest next to it; it is not signed.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec

from contrast.coordinator.history import MAX_GENERATIONS, ZERO_HASH, Transition
from contrast.errors import ContrastError

FORMAT: Final = "contrast-verify-trusted-state/v1"
# A record of MAX_GENERATIONS transitions and manifests is about 13.4 MB of JSON.
MAX_STATE_FILE: Final = 16 << 20

HexHash = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Hashes = Annotated[tuple[HexHash, ...], msgspec.Meta(min_length=1, max_length=MAX_GENERATIONS)]


class VerifyError(ContrastError):
    """``contrast verify`` refuses the served history given what it verified before (``verify.*``)."""

    family = "verify"


class TrustedState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: Literal["contrast-verify-trusted-state/v1"]
    root_ca_sha256: HexHash
    generation: Annotated[int, msgspec.Meta(ge=1, le=MAX_GENERATIONS)]
    head: HexHash
    transitions: Hashes
    manifests: Hashes
    verified_at: Annotated[str, msgspec.Meta(max_length=64)]

    def __post_init__(self) -> None:
        # msgspec turns these into a ValidationError when decoding, so an inconsistent file is corrupt.
        if len(self.transitions) != self.generation or len(self.manifests) != self.generation:
            raise ValueError("the generation is not the number of recorded transitions and manifests")
        if self.transitions[-1] != self.head:
            raise ValueError("the head is not the last recorded transition")
        # A transition hash commits to its manifest and its predecessor: a consistent record is one chain.
        previous = ZERO_HASH
        for generation, (t, m) in enumerate(zip(self.transitions, self.manifests, strict=True), start=1):
            previous = Transition(manifest_hash=bytes.fromhex(m), previous=previous).hash
            if previous.hex() != t:
                raise ValueError(f"transition {generation} does not chain its manifest to its predecessor")


def observed_state(
    *,
    root_ca_der: bytes,
    transitions: Sequence[bytes],
    manifests: Sequence[bytes],
    verified_at: dt.datetime,
) -> TrustedState:
    """The record of a verified history (``transitions`` and ``manifests``: hashes, oldest first)."""
    if not transitions:
        raise ValueError("a verified history has at least one transition")
    return TrustedState(
        format=FORMAT,
        root_ca_sha256=hashlib.sha256(root_ca_der).hexdigest(),
        generation=len(transitions),
        head=transitions[-1].hex(),
        transitions=tuple(t.hex() for t in transitions),
        manifests=tuple(m.hex() for m in manifests),
        verified_at=verified_at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )


def decode_state(data: bytes) -> TrustedState:
    if len(data) > MAX_STATE_FILE:
        raise VerifyError("state_corrupt", f"the trusted state is larger than {MAX_STATE_FILE} bytes")
    try:
        return msgspec.json.decode(data, type=TrustedState)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise VerifyError("state_corrupt", f"the trusted state does not decode: {e}") from e


def encode_state(state: TrustedState) -> bytes:
    return msgspec.json.format(msgspec.json.encode(state), indent=2) + b"\n"


class Continuity(enum.Enum):
    FIRST_USE = "first_use"  # no state was recorded
    UNCHANGED = "unchanged"  # the served head is the recorded head
    EXTENDED = "extended"  # the served history extends the recorded one
    NEW_ROOT_ACCEPTED = "new_root_accepted"  # another root, accepted explicitly; the old record is replaced


@dataclass(frozen=True, slots=True)
class Assessment:
    continuity: Continuity
    new_generations: int  # generations served beyond the recorded head (all of them on first use/new root)
    # Without approvals: the new generations before the active one, which nothing compared with anything
    # the owner approved (the active one is compared with the local manifest by the caller).
    unreviewed: tuple[int, ...]


def _short(h: str) -> str:
    return h[:16] + "…"


def check_continuity(
    recorded: TrustedState | None, served: TrustedState, *, accept_new_root: bool
) -> Continuity:
    """How the served history relates to the recorded one; raises ``verify.*`` unless it extends it."""
    if recorded is None:
        return Continuity.FIRST_USE
    if recorded.root_ca_sha256 != served.root_ca_sha256:
        if accept_new_root:
            return Continuity.NEW_ROOT_ACCEPTED
        raise VerifyError(
            "root_changed",
            f"the Coordinator's root CA {_short(served.root_ca_sha256)} is not the recorded "
            f"{_short(recorded.root_ca_sha256)}: a new deployment (or a wiped store) replaced the one "
            f"verified at generation {recorded.generation}; pass --accept-new-root only if you know why",
        )
    common = zip(recorded.transitions, served.transitions, recorded.manifests, served.manifests, strict=False)
    for generation, (rt, st, rm, sm) in enumerate(common, start=1):
        if rt != st or rm != sm:
            raise VerifyError(
                "history_forked",
                f"generation {generation} is transition {_short(st)} (manifest {_short(sm)}), but the "
                f"verified history recorded {_short(rt)} (manifest {_short(rm)}) there",
            )
    if served.generation < recorded.generation:
        raise VerifyError(
            "rollback",
            f"the Coordinator serves generation {served.generation} (head {_short(served.head)}), older than "
            f"generation {recorded.generation} (head {_short(recorded.head)}) verified before: the history "
            "was rolled back",
        )
    return Continuity.UNCHANGED if served.generation == recorded.generation else Continuity.EXTENDED


def check_history_kept(recorded: TrustedState | None, *, path: object) -> None:
    """The Coordinator says it has no history: ``verify.history_lost`` if the trusted state records one.

    That answer is an unauthenticated error reply, but true or forged, the history the owner verified is not
    served any more: a wiped (or replaced) store, never a first use.
    """
    if recorded is not None:
        raise VerifyError(
            "history_lost",
            f"the Coordinator has no manifest history, but the trusted state {path} records generation "
            f"{recorded.generation} (head {_short(recorded.head)}, root CA "
            f"{_short(recorded.root_ca_sha256)}): its store was wiped or replaced",
        )


def check_recovery_root(recorded: TrustedState, root_ca_der: bytes) -> None:
    """``contrast recover``: the seed about to be sent derives the recorded root CA (it never changes)."""
    derived = hashlib.sha256(root_ca_der).hexdigest()
    if derived != recorded.root_ca_sha256:
        raise VerifyError(
            "root_changed",
            f"the seed of this share derives root CA {_short(derived)}, but the trusted state records "
            f"{_short(recorded.root_ca_sha256)} (verified at generation {recorded.generation}): the share "
            "belongs to another deployment than the one verified; nothing was sent",
        )


def check_recovered_head(
    recorded: TrustedState | None, checked: TrustedState, *, generation: int, transition_hash: bytes
) -> None:
    """``contrast recover``: the head the replica attests it recovered at is the head checked before.

    ``checked`` is the attested history that passed :func:`check_continuity` before the seed was sealed
    bound to its head; the replica adopts only that head, so any other one means the replica broke the
    protocol. It is refused, and named against the recorded state (if any) where it contradicts it.
    """
    served = transition_hash.hex()
    if generation == checked.generation and served == checked.head:
        return
    after = "; the seed was already sent: do not rely on this Coordinator, and run `contrast verify`"
    if recorded is not None and generation < recorded.generation:
        raise VerifyError(
            "rollback",
            f"the Coordinator recovered at generation {generation} (head {_short(served)}), older than "
            f"generation {recorded.generation} verified before, not at the checked generation "
            f"{checked.generation}{after}",
        )
    if recorded is not None and generation == recorded.generation and served != recorded.head:
        raise VerifyError(
            "history_forked",
            f"the Coordinator recovered at transition {_short(served)} for generation {generation}, but the "
            f"verified history recorded {_short(recorded.head)} there{after}",
        )
    raise VerifyError(
        "history_moved",
        f"the Coordinator recovered at generation {generation} (head {_short(served)}), not at the checked "
        f"generation {checked.generation} (head {_short(checked.head)}) its challenge attested{after}",
    )


def check_approved(served: TrustedState, approved: Set[str], recorded: TrustedState | None) -> None:
    """Every served manifest is in ``approved`` (hex SHA-256) or ``recorded``; else the first is named."""
    known = approved | set(recorded.manifests if recorded is not None else ())
    for generation, h in enumerate(served.manifests, start=1):
        if h not in known:
            raise VerifyError(
                "unapproved_history",
                f"the manifest of generation {generation} ({_short(h)}) is neither an approved manifest nor "
                "recorded in the trusted state",
            )


def assess(
    recorded: TrustedState | None,
    served: TrustedState,
    *,
    accept_new_root: bool,
    approved: Set[str] | None,
) -> Assessment:
    """All checks of the served history against the owner's memory and approvals (``None``: no approvals)."""
    continuity = check_continuity(recorded, served, accept_new_root=accept_new_root)
    # A new deployment starts a new record: what the old one recorded approves nothing in it.
    basis = None if continuity in (Continuity.FIRST_USE, Continuity.NEW_ROOT_ACCEPTED) else recorded
    if approved is not None:
        check_approved(served, approved, basis)
    known = basis.generation if basis is not None else 0
    unreviewed = () if approved is not None else tuple(range(known + 1, served.generation))
    return Assessment(continuity=continuity, new_generations=served.generation - known, unreviewed=unreviewed)
