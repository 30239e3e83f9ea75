"""The real vendor-signed vectors through the same provider: their VCEK and chain served by the fake KDS, the
TDX quote's collateral by the fake PCS, verified against the real pinned AMD and Intel roots."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from contrast.collateral.fetch import HttpsFetcher
from contrast.collateral.provider import CollateralProvider
from contrast.collateral.source import CachedSource, VendorSource
from contrast.errors import CollateralError, EvidenceError
from contrast.evidence.snp import abi, kds
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.snp.trust import bundled_chain_pem
from contrast.evidence.tdx.trust import TdxRoots
from contrast.evidence.tdx.verify import TdxVerifier
from contrast.evidence.verifier import Evidence, EvidenceVerifier
from contrast.testing.kv import MemoryKeyValue
from contrast.testing.vendor import FakeVendor, PcsAnswers, StaticKds, VendorServer, serve_vendor
from tests.evidence.snp.snp_fixtures import SNP_VECTORS, VECTOR_TIME, load_vector
from tests.evidence.tdx.tdx_helpers import REAL_NOW, VECTOR, load_collateral


def _provider(server: VendorServer, now: dt.datetime) -> CollateralProvider:
    source = CachedSource(
        VendorSource(HttpsFetcher(server.client_context)), MemoryKeyValue(), clock=lambda: now.timestamp()
    )
    return CollateralProvider(source, server.endpoints)


@pytest.fixture
def kds_vectors() -> Iterator[tuple[VendorServer, StaticKds]]:
    static = StaticKds(chains={("Milan", "vcek"): bundled_chain_pem("Milan")})
    for name in SNP_VECTORS:
        v = load_vector(name)
        report = abi.parse_report(v.report)
        static.vceks[("Milan", report.chip_id, kds.decode_tcb(report.reported_tcb, "Milan"))] = v.vek
    with serve_vendor(FakeVendor(static)) as server:
        yield server, static


@pytest.mark.parametrize("name", SNP_VECTORS)
async def test_real_snp_vectors_get_their_vcek_and_chain_from_kds(
    name: str, kds_vectors: tuple[VendorServer, StaticKds]
) -> None:
    server, _ = kds_vectors
    v = load_vector(name)
    # A v2 report names no product: the candidates come from the reference values (here: Milan).
    full = await _provider(server, VECTOR_TIME).complete(
        Evidence(tee="snp", report=v.report), now=VECTOR_TIME, crl=False, products=["Milan"]
    )
    assert full.certs[0] == v.vek
    assert set(full.certs) == set(v.certs())
    claims = EvidenceVerifier().authenticate(full, emulator_root=None, now=VECTOR_TIME)  # the real AMD ARK
    assert claims.platform == "Milan"
    assert claims.details["crl_checked"] == "false"


async def test_a_crl_that_amd_did_not_sign_is_refused(
    kds_vectors: tuple[VendorServer, StaticKds], snp_emulator: EmulatedSnpPlatform
) -> None:
    server, static = kds_vectors
    v = load_vector(SNP_VECTORS[0])
    bare = Evidence(tee="snp", report=v.report)
    # No AMD-signed CRL ships with the vectors: asking for one is "unavailable", never a pass.
    with pytest.raises(CollateralError) as e:
        await _provider(server, VECTOR_TIME).complete(bare, now=VECTOR_TIME, crl=True, products=["Milan"])
    assert e.value.code == "collateral.unavailable"
    # A CRL served under AMD's path but signed by another key is fetched, and refused by the verifier.
    static.crls[("Milan", "vcek")] = snp_emulator.crl(valid_for=dt.timedelta(days=3650))
    full = await _provider(server, VECTOR_TIME).complete(bare, now=VECTOR_TIME, crl=True, products=["Milan"])
    with pytest.raises(EvidenceError) as err:
        EvidenceVerifier().authenticate(full, emulator_root=None, now=VECTOR_TIME)
    assert err.value.code == "evidence.crl_invalid"


async def test_the_real_tdx_quote_gets_its_collateral_from_pcs() -> None:
    files = load_collateral(VECTOR)
    quote = (VECTOR / "quote.bin").read_bytes()
    answers = PcsAnswers(
        tcb_info={"50806f000000": files.tcb_info},
        qe_identity=files.qe_identity,
        tcb_chain=files.tcb_signing_chain,
        pck_crls={"platform": files.pck_crl, "processor": files.pck_crl},
        pck_crl_chain=files.pck_crl_issuer_chain,
        root_crl=files.root_crl,
    )
    with serve_vendor(FakeVendor(pcs=answers)) as server:
        full = await _provider(server, REAL_NOW).complete(
            Evidence(tee="tdx", report=quote), now=REAL_NOW, crl=True
        )
    assert full.tdx_collateral == files  # byte for byte what PCS served, issuer chains from the headers
    via_pcs = TdxVerifier(TdxRoots.intel()).verify(full.report, full.tdx_collateral, now=REAL_NOW)
    from_files = TdxVerifier(TdxRoots.intel()).verify(quote, files, now=REAL_NOW)
    assert via_pcs.tcb_status == from_files.tcb_status == "NoMatch"
