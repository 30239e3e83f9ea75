"""An emulated Intel TDX platform: a local root → PCK CA → PCK leaf, a QE and an attestation key.

INSECURE by construction (the private keys live in this process or in a file): for development (`make run`)
and tests only. It produces byte-exact quote v4/v5 structures with chosen fields, signed exactly as a real
quoting enclave would sign them, plus matching signed TCB info / QE identity and CRLs. Its quotes verify only
under ``TdxRoots.emulated(platform.root_fingerprint)``, which reference values reach only through
``Platform: "Emulated-TDX"`` with ``EmulatorRootFingerprint`` set, and never together with Intel's root.

``load_or_create`` does blocking file I/O; call it at start-up (or through ``asyncio.to_thread``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from contrast.evidence.tdx import abi
from contrast.evidence.tdx.pck import SGX_EXTENSIONS_OID, PckExtensions, encode_sgx_extensions, pck_extensions
from contrast.evidence.tdx.trust import fingerprint
from contrast.evidence.tdx.verify import TdxCollateral

QE_MR_SIGNER: Final = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
QE_ATTRIBUTES: Final = bytes.fromhex("1500000000000000e700000000000000")
QE_ISV_PROD_ID: Final = 2
QE_AUTH_DATA: Final = bytes(range(32))
DEFAULT_FMSPC: Final = bytes.fromhex("e0e0e0000000")
DEFAULT_TCB_COMPS: Final = (4, 4, 3, 3, 3, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
DEFAULT_PCESVN: Final = 13
DEFAULT_TEE_TCB_SVN: Final = bytes.fromhex("03000500000000000000000000000000")
DEFAULT_MR_SEAM: Final = bytes.fromhex(
    "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1"
)
DEFAULT_XFAM: Final = bytes.fromhex("e718060000000000")
DEFAULT_TD_ATTRIBUTES: Final = bytes.fromhex("0000001000000000")  # SEPT_VE_DISABLE, no DEBUG
TCB_EVALUATION_DATA_NUMBER: Final = 17
_CERT_LIFETIME: Final = dt.timedelta(days=3650)
_COLLATERAL_LIFETIME: Final = dt.timedelta(days=30)
_CERT_NAMES: Final = ("root", "pck_ca", "pck", "tcb_signing")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contrast Emulated TDX (INSECURE)"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: dt.datetime,
    extra: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    pub = key.public_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + _CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    for ext in extra:
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _rs(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _svns(values: Sequence[int]) -> list[dict[str, int]]:
    return [{"svn": v} for v in values]


def tcb_level(
    status: str,
    *,
    sgx: Sequence[int] = DEFAULT_TCB_COMPS,
    pcesvn: int = DEFAULT_PCESVN,
    tdx: Sequence[int] = tuple(DEFAULT_TEE_TCB_SVN),
    date: str = "2024-03-13T00:00:00Z",
    advisories: Sequence[str] = (),
) -> dict[str, Any]:
    """One TDX TCB level in PCS JSON form (for ``collateral(tcb_levels=...)``)."""
    level: dict[str, Any] = {
        "tcb": {"sgxtcbcomponents": _svns(sgx), "pcesvn": pcesvn, "tdxtcbcomponents": _svns(tdx)},
        "tcbDate": date,
        "tcbStatus": status,
    }
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


def _keys_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("emulator state holds a non-EC key")
    return key


def _check_quote_fields(
    report_data: bytes, mr_config_id: bytes, mrtd: bytes, rtmrs: Sequence[bytes], version: int, body_type: int
) -> None:
    sizes = {"report_data": (report_data, 64), "mr_config_id": (mr_config_id, 48), "mrtd": (mrtd, 48)}
    for name, (val, n) in sizes.items():
        if len(val) != n:
            raise ValueError(f"{name} must be {n} bytes")
    if len(rtmrs) != 4 or any(len(r) != 48 for r in rtmrs):
        raise ValueError("rtmrs must be four 48-byte values")
    if version == 4 and body_type != abi.BODY_TYPE_TDX10:
        raise ValueError("quote v4 carries only a TDX 1.0 body (type 2)")
    if version not in (4, 5) or body_type not in abi.BODY_SIZES:
        raise ValueError("version must be 4 or 5 and body_type 2 or 3")


@dataclass(frozen=True)
class EmulatedTdxPlatform:
    """The emulator's keys and certificates. Build with :meth:`create` or :meth:`load_or_create`."""

    root_key: ec.EllipticCurvePrivateKey
    pck_ca_key: ec.EllipticCurvePrivateKey
    pck_key: ec.EllipticCurvePrivateKey
    tcb_signing_key: ec.EllipticCurvePrivateKey
    attestation_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    pck_ca: x509.Certificate
    pck: x509.Certificate
    tcb_signing: x509.Certificate
    pck_extensions: PckExtensions
    created: dt.datetime
    qe_isv_svn: int = 4
    _qe_cache: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def create(
        cls,
        *,
        now: dt.datetime | None = None,
        fmspc: bytes = DEFAULT_FMSPC,
        tcb_comps: Sequence[int] = DEFAULT_TCB_COMPS,
        pcesvn: int = DEFAULT_PCESVN,
        piid: bytes | None = None,
        sgx_type: int = 1,
    ) -> EmulatedTdxPlatform:
        start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=1)
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(5)]
        root_key, pck_ca_key, pck_key, tcb_key, att_key = keys
        ext = PckExtensions(
            ppid=secrets.token_bytes(16),
            tcb_comp_svns=tuple(tcb_comps),
            pcesvn=pcesvn,
            cpusvn=bytes(tcb_comps),
            pceid=b"\x00\x00",
            fmspc=fmspc,
            sgx_type=sgx_type,
            piid=secrets.token_bytes(16) if piid is None else piid,
        )
        return cls._assemble(root_key, pck_ca_key, pck_key, tcb_key, att_key, ext, start)

    @classmethod
    def _assemble(
        cls,
        root_key: ec.EllipticCurvePrivateKey,
        pck_ca_key: ec.EllipticCurvePrivateKey,
        pck_key: ec.EllipticCurvePrivateKey,
        tcb_key: ec.EllipticCurvePrivateKey,
        att_key: ec.EllipticCurvePrivateKey,
        ext: PckExtensions,
        start: dt.datetime,
    ) -> EmulatedTdxPlatform:
        root = _cert("Emulated SGX Root CA", root_key, None, root_key, ca=True, not_before=start)
        pck_ca = _cert("Emulated SGX PCK Platform CA", pck_ca_key, root, root_key, ca=True, not_before=start)
        sgx_ext = x509.UnrecognizedExtension(SGX_EXTENSIONS_OID, encode_sgx_extensions(ext))
        pck = _cert(
            "Emulated SGX PCK Certificate",
            pck_key,
            pck_ca,
            pck_ca_key,
            ca=False,
            not_before=start,
            extra=[sgx_ext],
        )
        tcb = _cert("Emulated SGX TCB Signing", tcb_key, root, root_key, ca=False, not_before=start)
        return cls(
            root_key=root_key,
            pck_ca_key=pck_ca_key,
            pck_key=pck_key,
            tcb_signing_key=tcb_key,
            attestation_key=att_key,
            root=root,
            pck_ca=pck_ca,
            pck=pck,
            tcb_signing=tcb,
            pck_extensions=ext,
            created=start,
        )

    @classmethod
    def load_or_create(cls, path: Path) -> EmulatedTdxPlatform:
        """Load the emulator state from ``path`` (JSON, mode 0600), or create and save a new one."""
        if path.exists():
            state = json.loads(path.read_text())
            keys = [
                _load_key(state["keys"][n]) for n in ("root", "pck_ca", "pck", "tcb_signing", "attestation")
            ]
            certs = [x509.load_pem_x509_certificate(state["certs"][n].encode()) for n in _CERT_NAMES]
            # The certificates are stored, not re-issued, so the root fingerprint survives restarts.
            for cert, key in zip(certs, keys[:4], strict=True):
                if cert.public_key() != key.public_key():
                    raise ValueError(f"emulator state at {path}: certificate and key do not match")
            root, pck_ca, pck, tcb = certs
            return cls(
                root_key=keys[0],
                pck_ca_key=keys[1],
                pck_key=keys[2],
                tcb_signing_key=keys[3],
                attestation_key=keys[4],
                root=root,
                pck_ca=pck_ca,
                pck=pck,
                tcb_signing=tcb,
                pck_extensions=pck_extensions(pck),
                created=dt.datetime.fromisoformat(state["created"]),
            )
        platform = cls.create()
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "keys": {
                "root": _keys_pem(platform.root_key),
                "pck_ca": _keys_pem(platform.pck_ca_key),
                "pck": _keys_pem(platform.pck_key),
                "tcb_signing": _keys_pem(platform.tcb_signing_key),
                "attestation": _keys_pem(platform.attestation_key),
            },
            "certs": {
                n: c.public_bytes(serialization.Encoding.PEM).decode()
                for n, c in zip(
                    _CERT_NAMES,
                    (platform.root, platform.pck_ca, platform.pck, platform.tcb_signing),
                    strict=True,
                )
            },
            "created": platform.created.isoformat(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        return platform

    # --- identity ------------------------------------------------------------------------------------------

    @property
    def root_fingerprint(self) -> str:
        """SHA-256 of the root certificate's DER: the reference values' ``EmulatorRootFingerprint``."""
        return fingerprint(self.root)

    @property
    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    @property
    def attestation_public_key(self) -> bytes:
        point = self.attestation_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return point[1:]

    @property
    def pck_chain_pem(self) -> bytes:
        return _pem(self.pck, self.pck_ca, self.root)

    # --- quotes --------------------------------------------------------------------------------------------

    def qe_report(self, *, isv_svn: int | None = None) -> bytes:
        rd = hashlib.sha256(self.attestation_public_key + QE_AUTH_DATA).digest() + bytes(32)
        r = bytearray(abi.QE_REPORT_SIZE)
        r[0:16] = self.pck_extensions.cpusvn
        r[48:64] = QE_ATTRIBUTES
        r[64:96] = hashlib.sha256(b"emulated TD QE").digest()
        r[128:160] = QE_MR_SIGNER
        r[256:258] = QE_ISV_PROD_ID.to_bytes(2, "little")
        r[258:260] = (self.qe_isv_svn if isv_svn is None else isv_svn).to_bytes(2, "little")
        r[320:384] = rd
        return bytes(r)

    def _qe_certification(self) -> abi.QeCertificationData:
        # The QE report and its PCK signature are per platform, as on hardware; sign once.
        if "sig" not in self._qe_cache:
            report = self.qe_report()
            self._qe_cache["report"] = report
            self._qe_cache["sig"] = _rs(self.pck_key, report)
        return abi.QeCertificationData(
            qe_report=abi.QeReport(raw=self._qe_cache["report"]),
            qe_report_signature=self._qe_cache["sig"],
            qe_auth_data=QE_AUTH_DATA,
            pck_chain_type=abi.CERT_TYPE_PCK_CHAIN,
            pck_chain_raw=self.pck_chain_pem + b"\x00",  # real QEs NUL-terminate the PEM
        )

    def quote(
        self,
        *,
        report_data: bytes = bytes(64),
        mr_config_id: bytes = bytes(48),
        mrtd: bytes = bytes(48),
        rtmrs: Sequence[bytes] = (bytes(48),) * 4,
        version: int = 4,
        body_type: int = abi.BODY_TYPE_TDX10,
        mr_seam: bytes = DEFAULT_MR_SEAM,
        td_attributes: bytes = DEFAULT_TD_ATTRIBUTES,
        xfam: bytes = DEFAULT_XFAM,
        tee_tcb_svn: bytes = DEFAULT_TEE_TCB_SVN,
        mr_owner: bytes = bytes(48),
        mr_owner_config: bytes = bytes(48),
        tee_tcb_svn2: bytes | None = None,
        mr_service_td: bytes = bytes(48),
        trailing: bytes = b"",
    ) -> bytes:
        """A signed quote with the given fields. ``mr_config_id`` may be 32 bytes (zero-padded to 48)."""
        if len(mr_config_id) == 32:
            mr_config_id += bytes(16)
        _check_quote_fields(report_data, mr_config_id, mrtd, rtmrs, version, body_type)
        body = (
            tee_tcb_svn
            + mr_seam
            + bytes(48)  # MRSIGNERSEAM: zero for Intel's module
            + bytes(8)  # SEAMATTRIBUTES
            + td_attributes
            + xfam
            + mrtd
            + mr_config_id
            + mr_owner
            + mr_owner_config
            + b"".join(rtmrs)
            + report_data
        )
        if body_type == abi.BODY_TYPE_TDX15:
            body += (tee_tcb_svn if tee_tcb_svn2 is None else tee_tcb_svn2) + mr_service_td
        return self._sign_quote(version, body_type, body) + trailing

    def _sign_quote(self, version: int, body_type: int, body: bytes) -> bytes:
        """The quote bytes around ``body``: header, then the attestation key's signature and the QE's
        certification data."""
        header = abi.Header(
            version=version,
            att_key_type=abi.ATT_KEY_TYPE_ECDSA_P256,
            tee_type=abi.TEE_TYPE_TDX,
            reserved=bytes(4),
            qe_vendor_id=abi.INTEL_QE_VENDOR_ID,
            user_data=hashlib.sha256(self.root_der).digest()[:16] + bytes(4),
        )

        def quote(signature: bytes) -> abi.Quote:
            return abi.Quote(
                header=header,
                body_type=body_type,
                body=abi.TdReport(raw=body),
                signature_data=abi.SignatureData(
                    signature=signature,
                    attestation_key=self.attestation_public_key,
                    cert_data_type=abi.CERT_TYPE_QE_REPORT,
                    cert_data=self._qe_certification(),
                ),
                trailing=0,
            )

        signed_region = quote(bytes(64)).signed_region
        return quote(_rs(self.attestation_key, signed_region)).to_bytes()

    # --- collateral ----------------------------------------------------------------------------------------

    def tcb_info_json(
        self,
        *,
        issued: dt.datetime,
        tcb_levels: Sequence[dict[str, Any]] | None = None,
        module_identities: Sequence[dict[str, Any]] | None = None,
        fmspc: bytes | None = None,
        evaluation_data_number: int = TCB_EVALUATION_DATA_NUMBER,
    ) -> bytes:
        info: dict[str, Any] = {
            "id": "TDX",
            "version": 3,
            "issueDate": _iso(issued),
            "nextUpdate": _iso(issued + _COLLATERAL_LIFETIME),
            "fmspc": (fmspc or self.pck_extensions.fmspc).hex(),
            "pceId": self.pck_extensions.pceid.hex(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": evaluation_data_number,
            "tdxModule": {
                "mrsigner": "00" * 48,
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
            },
            "tdxModuleIdentities": list(module_identities)
            if module_identities is not None
            else [
                {
                    "id": f"TDX_{DEFAULT_TEE_TCB_SVN[1]:02X}",
                    "mrsigner": "00" * 48,
                    "attributes": "0000000000000000",
                    "attributesMask": "FFFFFFFFFFFFFFFF",
                    "tcbLevels": [
                        {
                            "tcb": {"isvsvn": DEFAULT_TEE_TCB_SVN[0]},
                            "tcbDate": "2024-03-13T00:00:00Z",
                            "tcbStatus": "UpToDate",
                        }
                    ],
                }
            ],
            "tcbLevels": list(tcb_levels) if tcb_levels is not None else [tcb_level("UpToDate")],
        }
        return self._signed_doc("tcbInfo", info)

    def qe_identity_json(
        self,
        *,
        issued: dt.datetime,
        tcb_levels: Sequence[dict[str, Any]] | None = None,
        mr_signer: bytes = QE_MR_SIGNER,
        evaluation_data_number: int = TCB_EVALUATION_DATA_NUMBER,
    ) -> bytes:
        ident = {
            "id": "TD_QE",
            "version": 2,
            "issueDate": _iso(issued),
            "nextUpdate": _iso(issued + _COLLATERAL_LIFETIME),
            "tcbEvaluationDataNumber": evaluation_data_number,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": mr_signer.hex().upper(),
            "isvprodid": QE_ISV_PROD_ID,
            "tcbLevels": list(tcb_levels)
            if tcb_levels is not None
            else [
                {
                    "tcb": {"isvsvn": self.qe_isv_svn},
                    "tcbDate": "2024-03-13T00:00:00Z",
                    "tcbStatus": "UpToDate",
                }
            ],
        }
        return self._signed_doc("enclaveIdentity", ident)

    def _signed_doc(self, key: str, inner: dict[str, Any]) -> bytes:
        raw = json.dumps(inner, separators=(",", ":")).encode()
        sig = _rs(self.tcb_signing_key, raw)
        return b'{"' + key.encode() + b'":' + raw + b',"signature":"' + sig.hex().encode() + b'"}'

    def _crl(
        self,
        issuer: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        revoked: Sequence[int],
        issued: dt.datetime,
    ) -> bytes:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(issued)
            .next_update(issued + _COLLATERAL_LIFETIME)
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
            )
        )
        for serial in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(issued).build()
            )
        return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def collateral(
        self,
        *,
        issued: dt.datetime | None = None,
        tcb_levels: Sequence[dict[str, Any]] | None = None,
        qe_tcb_levels: Sequence[dict[str, Any]] | None = None,
        module_identities: Sequence[dict[str, Any]] | None = None,
        revoke_pck: bool = False,
        revoke_pck_ca: bool = False,
        revoke_root: bool = False,
        fmspc: bytes | None = None,
        evaluation_data_number: int = TCB_EVALUATION_DATA_NUMBER,
    ) -> TdxCollateral:
        """Signed collateral, valid for 30 days from ``issued`` (default: the platform's creation time)."""
        t = issued or self.created
        return TdxCollateral(
            tcb_info=self.tcb_info_json(
                issued=t,
                tcb_levels=tcb_levels,
                module_identities=module_identities,
                fmspc=fmspc,
                evaluation_data_number=evaluation_data_number,
            ),
            qe_identity=self.qe_identity_json(
                issued=t, tcb_levels=qe_tcb_levels, evaluation_data_number=evaluation_data_number
            ),
            tcb_signing_chain=_pem(self.tcb_signing, self.root),
            pck_crl=self._crl(
                self.pck_ca, self.pck_ca_key, [self.pck.serial_number] if revoke_pck else [], t
            ),
            pck_crl_issuer_chain=_pem(self.pck_ca, self.root),
            root_crl=self._crl(
                self.root,
                self.root_key,
                [
                    c.serial_number
                    for c, revoke in ((self.pck_ca, revoke_pck_ca), (self.root, revoke_root))
                    if revoke
                ],
                t,
            ),
        )
