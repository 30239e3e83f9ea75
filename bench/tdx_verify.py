"""TDX quote verification throughput, in one process pinned to one core.

Prints quotes per second for: our verifier with PCK-chain / collateral / CRL checks cached (the steady
state: parsing + two P-256 verifies); our verifier with every cache cleared before each quote; dcap-qvl on the
same quote, collateral and root; and the raw P-256 ECDSA verify rate of ``cryptography`` on the quote's
signed region. Targets: cached >= 35% of the raw P-256 rate; uncached no slower than dcap-qvl. The script
also prints the ceiling for the uncached path (raw P-256 rate / 9 verifications), which bounds what any
verifier built on ``cryptography``'s ECDSA can reach uncached.

The quote is an emulated v4 quote with its signed collateral (both verifiers accept it, status UpToDate); the
real Intel vector is timed as well (its TCB matches no level, which dcap-qvl reports as an error at the end).

What "uncached" means here: a new ``TdxVerifier`` for every quote, so nothing learnt from one quote serves
another. Within one verification each distinct certificate is decoded once and each distinct (certificate,
issuer) signature checked once: the root closes all three chains, and the PCK CA -> root edge appears in
both the PCK chain and the PCK CRL issuer chain (dcap-qvl likewise parses its CRLs once per call).

Like for like: both get the same quote, collateral and root, and both check the quote, QE report, PCK chain,
TCB-signing chain, TCB info and QE identity signatures, both CRLs' signatures, revocation of the PCK, the PCK
CA, the TCB-signing certificate and the root itself, and every validity window. dcap-qvl never reads the PCK
CRL issuer chain (it accepts garbage there, or a chain under another root); we verify it to the pinned root.
dcap-qvl verifies the TCB-signing chain twice (once as the TCB info issuer, once as the QE identity issuer;
the bench passes the same chain for both) and a CRL's signature for each certificate it checks against it.
So it makes more P-256 verifications than our 9, yet runs near raw / 9: its verifications (ring) cost far
less than one ``cryptography`` verify from Python (which on this machine is ~2.5x slower than
``openssl speed ecdsap256``). Beating it uncached would need our non-ECDSA work to be negative.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import dcap_qvl
import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from contrast.evidence.tdx import abi
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.tdx.pcs import split_signed_document
from contrast.evidence.tdx.trust import INTEL_SGX_ROOT_CA, TdxRoots
from contrast.evidence.tdx.verify import COLLATERAL_FILES, TdxCollateral, TdxVerifier

VECTOR = Path(__file__).resolve().parents[1] / "tests" / "data" / "vectors" / "tdx_v4_gotdxguest_spr"
SECONDS = float(os.environ.get("BENCH_SECONDS", "2.0"))
ROUNDS = 5


def _once(fn: Callable[[], object], seconds: float) -> float:
    # CPU time of this thread, not wall time: the machine is shared, and time spent descheduled while another
    # process runs is nobody's cost. dcap-qvl runs on this thread too (no worker threads), so it is measured
    # the same way.
    n, start = 0, time.thread_time()
    while (elapsed := time.thread_time() - start) < seconds:
        for _ in range(10):
            fn()
        n += 10
    return n / elapsed


def rates(fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best of ROUNDS interleaved rounds per figure: the machine is shared, so the figures are measured
    side by side and each one's least-disturbed round is kept."""
    for fn in fns.values():
        fn()  # warm up
    best = dict.fromkeys(fns, 0.0)
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            best[name] = max(best[name], _once(fn, SECONDS / ROUNDS))
    return best


def to_dcap(col: TdxCollateral) -> object:
    info, info_sig = split_signed_document(col.tcb_info, "tcbInfo")
    qe, qe_sig = split_signed_document(col.qe_identity, "enclaveIdentity")
    return dcap_qvl.QuoteCollateralV3(
        pck_crl_issuer_chain=col.pck_crl_issuer_chain.decode(),
        root_ca_crl=col.root_crl,
        pck_crl=col.pck_crl,
        tcb_info_issuer_chain=col.tcb_signing_chain.decode(),
        tcb_info=info.decode(),
        tcb_info_signature=info_sig,
        qe_identity_issuer_chain=col.tcb_signing_chain.decode(),
        qe_identity=qe.decode(),
        qe_identity_signature=qe_sig,
    )


def dcap_call(quote: bytes, col: object, root: bytes, now: int) -> Callable[[], object]:
    def run() -> object:
        try:
            return dcap_qvl.verify_with_root_ca(quote, col, root, now)
        except ValueError as e:  # the real vector: "No matching TCB level found", after all other checks
            return e

    return run


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    now = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
    platform = EmulatedTdxPlatform.create(now=now - dt.timedelta(days=2))
    quote = platform.quote(report_data=b"\x42" * 64, mr_config_id=b"\x01" * 32)
    col = platform.collateral(issued=now - dt.timedelta(days=1))
    roots = TdxRoots.emulated(platform.root_fingerprint)
    # The emulator logs a warning on every verification by design; here it would time stderr, not crypto.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    warm = TdxVerifier(roots)
    assert warm.verify(quote, collateral=col, now=now).tcb_status == "UpToDate"

    def uncached() -> object:
        return TdxVerifier(roots).verify(quote, collateral=col, now=now)

    parsed = abi.parse_quote(quote)
    att = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + parsed.signature_data.attestation_key
    )
    key = platform.attestation_key
    sig = key.sign(parsed.signed_region, ec.ECDSA(hashes.SHA256()))

    ecdsa = ec.ECDSA(hashes.SHA256())
    signed = parsed.signed_region

    def raw_p256() -> None:
        att.verify(sig, signed, ecdsa)

    real = (VECTOR / "quote.bin").read_bytes()
    real_col = TdxCollateral(**{k: (VECTOR / v).read_bytes() for k, v in COLLATERAL_FILES.items()})
    real_now = dt.datetime(2023, 7, 1, tzinfo=dt.UTC)
    intel = TdxVerifier(TdxRoots.intel())
    root_der = INTEL_SGX_ROOT_CA.public_bytes(Encoding.DER)
    r = rates(
        {
            "cached": lambda: warm.verify(quote, collateral=col, now=now),
            "uncached": uncached,
            "dcap": dcap_call(quote, to_dcap(col), platform.root_der, int(now.timestamp())),
            "raw": raw_p256,
            "real_cached": lambda: intel.verify(real, collateral=real_col, now=real_now),
            "real_uncached": lambda: TdxVerifier(TdxRoots.intel()).verify(
                real, collateral=real_col, now=real_now
            ),
            "real_dcap": dcap_call(real, to_dcap(real_col), root_der, int(real_now.timestamp())),
        }
    )
    r_cached, r_uncached, r_dcap, r_raw = r["cached"], r["uncached"], r["dcap"], r["raw"]
    r_real_cached, r_real_uncached, r_real_dcap = r["real_cached"], r["real_uncached"], r["real_dcap"]

    print(f"one core, thread CPU time, best of {ROUNDS} interleaved rounds, {SECONDS:.1f} s per figure")
    print("emulated v4 quote + collateral (status UpToDate in both verifiers):")
    print(f"  contrast, chain+collateral cached : {r_cached:10.0f} quotes/s")
    print(f"  contrast, fully uncached          : {r_uncached:10.0f} quotes/s")
    print(f"  dcap-qvl verify_with_root_ca      : {r_dcap:10.0f} quotes/s")
    print(f"  raw P-256 verify (cryptography)   : {r_raw:10.0f} verifies/s")
    print(f"  cached / raw P-256                : {r_cached / r_raw:10.1%}   (target >= 35%)")
    print(f"  uncached / dcap-qvl               : {r_uncached / r_dcap:10.2f}x  (target >= 1.00x)")
    # Uncached, a quote needs 9 ECDSA verifications (quote, QE report, PCK leaf and PCK CA certificates,
    # TCB-signing certificate, TCB info, QE identity, PCK CRL, root CRL): the rate cannot exceed raw / 9.
    print(f"  uncached ceiling (raw / 9 verifies): {r_raw / 9:9.0f} quotes/s")
    crypto_us, total_us = 9e6 / r_raw, 1e6 / r_uncached
    rest_us = total_us - crypto_us
    print(f"  uncached per quote: {total_us:.0f} us = {crypto_us:.0f} us in 9 ECDSA + {rest_us:.0f} us rest")
    print("real Intel SPR vector + 2023 PCS collateral (TCB NoMatch):")
    print(f"  contrast cached / uncached        : {r_real_cached:10.0f} / {r_real_uncached:.0f} quotes/s")
    # No insecure-platform warning on this path (the emulated one logs one per verification, by design).
    print(f"  cached / raw P-256                : {r_real_cached / r_raw:10.1%}")
    print(f"  dcap-qvl (ends in NoMatch error)  : {r_real_dcap:10.0f} quotes/s")
    ok = r_cached >= 0.35 * r_raw and r_uncached >= r_dcap
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
