"""PCK extension DER, PCS documents (exact signed bytes), TCB status folding, the emulator's persistence."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.errors import EvidenceError
from contrast.evidence.tdx import pcs
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.tdx.pck import PckExtensions, encode_sgx_extensions, parse_sgx_extensions
from tests.evidence.tdx.tdx_helpers import EMU_NOW

extensions = st.builds(
    PckExtensions,
    ppid=st.binary(min_size=16, max_size=16),
    tcb_comp_svns=st.tuples(*[st.integers(0, 255)] * 16),
    pcesvn=st.integers(0, 0xFFFF),
    cpusvn=st.binary(min_size=16, max_size=16),
    pceid=st.binary(min_size=2, max_size=2),
    fmspc=st.binary(min_size=6, max_size=6),
    sgx_type=st.integers(0, 2),
    piid=st.none() | st.binary(min_size=16, max_size=16),
)


@settings(max_examples=200, deadline=None)
@given(extensions)
def test_pck_extension_round_trip(ext: PckExtensions) -> None:
    assert parse_sgx_extensions(encode_sgx_extensions(ext)) == ext


def test_pck_extension_truncations_are_typed(platform: EmulatedTdxPlatform) -> None:
    der = encode_sgx_extensions(platform.pck_extensions)
    for n in range(len(der)):
        with pytest.raises(EvidenceError) as e:
            parse_sgx_extensions(der[:n])
        assert e.value.code == "evidence.bad_pck_extensions"
    with pytest.raises(EvidenceError):
        parse_sgx_extensions(der + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.data())
def test_pck_extension_parser_never_crashes(junk: bytes, data: st.DataObject) -> None:
    base = bytearray(
        encode_sgx_extensions(
            PckExtensions(
                ppid=bytes(16),
                tcb_comp_svns=(1,) * 16,
                pcesvn=1,
                cpusvn=bytes(16),
                pceid=bytes(2),
                fmspc=bytes(6),
                sgx_type=0,
            )
        )
    )
    i = data.draw(st.integers(0, len(base) - 1))
    base[i] = data.draw(st.integers(0, 255))
    for candidate in (junk, bytes(base)):
        with contextlib.suppress(EvidenceError):
            parse_sgx_extensions(candidate)


def test_signed_document_is_split_at_the_exact_bytes() -> None:
    doc = b'{ "tcbInfo" : {"a":"}\\"{","b":[1,{"c":2}]} , "signature":"' + b"ab" * 64 + b'" }'
    inner, sig = pcs.split_signed_document(doc, "tcbInfo")
    assert inner == b'{"a":"}\\"{","b":[1,{"c":2}]}'
    assert sig == bytes.fromhex("ab" * 64)
    for bad in (
        b'{"tcbInfo":{},"signature":"' + b"ab" * 64 + b'","x":1}',
        b'{"tcbInfo":{},"signature":"abab"}',
        b'{"tcbInfo":{},"tcbInfo":{},"signature":"' + b"ab" * 64 + b'"}',
        b"[]",
        b"{",
    ):
        with pytest.raises(EvidenceError):
            pcs.split_signed_document(bad, "tcbInfo")


@pytest.mark.parametrize(
    ("platform_status", "other", "result"),
    [
        ("UpToDate", "UpToDate", "UpToDate"),
        ("UpToDate", "OutOfDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("UpToDate", "Revoked", "Revoked"),
        ("OutOfDate", "UpToDate", "OutOfDate"),
        ("UpToDate", "NoMatch", "NoMatch"),
    ],
)
def test_status_convergence(platform_status: str, other: str, result: str) -> None:
    assert pcs.converge(platform_status, other) == result


def test_worst_orders_statuses() -> None:
    assert pcs.worst("UpToDate", "OutOfDate") == "OutOfDate"
    assert pcs.worst("Revoked", "NoMatch") == "NoMatch"
    assert pcs.worst("SWHardeningNeeded", "UpToDate") == "SWHardeningNeeded"


def test_tdx_module_identity_mismatch_is_refused(platform: EmulatedTdxPlatform) -> None:
    from contrast.evidence.tdx.trust import TdxRoots
    from contrast.evidence.tdx.verify import TdxVerifier

    ident = {
        "id": "TDX_00",  # an identity for major version 0, which never applies: TEE_TCB_SVN[1] selects
        "mrsigner": "00" * 48,
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
        "tcbLevels": [],
    }
    col = platform.collateral(issued=EMU_NOW - dt.timedelta(days=1), module_identities=[ident])
    v = TdxVerifier(TdxRoots.emulated(platform.root_fingerprint))
    quote = platform.quote(tee_tcb_svn=bytes.fromhex("03010000000000000000000000000000"))
    # TEE_TCB_SVN[1] = 1 names TDX_01, which this TCB info lacks: no match, not an error.
    assert v.verify(quote, collateral=col, now=EMU_NOW).tcb_status == "NoMatch"
    ident["id"] = "TDX_01"
    ident["mrsigner"] = "11" * 48
    col = platform.collateral(issued=EMU_NOW - dt.timedelta(days=1), module_identities=[ident])
    with pytest.raises(EvidenceError) as e:
        v.verify(quote, collateral=col, now=EMU_NOW)
    assert e.value.code == "evidence.tdx_module_mismatch"


def test_load_or_create_persists_the_platform(tmp_path: Path) -> None:
    path = tmp_path / "emu" / "tdx.json"
    a = EmulatedTdxPlatform.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    b = EmulatedTdxPlatform.load_or_create(path)
    assert a.attestation_public_key == b.attestation_public_key
    assert a.pck_extensions == b.pck_extensions
    assert a.root_fingerprint == b.root_fingerprint
    assert a.pck_chain_pem == b.pck_chain_pem
    from contrast.evidence.tdx.trust import TdxRoots
    from contrast.evidence.tdx.verify import TdxVerifier

    v = TdxVerifier(TdxRoots.emulated(b.root_fingerprint))
    assert (
        v.verify(b.quote(), collateral=b.collateral(), now=b.created + dt.timedelta(days=2)).tcb_status
        == "UpToDate"
    )
