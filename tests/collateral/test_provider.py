"""The collateral provider against the fake KDS/PCS over real HTTPS on loopback: what it fetches, how it
caches, how it survives an outage, and where it fails closed."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from contrast.collateral.fetch import Endpoints, HttpsFetcher, OfflineFetcher, fetcher_from_env
from contrast.collateral.provider import CollateralProvider, snp_chain_item, snp_crl_item, tdx_items
from contrast.collateral.source import DEFAULT_REFRESH, CachedSource, ReadOnly, VendorSource
from contrast.errors import CollateralError
from contrast.evidence.refvalues import ReferenceValues
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.verifier import Evidence, EvidenceVerifier, VendorRoots
from contrast.testing.kv import MemoryKeyValue
from contrast.testing.vendor import EmulatedKds, FakeVendor, PcsAnswers, VendorServer, serve_vendor


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Clock:
    def __init__(self, t: dt.datetime | None = None) -> None:
        self.t = (t or _now()).timestamp()

    def __call__(self) -> float:
        return self.t


def standin(snp: EmulatedSnpPlatform, tdx: EmulatedTdxPlatform) -> EvidenceVerifier:
    """A verifier that trusts the emulators' roots in place of AMD's and Intel's (the tests' stand-in)."""
    return EvidenceVerifier(
        VendorRoots(
            amd_arks={bytes.fromhex(snp.root_fingerprint): "Milan"}, intel_root_sha256=tdx.root_fingerprint
        )
    )


@pytest.fixture
def vendor(snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform) -> Iterator[VendorServer]:
    pcs = PcsAnswers.of(tdx_emulator, issued=_now() - dt.timedelta(hours=1))
    with serve_vendor(FakeVendor(EmulatedKds(snp_emulator), pcs)) as server:
        yield server


def provider(
    server: VendorServer, store: MemoryKeyValue | None = None, clock: Clock | None = None, **kw: float
) -> CollateralProvider:
    source = CachedSource(
        VendorSource(HttpsFetcher(server.client_context), budget=2.0),
        store if store is not None else MemoryKeyValue(),
        clock=clock or Clock(),
        **kw,
    )
    return CollateralProvider(source, server.endpoints)


def bare_snp(emu: EmulatedSnpPlatform, rd: bytes) -> Evidence:
    return Evidence(tee="snp", report=emu.report(report_data=rd))


async def test_snp_evidence_gets_vcek_chain_and_crl_from_kds(
    vendor: VendorServer, snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform
) -> None:
    rd = secrets.token_bytes(64)
    full = await provider(vendor).complete(bare_snp(snp_emulator, rd), now=_now(), crl=True)
    assert len(full.certs) == 3
    assert full.crl is not None
    assert vendor.vendor.hits("/vcek/v1/Milan/") == 3  # VCEK, cert_chain, crl
    claims = standin(snp_emulator, tdx_emulator).authenticate(full, emulator_root=None, now=_now())
    assert claims.platform == "Milan"
    assert claims.details["crl_checked"] == "true"
    # What the evidence carries is kept: a second completion asks nobody.
    before = len(vendor.vendor.requests)
    assert await provider(vendor).complete(full, now=_now(), crl=True) is full
    assert len(vendor.vendor.requests) == before


async def test_what_the_certificates_say_is_reused_only_for_the_same_bytes(
    vendor: VendorServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    """The summary of an evidence's certificates is cached per exact certificate bytes: after a complete
    chain was seen, evidence carrying only its VCEK must still get the chain fetched (were the summary keyed
    by anything less, "has a root" would carry over and the chain would be missing)."""
    p = provider(vendor)
    full = await p.complete(bare_snp(snp_emulator, secrets.token_bytes(64)), now=_now(), crl=False)
    assert await p.complete(full, now=_now(), crl=False) is full  # the cached summary: nothing to fetch
    only_vcek = msgspec.structs.replace(
        bare_snp(snp_emulator, secrets.token_bytes(64)), certs=[snp_emulator.vcek_der("Milan")]
    )
    completed = await p.complete(only_vcek, now=_now(), crl=False)
    assert len(completed.certs) == 3  # the ASK and ARK were added (from the source's cache)
    assert set(completed.certs) == set(full.certs)


async def test_a_revoked_vcek_is_rejected(
    vendor: VendorServer, snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform
) -> None:
    from cryptography import x509

    kds = vendor.vendor.kds
    assert isinstance(kds, EmulatedKds)
    kds.revoked.add(x509.load_der_x509_certificate(snp_emulator.vcek_der("Milan")).serial_number)
    rd = secrets.token_bytes(64)
    full = await provider(vendor).complete(bare_snp(snp_emulator, rd), now=_now(), crl=True)
    ref = msgspec.structs.replace(
        snp_emulator.reference_values(), Platform="Metal-QEMU-SNP", EmulatorRootFingerprint=None
    )
    result = standin(snp_emulator, tdx_emulator).verify(
        full, ReferenceValues(snp=[ref]), expected_report_data=rd, now=_now()
    )
    assert [f.code for f in result.findings] == ["evidence.revoked"]
    # The check that fails without a CRL: the same evidence without one is refused by the reference values.
    result = standin(snp_emulator, tdx_emulator).verify(
        msgspec.structs.replace(full, crl=None),
        ReferenceValues(snp=[ref]),
        expected_report_data=rd,
        now=_now(),
    )
    assert [f.code for f in result.findings] == ["policy.crl_missing"]


async def test_tdx_quote_gets_pcs_collateral_with_issuer_chains(
    vendor: VendorServer, snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform
) -> None:
    quote = tdx_emulator.quote(report_data=bytes(64))
    full = await provider(vendor).complete(Evidence(tee="tdx", report=quote), now=_now(), crl=True)
    assert full.tdx_collateral is not None
    claims = standin(snp_emulator, tdx_emulator).authenticate(full, emulator_root=None, now=_now())
    assert claims.tcb["status"] == "UpToDate"
    assert claims.platform == "TDX"
    for path in ("/tdx/certification/v4/tcb?fmspc=", "/qe/identity", "/pckcrl?ca=platform", "IntelSGXRootCA"):
        assert vendor.vendor.hits(path) == 1, path


async def test_attached_collateral_past_its_validity_is_renewed(
    vendor: VendorServer, tdx_emulator: EmulatedTdxPlatform
) -> None:
    quote = tdx_emulator.quote(report_data=bytes(64))
    old = tdx_emulator.collateral(issued=_now() - dt.timedelta(days=40))  # nextUpdate 10 days ago
    got = await provider(vendor).complete(
        Evidence(tee="tdx", report=quote, tdx_collateral=old), now=_now(), crl=True
    )
    assert got.tdx_collateral is not None
    assert got.tdx_collateral != old
    assert vendor.vendor.hits("/tdx/certification/v4/tcb") == 1


async def test_vendor_outage_is_survived_from_the_shared_cache(
    vendor: VendorServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    store, clock = MemoryKeyValue(), Clock()
    rd = secrets.token_bytes(64)
    first = await provider(vendor, store, clock).complete(bare_snp(snp_emulator, rd), now=_now(), crl=True)
    vendor.vendor.down = True
    clock.t += DEFAULT_REFRESH + 60  # the CRL is due for a refresh; the vendor answers 503
    # Another replica (a fresh provider over the same shared store) is served from the cache.
    again = await provider(vendor, store, clock).complete(bare_snp(snp_emulator, rd), now=_now(), crl=True)
    assert again.certs == first.certs
    assert again.crl == first.crl
    assert vendor.vendor.hits("/crl") >= 2  # it did ask


async def test_an_initializer_reads_the_shared_cache_and_never_writes_it(
    vendor: VendorServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    """Workloads may not fill the Coordinator's cache: what an initializer fetches stays its own, and what the
    Coordinator cached is used without asking the vendor."""
    shared, clock = MemoryKeyValue(), Clock()

    def initializer() -> CollateralProvider:
        source = VendorSource(HttpsFetcher(vendor.client_context), budget=2.0)
        return CollateralProvider(CachedSource(source, ReadOnly(shared), clock=clock), vendor.endpoints)

    rd = secrets.token_bytes(64)
    await initializer().complete(bare_snp(snp_emulator, rd), now=_now(), crl=True)
    assert await shared.keys() == []
    await provider(vendor, shared, clock).complete(bare_snp(snp_emulator, rd), now=_now(), crl=True)
    cached = await shared.keys()
    assert cached
    before = len(vendor.vendor.requests)
    await initializer().complete(bare_snp(snp_emulator, rd), now=_now(), crl=True)
    assert len(vendor.vendor.requests) == before
    assert await shared.keys() == cached


async def test_stale_past_the_maximum_age_fails_closed_with_a_named_code(
    vendor: VendorServer, tdx_emulator: EmulatedTdxPlatform
) -> None:
    store, clock = MemoryKeyValue(), Clock()
    quote = tdx_emulator.quote(report_data=bytes(64))
    await provider(vendor, store, clock, max_age=86400).complete(
        Evidence(tee="tdx", report=quote), now=_now(), crl=True
    )
    vendor.vendor.down = True
    clock.t += 2 * 86400  # still inside Intel's nextUpdate (30 days), but past our maximum age
    with pytest.raises(CollateralError) as e:
        await provider(vendor, store, clock, max_age=86400).complete(
            Evidence(tee="tdx", report=quote), now=_now(), crl=True
        )
    assert e.value.code == "collateral.stale"
    assert "maximum age" in e.value.message


async def test_without_cache_an_outage_is_unavailable_and_the_vendor_is_not_hammered(
    vendor: VendorServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    vendor.vendor.down = True
    p = provider(vendor)
    for _ in range(3):
        with pytest.raises(CollateralError) as e:
            await p.complete(bare_snp(snp_emulator, bytes(64)), now=_now(), crl=True)
        assert e.value.code == "collateral.unavailable"
    # 503 with Retry-After 1 s: retried inside the first call's budget, then backed off for the next calls.
    assert vendor.vendor.hits("/vcek/v1/Milan/") <= 3


async def test_concurrent_requests_share_one_upstream_request(
    vendor: VendorServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    import asyncio

    p = provider(vendor)
    item = snp_chain_item(vendor.endpoints, "Milan")
    results = await asyncio.gather(*(p.get(item) for _ in range(20)))
    assert len({r.body for r in results}) == 1
    assert vendor.vendor.hits("/cert_chain") == 1


async def test_garbage_in_the_shared_cache_is_a_miss(vendor: VendorServer) -> None:
    store = MemoryKeyValue()
    item = snp_crl_item(vendor.endpoints, "Milan")
    await store.put(CachedSource.key(item), b"\xc1 not msgpack")
    assert (await provider(vendor, store).get(item)).body
    assert vendor.vendor.hits("/crl") == 1


async def test_answers_that_are_not_what_they_claim_are_refused(
    vendor: VendorServer, tdx_emulator: EmulatedTdxPlatform
) -> None:
    fake = vendor.vendor
    assert fake.pcs is not None
    fmspc = tdx_emulator.pck_extensions.fmspc
    items = tdx_items(vendor.endpoints, fmspc, "platform")
    fake.pcs.tcb_chain = b""  # TCB info without its issuer chain header
    with pytest.raises(CollateralError):
        await provider(vendor).get(items["tcb"])
    fake.pcs.pck_crls["platform"] = b"not a CRL"
    with pytest.raises(CollateralError) as e:
        await provider(vendor).get(items["pckcrl"])
    assert "not a valid crl" in e.value.message
    with pytest.raises(CollateralError):  # 404: another CA type than the vendor has
        await provider(vendor).get(tdx_items(vendor.endpoints, fmspc, "processor")["pckcrl"])


async def test_offline_refuses_to_fetch_and_says_so(snp_emulator: EmulatedSnpPlatform) -> None:
    p = CollateralProvider.build(fetcher=OfflineFetcher())
    with pytest.raises(CollateralError) as e:
        await p.complete(bare_snp(snp_emulator, bytes(64)), now=_now(), crl=False)
    assert e.value.code == "collateral.unavailable"
    assert "off" in e.value.message


def test_fetching_is_on_by_default_and_endpoints_are_https() -> None:
    assert isinstance(fetcher_from_env({}), HttpsFetcher)
    assert isinstance(fetcher_from_env({"CONTRAST_COLLATERAL_FETCH": "off"}), OfflineFetcher)
    with pytest.raises(ValueError):
        fetcher_from_env({"CONTRAST_COLLATERAL_FETCH": "ftp"})
    with pytest.raises(ValueError):
        Endpoints.from_env({"CONTRAST_KDS_URL": "http://kds.example"})
    assert Endpoints.from_env({}).kds == "https://kdsintf.amd.com"


def test_cache_keys_name_what_an_item_identifies(tmp_path: Path) -> None:
    a, b = Endpoints(), Endpoints(kds="https://proxy.example")
    assert CachedSource.key(snp_crl_item(a, "Milan")) == CachedSource.key(snp_crl_item(b, "Milan"))
    assert CachedSource.key(snp_crl_item(a, "Milan")) != CachedSource.key(snp_crl_item(a, "Genoa"))
    assert CachedSource.key(snp_crl_item(a, "Milan")) != CachedSource.key(snp_crl_item(a, "Milan", "VLEK"))
