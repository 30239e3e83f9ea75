"""What each piece of evidence needs from the vendors, and the provider that every verifier of evidence uses.

:meth:`CollateralProvider.complete` returns the evidence with what its verification needs, keeping what the
evidence carries while it is current:

- **SNP**: the VCEK from AMD KDS by product, chip id and REPORTED_TCB (``/vcek/v1/{product}/{hwid}?blSPL=…``;
  Turin: the 8-byte hwID and ``fmcSPL``), the ASK/ASVK + ARK chain (``/{vcek,vlek}/v1/{product}/cert_chain``)
  and, when ``crl`` is asked for, AMD's CRL (``/{vcek,vlek}/v1/{product}/crl``) unless the evidence carries
  one that is still current. A VLEK is never fetched: the host supplies it. A v2 report names no product; the
  candidates are the caller's (the reference values' ``ProductName``), else every product in turn.
- **TDX**: the PCK chain is in the quote's certification data; TCB info (``/tdx/certification/v4/tcb?fmspc=``,
  issuer chain in ``TCB-Info-Issuer-Chain`` or ``SGX-TCB-Info-Issuer-Chain``), QE identity
  (``/tdx/certification/v4/qe/identity``, ``SGX-Enclave-Identity-Issuer-Chain``), the PCK CRL by the PCK CA's
  type (``/sgx/certification/v4/pckcrl?ca=processor|platform&encoding=der``, ``SGX-PCK-CRL-Issuer-Chain``) and
  Intel's root CA CRL; a part that the evidence carries is replaced only once it is past its ``nextUpdate``.

Every failure is a ``collateral.*`` error ("retry later", never a pass). :class:`AttachingPlatform` runs a
Coordinator replica's (or a pod's) own evidence through the provider, so that its statements carry what a
verifier without network access needs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from contrast.cache import BoundedCache
from contrast.collateral.fetch import Endpoints, Fetcher, HttpsFetcher, fetcher_from_env
from contrast.collateral.source import (
    CachedSource,
    Fetched,
    Item,
    Source,
    Store,
    VendorSource,
    max_age_from_env,
    validity,
)
from contrast.errors import CollateralError, ContrastError
from contrast.evidence.refvalues import ReferenceValues
from contrast.evidence.result import Tee
from contrast.evidence.snp import abi as snp_abi
from contrast.evidence.snp import kds
from contrast.evidence.snp.reference import any_requires_crl
from contrast.evidence.snp.verify import load_certificate, load_crl
from contrast.evidence.tdx import abi as tdx_abi
from contrast.evidence.tdx import pck
from contrast.evidence.tdx.verify import TdxCollateral
from contrast.evidence.verifier import MAX_CERTS, Evidence
from contrast.kv import KvEntry
from contrast.platform.base import Platform

TCB_INFO_CHAIN_HEADERS: Final = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_IDENTITY_CHAIN_HEADERS: Final = ("SGX-Enclave-Identity-Issuer-Chain",)
PCK_CRL_CHAIN_HEADERS: Final = ("SGX-PCK-CRL-Issuer-Chain",)
_LEAF_CN: Final = {"VCEK": "SEV-VCEK", "VLEK": "SEV-VLEK"}
SUPPLIED_CACHE_SIZE: Final = 1024  # distinct certificate sets (platforms) whose summary is kept


# ---- what to fetch ----------------------------------------------------------------------------------


def snp_vcek_item(endpoints: Endpoints, product: kds.Product, chip_id: bytes, tcb: kds.Tcb) -> Item:
    hwid = chip_id[: kds.TURIN_CHIP_ID_SIZE] if product == "Turin" else chip_id
    q = f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    if product == "Turin":
        q += f"&fmcSPL={tcb.fmc}"
    return Item(
        key=f"snp/vcek/{product}/{hwid.hex()}/{q}",
        url=f"{endpoints.kds}/vcek/v1/{product}/{hwid.hex()}?{q}",
        kind="vcek",
    )


def snp_chain_item(endpoints: Endpoints, product: kds.Product, signing_key: str = "VCEK") -> Item:
    path = signing_key.lower()
    return Item(
        key=f"snp/{path}/chain/{product}", url=f"{endpoints.kds}/{path}/v1/{product}/cert_chain", kind="chain"
    )


def snp_crl_item(endpoints: Endpoints, product: kds.Product, signing_key: str = "VCEK") -> Item:
    path = signing_key.lower()
    return Item(key=f"snp/{path}/crl/{product}", url=f"{endpoints.kds}/{path}/v1/{product}/crl", kind="crl")


def tdx_items(endpoints: Endpoints, fmspc: bytes, pck_ca: str) -> dict[str, Item]:
    base = endpoints.pcs
    return {
        "tcb": Item(
            key=f"tdx/tcb/{fmspc.hex()}",
            url=f"{base}/tdx/certification/v4/tcb?fmspc={fmspc.hex()}",
            kind="tcb",
            chain_headers=TCB_INFO_CHAIN_HEADERS,
        ),
        "qe": Item(
            key="tdx/qe",
            url=f"{base}/tdx/certification/v4/qe/identity",
            kind="qe",
            chain_headers=QE_IDENTITY_CHAIN_HEADERS,
        ),
        "pckcrl": Item(
            key=f"tdx/pckcrl/{pck_ca}",
            url=f"{base}/sgx/certification/v4/pckcrl?ca={pck_ca}&encoding=der",
            kind="crl",
            chain_headers=PCK_CRL_CHAIN_HEADERS,
        ),
        "rootcrl": Item(key="tdx/rootcrl", url=endpoints.intel_root_crl, kind="crl"),
    }


# ---- reading what the evidence carries -------------------------------------------------------------


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if len(attrs) == 1 else ""
    return value if isinstance(value, str) else ""


def _product_of(certs: list[x509.Certificate]) -> kds.Product | None:
    """The product the supplied certificates name (VCEK productName, or the ASK/ASVK's CN)."""
    for cert in certs:
        cn = _cn(cert.subject)
        if cn in _LEAF_CN.values():
            try:
                return kds.product_from_name(kds.parse_vek_extensions(cert).product_name)
            except ContrastError:
                continue
        for prefix in ("SEV-VLEK-", "SEV-"):
            if cn.startswith(prefix) and cert.subject != cert.issuer:
                product = kds.product_from_name(cn[len(prefix) :])
                if product is not None:
                    return product
    return None


@dataclass(frozen=True, slots=True)
class _Supplied:
    """What an SNP evidence's own certificates say, for deciding what to fetch: a pure function of their
    bytes (nothing here is trusted; the verifier checks the chain)."""

    names: frozenset[str]  # the subjects' common names
    product: kds.Product | None  # as the certificates name it (:func:`_product_of`)
    has_root: bool  # a self-issued certificate (an ARK) is among them


def _digest(certs: Collection[bytes]) -> bytes:
    """SHA-256 over the certificates, each prefixed with its length: equal exactly for equal lists."""
    h = hashlib.sha256()
    for c in certs:
        h.update(len(c).to_bytes(4, "big"))
        h.update(c)
    return h.digest()


def _supplied(certs: Collection[bytes]) -> _Supplied:
    """Raises ``evidence.*`` if a certificate does not load."""
    loaded = [load_certificate(c) for c in certs]
    return _Supplied(
        names=frozenset(_cn(c.subject) for c in loaded),
        product=_product_of(loaded),
        has_root=any(c.subject == c.issuer for c in loaded),
    )


def _current_crl(crl: bytes | None, now: dt.datetime) -> bool:
    if crl is None:
        return False
    try:
        next_update = load_crl(crl).next_update_utc
    except ContrastError:
        return False
    return next_update is not None and now < next_update


def _current(item: Item, body: bytes, chain: bytes, now: dt.datetime) -> bool:
    """Whether a part the evidence carries is inside the vendor's validity at ``now`` (else it is renewed)."""
    try:
        v = validity(item, Fetched(body=body, chain=chain))
    except ContrastError:
        return False
    return v.issued <= now.timestamp() < v.expires


def _pem(ders: list[bytes]) -> bytes:
    return b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders)


# ---- the provider ------------------------------------------------------------------------------------


class _Memory:
    """A process-local store, for a CLI run without a shared cache."""

    def __init__(self) -> None:
        self._d: dict[str, bytes] = {}

    async def get(self, key: str) -> KvEntry | None:
        value = self._d.get(key)
        return None if value is None else KvEntry(key, value, 0)

    async def put(self, key: str, value: bytes) -> int:
        self._d[key] = value
        return 0


class CollateralProvider:
    """Completes evidence with its collateral from ``source`` (normally a :class:`CachedSource`)."""

    def __init__(self, source: Source, endpoints: Endpoints | None = None) -> None:
        self._source = source
        self.endpoints = endpoints or Endpoints()
        # Every request of a platform carries the same certificates: parse them once per exact bytes (keyed
        # by their digest, so that a full cache holds no certificate bytes).
        self._supplied: BoundedCache[bytes, _Supplied] = BoundedCache(SUPPLIED_CACHE_SIZE)

    @classmethod
    def build(
        cls,
        store: Store | None = None,
        *,
        fetcher: Fetcher | None = None,
        endpoints: Endpoints | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> CollateralProvider:
        """The production provider: ``store`` (the shared KV, or process memory), the fetcher and endpoints
        from the environment unless given (``CONTRAST_COLLATERAL_FETCH``, ``CONTRAST_KDS_URL``, …)."""
        if fetcher is None:
            fetcher = fetcher_from_env(env)
            if ssl_context is not None and isinstance(fetcher, HttpsFetcher):
                fetcher = HttpsFetcher(ssl_context)
        source = CachedSource(
            VendorSource(fetcher),
            store if store is not None else _Memory(),
            max_age=max_age_from_env(env),
            clock=clock or time.time,
        )
        return cls(source, endpoints or Endpoints.from_env(env))

    async def get(self, item: Item) -> Fetched:
        return await self._source.get(item)

    async def complete(
        self,
        evidence: Evidence,
        *,
        now: dt.datetime,
        crl: bool,
        products: Collection[kds.Product] = (),
    ) -> Evidence:
        """``evidence`` with what its verification needs (module docstring). ``crl``: also make sure an SNP
        chain comes with a current CRL (real hardware; the emulators attach their own). ``products``: the
        candidates for a v2 SNP report, which names none. Raises ``collateral.*``; evidence that does not even
        parse is returned as it is, for the verifier to reject."""
        if evidence.tee == "snp":
            return await self._complete_snp(evidence, now, crl, products)
        return await self._complete_tdx(evidence, now)

    async def complete_for(
        self, evidence: Evidence, references: ReferenceValues, *, now: dt.datetime
    ) -> Evidence:
        """What verifying ``evidence`` against ``references`` needs: AMD's CRL where a reference set requires
        the revocation check, and the products they name as candidates for a v2 report."""
        return await self.complete(
            evidence,
            now=now,
            crl=any_requires_crl(references.snp),
            products=sorted({r.ProductName for r in references.snp}),
        )

    async def _complete_snp(
        self, evidence: Evidence, now: dt.datetime, want_crl: bool, products: Collection[kds.Product]
    ) -> Evidence:
        try:
            report = snp_abi.parse_report(evidence.report)
            signing = snp_abi.signing_key_of(report.signer_info)
            supplied = self._supplied.get_or_compute(
                _digest(evidence.certs), lambda: _supplied(evidence.certs)
            )
        except ContrastError:
            return evidence
        if signing not in _LEAF_CN:
            return evidence
        certs = list(evidence.certs)
        cpuid = None
        if report.cpuid_fam_id is not None and report.cpuid_mod_id is not None:
            cpuid = kds.product_from_cpuid(report.cpuid_fam_id, report.cpuid_mod_id)
        product = cpuid or supplied.product
        if _LEAF_CN[signing] not in supplied.names:
            if signing == "VLEK":
                raise CollateralError("unavailable", "a VLEK is never fetched: the host must supply it")
            product, vcek = await self._vcek(report, [product] if product else list(products or kds.PRODUCTS))
            certs.insert(0, vcek)
        if product is None:
            raise CollateralError("unavailable", "the evidence names no SNP product to fetch collateral for")
        if not supplied.has_root:
            chain = await self.get(snp_chain_item(self.endpoints, product, signing))
            try:
                ders = [
                    c.public_bytes(serialization.Encoding.DER)
                    for c in x509.load_pem_x509_certificates(chain.body)
                ]
            except ValueError as e:
                raise CollateralError("unavailable", "the KDS certificate chain does not parse") from e
            certs += [d for d in ders if d not in certs]
        crl = evidence.crl
        if want_crl and not _current_crl(crl, now):
            crl = (await self.get(snp_crl_item(self.endpoints, product, signing))).body
        if len(certs) > MAX_CERTS:
            raise CollateralError("unavailable", f"the completed chain has {len(certs)} certificates")
        if certs == evidence.certs and crl == evidence.crl:
            return evidence
        return msgspec.structs.replace(evidence, certs=certs, crl=crl)

    async def _vcek(
        self, report: snp_abi.SnpReport, candidates: list[kds.Product]
    ) -> tuple[kds.Product, bytes]:
        last: CollateralError = CollateralError("unavailable", "no SNP product to fetch a VCEK for")
        for product in candidates:
            tcb = kds.decode_tcb(report.reported_tcb, product)
            try:
                got = await self.get(snp_vcek_item(self.endpoints, product, report.chip_id, tcb))
            except CollateralError as e:
                last = e
                continue
            return product, got.body
        raise last

    async def _complete_tdx(self, evidence: Evidence, now: dt.datetime) -> Evidence:
        try:
            quote = tdx_abi.parse_quote(evidence.report)
            leaf = x509.load_pem_x509_certificates(quote.signature_data.cert_data.pck_chain_pem)[0]
            fmspc = pck.pck_extensions(leaf).fmspc
        except (ValueError, IndexError, ContrastError):
            return evidence  # the verifier names what is wrong with the quote
        ca = "processor" if "Processor" in leaf.issuer.rfc4514_string() else "platform"
        items = tdx_items(self.endpoints, fmspc, ca)
        have = evidence.tdx_collateral
        parts: dict[str, tuple[bytes, bytes]] = {}
        if have is not None:
            parts = {
                "tcb": (have.tcb_info, have.tcb_signing_chain),
                "qe": (have.qe_identity, have.tcb_signing_chain),
                "pckcrl": (have.pck_crl, have.pck_crl_issuer_chain),
                "rootcrl": (have.root_crl, b""),
            }
            parts = {k: v for k, v in parts.items() if _current(items[k], v[0], v[1], now)}
            if len(parts) == len(items):
                return evidence
        for name, item in items.items():
            if name not in parts:
                got = await self.get(item)
                parts[name] = (got.body, got.chain)
        return msgspec.structs.replace(
            evidence,
            tdx_collateral=TdxCollateral(
                tcb_info=parts["tcb"][0],
                qe_identity=parts["qe"][0],
                tcb_signing_chain=parts["tcb"][1],
                pck_crl=parts["pckcrl"][0],
                pck_crl_issuer_chain=parts["pckcrl"][1],
                root_crl=parts["rootcrl"][0],
            ),
        )


class AttachingPlatform:
    """A platform whose evidence carries its collateral (``docs/protocol.md`` §1): what the hardware
    interface returned, completed by the provider, with AMD's CRL on real SNP hardware."""

    def __init__(
        self,
        platform: Platform,
        provider: CollateralProvider,
        *,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._platform, self._provider, self._now = platform, provider, now

    @property
    def tee(self) -> Tee:
        return self._platform.tee

    @property
    def name(self) -> str:
        return self._platform.name

    @property
    def emulator_root(self) -> str | None:
        return self._platform.emulator_root

    @property
    def provider(self) -> CollateralProvider:
        return self._provider

    async def evidence(self, report_data: bytes) -> Evidence:
        evidence = await self._platform.evidence(report_data)
        real = self._platform.emulator_root is None
        return await self._provider.complete(evidence, now=self._now(), crl=real)


__all__ = [
    "AttachingPlatform",
    "CollateralProvider",
    "Fetched",
    "Item",
    "snp_chain_item",
    "snp_crl_item",
    "snp_vcek_item",
    "tdx_items",
]
