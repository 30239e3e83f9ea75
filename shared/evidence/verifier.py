"""TEE-neutral evidence: the wire bundle, one entry point to verify it, and the peer-statement check.

An :class:`Evidence` bundle is what an initializer or a Coordinator replica sends: the raw SNP report or
TDX quote, plus whatever collateral it could gather (SNP: VCEK/VLEK, ASK/ASVK, ARK and a CRL; TDX: PCS
collateral).
Nothing in it is trusted because it was supplied: every certificate is checked against the pinned roots.

:func:`verify_evidence` dispatches on ``tee`` to the SNP or TDX library and returns a
:class:`~contrast.evidence.result.ValidationResult`. Broken evidence comes back as a rejected result with an
``evidence.*`` finding; reference-value mismatches come back with ``policy.*`` findings. It does no I/O.

:func:`verify_peer` implements ``docs/protocol.md`` §1: it checks that a peer's evidence is authentic,
chains to the same kind of root as our own, runs the same launch measurement as ours on a TCB at least ours
(:mod:`contrast.evidence.peertcb`), has an allowed policy hash, and binds the expected REPORT_DATA. Peers are
Coordinator replicas answering a joiner or an initializer.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Final

import msgspec

from contrast.cache import BoundedCache
from contrast.errors import CollateralError, EvidenceError, PolicyError
from contrast.evidence.peertcb import DEFAULT_PEER_TDX_STATUSES, check_peer_tcb
from contrast.evidence.refvalues import ReferenceValues
from contrast.evidence.result import Claims, Finding, Tee, ValidationResult
from contrast.evidence.snp import abi as snp_abi
from contrast.evidence.snp import trust as snp_trust
from contrast.evidence.snp import validate as snp_validate
from contrast.evidence.snp.kds import Product
from contrast.evidence.snp.verify import SnpVerifier
from contrast.evidence.tdx import validate as tdx_validate
from contrast.evidence.tdx.trust import INTEL_SGX_ROOT_CA_SHA256, TdxRoots
from contrast.evidence.tdx.verify import TdxCollateral, TdxVerifier

MAX_REPORT_BYTES: Final = 16 * 1024  # SNP reports are 1184 bytes; TDX quotes with PEM chains stay < 8 KiB
MAX_CERT_BYTES: Final = 16 * 1024
MAX_CERTS: Final = 4
MAX_CRL_BYTES: Final = 256 * 1024
_VERIFIERS: Final = 16  # distinct sets of trust anchors a process keeps a verifier for

# The launch details that must match between peers, besides ``Claims.measurement``. TDX RTMR3 is extended at
# run time by the workload, so it legitimately differs between replicas. The measurement does not cover the
# launch policy (SNP POLICY, VMPL; TDX TD_ATTRIBUTES, XFAM): the host picks it, so a host could start our very
# image with DEBUG set and read its memory. "Same as mine" pins it without configuration.
_PEER_MEASUREMENT_DETAILS: Final[dict[Tee, tuple[str, ...]]] = {
    "snp": ("policy", "vmpl"),
    "tdx": ("rtmr0", "rtmr1", "rtmr2", "mr_seam", "td_attributes", "xfam"),
}

_TDX_DEBUG_BIT: Final = 0x01  # TD_ATTRIBUTES bit 0 (in byte 0)


def _debug_enabled(tee: Tee, details: dict[str, str]) -> bool:
    """Whether the launch policy in ``details`` lets the host debug (read) the guest; unknown means yes."""
    try:
        if tee == "snp":
            return bool(int(details["policy"], 16) & snp_abi.POLICY_DEBUG)
        return bool(bytes.fromhex(details["td_attributes"])[0] & _TDX_DEBUG_BIT)
    except (KeyError, ValueError, IndexError):
        return True


def _without_debug(tee: Tee, key: str, value: str | None) -> str | None:
    """A launch detail with the DEBUG bit cleared (it has its own, one-sided rule); None if malformed.

    A debug guest (development) may still trust a non-debug peer; a non-debug guest never trusts a debug one.
    """
    if value is None:
        return None
    try:
        if tee == "snp" and key == "policy":
            return f"0x{int(value, 16) & ~snp_abi.POLICY_DEBUG:016x}"
        if tee == "tdx" and key == "td_attributes":
            raw = bytes.fromhex(value)
            return (bytes([raw[0] & ~_TDX_DEBUG_BIT & 0xFF]) + raw[1:]).hex()
    except (ValueError, IndexError):
        return None
    return value


class Evidence(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Hardware evidence as it travels: the report or quote, and the collateral that came with it."""

    tee: Tee
    report: Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_REPORT_BYTES)]
    # SNP: VCEK/VLEK, ASK/ASVK, ARK as DER, any order (the verifier builds the chain). Empty for TDX, whose
    # quote embeds its PCK chain.
    certs: Annotated[
        list[Annotated[bytes, msgspec.Meta(max_length=MAX_CERT_BYTES)]], msgspec.Meta(max_length=MAX_CERTS)
    ] = []
    crl: Annotated[bytes, msgspec.Meta(max_length=MAX_CRL_BYTES)] | None = None
    tdx_collateral: TdxCollateral | None = None


def _rejected(tee: Tee, code: str, field: str, message: str) -> ValidationResult:
    claims = Claims(tee=tee, platform="", policy_hash=b"", report_data=b"", measurement=b"")
    return ValidationResult(
        accepted=False, claims=claims, findings=(Finding(code=code, field=field, message=message),)
    )


@dataclass(frozen=True)
class VendorRoots:
    """The vendor roots of trust: AMD's ARKs by SHA-256 (with their product) and Intel's SGX Root CA.

    Production always uses the defaults, the pinned roots; no setting changes them. Tests build a
    :class:`EvidenceVerifier` with a stand-in root (an emulator's) in their place, so that everything else
    runs exactly as it does on real hardware.
    """

    amd_arks: Mapping[bytes, Product] = field(default_factory=lambda: snp_trust.PRODUCT_BY_ARK_SHA256)
    intel_root_sha256: str = INTEL_SGX_ROOT_CA_SHA256


class EvidenceVerifier:
    """Verifies evidence against reference values, keeping one long-lived SNP or TDX verifier (and so its
    caches) per set of trust anchors.

    One instance per process; it is safe to share between coroutines. It does no I/O.
    """

    def __init__(self, vendor: VendorRoots | None = None) -> None:
        self.vendor = vendor or VendorRoots()
        self._snp: BoundedCache[frozenset[bytes], SnpVerifier] = BoundedCache(_VERIFIERS)
        self._tdx: BoundedCache[TdxRoots, TdxVerifier] = BoundedCache(_VERIFIERS)

    def _snp_verifier(self, emulator_roots: frozenset[bytes]) -> SnpVerifier:
        pins = self.vendor.amd_arks
        return self._snp.get_or_compute(emulator_roots, lambda: SnpVerifier(emulator_roots, ark_pins=pins))

    def _tdx_verifier(self, roots: TdxRoots) -> TdxVerifier:
        return self._tdx.get_or_compute(roots, lambda: TdxVerifier(roots))

    def verify(
        self,
        evidence: Evidence,
        references: ReferenceValues,
        *,
        expected_report_data: bytes,
        now: datetime,
    ) -> ValidationResult:
        """Verify ``evidence`` and validate it against every reference-value set for its TEE."""
        if len(expected_report_data) != 64:
            raise ValueError("expected_report_data must be 64 bytes")
        if evidence.tee == "snp":
            if not references.snp:
                return _rejected("snp", "policy.no_reference_values", "ReferenceValues.snp", "no SNP values")
            return snp_validate.verify_and_validate(
                evidence.report,
                evidence.certs,
                evidence.crl,
                references.snp,
                expected_report_data,
                now,
                verifier=self._snp_verifier(snp_validate.roots_for(references.snp)),
            )
        if not references.tdx:
            return _rejected("tdx", "policy.no_reference_values", "ReferenceValues.tdx", "no TDX values")
        try:
            roots = tdx_validate.roots_for(references.tdx, intel_root_sha256=self.vendor.intel_root_sha256)
        except ValueError:
            roots = None  # mixed platforms: verify_and_validate rejects them by name
        return tdx_validate.verify_and_validate(
            evidence.report,
            evidence.tdx_collateral,
            references.tdx,
            expected_report_data,
            now,
            verifier=None if roots is None else self._tdx_verifier(roots),
            intel_root_sha256=self.vendor.intel_root_sha256,
        )

    def authenticate(self, evidence: Evidence, *, emulator_root: str | None, now: datetime) -> Claims:
        """Check authenticity only (signature, chain to the pinned root, collateral signatures), no policy.

        ``emulator_root`` (hex SHA-256) trusts that emulator root *instead of* the vendor roots; ``None``
        trusts only the vendor roots. Raises :class:`EvidenceError` or :class:`CollateralError`.
        """
        if evidence.tee == "snp":
            roots = frozenset({bytes.fromhex(emulator_root)}) if emulator_root else frozenset()
            verified = self._snp_verifier(roots).verify(
                evidence.report, evidence.certs, evidence.crl, now=now
            )
            if emulator_root is not None and not verified.chain.emulated:
                raise EvidenceError("root_mismatch", "expected an emulated peer, got a vendor-rooted one")
            return snp_validate.claims_of(verified)
        tdx_roots = (
            TdxRoots.emulated(emulator_root)
            if emulator_root
            else TdxRoots.intel(self.vendor.intel_root_sha256)
        )
        quote = self._tdx_verifier(tdx_roots).verify(evidence.report, evidence.tdx_collateral, now=now)
        return tdx_validate.claims_of(quote)


class OwnIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """What a process knows about itself from its own evidence; the yardstick for its peers."""

    tee: Tee
    measurement: bytes
    policy_hash: bytes
    measurement_details: dict[str, str] = {}
    emulator_root: str | None = None  # hex SHA-256 of our emulator root; None on real hardware
    tcb: dict[str, str] = {}  # our own verified TCB (Claims.tcb): the floor for our peers

    @classmethod
    def from_claims(cls, claims: Claims, *, emulator_root: str | None) -> OwnIdentity:
        keys = _PEER_MEASUREMENT_DETAILS[claims.tee]
        return cls(
            tee=claims.tee,
            measurement=claims.measurement,
            policy_hash=claims.policy_hash,
            measurement_details={k: claims.details[k] for k in keys if k in claims.details},
            emulator_root=emulator_root,
            tcb=dict(claims.tcb),
        )


def verify_peer(
    verifier: EvidenceVerifier,
    peer: Evidence,
    own: OwnIdentity,
    *,
    allowed_policy_hashes: Collection[bytes],
    expected_report_data: bytes,
    now: datetime,
    accepted_tdx_statuses: Collection[str] = DEFAULT_PEER_TDX_STATUSES,
) -> Claims:
    """Check a peer's evidence as ``docs/protocol.md`` §1 says; return its claims or raise a typed error.

    The peer must use our TEE and our kind of root, run our launch measurement under our launch policy
    (SNP POLICY and VMPL, TDX TD_ATTRIBUTES and XFAM: the host picks these, the measurement does not cover
    them; DEBUG is refused unless we run with it too), sit on a TCB at least ours
    (:func:`~contrast.evidence.peertcb.check_peer_tcb`; TDX: a status of ``accepted_tdx_statuses``, default
    ``UpToDate``), have one of ``allowed_policy_hashes``, and bind ``expected_report_data``.
    """
    if not allowed_policy_hashes:
        raise PolicyError("no_reference_values", "no allowed peer policy hash is configured")
    if peer.tee != own.tee:
        raise PolicyError("tee_mismatch", f"peer evidence is {peer.tee}, ours is {own.tee}")
    try:
        claims = verifier.authenticate(peer, emulator_root=own.emulator_root, now=now)
    except CollateralError as e:
        raise EvidenceError("collateral_missing", f"peer evidence lacks collateral: {e.message}") from e
    if not hmac.compare_digest(claims.measurement, own.measurement):
        raise PolicyError("measurement_mismatch", "the peer runs another launch measurement than ours")
    if _debug_enabled(claims.tee, claims.details) and not _debug_enabled(own.tee, own.measurement_details):
        raise PolicyError("debug_enabled", "the peer was launched with DEBUG (its memory is readable)")
    # Iterate over what *must* match, not over what ``own`` happens to carry: a thin yardstick fails closed.
    for key in _PEER_MEASUREMENT_DETAILS[own.tee]:
        value = _without_debug(own.tee, key, own.measurement_details.get(key))
        if value is None:
            raise PolicyError("measurement_mismatch", f"our own evidence does not state {key}")
        if _without_debug(claims.tee, key, claims.details.get(key)) != value:
            raise PolicyError("measurement_mismatch", f"the peer's {key} differs from ours")
    # Revocation: a replica attaches AMD's CRL to its statement (and a verifier fetches one when it is
    # missing), so a real SNP peer whose chain was not checked against one is refused.
    if claims.tee == "snp" and own.emulator_root is None and claims.details.get("crl_checked") != "true":
        raise EvidenceError("collateral_missing", "the peer's SNP evidence came without AMD's CRL")
    check_peer_tcb(claims, own.tee, own.tcb, accepted_tdx_statuses=accepted_tdx_statuses)
    if not any(hmac.compare_digest(claims.policy_hash, h) for h in allowed_policy_hashes):
        raise PolicyError("policy_unknown", f"peer policy hash {claims.policy_hash.hex()} is not allowed")
    if not hmac.compare_digest(claims.report_data, expected_report_data):
        raise PolicyError("report_data_mismatch", "the peer's REPORT_DATA does not bind this exchange")
    return claims
