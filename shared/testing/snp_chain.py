"""A test-only AMD chain builder with per-certificate overrides (after go-sev-guest's AmdSignerBuilder).

``SnpChainBuilder(product).override("vcek", CertOverride(...)).build()`` returns an :class:`SnpTestChain`
holding ARK -> ASK -> VCEK certificates and keys, so tests can make each way a chain can be wrong and re-sign
reports with the VCEK key. RSA keys are 2048-bit for speed (the verifier does not rely on the key size; the
ARK is pinned by fingerprint). The chain is trusted only when a test lists ``ark_sha256`` as an emulator root.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from contrast.evidence.snp import abi, kds
from contrast.evidence.snp.kds import Product, Tcb

Role = Literal["ark", "ask", "vcek"]
_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class CertOverride:
    """What to change in one certificate. ``None`` keeps the faithful default."""

    subject_cn: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    extensions: list[x509.UnrecognizedExtension] | None = None  # VCEK: replace the AMD extensions
    pkcs1v15: bool = False  # sign with PKCS#1 v1.5 instead of PSS
    hash_sha256: bool = False  # sign with SHA-256 instead of SHA-384
    serial: int | None = None


@dataclass(frozen=True)
class SnpTestChain:
    product: Product
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    vcek_key: ec.EllipticCurvePrivateKey
    chip_id: bytes
    tcb: Tcb

    @property
    def ark_sha256(self) -> bytes:
        return hashlib.sha256(self.ark.public_bytes(serialization.Encoding.DER)).digest()

    def der(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER) for c in (self.vcek, self.ask, self.ark)]

    def sign(self, report: bytes) -> bytes:
        der = self.vcek_key.sign(report[: abi.SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        out = bytearray(report)
        out[abi.OFF_SIGNATURE_R : abi.OFF_SIGNATURE_R + 72] = r.to_bytes(72, "little")
        out[abi.OFF_SIGNATURE_S : abi.OFF_SIGNATURE_S + 72] = s.to_bytes(72, "little")
        return bytes(out)

    def crl(
        self,
        revoked: list[int],
        *,
        last: dt.datetime = _NOW,
        next_: dt.datetime | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> bytes:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ark.subject)
            .last_update(last)
            .next_update(next_ or last + dt.timedelta(days=30))
        )
        for serial in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
            )
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
        return b.sign(key or self.ark_key, hashes.SHA384(), rsa_padding=pss).public_bytes(
            serialization.Encoding.DER
        )


_KEY_CACHE: dict[str, rsa.RSAPrivateKey] = {}


def _rsa(slot: str) -> rsa.RSAPrivateKey:
    # Key generation dominates test time; keys are reused per slot, certificates are always fresh.
    if slot not in _KEY_CACHE:
        _KEY_CACHE[slot] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _KEY_CACHE[slot]


@dataclass(frozen=True)
class SnpChainBuilder:
    product: Product = "Milan"
    chip_id: bytes = bytes(range(64))
    tcb: Tcb | None = None
    overrides: dict[Role, CertOverride] = field(default_factory=dict)
    key_slot: str = "default"

    def override(self, role: Role, o: CertOverride) -> SnpChainBuilder:
        return dataclasses.replace(self, overrides={**self.overrides, role: o})

    def build(self) -> SnpTestChain:
        tcb = self.tcb or Tcb(
            bootloader=3, tee=0, snp=8, microcode=115, fmc=0 if self.product == "Turin" else None
        )
        ark_key, ask_key = _rsa(self.key_slot + "/ark"), _rsa(self.key_slot + "/ask")
        vcek_key = ec.generate_private_key(ec.SECP384R1())
        chip = self.chip_id
        if self.product == "Turin":
            chip = chip[:8] + bytes(56)
        hwid = chip[:8] if self.product == "Turin" else chip

        def make(
            role: Role,
            cn: str,
            issuer_cn: str,
            pub: object,
            signer: rsa.RSAPrivateKey,
            exts: list[x509.UnrecognizedExtension],
        ) -> x509.Certificate:
            o = self.overrides.get(role, CertOverride())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, o.subject_cn or cn)])
            issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)])
            b = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(issuer)
                .public_key(pub)  # type: ignore[arg-type]
                .serial_number(o.serial or x509.random_serial_number())
                .not_valid_before(o.not_before or _NOW - dt.timedelta(days=365))
                .not_valid_after(o.not_after or _NOW + dt.timedelta(days=3650))
            )
            for e in o.extensions if o.extensions is not None else exts:
                b = b.add_extension(e, critical=False)
            h: hashes.SHA256 | hashes.SHA384 = hashes.SHA256() if o.hash_sha256 else hashes.SHA384()
            pad = (
                padding.PKCS1v15()
                if o.pkcs1v15
                else padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
            )
            return b.sign(signer, h, rsa_padding=pad)

        ark_cn = self.overrides.get("ark", CertOverride()).subject_cn or f"ARK-{self.product}"
        ask_cn = self.overrides.get("ask", CertOverride()).subject_cn or f"SEV-{self.product}"
        ark = make("ark", f"ARK-{self.product}", ark_cn, ark_key.public_key(), ark_key, [])
        ask = make("ask", f"SEV-{self.product}", ark_cn, ask_key.public_key(), ark_key, [])
        vcek = make(
            "vcek",
            "SEV-VCEK",
            ask_cn,
            vcek_key.public_key(),
            ask_key,
            kds.vcek_extensions(self.product, tcb, hwid),
        )
        return SnpTestChain(
            product=self.product,
            ark=ark,
            ask=ask,
            vcek=vcek,
            ark_key=ark_key,
            ask_key=ask_key,
            vcek_key=vcek_key,
            chip_id=chip,
            tcb=tcb,
        )
