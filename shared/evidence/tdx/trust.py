"""The pinned Intel SGX Root CA, checked against its fingerprint at import time.

A root is identified by the SHA-256 of its DER. The quote and the collateral carry the root certificate
themselves; it is trusted only if its fingerprint is one of the pinned ones, and its key must equal the key
Intel hard-codes in QvE. The emulator's root is a separate, explicitly insecure anchor (``TdxRoots.emulated``)
and is never combined with Intel's in one ``TdxRoots``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

INTEL_SGX_ROOT_CA_SHA256: Final = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
INTEL_SGX_ROOT_PUBLIC_KEY: Final = bytes.fromhex(
    "040ba9c4c0c0c86193a3fe23d6b02cda10a8bbd4e88e48b4458561a36e705525f5"
    "67918e2edc88e40d860bd0cc4ee26aacc988e505a953558c453f6b0904ae7394"
)
INTEL_PLATFORM: Final = "TDX"
EMULATED_PLATFORM: Final = "Emulated-TDX"


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _load_intel_root() -> x509.Certificate:
    pem = resources.files("contrast.evidence.tdx").joinpath("intel_sgx_root_ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    if fingerprint(cert) != INTEL_SGX_ROOT_CA_SHA256:
        raise RuntimeError("packaged Intel SGX Root CA does not match its pinned fingerprint")
    if (
        cert.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        != INTEL_SGX_ROOT_PUBLIC_KEY
    ):
        raise RuntimeError("packaged Intel SGX Root CA key differs from Intel QvE's constant")
    return cert


INTEL_SGX_ROOT_CA: Final = _load_intel_root()


@dataclass(frozen=True, slots=True)
class TdxRoots:
    """The root fingerprints a verifier accepts, all of one kind: Intel's, or emulator roots."""

    fingerprints: frozenset[str]
    platform: str

    def __post_init__(self) -> None:
        if not self.fingerprints:
            raise ValueError("TdxRoots needs at least one fingerprint")
        for fp in self.fingerprints:
            if len(fp) != 64 or fp != fp.lower() or any(c not in "0123456789abcdef" for c in fp):
                raise ValueError(f"root fingerprint must be 64 lower-case hex digits: {fp!r}")
        if self.platform == INTEL_PLATFORM:
            if len(self.fingerprints) != 1:
                raise ValueError("the Intel platform trusts exactly one root: the pinned Intel SGX Root CA")
        elif self.platform == EMULATED_PLATFORM:
            if INTEL_SGX_ROOT_CA_SHA256 in self.fingerprints:
                raise ValueError("the Intel root must not be mixed with emulator roots")
        else:
            raise ValueError(f"unknown TDX trust platform {self.platform!r}")

    @classmethod
    def intel(cls, root_sha256: str = INTEL_SGX_ROOT_CA_SHA256) -> TdxRoots:
        """Intel's root. Production never passes ``root_sha256``; tests pass a stand-in root for Intel's."""
        return cls(frozenset({root_sha256}), INTEL_PLATFORM)

    @classmethod
    def emulated(cls, *fingerprints: str) -> TdxRoots:
        """INSECURE: trust locally generated emulator roots. Development and tests only."""
        return cls(frozenset(fp.lower() for fp in fingerprints), EMULATED_PLATFORM)

    @property
    def is_emulated(self) -> bool:
        return self.platform == EMULATED_PLATFORM
