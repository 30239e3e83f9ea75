"""The layered collateral provider: evidence bundle → shared cache → vendor, with an in-memory fake vendor."""

from __future__ import annotations

import datetime as dt
import secrets
import urllib.parse
from collections.abc import Mapping

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contrast.errors import CollateralError
from contrast.evidence.refvalues import ReferenceValues
from contrast.evidence.snp.emulator import DEFAULT_TCB, EmulatedSnpPlatform
from contrast.evidence.tdx.abi import parse_quote
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.tdx.pck import pck_extensions
from contrast.evidence.verifier import Evidence, EvidenceVerifier
from contrast.testing.kv import MemoryKeyValue
from contrast.verifier import collateral as col


class FakeVendor:
    """AMD KDS / Intel PCS in memory: URL → (body, headers); counts requests; can be switched off."""

    def __init__(self, pages: dict[str, tuple[bytes, dict[str, str]]]) -> None:
        self.pages, self.hits, self.up = pages, 0, True

    async def fetch(self, url: str, *, max_length: int, timeout: float) -> tuple[bytes, Mapping[str, str]]:
        self.hits += 1
        if not self.up or url not in self.pages:
            raise CollateralError("unavailable", f"fake vendor: {url}")
        body, headers = self.pages[url]
        if len(body) > max_length:
            raise CollateralError("unavailable", "too large")
        return body, headers


def snp_pages(emu: EmulatedSnpPlatform) -> dict[str, tuple[bytes, dict[str, str]]]:
    vcek, ask, ark = emu.cert_chain("Milan")
    pem = b"".join(
        x509.load_der_x509_certificate(c).public_bytes(serialization.Encoding.PEM) for c in (ask, ark)
    )
    item = col.snp_vcek_item("Milan", emu.chip_id("Milan"), DEFAULT_TCB["Milan"])
    return {item.url: (vcek, {}), col.snp_chain_item("Milan").url: (pem, {})}


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


async def test_snp_evidence_without_certificates_is_completed_and_verifies(
    snp_emulator: EmulatedSnpPlatform,
) -> None:
    rd = secrets.token_bytes(64)
    bare = Evidence(tee="snp", report=snp_emulator.report(report_data=rd))
    vendor = FakeVendor(snp_pages(snp_emulator))
    source = col.CachedSource(col.VendorSource(vendor), MemoryKeyValue())
    full = await col.complete(bare, source)
    assert len(full.certs) == 3
    refs = ReferenceValues(snp=[snp_emulator.reference_values()])
    result = EvidenceVerifier().verify(full, refs, expected_report_data=rd, now=dt.datetime.now(dt.UTC))
    assert result.accepted
    # The bundle's own collateral is used as is: no vendor traffic.
    hits = vendor.hits
    assert await col.complete(full, source) is full
    assert vendor.hits == hits


async def test_cache_layers_fresh_stale_and_expired(snp_emulator: EmulatedSnpPlatform) -> None:
    vendor = FakeVendor(snp_pages(snp_emulator))
    kv, clock = MemoryKeyValue(), Clock()
    source = col.CachedSource(col.VendorSource(vendor), kv, fresh_for=60, max_stale=600, clock=clock)
    item = col.snp_chain_item("Milan")
    first = await source.get(item)
    assert vendor.hits == 1
    assert await source.get(item) == first  # fresh hit
    assert vendor.hits == 1
    vendor.up = False
    clock.t += 120  # stale: upstream is asked, fails, the stale entry is served
    assert await source.get(item) == first
    assert vendor.hits == 2
    clock.t += 600  # beyond max_stale: fail closed
    with pytest.raises(CollateralError) as e:
        await source.get(item)
    assert e.value.code == "collateral.unavailable"
    vendor.up = True  # upstream back: refreshed and re-cached
    assert await source.get(item) == first
    assert vendor.hits == 4


async def test_garbage_in_the_shared_cache_is_a_miss(snp_emulator: EmulatedSnpPlatform) -> None:
    vendor = FakeVendor(snp_pages(snp_emulator))
    kv = MemoryKeyValue()
    source = col.CachedSource(col.VendorSource(vendor), kv)
    item = col.snp_chain_item("Milan")
    await kv.put(col.CachedSource._key(item), b"\xc1 not msgpack")
    assert (await source.get(item)).body == snp_pages(snp_emulator)[item.url][0]
    assert vendor.hits == 1


@pytest.mark.parametrize("fetcher", [col.NoFetcher(), col.HttpsFetcher()], ids=["disabled", "offline"])
async def test_no_network_fails_closed_and_fast(
    fetcher: col.Fetcher, snp_emulator: EmulatedSnpPlatform
) -> None:
    bare = Evidence(tee="snp", report=snp_emulator.report(report_data=bytes(64)))
    source = col.VendorSource(fetcher, timeout=2.0)
    with pytest.raises(CollateralError) as e:
        await col.complete(bare, source)
    assert e.value.code == "collateral.unavailable"


async def test_vendor_answers_are_bounded_and_need_their_issuer_chain() -> None:
    big = FakeVendor({"https://x/big": (b"x" * 2000, {}), "https://x/tcb": (b"{}", {})})
    with pytest.raises(CollateralError):
        await col.VendorSource(big, max_length=1000).get(col.Item(key="big", url="https://x/big"))
    with pytest.raises(CollateralError):  # Intel's issuer chain header is required
        await col.VendorSource(big).get(
            col.Item(key="t", url="https://x/tcb", chain_header="TCB-Info-Issuer-Chain")
        )
    with pytest.raises(CollateralError):
        await col.HttpsFetcher().fetch("http://kdsintf.amd.com/", max_length=10, timeout=1)
    with pytest.raises(ValueError):
        col.fetcher_from_env({"CONTRAST_COLLATERAL_FETCH": "ftp"})
    assert isinstance(col.fetcher_from_env({}), col.NoFetcher)


async def test_tdx_quote_without_collateral_is_completed_from_pcs() -> None:
    emu = EmulatedTdxPlatform.create()
    quote = emu.quote(report_data=bytes(64), mr_config_id=bytes(48))
    want = emu.collateral()
    leaf = x509.load_pem_x509_certificates(parse_quote(quote).signature_data.cert_data.pck_chain_pem)[0]
    fmspc = pck_extensions(leaf).fmspc
    ca = "processor" if "Processor" in leaf.issuer.rfc4514_string() else "platform"
    items = col.tdx_items(fmspc, ca)
    q = urllib.parse.quote
    tcb_chain, crl_chain = q(want.tcb_signing_chain.decode()), q(want.pck_crl_issuer_chain.decode())
    vendor = FakeVendor(
        {
            items["tcb"].url: (want.tcb_info, {"TCB-Info-Issuer-Chain": tcb_chain}),
            items["qe"].url: (want.qe_identity, {"SGX-Enclave-Identity-Issuer-Chain": tcb_chain}),
            items["pckcrl"].url: (want.pck_crl, {"SGX-PCK-CRL-Issuer-Chain": crl_chain}),
            items["rootcrl"].url: (want.root_crl, {}),
        }
    )
    full = await col.complete(Evidence(tee="tdx", report=quote), col.VendorSource(vendor))
    assert full.tdx_collateral is not None
    assert full.tdx_collateral == want
