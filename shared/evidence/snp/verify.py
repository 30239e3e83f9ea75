"""Authenticity of an SNP report: signature, VCEK/VLEK -> ASK/ASVK -> ARK chain, pinned ARK, CRL. No I/O.

Verification steps, in order (each failure is an ``evidence.*`` error):

1. Parse the report strictly (``abi.parse_report``): length, version, algorithm, signing key, reserved bytes.
2. Refuse a report that says it is unsigned (SIGNING_KEY = 7): ``evidence.unsigned``.
3. On v3+, name the product from CPUID; an unknown family/model is ``evidence.unknown_product``.
4. Build the chain from the supplied certificate bytes (any order; untrusted): the leaf whose subject is
   ``SEV-VCEK``/``SEV-VLEK`` as SIGNER_INFO says, its issuer, and a self-signed root. Each link is RSASSA-PSS
   SHA-384 and verified with explicit primitives (the AMD profile is not WebPKI).
5. Trust the root only by the SHA-256 of its DER: an AMD ARK pinned in ``trust.ARK_SHA256`` (the verifier's
   ``ark_pins``, which only tests replace, with a stand-in root), or an emulator root that the caller lists
   explicitly (the validator then requires ``Platform: Emulated-SNP``).
6. Check every certificate's validity at the evaluation time ``now``.
7. Agree on the product: CPUID (v3+), the pinned ARK, the issuer CN, the VCEK productName, and the caller's
   hint must not contradict each other (``evidence.product_mismatch``); if none names one, fail.
8. VCEK hwID == CHIP_ID (Turin: 8 bytes, rest of CHIP_ID zero); VCEK TCB extensions == REPORTED_TCB.
9. If a CRL is supplied: issued and signed by the ARK, current at ``now``, and not listing the leaf or the
   intermediate serial.
10. Verify the ECDSA P-384/SHA-384 signature (little-endian r, s) over bytes 0x000..0x29F with the leaf key.

Steps 4-9 depend only on (certificate bytes, CRL bytes, CHIP_ID, REPORTED_TCB, signing key, products, emulator
roots) plus ``now``. :class:`SnpVerifier` memoises them on exactly that key and re-checks ``now`` against the
validity window it recorded, so the steady-state cost of a verification is one P-384 verify.

Checks we chose not to make: the PSS salt length is not compared to 48 (any salt verifies only with the
issuer's key, so it gives a forger nothing); ``not_before`` of a VCEK is KDS's download time, not the chip's
age, so it is checked like any other validity bound but means little.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from contrast.cache import BoundedCache
from contrast.errors import EvidenceError
from contrast.evidence.snp import abi, kds, trust
from contrast.evidence.snp.kds import Product

log = logging.getLogger("contrast.evidence.snp")

MAX_CERTS = 16
MAX_CERT_SIZE = 16 * 1024
MAX_CRL_SIZE = 256 * 1024

# The one warning we silence, only around loading a certificate and reading its serial (real VCEKs: serial 0).
_SERIAL_WARNING = "Parsed a serial number which wasn't positive"
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())
# What cryptography raises on malformed certificates and CRLs (some of it lazily, on first access).
_X509_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.InvalidVersion)
_VEK_CN = {"VCEK": "SEV-VCEK", "VLEK": "SEV-VLEK"}


# --- loading certificate bytes ------------------------------------------------------------------------------
def load_certificate(der: bytes) -> x509.Certificate:
    """Load one DER certificate, tolerating serial number 0 on purpose.

    Every real VCEK/VLEK has serial 0, which RFC 5280 forbids and ``cryptography`` warns about (and may
    refuse in a future release). The serial carries no security meaning here -- the chain is checked by
    signature and the root by fingerprint -- so exactly that one warning is silenced, around this call.
    """
    if len(der) > MAX_CERT_SIZE:
        raise EvidenceError("bad_certificate", f"certificate of {len(der)} bytes exceeds {MAX_CERT_SIZE}")
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=_SERIAL_WARNING,
            category=CryptographyDeprecationWarning,
        )
        try:
            cert = x509.load_der_x509_certificate(der)
            # cryptography parses some parts lazily; touch every part we later read, so that a malformed
            # certificate fails here, typed, and never half-way through the chain checks.
            _ = (cert.subject, cert.issuer, cert.extensions, cert.public_key(), cert.signature_algorithm_oid)
            _ = (cert.signature_hash_algorithm, cert.not_valid_before_utc, cert.not_valid_after_utc)
        except _X509_ERRORS as e:
            raise EvidenceError("bad_certificate", f"certificate is not valid DER X.509: {e}") from e
        return cert


def serial_of(cert: x509.Certificate) -> int:
    """The serial number, reading VCEK/VLEK serial 0 deliberately (see :func:`load_certificate`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning)
        return cert.serial_number


def split_certificates(blob: bytes) -> list[bytes]:
    """DER certificates from a PEM bundle (any number) or a single DER certificate."""
    if b"-----BEGIN CERTIFICATE-----" in blob:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning
            )
            try:
                certs = x509.load_pem_x509_certificates(blob)
            except ValueError as e:
                raise EvidenceError("bad_certificate", f"PEM bundle is malformed: {e}") from e
        return [c.public_bytes(Encoding.DER) for c in certs]
    return [blob]


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        return ""
    value = attrs[0].value
    return value if isinstance(value, str) else ""


def _check_pss(cert: x509.Certificate, what: str) -> None:
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS or not isinstance(
        cert.signature_hash_algorithm, hashes.SHA384
    ):
        raise EvidenceError("chain_invalid", f"{what} is not signed with RSASSA-PSS SHA-384")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if not isinstance(issuer.public_key(), rsa.RSAPublicKey):
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- results ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A leaf -> intermediate -> root chain that passed steps 4-9, and what it certifies."""

    product: Product
    signing_key: str  # "VCEK" or "VLEK"
    leaf_public_key: ec.EllipticCurvePublicKey
    leaf_extensions: kds.VekExtensions
    cert_tcb: kds.Tcb
    root_sha256: bytes
    emulated: bool  # the root is a caller-listed emulator root, not an AMD ARK
    chain_der: tuple[bytes, bytes, bytes]  # leaf, intermediate, root
    valid_from: datetime
    valid_until: datetime
    crl_checked: bool = False  # a CRL signed by the root was checked (step 9): the chain is not revoked

    def valid_at(self, now: datetime) -> bool:
        return self.valid_from <= now <= self.valid_until


@dataclass(frozen=True, slots=True)
class VerifiedSnpReport:
    """An authentic report: the only input :func:`contrast.evidence.snp.validate.validate` accepts."""

    report: abi.SnpReport
    raw: bytes  # the exact 0x4A0 report bytes that were verified
    chain: VerifiedChain
    product: Product

    # TCBs decoded with the established product's layout (on demand: most requests need only some of them).
    @property
    def current_tcb(self) -> kds.Tcb:
        return kds.decode_tcb(self.report.current_tcb, self.product)

    @property
    def reported_tcb(self) -> kds.Tcb:
        return kds.decode_tcb(self.report.reported_tcb, self.product)

    @property
    def committed_tcb(self) -> kds.Tcb:
        return kds.decode_tcb(self.report.committed_tcb, self.product)

    @property
    def launch_tcb(self) -> kds.Tcb:
        return kds.decode_tcb(self.report.launch_tcb, self.product)


_ChainKey = tuple[bytes, int, str, Product | None, Product | None, tuple[bytes, ...], bytes | None]


# --- the verifier -------------------------------------------------------------------------------------------
class SnpVerifier:
    """A long-lived verifier bound to its trust anchors: the pinned AMD ARKs, plus the emulator roots it is
    built with (SHA-256 of emulator ARKs the caller explicitly accepts; the validator then requires
    ``Platform: Emulated-SNP``). Same shape as :class:`contrast.evidence.tdx.verify.TdxVerifier`.

    Steps 4-9 are kept per chain in a bounded cache (``cache_size``), keyed by every input of those steps
    except the time; a hit re-checks the validity window against ``now``. Safe to share between threads and
    coroutines.
    """

    def __init__(
        self,
        emulator_roots: frozenset[bytes] = frozenset(),
        *,
        cache_size: int = 1024,
        ark_pins: Mapping[bytes, Product] = trust.PRODUCT_BY_ARK_SHA256,
    ) -> None:
        if any(len(fp) != 32 for fp in emulator_roots):
            raise ValueError("emulator roots are SHA-256 fingerprints (32 bytes)")
        if set(emulator_roots) & set(ark_pins):
            raise ValueError("an AMD ARK cannot be listed as an emulator root")
        self._emulator_roots = frozenset(emulator_roots)
        self._ark_pins = MappingProxyType(dict(ark_pins))
        self._chains: BoundedCache[_ChainKey, VerifiedChain] = BoundedCache(cache_size)

    @property
    def emulator_roots(self) -> frozenset[bytes]:
        return self._emulator_roots

    def verify(
        self,
        data: bytes,
        certs: Sequence[bytes],
        crl: bytes | None = None,
        *,
        now: datetime,
        product: Product | None = None,
        trailing_ok: bool = False,
    ) -> VerifiedSnpReport:
        """Run steps 1-10 and return what was proved. Raises :class:`EvidenceError` on any failure.

        ``product`` is a hint for v2 reports (it must agree with everything else); ``trailing_ok`` ignores
        bytes after the report. ``now`` is captured once per request.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        report = abi.parse_report(data, trailing_ok=trailing_ok)
        raw = bytes(data[: abi.REPORT_SIZE])
        signing_key = abi.signing_key_of(report.signer_info)
        if signing_key == "NONE":
            raise EvidenceError("unsigned", "SIGNER_INFO says the report is not signed")
        cpuid_product = _cpuid_product(report)
        if len(certs) > MAX_CERTS:
            raise EvidenceError("bad_certificate", f"{len(certs)} certificates supplied, at most {MAX_CERTS}")
        if crl is not None and len(crl) > MAX_CRL_SIZE:
            raise EvidenceError("crl_invalid", f"CRL of {len(crl)} bytes exceeds {MAX_CRL_SIZE}")
        key: _ChainKey = (
            report.chip_id,
            report.reported_tcb,
            signing_key,
            cpuid_product,
            product,
            tuple(map(bytes, certs)),
            None if crl is None else bytes(crl),
        )
        chain = self._chains.get(key)
        if chain is None:
            chain = verify_chain(
                key[5],
                key[6],
                chip_id=report.chip_id,
                reported_tcb=report.reported_tcb,
                signing_key=signing_key,
                cpuid_product=cpuid_product,
                product_hint=product,
                emulator_roots=self._emulator_roots,
                now=now,
                ark_pins=self._ark_pins,
            )
            self._chains.put(key, chain)
        elif not chain.valid_at(now):
            raise EvidenceError(
                "cert_expired",
                f"the chain (or its CRL) is valid from {chain.valid_from.isoformat()} "
                f"to {chain.valid_until.isoformat()}",
            )
        _check_signature(report, raw, chain, signing_key)  # step 10
        if chain.emulated:
            log.warning(
                "accepted the signature of an EMULATED SEV-SNP platform (insecure, development only); "
                "root %s",
                chain.root_sha256.hex(),
            )
        return VerifiedSnpReport(report=report, raw=raw, chain=chain, product=chain.product)


def _cpuid_product(report: abi.SnpReport) -> Product | None:
    """Step 3: the product CPUID names (v3+), or None (v2); an unknown family/model is refused."""
    if report.cpuid_fam_id is None or report.cpuid_mod_id is None:
        return None
    product = kds.product_from_cpuid(report.cpuid_fam_id, report.cpuid_mod_id)
    if product is None:
        raise EvidenceError(
            "unknown_product",
            f"CPUID family 0x{report.cpuid_fam_id:02x} model 0x{report.cpuid_mod_id:02x} "
            "is no known SNP product",
        )
    return product


def _check_signature(report: abi.SnpReport, raw: bytes, chain: VerifiedChain, signing_key: str) -> None:
    r = int.from_bytes(report.signature_r, "little")
    s = int.from_bytes(report.signature_s, "little")
    try:
        chain.leaf_public_key.verify(encode_dss_signature(r, s), raw[: abi.SIGNED_SIZE], _ECDSA_SHA384)
    except InvalidSignature:
        raise EvidenceError(
            "bad_signature", f"the report signature does not verify with the {signing_key}"
        ) from None


def _pick_chain(
    loaded: list[tuple[bytes, x509.Certificate]], signing_key: str
) -> tuple[tuple[bytes, x509.Certificate], tuple[bytes, x509.Certificate], tuple[bytes, x509.Certificate]]:
    want_cn = _VEK_CN[signing_key]
    leaves = [(d, c) for d, c in loaded if _cn(c.subject) == want_cn]
    if not leaves:
        raise EvidenceError(
            "missing_certificate", f"no {signing_key} certificate (CN={want_cn}) was supplied"
        )
    if len({d for d, _ in leaves}) > 1:
        raise EvidenceError("ambiguous_chain", f"more than one {signing_key} certificate was supplied")
    leaf = leaves[0]
    if not isinstance(leaf[1].public_key(), ec.EllipticCurvePublicKey):
        raise EvidenceError("bad_vcek", f"the {signing_key} key is not an EC key")
    inters = [
        (d, c)
        for d, c in loaded
        if c.subject == leaf[1].issuer and c.subject != c.issuer and _issued_by(leaf[1], c)
    ]
    if not inters:
        raise EvidenceError("chain_invalid", f"no supplied certificate issued the {signing_key}")
    for inter in inters:
        roots = [(d, c) for d, c in loaded if c.subject == inter[1].issuer and c.subject == c.issuer]
        for root in roots:
            if _issued_by(inter[1], root[1]) and _issued_by(root[1], root[1]):
                return leaf, inter, root
    raise EvidenceError("chain_invalid", f"no supplied self-signed root issued the {signing_key}'s issuer")


def _agreed_product(
    ext: kds.VekExtensions,
    inter: x509.Certificate,
    signing_key: str,
    ark_product: Product | None,
    cpuid_product: Product | None,
    product_hint: Product | None,
) -> Product:
    """Step 7: every source that names a product must name the same one."""
    ext_product = kds.product_from_name(ext.product_name)
    if ext_product is None:
        raise EvidenceError("unknown_product", f"VCEK productName {ext.product_name!r} is no known product")
    inter_cn = _cn(inter.subject)
    prefix = "SEV-VLEK-" if signing_key == "VLEK" else "SEV-"
    inter_product = kds.product_from_name(inter_cn[len(prefix) :]) if inter_cn.startswith(prefix) else None
    if inter_product is None:
        raise EvidenceError(
            "chain_invalid", f"intermediate CN {inter_cn!r} does not name a {signing_key} issuer"
        )
    named = {
        "ARK": ark_product,
        "CPUID": cpuid_product,
        "VCEK productName": ext_product,
        "issuer CN": inter_product,
        "requested product": product_hint,
    }
    products = {p for p in named.values() if p is not None}
    if len(products) != 1:
        detail = ", ".join(f"{k}={v}" for k, v in named.items() if v is not None)
        raise EvidenceError("product_mismatch", f"the product is named inconsistently: {detail}")
    return products.pop()


def _check_binding(
    ext: kds.VekExtensions, product: Product, signing_key: str, chip_id: bytes, reported_tcb: int
) -> kds.Tcb:
    """Step 8: a VCEK's hwID is the report's CHIP_ID, and the key certifies the report's REPORTED_TCB."""
    if signing_key == "VCEK":
        if ext.hwid is None:
            raise EvidenceError("bad_vcek", "the VCEK has no hwID extension")
        if product == "Turin":
            ok = ext.hwid == chip_id[: kds.TURIN_CHIP_ID_SIZE] and not any(chip_id[kds.TURIN_CHIP_ID_SIZE :])
        else:
            ok = ext.hwid == chip_id
        if not ok:
            raise EvidenceError("chip_id_mismatch", "the VCEK was issued for another chip (hwID != CHIP_ID)")
    cert_tcb = ext.tcb(product)
    if kds.encode_tcb(cert_tcb, product) != reported_tcb:
        raise EvidenceError(
            "tcb_mismatch",
            f"the {signing_key} certifies TCB {cert_tcb.as_dict()}, the report's REPORTED_TCB is "
            f"{kds.decode_tcb(reported_tcb, product).as_dict()} (0x{reported_tcb:016x})",
        )
    return cert_tcb


def verify_chain(
    certs: Sequence[bytes],
    crl: bytes | None,
    *,
    chip_id: bytes,
    reported_tcb: int,
    signing_key: str,
    cpuid_product: Product | None,
    product_hint: Product | None,
    emulator_roots: frozenset[bytes],
    now: datetime,
    ark_pins: Mapping[bytes, Product] = trust.PRODUCT_BY_ARK_SHA256,
) -> VerifiedChain:
    """Steps 4-9 of the module docstring."""
    # Duplicates are dropped first so that a padded bundle cannot multiply the signature checks below.
    unique = list(dict.fromkeys(bytes(d) for d in certs))
    loaded = [(d, load_certificate(d)) for d in unique]
    (leaf_der, leaf), (inter_der, inter), (root_der, root) = _pick_chain(loaded, signing_key)
    for cert, what in ((leaf, signing_key), (inter, "the intermediate (ASK/ASVK)"), (root, "the ARK")):
        _check_pss(cert, what)

    # Step 5: trust only by fingerprint.
    root_fp = hashlib.sha256(root_der).digest()
    ark_product = ark_pins.get(root_fp)
    emulated = ark_product is None and root_fp in emulator_roots
    if ark_product is None and not emulated:
        raise EvidenceError("untrusted_root", f"the chain ends at an unpinned root (SHA-256 {root_fp.hex()})")

    # Step 6.
    valid_from = max(c.not_valid_before_utc for c in (leaf, inter, root))
    valid_until = min(c.not_valid_after_utc for c in (leaf, inter, root))
    if not valid_from <= now <= valid_until:
        raise EvidenceError(
            "cert_expired",
            f"at {now.isoformat()} the chain is not valid "
            f"(valid {valid_from.isoformat()} .. {valid_until.isoformat()})",
        )

    ext = kds.parse_vek_extensions(leaf)
    product = _agreed_product(ext, inter, signing_key, ark_product, cpuid_product, product_hint)
    cert_tcb = _check_binding(ext, product, signing_key, chip_id, reported_tcb)

    # Step 9.
    if crl is not None:
        next_update = _check_crl(crl, root, (leaf, inter), now)
        valid_until = min(valid_until, next_update)

    leaf_key = leaf.public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not isinstance(leaf_key.curve, ec.SECP384R1):
        raise EvidenceError("bad_vcek", f"the {signing_key} key is not a P-384 key")
    return VerifiedChain(
        product=product,
        signing_key=signing_key,
        leaf_public_key=leaf_key,
        leaf_extensions=ext,
        cert_tcb=cert_tcb,
        root_sha256=root_fp,
        emulated=emulated,
        chain_der=(leaf_der, inter_der, root_der),
        valid_from=valid_from,
        valid_until=valid_until,
        crl_checked=crl is not None,
    )


def load_crl(blob: bytes) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN X509 CRL-----" in blob:
            crl = x509.load_pem_x509_crl(blob)
        else:
            crl = x509.load_der_x509_crl(blob)
        _ = (crl.issuer, crl.extensions, crl.last_update_utc, crl.next_update_utc, list(crl))
    except _X509_ERRORS as e:
        raise EvidenceError("crl_invalid", f"the CRL is malformed: {e}") from e
    return crl


def _check_crl(
    blob: bytes, ark: x509.Certificate, subjects: Iterable[x509.Certificate], now: datetime
) -> datetime:
    crl = load_crl(blob)
    if crl.issuer != ark.subject:
        raise EvidenceError("crl_invalid", "the CRL was not issued by the chain's ARK")
    ark_key = ark.public_key()
    if not isinstance(ark_key, rsa.RSAPublicKey):
        raise EvidenceError("crl_invalid", "the ARK key cannot sign a CRL")
    try:
        signed = crl.is_signature_valid(ark_key)
    except (ValueError, TypeError, InvalidSignature):
        signed = False
    if not signed:
        raise EvidenceError("crl_invalid", "the CRL signature does not verify with the ARK")
    if crl.last_update_utc > now:
        raise EvidenceError(
            "crl_invalid", f"the CRL is issued in the future ({crl.last_update_utc.isoformat()})"
        )
    next_update = crl.next_update_utc
    if next_update is None or next_update < now:
        raise EvidenceError(
            "crl_expired", f"the CRL expired ({next_update.isoformat() if next_update else 'never set'})"
        )
    for cert in subjects:
        serial = serial_of(cert)
        if crl.get_revoked_certificate_by_serial_number(serial) is not None:
            raise EvidenceError("revoked", f"certificate {_cn(cert.subject)!r} serial {serial} is revoked")
    return next_update
