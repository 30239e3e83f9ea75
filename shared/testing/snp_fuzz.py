"""Test-only SNP fuzz targets, shared by the hypothesis tests and the long campaign in ``bench/fuzz_snp.py``.

:class:`SnpFuzzTarget` feeds bytes through parse -> verify -> validate against real vectors (whose VCEKs we
cannot re-sign with) and against a builder chain (whose VCEK re-signs mutated reports, so mutations reach the
chain bindings and the policy checks). The only acceptable outcomes are a result or a
:class:`~contrast.errors.ContrastError`; anything else propagates as the crash the fuzzer looks for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from contrast.errors import ContrastError
from contrast.evidence.snp import abi, kds, trust, validate, verify
from contrast.evidence.snp.reference import SnpReferenceValues
from contrast.testing.snp_chain import SnpChainBuilder, SnpTestChain

VECTOR_TIME = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _builder_report(chain: SnpTestChain, version: int) -> bytes:
    raw_tcb = kds.encode_tcb(chain.tcb, chain.product)
    cpuid = (0x19, 0x01, 1) if version >= 3 else (None, None, None)
    report = abi.SnpReport(
        version=version, guest_svn=0, policy=0x30000, family_id=bytes(16), image_id=bytes(16), vmpl=0,
        signature_algo=1, current_tcb=raw_tcb, platform_info=1, signer_info=0, report_data=bytes(64),
        measurement=bytes(48), host_data=bytes(32), id_key_digest=bytes(48), author_key_digest=bytes(48),
        report_id=bytes(32), report_id_ma=b"\xff" * 32, reported_tcb=raw_tcb, cpuid_fam_id=cpuid[0],
        cpuid_mod_id=cpuid[1], cpuid_step=cpuid[2], chip_id=chain.chip_id, committed_tcb=raw_tcb,
        current_build=1, current_minor=55, current_major=1, committed_build=1, committed_minor=55,
        committed_major=1, launch_tcb=raw_tcb, launch_mit_vector=0 if version >= 5 else None,
        current_mit_vector=0 if version >= 5 else None, signature_r=bytes(48), signature_s=bytes(48),
    )  # fmt: skip
    return chain.sign(report.to_bytes())


@dataclass
class SnpFuzzTarget:
    """Fuzz entry points; ``vectors`` is a folder of ``snp_*`` vector directories (``tests/data/vectors``)."""

    vectors: Path
    real_reports: list[bytes] = field(default_factory=list)
    real_certs: list[list[bytes]] = field(default_factory=list)
    chain: SnpTestChain = field(default_factory=lambda: SnpChainBuilder(key_slot="fuzz").build())
    builder_reports: list[bytes] = field(default_factory=list)
    vendor: verify.SnpVerifier = field(default_factory=lambda: verify.SnpVerifier(cache_size=256))
    executions: int = 0
    accepted: int = 0

    def __post_init__(self) -> None:
        ask_ark = verify.split_certificates(trust.bundled_chain_pem("Milan"))
        for d in sorted(self.vectors.glob("snp_*")):
            self.real_reports.append((d / "report.bin").read_bytes())
            self.real_certs.append([(d / "vek.der").read_bytes(), *ask_ark])
        self.builder_reports = [_builder_report(self.chain, v) for v in (2, 3, 5)]
        ref = {
            "Platform": "Emulated-SNP", "ProductName": "Milan", "TrustedMeasurement": "00" * 48,
            "MinimumTCB": {"BootloaderVersion": 3, "TEEVersion": 0, "SNPVersion": 8, "MicrocodeVersion": 115},
            "GuestPolicy": {"ABIMinor": 0, "ABIMajor": 0, "SMT": True, "MigrateMA": False, "Debug": False,
                            "SingleSocket": False, "CXLAllowed": False, "MemAES256XTS": False,
                            "RAPLDis": False, "CipherTextHiding": False, "PageSwapDisable": False},
            "PlatformInfo": {"SMTEnabled": True, "TSMEEnabled": False, "ECCEnabled": False,
                             "RAPLDisabled": False, "CiphertextHidingDRAMEnabled": False,
                             "AliasCheckComplete": False, "TIOEnabled": False},
            "VMPL": 0, "AllowedChipIDs": ["*"], "MinimumMitigationVector": 0,
            "EmulatorRootFingerprint": self.chain.ark_sha256.hex(),
        }  # fmt: skip
        self.references = [msgspec.convert(ref, SnpReferenceValues)]
        self.emulated = verify.SnpVerifier(frozenset({self.chain.ark_sha256}), cache_size=256)

    def parse(self, data: bytes) -> None:
        self.executions += 1
        try:
            abi.parse_report(data, trailing_ok=bool(len(data) & 1))
        except ContrastError:
            return

    def real(self, data: bytes, which: int) -> None:
        """Verify ``data`` against a real vector's chain (only the unmodified report can pass)."""
        self.executions += 1
        certs = self.real_certs[which % len(self.real_certs)]
        try:
            self.vendor.verify(data, certs, now=VECTOR_TIME)
        except ContrastError:
            return
        self.accepted += 1

    def resigned(self, data: bytes, product_hint: kds.Product | None = None) -> None:
        """Re-sign ``data`` with the builder VCEK (when it is report-sized) and verify + validate it."""
        self.executions += 1
        if len(data) == abi.REPORT_SIZE:
            data = self.chain.sign(data)
        result = validate.verify_and_validate(
            data, self.chain.der(), None, self.references, bytes(64), VECTOR_TIME,
            verifier=self.emulated, product=product_hint,
        )  # fmt: skip
        if result.accepted:
            self.accepted += 1

    def certs(self, certs: list[bytes]) -> None:
        """Verify the builder's base report against mutated certificate bytes (uncached: each is new)."""
        self.executions += 1
        result = validate.verify_and_validate(
            self.builder_reports[1], certs, None, self.references, bytes(64), VECTOR_TIME
        )
        if result.accepted:
            self.accepted += 1

    def crl(self, crl: bytes) -> None:
        """Verify the builder's base report with a (mutated) CRL."""
        self.executions += 1
        result = validate.verify_and_validate(
            self.builder_reports[1], self.chain.der(), crl, self.references, bytes(64), VECTOR_TIME
        )
        if result.accepted:
            self.accepted += 1
