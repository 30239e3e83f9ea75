"""A fake AMD KDS and Intel PCS over real HTTPS on loopback, backed by the emulators or by fixed answers.

It serves the vendors' URL paths with their response formats and headers:

- KDS: ``GET /vcek/v1/{product}/{hwid}?blSPL=&teeSPL=&snpSPL=&ucodeSPL=[&fmcSPL=]`` → the VCEK, DER
  (``application/pkix-cert``); ``/{vcek,vlek}/v1/{product}/cert_chain`` → ASK/ASVK + ARK, PEM
  (``application/x-pem-file``); ``/{vcek,vlek}/v1/{product}/crl`` → the ARK's CRL, DER
  (``application/pkix-crl``);
- PCS (API v4): ``/tdx/certification/v4/tcb?fmspc=`` → TCB info JSON with ``TCB-Info-Issuer-Chain``;
  ``/tdx/certification/v4/qe/identity`` → QE identity JSON with ``SGX-Enclave-Identity-Issuer-Chain``;
  ``/sgx/certification/v4/pckcrl?ca=platform|processor&encoding=der`` → DER with
  ``SGX-PCK-CRL-Issuer-Chain``
  (issuer chains URL-encoded PEM, as PCS sends them); ``/IntelSGXRootCA.der`` → Intel's root CA CRL.

Unknown paths are 404, malformed queries 400, and ``down = True`` answers 503 with ``Retry-After`` (an
outage). The emulators' keys stand in for the vendors': what it serves chains to the emulator's root, which
tests inject
into their verifier objects (:class:`contrast.evidence.verifier.VendorRoots`). Test-only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contrast.collateral.fetch import Endpoints
from contrast.evidence.snp import kds
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform

Page = tuple[int, bytes, dict[str, str]]


def _pem(ders: list[bytes]) -> bytes:
    return b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders)


def _chain_header(pem: bytes) -> str:
    return urllib.parse.quote(pem.decode(), safe="")


@dataclass
class EmulatedKds:
    """KDS answers for an emulated AMD-SP: its VCEKs at any TCB, its chain, and its CRL."""

    emulator: EmulatedSnpPlatform
    revoked: set[int] = field(default_factory=set)
    crl_valid_for: dt.timedelta = dt.timedelta(days=7)

    def vcek(self, product: kds.Product, hwid: bytes, tcb: kds.Tcb) -> bytes | None:
        if hwid != self.emulator.chip_id(product)[: len(hwid)] or len(hwid) not in (8, 64):
            return None
        return self.emulator.vcek_der(product, tcb)

    def chain(self, product: kds.Product, key: str) -> bytes | None:
        return _pem([self.emulator.ask_der(product), self.emulator.ark_der]) if key == "vcek" else None

    def crl(self, product: kds.Product, key: str) -> bytes | None:
        return (
            self.emulator.crl(tuple(sorted(self.revoked)), valid_for=self.crl_valid_for)
            if key == "vcek"
            else None
        )


@dataclass
class StaticKds:
    """KDS answers fixed in advance (the real vendor-signed vectors): VCEKs by (product, hwid, TCB)."""

    vceks: dict[tuple[str, bytes, kds.Tcb], bytes] = field(default_factory=dict)
    chains: dict[tuple[str, str], bytes] = field(default_factory=dict)
    crls: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def vcek(self, product: kds.Product, hwid: bytes, tcb: kds.Tcb) -> bytes | None:
        return self.vceks.get((product, hwid, tcb))

    def chain(self, product: kds.Product, key: str) -> bytes | None:
        return self.chains.get((product, key))

    def crl(self, product: kds.Product, key: str) -> bytes | None:
        return self.crls.get((product, key))


@dataclass
class PcsAnswers:
    """PCS answers: documents and CRLs with their issuer chains (PEM), by FMSPC and CA type."""

    tcb_info: dict[str, bytes]  # fmspc hex → TCB info JSON
    qe_identity: bytes
    tcb_chain: bytes
    pck_crls: dict[str, bytes]  # "platform" / "processor" → DER
    pck_crl_chain: bytes
    root_crl: bytes

    @classmethod
    def of(
        cls, emulator: EmulatedTdxPlatform, *, issued: dt.datetime | None = None, **kw: object
    ) -> PcsAnswers:
        col = emulator.collateral(issued=issued, **kw)  # type: ignore[arg-type]
        return cls(
            tcb_info={emulator.pck_extensions.fmspc.hex(): col.tcb_info},
            qe_identity=col.qe_identity,
            tcb_chain=col.tcb_signing_chain,
            pck_crls={"platform": col.pck_crl},
            pck_crl_chain=col.pck_crl_issuer_chain,
            root_crl=col.root_crl,
        )


class FakeVendor:
    """The HTTP behaviour of KDS and PCS (:meth:`answer`), independent of the transport."""

    def __init__(
        self, kds_backend: EmulatedKds | StaticKds | None = None, pcs: PcsAnswers | None = None
    ) -> None:
        self.kds, self.pcs = kds_backend, pcs
        self.down = False
        self.requests: list[str] = []
        self._lock = threading.Lock()

    def hits(self, fragment: str) -> int:
        with self._lock:
            return sum(fragment in r for r in self.requests)

    def answer(self, target: str) -> Page:
        with self._lock:
            self.requests.append(target)
        if self.down:
            return 503, b"service unavailable", {"Retry-After": "1"}
        url = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = [p for p in url.path.split("/") if p]
        try:
            if len(parts) >= 4 and parts[0] in ("vcek", "vlek") and parts[1] == "v1":
                return self._kds(parts, query)
            if parts[:3] == ["tdx", "certification", "v4"] or parts[:3] == ["sgx", "certification", "v4"]:
                return self._pcs(parts[0], "/".join(parts[3:]), query)
            if parts == ["IntelSGXRootCA.der"] and self.pcs is not None:
                return 200, self.pcs.root_crl, {"Content-Type": "application/pkix-crl"}
        except (ValueError, KeyError):
            return 400, b"bad request", {}
        return 404, b"not found", {}

    def _kds(self, parts: list[str], query: dict[str, str]) -> Page:
        key, product_name, what = parts[0], parts[2], parts[3]
        product = kds.product_from_name(product_name)
        if self.kds is None or product is None or product_name != product or len(parts) != 4:
            return 404, b"not found", {}
        if what == "cert_chain":
            body = self.kds.chain(product, key)
            return (200, body, {"Content-Type": "application/x-pem-file"}) if body else (404, b"", {})
        if what == "crl":
            body = self.kds.crl(product, key)
            return (200, body, {"Content-Type": "application/pkix-crl"}) if body else (404, b"", {})
        if key != "vcek":
            return 404, b"not found", {}
        hwid = bytes.fromhex(what)
        spl = {k: int(query[k]) for k in ("blSPL", "teeSPL", "snpSPL", "ucodeSPL")}
        fmc = int(query["fmcSPL"]) if product == "Turin" else None
        if any(not 0 <= v <= 255 for v in spl.values()):
            return 400, b"bad request", {}
        tcb = kds.Tcb(
            bootloader=spl["blSPL"],
            tee=spl["teeSPL"],
            snp=spl["snpSPL"],
            microcode=spl["ucodeSPL"],
            fmc=fmc,
            reserved=bytes(3) if product == "Turin" else bytes(4),
        )
        body = self.kds.vcek(product, hwid, tcb)
        return (200, body, {"Content-Type": "application/pkix-cert"}) if body else (404, b"not found", {})

    def _pcs(self, family: str, path: str, query: dict[str, str]) -> Page:
        pcs = self.pcs
        if pcs is None:
            return 404, b"not found", {}
        json = {"Content-Type": "application/json", "Request-ID": "fake"}
        if family == "tdx" and path == "tcb":
            body = pcs.tcb_info.get(query["fmspc"].lower())
            if body is None:
                return 404, b"not found", {}
            return 200, body, json | {"TCB-Info-Issuer-Chain": _chain_header(pcs.tcb_chain)}
        if family == "tdx" and path == "qe/identity":
            return (
                200,
                pcs.qe_identity,
                json | {"SGX-Enclave-Identity-Issuer-Chain": _chain_header(pcs.tcb_chain)},
            )
        if family == "sgx" and path == "pckcrl":
            if query.get("encoding", "pem") != "der":
                return 400, b"this fake serves encoding=der only", {}
            body = pcs.pck_crls.get(query["ca"])
            if body is None:
                return 404, b"not found", {}
            headers = {
                "Content-Type": "application/pkix-crl",
                "SGX-PCK-CRL-Issuer-Chain": _chain_header(pcs.pck_crl_chain),
            }
            return 200, body, headers
        return 404, b"not found", {}


def _tls(host: str) -> tuple[bytes, bytes, bytes]:
    """A CA and a server certificate for ``host`` (an IP address): CA PEM, server certificate PEM, key PEM."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake vendor test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


@dataclass
class VendorServer:
    """A running fake vendor: its base URL, the endpoints to fetch from and a client TLS context."""

    vendor: FakeVendor
    base: str
    client_context: ssl.SSLContext

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(kds=self.base, pcs=self.base, intel_root_crl=f"{self.base}/IntelSGXRootCA.der")


@contextmanager
def serve_vendor(vendor: FakeVendor) -> Iterator[VendorServer]:
    """Run ``vendor`` on an HTTPS port of 127.0.0.1 in a thread, for the duration of the block."""
    import tempfile

    ca_pem, cert_pem, key_pem = _tls("127.0.0.1")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, body, headers = vendor.answer(self.path)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/cert.pem", "wb") as f:
            f.write(cert_pem)
        with open(f"{d}/key.pem", "wb") as f:
            f.write(key_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(f"{d}/cert.pem", f"{d}/key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="fake-vendor", daemon=True)
    thread.start()
    client = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        yield VendorServer(
            vendor=vendor, base=f"https://127.0.0.1:{server.server_address[1]}", client_context=client
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
