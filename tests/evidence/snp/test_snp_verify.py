"""Authenticity: byte sweeps over real reports, the chain in every broken shape, CRLs, the chain cache."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import pathlib
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization

from contrast.errors import EvidenceError
from contrast.evidence.snp import abi, kds, trust, verify
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.testing.snp_chain import CertOverride, SnpChainBuilder, SnpTestChain
from tests.evidence.snp.snp_fixtures import SNP_VECTORS, VECTOR_TIME, Vector, load_vector

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("name", SNP_VECTORS)
def test_flipping_any_byte_of_a_real_report_rejects_it(name: str) -> None:
    v = load_vector(name)
    certs = v.certs()
    verifier = verify.SnpVerifier()
    verifier.verify(v.report, certs, now=VECTOR_TIME)  # the original is accepted
    codes: set[str] = set()
    for i in range(abi.REPORT_SIZE):
        for mask in (0x01, 0xFF):
            b = bytearray(v.report)
            b[i] ^= mask
            with pytest.raises(EvidenceError) as e:
                verifier.verify(bytes(b), certs, now=VECTOR_TIME)
            codes.add(e.value.code)
    # Flips die at the signature, at a must-be-zero check, or at a binding to the VCEK (chip id, TCB).
    assert {"evidence.bad_signature", "evidence.reserved_nonzero", "evidence.chip_id_mismatch"} <= codes
    assert "evidence.tcb_mismatch" in codes


def _chain_and_report(builder: SnpChainBuilder, version: int = 3) -> tuple[SnpTestChain, bytes]:
    chain = builder.build()
    cpuid = {"Milan": (0x19, 0x01, 1), "Genoa": (0x19, 0x11, 1), "Turin": (0x1A, 0x02, 1)}[chain.product]
    raw_tcb = kds.encode_tcb(chain.tcb, chain.product)
    report = abi.SnpReport(
        version=version, guest_svn=0, policy=0x30000, family_id=bytes(16), image_id=bytes(16), vmpl=0,
        signature_algo=1, current_tcb=raw_tcb, platform_info=1, signer_info=0, report_data=bytes(64),
        measurement=bytes(48), host_data=bytes(32), id_key_digest=bytes(48), author_key_digest=bytes(48),
        report_id=bytes(32), report_id_ma=b"\xff" * 32, reported_tcb=raw_tcb,
        cpuid_fam_id=cpuid[0] if version >= 3 else None, cpuid_mod_id=cpuid[1] if version >= 3 else None,
        cpuid_step=cpuid[2] if version >= 3 else None, chip_id=chain.chip_id, committed_tcb=raw_tcb,
        current_build=1, current_minor=55, current_major=1, committed_build=1, committed_minor=55,
        committed_major=1, launch_tcb=raw_tcb, launch_mit_vector=None if version < 5 else 0,
        current_mit_vector=None if version < 5 else 0, signature_r=bytes(48), signature_s=bytes(48),
    )  # fmt: skip
    return chain, chain.sign(report.to_bytes())


def _verify(chain: SnpTestChain, report: bytes, **kw: object) -> verify.VerifiedSnpReport:
    verifier = verify.SnpVerifier(frozenset({chain.ark_sha256}))
    return verifier.verify(report, chain.der(), now=NOW, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_builder_chain_verifies_when_its_root_is_listed(product: kds.Product) -> None:
    chain, report = _chain_and_report(SnpChainBuilder(product=product))
    v = _verify(chain, report)
    assert v.product == product
    assert v.chain.emulated
    assert kds.encode_tcb(v.reported_tcb, product) == kds.encode_tcb(chain.tcb, product)
    # ... and only then: an unlisted root is untrusted.
    with pytest.raises(EvidenceError) as e:
        verify.SnpVerifier().verify(report, chain.der(), now=NOW)
    assert e.value.code == "evidence.untrusted_root"


MILAN_TCB = kds.Tcb(bootloader=3, tee=0, snp=8, microcode=115)
CHIP = bytes(range(64))  # the builder's default chip id
B = SnpChainBuilder()
DAY = dt.timedelta(days=1)


def _vcek_exts(
    product: kds.Product = "Milan", tcb: kds.Tcb = MILAN_TCB, hwid: bytes = CHIP, drop: str | None = None
) -> CertOverride:
    exts = kds.vcek_extensions(product, tcb, hwid)
    return CertOverride(extensions=[x for x in exts if drop is None or x.oid.dotted_string != drop])


_OID = "1.3.6.1.4.1.3704.1."
BROKEN = [
    ("ASK signed PKCS#1 v1.5", B.override("ask", CertOverride(pkcs1v15=True)), "evidence.chain_invalid"),
    (
        "VCEK signed with SHA-256",
        B.override("vcek", CertOverride(hash_sha256=True)),
        "evidence.chain_invalid",
    ),
    ("ARK signed PKCS#1 v1.5", B.override("ark", CertOverride(pkcs1v15=True)), "evidence.chain_invalid"),
    ("VCEK expired", B.override("vcek", CertOverride(not_after=NOW - DAY)), "evidence.cert_expired"),
    ("ASK not yet valid", B.override("ask", CertOverride(not_before=NOW + DAY)), "evidence.cert_expired"),
    ("ARK expired", B.override("ark", CertOverride(not_after=NOW - DAY)), "evidence.cert_expired"),
    ("VCEK for Genoa", B.override("vcek", _vcek_exts(product="Genoa")), "evidence.product_mismatch"),
    ("VCEK of another chip", B.override("vcek", _vcek_exts(hwid=bytes(64))), "evidence.chip_id_mismatch"),
    (
        "VCEK at another TCB",
        B.override("vcek", _vcek_exts(tcb=kds.Tcb(bootloader=3, tee=0, snp=9, microcode=115))),
        "evidence.tcb_mismatch",
    ),
    ("VCEK without hwID", B.override("vcek", _vcek_exts(drop=_OID + "4")), "evidence.bad_vcek"),
    ("VCEK without ucodeSPL", B.override("vcek", _vcek_exts(drop=_OID + "3.8")), "evidence.bad_vcek"),
    ("VCEK without productName", B.override("vcek", _vcek_exts(drop=_OID + "2")), "evidence.bad_vcek"),
    (
        "VCEK with a VLEK CN",
        B.override("vcek", CertOverride(subject_cn="SEV-VLEK")),
        "evidence.missing_certificate",
    ),
    (
        "ASK CN names Genoa",
        B.override("ask", CertOverride(subject_cn="SEV-Genoa")),
        "evidence.product_mismatch",
    ),
]


@pytest.mark.parametrize(("name", "builder", "code"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_chains_are_rejected(name: str, builder: SnpChainBuilder, code: str) -> None:
    chain, report = _chain_and_report(builder)
    with pytest.raises(EvidenceError) as e:
        _verify(chain, report)
    assert e.value.code == code, name


def test_cpuid_product_must_match_the_chain() -> None:
    chain, report = _chain_and_report(SnpChainBuilder(product="Milan"))
    b = bytearray(report)
    b[abi.OFF_CPUID_MOD_ID] = 0x11  # Genoa
    with pytest.raises(EvidenceError) as e:
        _verify(chain, chain.sign(bytes(b)))
    assert e.value.code == "evidence.product_mismatch"


def test_unknown_cpuid_is_rejected() -> None:
    chain, report = _chain_and_report(SnpChainBuilder(product="Milan"))
    b = bytearray(report)
    b[abi.OFF_CPUID_FAM_ID] = 0x17
    with pytest.raises(EvidenceError) as e:
        _verify(chain, chain.sign(bytes(b)))
    assert e.value.code == "evidence.unknown_product"


def test_unsigned_report_is_rejected() -> None:
    chain, report = _chain_and_report(SnpChainBuilder())
    b = bytearray(report)
    b[abi.OFF_SIGNER_INFO] = 7 << 2
    with pytest.raises(EvidenceError) as e:
        _verify(chain, chain.sign(bytes(b)))
    assert e.value.code == "evidence.unsigned"


def test_turin_chip_id_tail_must_be_zero() -> None:
    chain, report = _chain_and_report(SnpChainBuilder(product="Turin"))
    assert _verify(chain, report).product == "Turin"
    b = bytearray(report)
    b[abi.OFF_CHIP_ID + 8] = 1
    with pytest.raises(EvidenceError) as e:
        _verify(chain, chain.sign(bytes(b)))
    assert e.value.code == "evidence.chip_id_mismatch"


def test_v2_product_comes_from_the_chain() -> None:
    chain, report = _chain_and_report(SnpChainBuilder(product="Genoa"), version=2)
    assert _verify(chain, report).product == "Genoa"
    with pytest.raises(EvidenceError) as e:
        _verify(chain, report, product="Milan")
    assert e.value.code == "evidence.product_mismatch"


# --- CRL ------------------------------------------------------------------------------------------
def _verify_crl(
    chain: SnpTestChain, report: bytes, crl: bytes, now: dt.datetime = NOW
) -> verify.VerifiedSnpReport:
    return verify.SnpVerifier(frozenset({chain.ark_sha256})).verify(report, chain.der(), crl, now=now)


def test_crl_good_and_revoked() -> None:
    chain, report = _chain_and_report(SnpChainBuilder())
    assert _verify_crl(chain, report, chain.crl([12345])).product == "Milan"
    for serial in (chain.vcek.serial_number, chain.ask.serial_number):
        with pytest.raises(EvidenceError) as e:
            _verify_crl(chain, report, chain.crl([serial]))
        assert e.value.code == "evidence.revoked"


def test_crl_expired_and_future_and_forged() -> None:
    chain, report = _chain_and_report(SnpChainBuilder())
    with pytest.raises(EvidenceError) as e:
        _verify_crl(chain, report, chain.crl([], last=NOW - dt.timedelta(days=60)))
    assert e.value.code == "evidence.crl_expired"
    with pytest.raises(EvidenceError) as e:
        _verify_crl(chain, report, chain.crl([], last=NOW + dt.timedelta(days=1)))
    assert e.value.code == "evidence.crl_invalid"
    with pytest.raises(EvidenceError) as e:  # signed by the ASK, not the ARK
        _verify_crl(chain, report, chain.crl([], key=chain.ask_key))
    assert e.value.code == "evidence.crl_invalid"
    with pytest.raises(EvidenceError) as e:
        _verify_crl(chain, report, b"not a crl")
    assert e.value.code == "evidence.crl_invalid"


def test_emulator_crl(emulator: EmulatedSnpPlatform) -> None:
    report = emulator.report()
    certs = emulator.cert_chain()
    verifier = verify.SnpVerifier(frozenset({bytes.fromhex(emulator.root_fingerprint)}))
    now = dt.datetime.now(dt.UTC)
    verifier.verify(report, certs, emulator.crl(), now=now)
    vcek_serial = verify.load_certificate(certs[0]).serial_number
    with pytest.raises(EvidenceError) as e:
        verifier.verify(report, certs, emulator.crl((vcek_serial,)), now=now)
    assert e.value.code == "evidence.revoked"


# --- emulator trust -------------------------------------------------------------------------------
def test_emulator_report_needs_its_root_listed(
    emulator: EmulatedSnpPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    report = emulator.report(version=2)
    with pytest.raises(EvidenceError) as e:
        verify.SnpVerifier().verify(report, emulator.cert_chain(), now=dt.datetime.now(dt.UTC))
    assert e.value.code == "evidence.untrusted_root"
    verifier = verify.SnpVerifier(frozenset({bytes.fromhex(emulator.root_fingerprint)}))
    with caplog.at_level(logging.WARNING, logger="contrast.evidence.snp"):
        v = verifier.verify(report, emulator.cert_chain(), now=dt.datetime.now(dt.UTC))
        verifier.verify(report, emulator.cert_chain(), now=dt.datetime.now(dt.UTC))
    assert v.chain.emulated
    assert sum("EMULATED" in r.getMessage() for r in caplog.records) == 2  # every time, not once


def test_emulator_root_cannot_be_an_amd_ark() -> None:
    with pytest.raises(ValueError, match="AMD ARK"):
        verify.SnpVerifier(
            frozenset({bytes.fromhex("69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd")})
        )


def test_persisted_emulator_reloads_identically(
    tmp_path: pathlib.Path, emulator: EmulatedSnpPlatform
) -> None:
    # Persist a platform built from the session one's keys (no new RSA-4096), then load it back.
    d = tmp_path / "emu"
    twin = EmulatedSnpPlatform(
        ark_key=emulator._ark_key,
        ask_key=emulator._ask_key,
        vcek_keys=emulator._vcek_keys,
        ark_der=emulator.ark_der,
        chip_id=emulator.chip_id(),
    )
    twin.save(d)
    again = EmulatedSnpPlatform.load_or_create(d)
    assert again.root_fingerprint == emulator.root_fingerprint
    assert again.chip_id() == emulator.chip_id()
    report = again.report(product="Genoa")
    verifier = verify.SnpVerifier(frozenset({bytes.fromhex(emulator.root_fingerprint)}))
    assert (
        verifier.verify(report, emulator.cert_chain("Genoa"), now=dt.datetime.now(dt.UTC)).product == "Genoa"
    )


# --- the cache ------------------------------------------------------------------------------------
def test_chain_cache_hits_and_still_checks_time(vector: Vector) -> None:
    verifier = verify.SnpVerifier()
    with mock.patch.object(verify, "verify_chain", wraps=verify.verify_chain) as chain_checks:
        verifier.verify(vector.report, vector.certs(), now=VECTOR_TIME)
        verifier.verify(vector.report, vector.certs(), now=VECTOR_TIME)
        assert chain_checks.call_count == 1  # the second verification reuses the verified chain
    with pytest.raises(EvidenceError) as e:
        verifier.verify(vector.report, vector.certs(), now=dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    assert e.value.code == "evidence.cert_expired"
    # A cached chain does not vouch for a different signature.
    b = bytearray(vector.report)
    b[abi.OFF_SIGNATURE_R] ^= 1
    with pytest.raises(EvidenceError) as e:
        verifier.verify(bytes(b), vector.certs(), now=VECTOR_TIME)
    assert e.value.code == "evidence.bad_signature"


def test_cache_is_bounded() -> None:
    chain, report = _chain_and_report(SnpChainBuilder())
    verifier = verify.SnpVerifier(frozenset({chain.ark_sha256}), cache_size=2)
    chains = [chain.der() + [chain.der()[1]] * i for i in range(4)]  # four distinct certificate lists
    for certs in chains:
        verifier.verify(report, certs, now=NOW)
    with mock.patch.object(verify, "verify_chain", wraps=verify.verify_chain) as chain_checks:
        verifier.verify(report, chains[-1], now=NOW)
        assert chain_checks.call_count == 0  # recent: cached
        verifier.verify(report, chains[0], now=NOW)
        assert chain_checks.call_count == 1  # evicted: verified again


def test_pem_bundle_split_and_garbage() -> None:
    chain, _ = _chain_and_report(SnpChainBuilder())
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (chain.ask, chain.ark))
    assert verify.split_certificates(pem) == chain.der()[1:]
    with pytest.raises(EvidenceError) as e:
        verify.load_certificate(b"\x30\x03\x02\x01\x00")
    assert e.value.code == "evidence.bad_certificate"


def test_vlek_chain_verifies_without_hwid() -> None:
    # VLEK -> ASVK -> ARK: the VLEK has no hwID (cspID instead) and CHIP_ID may be masked to zero.
    builder = (
        SnpChainBuilder(chip_id=bytes(64))
        .override("ask", CertOverride(subject_cn="SEV-VLEK-Milan"))
        .override("vcek", CertOverride(subject_cn="SEV-VLEK", extensions=kds.vcek_extensions(
            "Milan", MILAN_TCB, None, csp_id="CN=cc-test.example")))
    )  # fmt: skip
    chain, report = _chain_and_report(builder)
    b = bytearray(report)
    b[abi.OFF_SIGNER_INFO] = 1 << abi.SIGNER_SIGNING_KEY_SHIFT  # VLEK
    v = _verify(chain, chain.sign(bytes(b)))
    assert v.chain.signing_key == "VLEK"
    assert v.chain.leaf_extensions.csp_id == "CN=cc-test.example"
    # The same chain cannot vouch for a report that says VCEK.
    with pytest.raises(EvidenceError) as e:
        _verify(chain, report)
    assert e.value.code == "evidence.missing_certificate"


def test_real_asvk_bundles_chain_to_the_pinned_arks() -> None:
    for product in kds.PRODUCTS:
        for key in ("VCEK", "VLEK"):
            inter, ark = map(
                verify.load_certificate, verify.split_certificates(trust.bundled_chain_pem(product, key))
            )
            inter.verify_directly_issued_by(ark)
            assert (
                hashlib.sha256(ark.public_bytes(serialization.Encoding.DER)).digest()
                == trust.ARK_SHA256[product]
            )
