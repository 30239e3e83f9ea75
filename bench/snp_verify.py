"""SNP report verification throughput on one core, against the raw ECDSA P-384 verify rate of the same run.

Prints verifications per second for:
  * raw: ``cryptography``'s ECDSA P-384/SHA-384 verify of the report's signed region (the floor of the cost);
  * cached: ``SnpVerifier.verify`` with the chain check cached per (chip, TCB, chain bytes) -- parse, cache
    lookup, signature, TCB decoding; the steady state of a verifier replica;
  * cached + validate: the same plus ``validate`` against one reference set (what the verifier service runs);
  * uncached: every call re-checks the VCEK -> ASK -> ARK chain (three RSA-PSS verifies, extension parsing).
Target: cached >= 85% of raw. The report is the real virtee Milan vector with its real VCEK and AMD's chain.
Rates are per CPU-second of this process (time.process_time), medians over alternating 0.2 s slices of raw
and ours; the ratio is the median of the per-slice ratios.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from contrast.evidence.snp import abi, trust, validate, verify
from contrast.evidence.snp.reference import SnpReferenceValues

VECTOR = Path(__file__).resolve().parents[1] / "tests" / "data" / "vectors" / "snp_milan_v2_virtee"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def rate(fn: Callable[[], object], seconds: float) -> float:
    # CPU time of this process, not wall time: on a shared machine, time spent descheduled is not ours.
    n, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        for _ in range(20):
            fn()
        n += 20
    return n / elapsed


def paired(
    raw: Callable[[], object], ours: Callable[[], object], rounds: int = 15
) -> tuple[float, float, float]:
    """Median raw rate, median our rate, median of per-round ratios. Alternating short slices keeps a shared,
    noisy machine's load drift out of the ratio."""
    raws, oursl, ratios = [], [], []
    for _ in range(rounds):
        a = rate(raw, 0.2)
        b = rate(ours, 0.2)
        raws.append(a)
        oursl.append(b)
        ratios.append(b / a)
    return statistics.median(raws), statistics.median(oursl), statistics.median(ratios)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    report = (VECTOR / "report.bin").read_bytes()
    certs = [(VECTOR / "vek.der").read_bytes(), *verify.split_certificates(trust.bundled_chain_pem("Milan"))]
    verifier = verify.SnpVerifier()
    verified = verifier.verify(report, certs, now=NOW)

    pub = verified.chain.leaf_public_key
    parsed = abi.parse_report(report)
    sig = encode_dss_signature(
        int.from_bytes(parsed.signature_r, "little"), int.from_bytes(parsed.signature_s, "little")
    )
    signed = report[: abi.SIGNED_SIZE]
    algo = ec.ECDSA(hashes.SHA384())

    r = verified.report
    ref = msgspec.convert(
        {
            "Platform": "Metal-QEMU-SNP", "ProductName": "Milan", "TrustedMeasurement": r.measurement.hex(),
            "MinimumTCB": {"BootloaderVersion": 3, "TEEVersion": 0, "SNPVersion": 8, "MicrocodeVersion": 115},
            "GuestPolicy": {"ABIMinor": 0, "ABIMajor": 0, "SMT": True, "MigrateMA": False, "Debug": False,
                            "SingleSocket": False, "CXLAllowed": False, "MemAES256XTS": False,
                            "RAPLDis": False, "CipherTextHiding": False, "PageSwapDisable": False},
            "PlatformInfo": {"SMTEnabled": True, "TSMEEnabled": False, "ECCEnabled": False,
                             "RAPLDisabled": False, "CiphertextHidingDRAMEnabled": False,
                             "AliasCheckComplete": False, "TIOEnabled": False},
            "VMPL": 0, "AllowedChipIDs": [r.chip_id.hex()], "MinimumMitigationVector": None,
        },
        SnpReferenceValues,
    )  # fmt: skip
    refs = [ref]
    assert validate.verify_and_validate(
        report, certs, None, refs, r.report_data, NOW, verifier=verifier
    ).accepted

    def raw_verify() -> None:
        pub.verify(sig, signed, algo)

    def cached() -> None:
        verifier.verify(report, certs, now=NOW)

    def full() -> None:
        validate.verify_and_validate(report, certs, None, refs, r.report_data, NOW, verifier=verifier)

    def uncached() -> None:
        verify.SnpVerifier().verify(report, certs, now=NOW)  # a fresh verifier: nothing cached

    raw, ours, ratio = paired(raw_verify, cached)
    _, ours_full, ratio_full = paired(raw_verify, full, rounds=5)
    _, ours_uncached, ratio_uncached = paired(raw_verify, uncached, rounds=3)
    print(f"raw ECDSA P-384 verify      {raw:9.0f} /s")
    print(f"verify, cached chain        {ours:9.0f} /s   ratio {ratio:6.1%}  (target >= 85%)")
    print(f"verify + validate, cached   {ours_full:9.0f} /s   ratio {ratio_full:6.1%}")
    print(f"verify, no cache            {ours_uncached:9.0f} /s   ratio {ratio_uncached:6.1%}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    if ratio < 0.85:
        raise SystemExit("cached verification is below 85% of the raw P-384 verify rate")


if __name__ == "__main__":
    main()
