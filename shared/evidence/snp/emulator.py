"""An emulated SEV-SNP platform for development and tests. INSECURE by construction.

It holds its own ARK (RSA-4096, self-signed) -> ASK (RSA-4096) -> VCEK (P-384) chain with the real AMD
certificate profile (RSASSA-PSS SHA-384 salt 48, KDS extensions: productName, SPLs, hwID) and signs byte-exact
ATTESTATION_REPORTs for any requested fields. A verifier accepts its reports only when reference values name
its ``root_fingerprint`` under ``Platform: Emulated-SNP`` (see ``reference``), never next to real platforms.

Like KDS, it issues one VCEK certificate per (product, TCB) on demand, so the VCEK's TCB extensions always
equal the REPORTED_TCB it signs. One ARK and one ASK key serve all products (an ASK certificate per product).

Generating two RSA-4096 keys takes seconds, so :meth:`EmulatedSnpPlatform.load_or_create` persists the keys,
the ARK certificate (its fingerprint must stay stable) and the chip id in a directory; it does blocking file
I/O, so async callers run it in a thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import threading
from pathlib import Path
from typing import Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from contrast.evidence.snp import abi, kds, reference
from contrast.evidence.snp.kds import Product, Tcb

# A fixed launch measurement for emulated guests (SHA-384 of a label, so it is obviously not a real one).
DEFAULT_MEASUREMENT: Final = hashlib.sha384(b"contrast emulated snp guest v1").digest()
DEFAULT_POLICY: Final = abi.POLICY_RESERVED_ONE | abi.POLICY_SMT  # 0x30000: SMT allowed, no debug
DEFAULT_PLATFORM_INFO: Final = abi.PLATFORM_SMT_EN | abi.PLATFORM_TSME_EN | abi.PLATFORM_ECC_EN
DEFAULT_TCB: Final[dict[Product, Tcb]] = {
    "Milan": Tcb(bootloader=4, tee=0, snp=22, microcode=213),
    "Genoa": Tcb(bootloader=9, tee=0, snp=23, microcode=84),
    "Turin": Tcb(fmc=0, bootloader=1, tee=0, snp=2, microcode=71),
}
CPUID: Final[dict[Product, tuple[int, int, int]]] = {
    "Milan": (0x19, 0x01, 1),
    "Genoa": (0x19, 0x11, 1),
    "Turin": (0x1A, 0x02, 1),
}
_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_ORG: Final = "Contrast Emulated SEV-SNP (INSECURE)"
_ARK_CN: Final = "ARK-Emulated-SNP"


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG)]
    )


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _paths(d: Path) -> tuple[dict[str, Path], dict[Product, Path]]:
    files = {n: d / f for n, f in (("ark_key", "ark_key.pem"), ("ask_key", "ask_key.pem"), ("ark", "ark.der"),
                                   ("chip", "chip_id.bin"))}  # fmt: skip
    return files, {p: d / f"vcek_{p.lower()}_key.pem" for p in kds.PRODUCTS}


class EmulatedSnpPlatform:
    """An emulated SNP machine: its chain, its chip id, and a report signer. Thread-safe."""

    def __init__(
        self,
        *,
        ark_key: rsa.RSAPrivateKey,
        ask_key: rsa.RSAPrivateKey,
        vcek_keys: dict[Product, ec.EllipticCurvePrivateKey],
        ark_der: bytes,
        chip_id: bytes,
    ) -> None:
        if len(chip_id) != abi.CHIP_ID_SIZE:
            raise ValueError("chip_id must be 64 bytes")
        self._ark_key = ark_key
        self._ask_key = ask_key
        self._vcek_keys = dict(vcek_keys)
        self._ark = x509.load_der_x509_certificate(ark_der)
        if self._ark.public_key() != ark_key.public_key():
            raise ValueError("the ARK certificate does not belong to the ARK key")
        self._ark_der = ark_der
        self._chip_id = chip_id
        self._lock = threading.Lock()
        self._ask_certs: dict[Product, x509.Certificate] = {}
        self._vcek_certs: dict[tuple[Product, int], bytes] = {}

    # --- construction ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls) -> EmulatedSnpPlatform:
        """A fresh platform in memory (two RSA-4096 key generations: seconds)."""
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        now = dt.datetime.now(dt.UTC)
        ark = (
            x509.CertificateBuilder()
            .subject_name(_name(_ARK_CN))
            .issuer_name(_name(_ARK_CN))
            .public_key(ark_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=25 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(ark_key, hashes.SHA384(), rsa_padding=_PSS)
        )
        vcek_keys: dict[Product, ec.EllipticCurvePrivateKey] = {
            p: ec.generate_private_key(ec.SECP384R1()) for p in kds.PRODUCTS
        }
        return cls(
            ark_key=ark_key,
            ask_key=ask_key,
            vcek_keys=vcek_keys,
            ark_der=_der(ark),
            chip_id=secrets.token_bytes(64),
        )

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> EmulatedSnpPlatform:
        """Load the platform persisted in ``path``, or create one and persist it there (keys mode 0600)."""
        d = Path(path)
        files, vcek_files = _paths(d)
        if all(f.exists() for f in [*files.values(), *vcek_files.values()]):
            ark_key = serialization.load_pem_private_key(files["ark_key"].read_bytes(), password=None)
            ask_key = serialization.load_pem_private_key(files["ask_key"].read_bytes(), password=None)
            vcek_keys = {}
            for p, f in vcek_files.items():
                k = serialization.load_pem_private_key(f.read_bytes(), password=None)
                if not isinstance(k, ec.EllipticCurvePrivateKey):
                    raise ValueError(f"{f}: not an EC key")
                vcek_keys[p] = k
            if not isinstance(ark_key, rsa.RSAPrivateKey) or not isinstance(ask_key, rsa.RSAPrivateKey):
                raise ValueError(f"{d}: ARK/ASK keys must be RSA")
            return cls(
                ark_key=ark_key,
                ask_key=ask_key,
                vcek_keys=vcek_keys,
                ark_der=files["ark"].read_bytes(),
                chip_id=files["chip"].read_bytes(),
            )
        platform = cls.create()
        platform.save(d)
        return platform

    def save(self, path: str | os.PathLike[str]) -> None:
        """Persist the keys (mode 0600), the ARK certificate and the chip id for ``load_or_create``."""
        d = Path(path)
        files, vcek_files = _paths(d)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)

        def write(f: Path, data: bytes) -> None:
            tmp = f.with_suffix(f.suffix + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            tmp.replace(f)

        def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
            return key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )

        write(files["ark_key"], pem(self._ark_key))
        write(files["ask_key"], pem(self._ask_key))
        for product, f in vcek_files.items():
            write(f, pem(self._vcek_keys[product]))
        write(files["chip"], self._chip_id)
        write(files["ark"], self._ark_der)

    # --- public facts ---------------------------------------------------------------------------------------
    @property
    def root_fingerprint(self) -> str:
        """SHA-256 of the emulator ARK's DER, hex: what ``EmulatorRootFingerprint`` must name."""
        return hashlib.sha256(self._ark_der).hexdigest()

    @property
    def ark_der(self) -> bytes:
        return self._ark_der

    def chip_id(self, product: Product = "Milan") -> bytes:
        """The CHIP_ID this platform reports for ``product`` (Turin uses only the first 8 bytes)."""
        if product == "Turin":
            return self._chip_id[: kds.TURIN_CHIP_ID_SIZE] + bytes(abi.CHIP_ID_SIZE - kds.TURIN_CHIP_ID_SIZE)
        return self._chip_id

    def ask_der(self, product: Product = "Milan") -> bytes:
        return _der(self._ask_cert(product))

    def vcek_der(self, product: Product = "Milan", tcb: Tcb | None = None) -> bytes:
        tcb = tcb or DEFAULT_TCB[product]
        raw = kds.encode_tcb(tcb, product)
        with self._lock:
            cached = self._vcek_certs.get((product, raw))
        if cached is not None:
            return cached
        ask = self._ask_cert(product)
        now = dt.datetime.now(dt.UTC)
        hwid = self.chip_id(product)[: kds.TURIN_CHIP_ID_SIZE] if product == "Turin" else self._chip_id
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("SEV-VCEK"))
            .issuer_name(ask.subject)
            .public_key(self._vcek_keys[product].public_key())
            .serial_number(x509.random_serial_number())  # real VCEKs use 0, which cryptography cannot build
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7 * 365))
        )
        for ext in kds.vcek_extensions(product, tcb, hwid):
            builder = builder.add_extension(ext, critical=False)
        der = _der(builder.sign(self._ask_key, hashes.SHA384(), rsa_padding=_PSS))
        with self._lock:
            self._vcek_certs[(product, raw)] = der
        return der

    def cert_chain(self, product: Product = "Milan", tcb: Tcb | None = None) -> list[bytes]:
        """DER certificates for the evidence bundle: VCEK, ASK, ARK."""
        return [self.vcek_der(product, tcb), self.ask_der(product), self._ark_der]

    def crl(
        self, revoked_serials: tuple[int, ...] = (), *, valid_for: dt.timedelta = dt.timedelta(days=7)
    ) -> bytes:
        """A DER CRL signed by the emulator ARK (like KDS's), listing ``revoked_serials``."""
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._ark.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(now + valid_for)
        )
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        return builder.sign(self._ark_key, hashes.SHA384(), rsa_padding=_PSS).public_bytes(
            serialization.Encoding.DER
        )

    def _ask_cert(self, product: Product) -> x509.Certificate:
        with self._lock:
            cert = self._ask_certs.get(product)
            if cert is not None:
                return cert
            now = dt.datetime.now(dt.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(_name(f"SEV-{product}"))
                .issuer_name(self._ark.subject)
                .public_key(self._ask_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=25 * 365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(self._ark_key, hashes.SHA384(), rsa_padding=_PSS)
            )
            self._ask_certs[product] = cert
            return cert

    # --- reports --------------------------------------------------------------------------------------------
    def report(
        self,
        *,
        report_data: bytes = bytes(64),
        host_data: bytes = bytes(32),
        measurement: bytes = DEFAULT_MEASUREMENT,
        version: int = 5,
        product: Product = "Milan",
        tcb: Tcb | None = None,
        current_tcb: Tcb | None = None,
        committed_tcb: Tcb | None = None,
        launch_tcb: Tcb | None = None,
        policy: int = DEFAULT_POLICY,
        platform_info: int = DEFAULT_PLATFORM_INFO,
        vmpl: int = 0,
        guest_svn: int = 0,
        family_id: bytes = bytes(16),
        image_id: bytes = bytes(16),
        id_key_digest: bytes = bytes(48),
        author_key_digest: bytes = bytes(48),
        report_id: bytes | None = None,
        chip_id: bytes | None = None,
        mit_vector: int = 0,
        firmware: tuple[int, int, int] = (1, 55, 21),
    ) -> bytes:
        """A signed ATTESTATION_REPORT; ``tcb`` is REPORTED_TCB (the other TCBs default to it)."""
        if version not in abi.SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported report version {version}")
        tcb = tcb or DEFAULT_TCB[product]
        cpuid = CPUID[product] if version >= abi.CPUID_MIN_VERSION else (None, None, None)
        has_mit = version >= abi.MIT_VECTOR_MIN_VERSION
        major, minor, build = firmware
        unsigned = abi.SnpReport(
            version=version,
            guest_svn=guest_svn,
            policy=policy,
            family_id=family_id,
            image_id=image_id,
            vmpl=vmpl,
            signature_algo=abi.SIGNATURE_ALGO_ECDSA_P384_SHA384,
            current_tcb=kds.encode_tcb(current_tcb or tcb, product),
            platform_info=platform_info,
            signer_info=0,  # VCEK, no author key, chip key not masked
            report_data=report_data,
            measurement=measurement,
            host_data=host_data,
            id_key_digest=id_key_digest,
            author_key_digest=author_key_digest,
            report_id=report_id if report_id is not None else secrets.token_bytes(32),
            report_id_ma=b"\xff" * 32,
            reported_tcb=kds.encode_tcb(tcb, product),
            cpuid_fam_id=cpuid[0],
            cpuid_mod_id=cpuid[1],
            cpuid_step=cpuid[2],
            chip_id=chip_id if chip_id is not None else self.chip_id(product),
            committed_tcb=kds.encode_tcb(committed_tcb or tcb, product),
            current_build=build,
            current_minor=minor,
            current_major=major,
            committed_build=build,
            committed_minor=minor,
            committed_major=major,
            launch_tcb=kds.encode_tcb(launch_tcb or tcb, product),
            launch_mit_vector=mit_vector if has_mit else None,
            current_mit_vector=mit_vector if has_mit else None,
            signature_r=bytes(48),
            signature_s=bytes(48),
        )
        return self.sign(unsigned.to_bytes(), product)

    def sign(self, report: bytes, product: Product = "Milan") -> bytes:
        """Re-sign the 0x000..0x29F region of ``report`` with this platform's VCEK for ``product``."""
        if len(report) != abi.REPORT_SIZE:
            raise ValueError("a report is 0x4A0 bytes")
        return self._sign_into(bytearray(report), product)

    def refill(self, template: bytes, report_data: bytes, product: Product = "Milan") -> bytes:
        """``template`` (a report from :meth:`report`) with this REPORT_DATA and a fresh random REPORT_ID,
        signed anew: what :meth:`report` returns for the template's fields, without encoding them again."""
        if len(template) != abi.REPORT_SIZE:
            raise ValueError("a report is 0x4A0 bytes")
        if len(report_data) != abi.REPORT_DATA_SIZE:
            raise ValueError("REPORT_DATA is 64 bytes")
        out = bytearray(template)
        out[abi.OFF_REPORT_DATA : abi.OFF_REPORT_DATA + abi.REPORT_DATA_SIZE] = report_data
        out[abi.OFF_REPORT_ID : abi.OFF_REPORT_ID + abi.REPORT_ID_SIZE] = secrets.token_bytes(
            abi.REPORT_ID_SIZE
        )
        return self._sign_into(out, product)

    def _sign_into(self, out: bytearray, product: Product) -> bytes:
        der = self._vcek_keys[product].sign(bytes(out[: abi.SIGNED_SIZE]), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        size = abi.SIGNATURE_COMPONENT_SIZE
        out[abi.OFF_SIGNATURE_R : abi.OFF_SIGNATURE_R + size] = r.to_bytes(size, "little")
        out[abi.OFF_SIGNATURE_S : abi.OFF_SIGNATURE_S + size] = s.to_bytes(size, "little")
        return bytes(out)

    def reference_values(
        self, *, product: Product = "Milan", measurement: bytes = DEFAULT_MEASUREMENT, tcb: Tcb | None = None
    ) -> reference.SnpReferenceValues:
        """Reference values that accept this platform's default reports (Emulated-SNP, this root only)."""
        tcb = tcb or DEFAULT_TCB[product]
        return msgspec.convert(
            {
                "Platform": reference.EMULATED_PLATFORM,
                "ProductName": product,
                "TrustedMeasurement": measurement.hex(),
                "MinimumTCB": {
                    "BootloaderVersion": tcb.bootloader,
                    "TEEVersion": tcb.tee,
                    "SNPVersion": tcb.snp,
                    "MicrocodeVersion": tcb.microcode,
                    **({"FMCVersion": tcb.fmc} if product == "Turin" else {}),
                },
                "GuestPolicy": {
                    "ABIMinor": 0,
                    "ABIMajor": 0,
                    "SMT": True,
                    "MigrateMA": False,
                    "Debug": False,
                    "SingleSocket": False,
                    "CXLAllowed": False,
                    "MemAES256XTS": False,
                    "RAPLDis": False,
                    "CipherTextHiding": False,
                    "PageSwapDisable": False,
                },
                "PlatformInfo": {
                    "SMTEnabled": False,
                    "TSMEEnabled": True,
                    "ECCEnabled": False,
                    "RAPLDisabled": False,
                    "CiphertextHidingDRAMEnabled": False,
                    "AliasCheckComplete": False,
                    "TIOEnabled": False,
                },
                "VMPL": 0,
                "AllowedChipIDs": [self.chip_id(product).hex()],
                "MinimumMitigationVector": None,
                "EmulatorRootFingerprint": self.root_fingerprint,
            },
            reference.SnpReferenceValues,
        )
