"""The emulated SEV-SNP guest encodes its launch-time fields once and fills in REPORT_DATA per report: its
reports must be exactly what :meth:`EmulatedSnpPlatform.report` makes for the same fields."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

import msgspec
import pytest

from contrast.errors import ContrastError
from contrast.evidence.snp import abi
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.snp.kds import Product
from contrast.evidence.verifier import EvidenceVerifier
from contrast.platform.emulated import SNP_DEFAULT_MEASUREMENT, EmulatedSnp

H_POD = hashlib.sha256(b"pod policy (report template test)").digest()
PER_REPORT = {"report_data", "report_id", "signature_r", "signature_s"}


def _fixed_fields(report: abi.SnpReport) -> dict[str, object]:
    return {k: v for k, v in msgspec.structs.asdict(report).items() if k not in PER_REPORT}


@pytest.mark.parametrize(("product", "version"), [("Milan", 5), ("Genoa", 3), ("Turin", 5), ("Milan", 2)])
async def test_evidence_equals_a_fully_encoded_report(
    snp_emulator: EmulatedSnpPlatform, product: Product, version: int
) -> None:
    guest = EmulatedSnp(snp_emulator, host_data=H_POD, product=product, version=version)
    rd = secrets.token_bytes(64)
    one, two = await guest.evidence(rd), await guest.evidence(rd)
    reference = abi.parse_report(
        snp_emulator.report(
            report_data=rd,
            host_data=H_POD,
            measurement=SNP_DEFAULT_MEASUREMENT,
            product=product,
            version=version,
        )
    )
    first, second = abi.parse_report(one.report), abi.parse_report(two.report)
    assert _fixed_fields(first) == _fixed_fields(reference)
    assert first.report_data == second.report_data == rd
    assert first.report_id != second.report_id  # fresh per report, as report() makes it
    assert one.certs == snp_emulator.cert_chain(product)
    claims = EvidenceVerifier().authenticate(
        one, emulator_root=snp_emulator.root_fingerprint, now=dt.datetime.now(dt.UTC)
    )
    assert claims.report_data == rd


async def test_a_refilled_report_is_signed_over_its_new_contents(snp_emulator: EmulatedSnpPlatform) -> None:
    guest = EmulatedSnp(snp_emulator, host_data=H_POD)
    evidence = await guest.evidence(bytes(64))
    tampered = bytearray(evidence.report)
    tampered[abi.OFF_REPORT_DATA] ^= 1
    with pytest.raises(ContrastError) as e:
        EvidenceVerifier().authenticate(
            msgspec.structs.replace(evidence, report=bytes(tampered)),
            emulator_root=snp_emulator.root_fingerprint,
            now=dt.datetime.now(dt.UTC),
        )
    assert e.value.code == "evidence.bad_signature"


def test_refill_checks_its_inputs(snp_emulator: EmulatedSnpPlatform) -> None:
    template = snp_emulator.report()
    with pytest.raises(ValueError):
        snp_emulator.refill(template[:-1], bytes(64))
    with pytest.raises(ValueError):
        snp_emulator.refill(template, bytes(63))
    with pytest.raises(ValueError):
        EmulatedSnp(snp_emulator, host_data=bytes(31))
