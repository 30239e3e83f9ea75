"""The TCB floor for Coordinator peers: a replica never trusts a peer that runs on older firmware than itself.

Peer checks have no reference values of their own (a joiner has no manifest yet, an initializer only its
pinned policy hashes), and the launch measurement says nothing about the platform's firmware and microcode.
Without a floor, a host could answer a replica on patched hardware with a genuine Coordinator image running
on a machine with a known, exploited TCB, whose attestation keys or memory may be in anyone's hands. So the
checker's own verified evidence is the yardstick, as it is for the measurement (docs/protocol.md §1):

- **SEV-SNP**: every component of the peer's CURRENT, COMMITTED and REPORTED TCB is at least the same
  component of our own LAUNCH TCB (the level this replica was launched on and relies on itself). Turin's FMC
  component counts like the others.
- **TDX**: the peer's TCB status, computed from Intel's signed collateral, is ``UpToDate`` or one that the
  manifest's reference values explicitly accept (``accepted``); ``Revoked``, ``NoMatch`` and evidence without
  collateral never pass. And its TEE_TCB_SVN (each of the 16 bytes), PCESVN and SGX TCB components are each at
  least ours.

:func:`check_peer_tcb` is the one implementation; every peer check calls it
(:func:`contrast.evidence.verifier.verify_peer`, and the join responder in :mod:`contrast.replica.join`).
It raises ``policy.tcb_too_low`` or ``policy.tcb_status``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Final

from contrast.errors import PolicyError
from contrast.evidence.result import Claims, Tee
from contrast.evidence.tdx import pcs as tdx_pcs

UP_TO_DATE: Final = tdx_pcs.UP_TO_DATE
DEFAULT_PEER_TDX_STATUSES: Final = frozenset({UP_TO_DATE})
# Never acceptable, whatever a manifest says: the platform's keys may be anyone's (Revoked), no TCB level of
# Intel's applies (NoMatch), or nothing could be computed at all.
NEVER_ACCEPTABLE_TDX_STATUSES: Final = frozenset({tdx_pcs.REVOKED, tdx_pcs.NO_MATCH, "collateral missing"})

_SNP_PEER_TCBS: Final = ("current", "committed", "reported")
_SNP_OWN_TCB: Final = "launch"
_TDX_SCALARS: Final = ("pcesvn",)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _ints(value: str | None, sep: str = ",") -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(sep)]
    except ValueError:
        return None


def _hex_bytes(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _snp_floor(peer: Mapping[str, str], own: Mapping[str, str]) -> None:
    prefix = f"{_SNP_OWN_TCB}."
    floor = {k[len(prefix) :]: _int(v) for k, v in own.items() if k.startswith(prefix)}
    if not floor or any(v is None for v in floor.values()):
        # A thin yardstick must not pass everyone: fail closed.
        raise PolicyError("tcb_too_low", "our own evidence does not state its launch TCB")
    for label in _SNP_PEER_TCBS:
        for component, least in floor.items():
            got = _int(peer.get(f"{label}.{component}"))
            if got is None or least is None or got < least:
                raise PolicyError(
                    "tcb_too_low",
                    f"the peer's {label.upper()}_TCB {component} is {peer.get(f'{label}.{component}')}, "
                    f"below our launch TCB's {least}",
                )


def _at_least(name: str, got: list[int] | bytes | None, least: list[int] | bytes | None) -> None:
    if least is None:
        raise PolicyError("tcb_too_low", f"our own evidence does not state its {name}")
    if got is None or len(got) != len(least):
        raise PolicyError("tcb_too_low", f"the peer's evidence does not state its {name}")
    for i, (g, m) in enumerate(zip(got, least, strict=True)):
        if g < m:
            raise PolicyError("tcb_too_low", f"the peer's {name}[{i}] is {g}, below our {m}")


def _tdx_floor(peer: Mapping[str, str], own: Mapping[str, str], accepted: Collection[str]) -> None:
    status = peer.get("status", "collateral missing")
    if status in NEVER_ACCEPTABLE_TDX_STATUSES or status not in accepted:
        raise PolicyError(
            "tcb_status",
            f"the peer's TDX TCB status is {status}; accepted for peers: {', '.join(sorted(accepted))}",
        )
    _at_least("TEE_TCB_SVN", _hex_bytes(peer.get("tee_tcb_svn")), _hex_bytes(own.get("tee_tcb_svn")))
    for name in _TDX_SCALARS:
        mine = _int(own.get(name))
        theirs = _int(peer.get(name))
        _at_least(name.upper(), None if theirs is None else [theirs], None if mine is None else [mine])
    _at_least(
        "SGX TCB components",
        _ints(peer.get("sgx_tcb_components")),
        _ints(own.get("sgx_tcb_components")),
    )


def check_peer_tcb(
    peer: Claims,
    own_tee: Tee,
    own_tcb: Mapping[str, str],
    *,
    accepted_tdx_statuses: Collection[str] = DEFAULT_PEER_TDX_STATUSES,
) -> None:
    """Raise ``policy.tcb_too_low`` / ``policy.tcb_status`` unless ``peer`` is at least as patched as we are.

    ``own_tcb`` is :attr:`Claims.tcb` of our own verified evidence; ``accepted_tdx_statuses`` the TDX TCB
    statuses the manifest explicitly accepts (default ``UpToDate`` only; the never-acceptable ones are
    refused even if listed).
    """
    if peer.tee != own_tee:
        raise PolicyError("tee_mismatch", f"peer evidence is {peer.tee}, ours is {own_tee}")
    if own_tee == "snp":
        _snp_floor(peer.tcb, own_tcb)
    else:
        _tdx_floor(peer.tcb, own_tcb, frozenset(accepted_tdx_statuses) | {UP_TO_DATE})
