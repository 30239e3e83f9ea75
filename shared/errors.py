"""One exception root for everything Contrast decides, split by who is at fault.

Every error carries a stable ``code`` of the form ``<family>.<reason>`` (``evidence.bad_signature``,
``policy.debug_enabled``, ``request.too_large`` …). The code is what callers branch on, what tests assert on,
what the metrics ``reason`` label carries and what a typed error reply sends; the message is for humans only.

Families:

- ``evidence.*`` (:class:`EvidenceError`): the evidence itself is broken, forged or unsupported.
- ``policy.*`` (:class:`PolicyError`): the evidence is authentic but violates the reference values.
- ``collateral.*`` (:class:`CollateralError`): a certificate, CRL or TCB document could not be had or is
  stale; "retry later", not "reject forever".
- ``request.*`` (:class:`RequestError`): a caller sent something malformed, oversized or replayed.
- ``store.*`` (:class:`StoreError`): state read back from JetStream failed authentication.
- ``auth.*`` (:class:`AuthError`): a signature or credential on a cross-service message is missing or wrong.
- ``state.*`` (:class:`StateError`): the service is in the wrong state for the request (not ready, stale).
- ``internal.*`` (:class:`InternalError`): a fault of our own; its details stay in the replica's log.
- ``verify.*`` (``contrast.cli.trusted_state.VerifyError``): the owner CLI refuses what the Coordinator
  serves given what the owner verified before (the trusted state) or approved.

Misuse of an API by our own code stays ``RuntimeError``/``TypeError``/``ValueError``. Raise ``from`` the
cause. :data:`REASONS` is the registry of every ``collateral.*``, ``evidence.*``, ``policy.*``, ``state.*``
and ``verify.*`` code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

_REASON = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


class ContrastError(Exception):
    """Base of every error with a stable code."""

    family: ClassVar[str] = "internal"

    def __init__(self, reason: str, message: str) -> None:
        if not _REASON.match(reason):
            raise ValueError(f"invalid reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def code(self) -> str:
        return f"{self.family}.{self.reason}"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class EvidenceError(ContrastError):
    """The evidence is malformed, unsupported, or not signed by a trusted chain."""

    family = "evidence"


class PolicyError(ContrastError):
    """The evidence is authentic but does not satisfy the reference values."""

    family = "policy"


class CollateralError(ContrastError):
    """Collateral (certificates, CRLs, TCB info) is unavailable or stale: retry later."""

    family = "collateral"


class RequestError(ContrastError):
    """The caller's request is malformed, too large, or replayed."""

    family = "request"


class StoreError(ContrastError):
    """State read back from the (untrusted) store failed authentication."""

    family = "store"


class AuthError(ContrastError):
    """A cross-service message carries a missing or wrong signature or credential."""

    family = "auth"


class StateError(ContrastError):
    """The service cannot do this now (not ready, stale, already initialized)."""

    family = "state"


class InternalError(ContrastError):
    """A fault of our own. The reply carries only a correlation id; details stay in the log."""

    family = "internal"


# Every collateral.*, evidence.*, policy.* and state.* reason code the Coordinator and the CLI use, and the
# owner CLI's verify.* codes, with what each means. A test checks that the code base raises exactly these;
# docs/reason-codes.md lists them.
REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "collateral.missing": "a TDX quote came without collateral where verification needs it",
        "collateral.stale": (
            "the collateral is past its nextUpdate, or the cache's copy is past its maximum age and the "
            "vendor cannot be reached"
        ),
        "collateral.unavailable": "the vendor (AMD KDS, Intel PCS) could not be reached, or fetching is off",
        "evidence.ambiguous_chain": "more than one VCEK/VLEK certificate was supplied",
        "evidence.bad_certificate": "a supplied certificate does not parse, or too many were supplied",
        "evidence.bad_collateral": "TDX collateral (TCB info, QE identity) is malformed or badly signed",
        "evidence.bad_length": "an SNP report has the wrong length",
        "evidence.bad_pck_extensions": "the PCK certificate's SGX extensions do not decode",
        "evidence.bad_qe_report_signature": "the QE report is not signed by the PCK key",
        "evidence.bad_signature": "the report or quote signature does not verify",
        "evidence.bad_vcek": "the VCEK/VLEK lacks a required extension or is not a P-384 key",
        "evidence.cert_expired": "a certificate of the chain (or the CRL) is not valid at that time",
        "evidence.chain_invalid": "the certificates are not one chain of valid signatures from leaf to root",
        "evidence.chip_id_mismatch": "the VCEK was issued for another chip (hwID differs from CHIP_ID)",
        "evidence.collateral_mismatch": "the TDX collateral is for another platform (FMSPC or PCEID differ)",
        "evidence.collateral_missing": (
            "a peer's evidence came without the collateral to check it (TDX collateral, AMD's CRL)"
        ),
        "evidence.crl_expired": "the CRL is past its nextUpdate",
        "evidence.crl_invalid": "the CRL does not parse, is not signed by the root, or is not yet valid",
        "evidence.malformed": "a quote, certificate table or structure does not decode",
        "evidence.missing_certificate": "no VCEK/VLEK certificate was supplied",
        "evidence.platform_error": "the platform's evidence interface failed",
        "evidence.platform_race": "another process changed the configfs-tsm report while it was read",
        "evidence.product_mismatch": "CPUID, ARK, issuer, VCEK and the caller name different products",
        "evidence.qe_identity_mismatch": "the quoting enclave does not match Intel's QE identity",
        "evidence.qe_report_binding": "the QE report does not bind the attestation key",
        "evidence.reserved_nonzero": "a reserved field of the report is not zero",
        "evidence.revoked": "a certificate of the chain is revoked",
        "evidence.root_mismatch": (
            "a peer's evidence chains to another kind of root (vendor, emulator) than ours"
        ),
        "evidence.tcb_mismatch": "the VCEK certifies another TCB than the report's REPORTED_TCB",
        "evidence.tdx_module_mismatch": "the TDX module does not match the TCB info's module identities",
        "evidence.unknown_format": "the file is no evidence format the CLI knows",
        "evidence.unknown_product": "the CPUID or certificate names no known SNP product",
        "evidence.unknown_signature_algo": "the report's signature algorithm is not ECDSA P-384/SHA-384",
        "evidence.unknown_signing_key": "SIGNER_INFO names an unknown signing key",
        "evidence.unsigned": "the report says it is not signed",
        "evidence.unsupported_format": "unsupported key type, TEE type, QE vendor or certification data",
        "evidence.unsupported_platform": "this machine offers no evidence interface of the requested kind",
        "evidence.unsupported_version": "the report or quote version is not supported",
        "evidence.untrusted_root": "the chain ends at a root that is neither pinned nor a listed emulator",
        "policy.bad_tls_key": "the attested TLS key is not a P-256 key",
        "policy.chip_id_not_allowed": "the chip is not in AllowedChipIDs",
        "policy.crl_missing": (
            "the reference values require a revocation check (CheckRevocations), but no CRL was checked"
        ),
        "policy.collateral_missing": (
            "the reference values need a TCB status, but the quote has no collateral"
        ),
        "policy.coordinator_root_mismatch": (
            "the Coordinator's root CA is not the one pinned in this pod's policy"
        ),
        "policy.debug_enabled": "the guest was launched with DEBUG (its memory is readable)",
        "policy.emulated_platform": "evidence from an emulator under a real platform's reference values",
        "policy.emulator_root_mismatch": (
            "the emulator's root is not the reference values' EmulatorRootFingerprint"
        ),
        "policy.guest_policy_mismatch": "the SNP guest policy differs from the reference values",
        "policy.id_key_not_trusted": "the ID key digest is not in TrustedIDKeyDigests",
        "policy.measurement_mismatch": (
            "the launch measurement (MEASUREMENT, MRTD) differs from the expected one"
        ),
        "policy.mitigation_vector_too_low": "the mitigation vector lacks bits the reference values require",
        "policy.mixed_platforms": "reference values mix emulated and real TDX platforms",
        "policy.mr_config_id_malformed": "MR_CONFIG_ID carries bytes after the policy hash",
        "policy.mrseam_mismatch": "MRSEAM differs from the reference values",
        "policy.no_reference_values": "no reference values for this TEE (or no allowed peer policy hash)",
        "policy.nonce_expired": "the nonce has expired",
        "policy.nonce_reused": "the nonce was already used by another request",
        "policy.nonce_unknown": (
            "the nonce was not issued by this Coordinator (or names an impossible expiry)"
        ),
        "policy.not_coordinator": "the policy hash is not a Role: coordinator entry of the manifest",
        "policy.piid_not_allowed": "the platform instance is not in AllowedPIIDs",
        "policy.platform_info_mismatch": "a PLATFORM_INFO bit the reference values require is clear",
        "policy.platform_mismatch": (
            "real evidence under an emulated platform's reference values, or the reverse"
        ),
        "policy.policy_mismatch": "a joining manifest replica runs another policy than the one answering",
        "policy.policy_unknown": "the policy hash is not in the manifest (or not among the allowed ones)",
        "policy.product_mismatch": "the SNP product differs from the reference values' ProductName",
        "policy.recovery_head_mismatch": "a recovery names another head than its challenge attested",
        "policy.rejected": "a rejection without a reason code (the verifier's verdict named none)",
        "policy.report_data_mismatch": "REPORT_DATA does not bind this exchange's nonce and keys",
        "policy.role_mismatch": "a Coordinator policy asked for a mesh certificate (it joins instead)",
        "policy.rtmr_mismatch": "an RTMR differs from the reference values",
        "policy.tcb_status": (
            "the TDX TCB status is not accepted (for a peer: not UpToDate or one the manifest accepts)"
        ),
        "policy.tcb_too_low": (
            "a TCB component or the TCB evaluation data number is below the minimum (or our own)"
        ),
        "policy.td_attributes_mismatch": "TD_ATTRIBUTES differ from the reference values",
        "policy.tee_mismatch": "a peer's evidence is of another TEE than ours",
        "policy.vmpl_mismatch": "the VMPL differs from the reference values",
        "policy.wrong_coordinator_role": "the attested Coordinator policy is bound to another service role",
        "policy.xfam_mismatch": "XFAM differs from the reference values",
        "state.no_history_key": "this replica does not hold the history signing key",
        "state.not_ready": "the replica has not joined or has no verified manifest yet",
        "state.not_stale": "recovery is only for a stale Coordinator",
        "state.peer_ready": "a ready manifest replica exists; the stale one recovers from it",
        "state.recovery_head_changed": "the store changed during recovery; nothing was adopted",
        "state.recovery_needed": (
            "a manifest replica is stale and no ready one answers: a seed-share owner must recover it"
        ),
        "state.replica_stale": "this manifest replica is stale (no seed, or behind the stored history)",
        "state.result_conflict": "the results entry keeps changing under the CA; retried",
        "state.rollback": "the stored history is older than the replica's membership",
        "state.stale": "the request was prepared against an older head, or the replica's keys are behind",
        "state.timeout": "no authenticated answer before the deadline",
        "state.unavailable": "no (ready) replica answered; retry later",
        "state.uninitialized": "no manifest has been set yet",
        "state.unreachable": "the CLI cannot reach the NATS server (or lost its connection)",
        "verify.history_forked": "the Coordinator serves another history than the trusted state records",
        "verify.history_lost": (
            "the Coordinator has no history, but the trusted state (or a seed share in the workspace) has one"
        ),
        "verify.history_moved": "the recovered Coordinator is at another head than the one checked",
        "verify.manifest_mismatch": "the Coordinator's active manifest is not the local manifest",
        "verify.rollback": "the Coordinator serves an older generation than the trusted state records",
        "verify.root_changed": "the root CA (served, or the seed's) is not the one the trusted state records",
        "verify.state_corrupt": "the trusted state file does not decode or is inconsistent",
        "verify.state_locked": "another run holds the trusted state's lock",
        "verify.state_unreadable": "the trusted state file (or its lock) cannot be read",
        "verify.state_write_failed": "verified, but the trusted state could not be written",
        "verify.unapproved_history": "a manifest of the history is neither among --approved nor recorded",
    }
)


FAMILIES: dict[str, type[ContrastError]] = {
    cls.family: cls
    for cls in (
        EvidenceError,
        PolicyError,
        CollateralError,
        RequestError,
        StoreError,
        AuthError,
        StateError,
        InternalError,
    )
}


def from_code(code: str, message: str) -> ContrastError:
    """Rebuild a typed error from a ``family.reason`` code received on the wire.

    An unknown family becomes :class:`InternalError`, so a peer cannot make us raise a type we do not know.
    """
    family, _, reason = code.partition(".")
    cls = FAMILIES.get(family)
    if cls is None or not reason or not _REASON.match(reason):
        return InternalError("unknown_code", f"{code}: {message}")
    return cls(reason, message)
