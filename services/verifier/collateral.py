"""Collateral for evidence verification: an injected, layered, caching provider.

Evidence may arrive without the collateral its verification needs (an SNP report without its VCEK chain, a
TDX quote without PCS collateral). :func:`complete` fills the gaps, layer by layer:

1. the **evidence bundle** itself: whatever the requester sent is used as is;
2. a **shared cache** (:class:`CachedSource`, JetStream KV ``collateral`` in production): fresh entries are
   served directly; when upstream fails, entries up to ``max_stale`` old are served (stale but still
   signed: verification re-checks every signature, validity period and CRL ``nextUpdate``);
3. the **vendor service** (:class:`VendorSource`: AMD KDS, Intel PCS) over HTTPS through an injected
   :class:`Fetcher`, off the event loop, bounded in size (``max_length``) and time (``timeout``).

Nothing is trusted because of where it came from: the verifier checks every fetched item against the pinned
roots, exactly as if the requester had sent it. Every transport failure, a disabled fetcher, an oversized or
malformed answer becomes ``collateral.unavailable`` -- a "retry later", never a pass. The default
(:func:`fetcher_from_env`) is :class:`NoFetcher` unless ``CONTRAST_COLLATERAL_FETCH=https``: a cluster
without egress then says so plainly instead of waiting on timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contrast.errors import CollateralError, ContrastError
from contrast.evidence.snp import abi as snp_abi
from contrast.evidence.snp import kds
from contrast.evidence.tdx import abi as tdx_abi
from contrast.evidence.tdx import pck
from contrast.evidence.tdx.verify import TdxCollateral
from contrast.evidence.verifier import Evidence
from contrast.kv import KeyValue

KDS_BASE: Final = "https://kdsintf.amd.com"
PCS_BASE: Final = "https://api.trustedservices.intel.com"
INTEL_ROOT_CRL: Final = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
MAX_ITEM: Final = 256 * 1024  # the collateral bucket's max value size
DEFAULT_TIMEOUT: Final = 5.0


class Fetched(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One collateral item as the vendor served it: the body and, for Intel, the issuer chain header."""

    body: bytes
    chain: bytes = b""  # PEM issuer chain (Intel's *-Issuer-Chain header, URL-decoded); empty for AMD


@dataclass(frozen=True, slots=True)
class Item:
    """A collateral item by name; ``key`` is stable and is the cache key (hashed)."""

    key: str
    url: str
    chain_header: str = ""  # response header carrying the PEM issuer chain


class Fetcher(Protocol):
    async def fetch(self, url: str, *, max_length: int, timeout: float) -> tuple[bytes, Mapping[str, str]]:
        """GET ``url``; raise ``collateral.unavailable`` on any failure or an answer over ``max_length``."""
        ...


class NoFetcher:
    """Fetching disabled (the default): every miss is ``collateral.unavailable``, said plainly."""

    async def fetch(self, url: str, *, max_length: int, timeout: float) -> tuple[bytes, Mapping[str, str]]:
        raise CollateralError("unavailable", f"collateral fetching is disabled; cannot get {url}")


class HttpsFetcher:
    """``urllib`` in a worker thread (no blocking I/O on the event loop), HTTPS only, bounded read."""

    async def fetch(self, url: str, *, max_length: int, timeout: float) -> tuple[bytes, Mapping[str, str]]:
        if not url.startswith("https://"):
            raise CollateralError("unavailable", "collateral is fetched over HTTPS only")
        try:
            async with asyncio.timeout(timeout + 1):
                return await asyncio.to_thread(self._get, url, max_length, timeout)
        except CollateralError:
            raise
        except (OSError, TimeoutError, ValueError, urllib.error.URLError) as e:
            raise CollateralError("unavailable", f"{url}: {type(e).__name__}") from e

    @staticmethod
    def _get(url: str, max_length: int, timeout: float) -> tuple[bytes, Mapping[str, str]]:
        req = urllib.request.Request(url, headers={"User-Agent": "contrast-collateral/1"})  # noqa: S310
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            body = resp.read(max_length + 1)
            if len(body) > max_length:
                raise CollateralError("unavailable", f"{url}: answer exceeds {max_length} bytes")
            return body, dict(resp.headers.items())


def fetcher_from_env(env: Mapping[str, str] | None = None) -> Fetcher:
    env = os.environ if env is None else env
    mode = env.get("CONTRAST_COLLATERAL_FETCH", "off")
    if mode == "https":
        return HttpsFetcher()
    if mode == "off":
        return NoFetcher()
    raise ValueError(f"CONTRAST_COLLATERAL_FETCH={mode!r}; expected 'off' or 'https'")


class Source(Protocol):
    async def get(self, item: Item) -> Fetched: ...


class VendorSource:
    """The vendor services through a :class:`Fetcher`."""

    def __init__(
        self, fetcher: Fetcher, *, timeout: float = DEFAULT_TIMEOUT, max_length: int = MAX_ITEM
    ) -> None:
        self._fetcher, self._timeout, self._max = fetcher, timeout, max_length

    async def get(self, item: Item) -> Fetched:
        try:
            body, headers = await self._fetcher.fetch(item.url, max_length=self._max, timeout=self._timeout)
        except ContrastError:
            raise
        except Exception as e:  # a plug-in must not leak odd exceptions (TUF's fetcher rule)
            raise CollateralError("unavailable", f"{item.url}: {type(e).__name__}") from e
        if len(body) > self._max:
            raise CollateralError("unavailable", f"{item.url}: answer exceeds {self._max} bytes")
        chain = b""
        if item.chain_header:
            raw = {k.lower(): v for k, v in headers.items()}.get(item.chain_header.lower(), "")
            if not raw:
                raise CollateralError("unavailable", f"{item.url}: no {item.chain_header} header")
            chain = urllib.parse.unquote(raw).encode()
        return Fetched(body=body, chain=chain)


class _Cached(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fetched_at: float
    item: Fetched


class CachedSource:
    """A shared cache in front of ``upstream``: fresh hits, misses fetched and stored, stale on failure."""

    def __init__(
        self,
        upstream: Source,
        kv: KeyValue,
        *,
        fresh_for: float = 3600.0,
        max_stale: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < fresh_for <= max_stale:
            raise ValueError("need 0 < fresh_for <= max_stale")
        self._up, self._kv, self._fresh, self._stale, self._clock = upstream, kv, fresh_for, max_stale, clock

    @staticmethod
    def _key(item: Item) -> str:
        return "c/" + hashlib.sha256(item.key.encode()).hexdigest()

    async def _read(self, item: Item) -> _Cached | None:
        try:
            entry = await self._kv.get(self._key(item))
            return None if entry is None else msgspec.msgpack.decode(entry.value, type=_Cached)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None  # garbage in the shared cache is a miss; verification would refuse it anyway
        except Exception:
            return None  # the cache is an optimisation: its failure is a miss

    async def get(self, item: Item) -> Fetched:
        now = self._clock()
        cached = await self._read(item)
        if cached is not None and 0 <= now - cached.fetched_at < self._fresh:
            return cached.item
        try:
            fetched = await self._up.get(item)
        except CollateralError:
            if cached is not None and 0 <= now - cached.fetched_at < self._stale:
                return cached.item
            raise
        # A cache write failure must not fail the verification that needed the item.
        with contextlib.suppress(Exception):
            await self._kv.put(self._key(item), msgspec.msgpack.encode(_Cached(fetched_at=now, item=fetched)))
        return fetched


# ---- what to fetch ----------------------------------------------------------------------------------


def snp_vcek_item(product: kds.Product, chip_id: bytes, tcb: kds.Tcb) -> Item:
    hwid = chip_id[: kds.TURIN_CHIP_ID_SIZE] if product == "Turin" else chip_id
    q = f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    if product == "Turin":
        q += f"&fmcSPL={tcb.fmc}"
    return Item(
        key=f"snp/vcek/{product}/{hwid.hex()}/{q}", url=f"{KDS_BASE}/vcek/v1/{product}/{hwid.hex()}?{q}"
    )


def snp_chain_item(product: kds.Product) -> Item:
    return Item(key=f"snp/chain/{product}", url=f"{KDS_BASE}/vcek/v1/{product}/cert_chain")


def tdx_items(fmspc: bytes, pck_ca: str) -> dict[str, Item]:
    base = PCS_BASE
    return {
        "tcb": Item(
            key=f"tdx/tcb/{fmspc.hex()}",
            url=f"{base}/tdx/certification/v4/tcb?fmspc={fmspc.hex()}",
            chain_header="TCB-Info-Issuer-Chain",
        ),
        "qe": Item(
            key="tdx/qe",
            url=f"{base}/tdx/certification/v4/qe/identity",
            chain_header="SGX-Enclave-Identity-Issuer-Chain",
        ),
        "pckcrl": Item(
            key=f"tdx/pckcrl/{pck_ca}",
            url=f"{base}/sgx/certification/v4/pckcrl?ca={pck_ca}&encoding=der",
            chain_header="SGX-PCK-CRL-Issuer-Chain",
        ),
        "rootcrl": Item(key="tdx/rootcrl", url=INTEL_ROOT_CRL),
    }


async def complete(evidence: Evidence, source: Source) -> Evidence:
    """``evidence`` with missing collateral filled from ``source``; what the bundle carries is kept."""
    if evidence.tee == "snp":
        if evidence.certs:
            return evidence
        report = snp_abi.parse_report(evidence.report)
        if report.cpuid_fam_id is None or report.cpuid_mod_id is None:
            raise CollateralError("unavailable", "a v2 report names no product; the VCEK chain must be sent")
        product = kds.product_from_cpuid(report.cpuid_fam_id, report.cpuid_mod_id)
        if product is None:
            raise CollateralError("unavailable", "unknown product; the VCEK chain must be sent")
        tcb = kds.decode_tcb(report.reported_tcb, product)
        vcek = await source.get(snp_vcek_item(product, report.chip_id, tcb))
        chain = await source.get(snp_chain_item(product))
        try:
            certs = [
                c.public_bytes(serialization.Encoding.DER)
                for c in x509.load_pem_x509_certificates(chain.body)
            ]
        except ValueError as e:
            raise CollateralError("unavailable", "the KDS certificate chain does not parse") from e
        return msgspec.structs.replace(evidence, certs=[vcek.body, *certs][:4])
    if evidence.tdx_collateral is not None:
        return evidence
    quote = tdx_abi.parse_quote(evidence.report)
    try:
        leaf = x509.load_pem_x509_certificates(quote.signature_data.cert_data.pck_chain_pem)[0]
        fmspc = pck.pck_extensions(leaf).fmspc
    except (ValueError, IndexError, ContrastError) as e:
        raise CollateralError("unavailable", "cannot read the FMSPC from the quote's PCK chain") from e
    ca = "processor" if "Processor" in leaf.issuer.rfc4514_string() else "platform"
    items = tdx_items(fmspc, ca)
    got = {name: await source.get(item) for name, item in items.items()}
    return msgspec.structs.replace(
        evidence,
        tdx_collateral=TdxCollateral(
            tcb_info=got["tcb"].body,
            qe_identity=got["qe"].body,
            tcb_signing_chain=got["tcb"].chain,
            pck_crl=got["pckcrl"].body,
            pck_crl_issuer_chain=got["pckcrl"].chain,
            root_crl=got["rootcrl"].body,
        ),
    )
