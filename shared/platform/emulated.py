"""Emulated SNP and TDX platforms: byte-exact, locally signed evidence. INSECURE, for development only.

The "hypervisor" here is the caller: it chooses HOST_DATA / MR_CONFIG_ID (the pod's policy hash), as a real
host does at launch. Evidence signed by an emulator root is accepted only by reference values that name that
root under ``Emulated-SNP`` / ``Emulated-TDX``, which a manifest never mixes with real platforms.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Final

from contrast.evidence.result import Tee
from contrast.evidence.snp.emulator import DEFAULT_MEASUREMENT as SNP_MEASUREMENT
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.snp.kds import Product, Tcb
from contrast.evidence.tdx.emulator import DEFAULT_TEE_TCB_SVN, EmulatedTdxPlatform
from contrast.evidence.tdx.verify import TdxCollateral
from contrast.evidence.verifier import Evidence
from contrast.platform.base import check_report_data

log = logging.getLogger("contrast.platform")

# The launch measurement every emulated guest reports: the emulated equivalent of "all pods of a platform boot
# the same guest image". Reference values for emulated platforms use exactly these.
SNP_DEFAULT_MEASUREMENT: Final = SNP_MEASUREMENT
TDX_DEFAULT_MRTD: Final = hashlib.sha384(b"contrast emulated tdx guest v1 mrtd").digest()
# RTMR0-2 are fixed by the boot chain; RTMR3 is the workload's to extend at run time, so it starts at zero.
TDX_DEFAULT_RTMRS: Final = (
    *(hashlib.sha384(f"contrast emulated tdx guest v1 rtmr{i}".encode()).digest() for i in range(3)),
    bytes(48),
)

SNP_STATE_DIR: Final = "snp"
TDX_STATE_FILE: Final = "tdx.json"


def load_snp_emulator(state_dir: Path) -> EmulatedSnpPlatform:
    return EmulatedSnpPlatform.load_or_create(state_dir / SNP_STATE_DIR)


def load_tdx_emulator(state_dir: Path) -> EmulatedTdxPlatform:
    state_dir.mkdir(parents=True, exist_ok=True)
    return EmulatedTdxPlatform.load_or_create(state_dir / TDX_STATE_FILE)


class EmulatedSnp:
    """An emulated SNP guest launched with ``host_data`` (its policy hash)."""

    def __init__(
        self,
        emulator: EmulatedSnpPlatform,
        *,
        host_data: bytes,
        measurement: bytes = SNP_DEFAULT_MEASUREMENT,
        product: Product = "Milan",
        version: int = 5,
        tcb: Tcb | None = None,
    ) -> None:
        """``tcb`` is the machine's TCB (current, committed, reported and launch alike); default: the
        emulator's current firmware for ``product``."""
        if len(host_data) != 32:
            raise ValueError("HOST_DATA must be 32 bytes")
        self._emulator = emulator
        self._product: Product = product
        self._certs = emulator.cert_chain(product, tcb)
        # Every field but REPORT_DATA and REPORT_ID is fixed at launch: encode them once, fill in per report.
        self._template = emulator.report(
            report_data=bytes(64),
            report_id=bytes(32),
            host_data=host_data,
            measurement=measurement,
            product=product,
            version=version,
            tcb=tcb,
        )

    @property
    def tee(self) -> Tee:
        return "snp"

    @property
    def name(self) -> str:
        return "Emulated-SNP"

    @property
    def emulator_root(self) -> str | None:
        return self._emulator.root_fingerprint

    async def evidence(self, report_data: bytes) -> Evidence:
        report = self._emulator.refill(self._template, check_report_data(report_data), self._product)
        log.warning("INSECURE: evidence comes from the SEV-SNP emulator, not from hardware")
        return Evidence(tee="snp", report=report, certs=list(self._certs))


class EmulatedTdx:
    """An emulated TDX guest whose MR_CONFIG_ID[0:32] is ``policy_hash``."""

    def __init__(
        self,
        emulator: EmulatedTdxPlatform,
        *,
        policy_hash: bytes,
        mrtd: bytes = TDX_DEFAULT_MRTD,
        rtmrs: tuple[bytes, ...] = TDX_DEFAULT_RTMRS,
        version: int = 4,
        tee_tcb_svn: bytes = DEFAULT_TEE_TCB_SVN,
        collateral: TdxCollateral | None = None,
    ) -> None:
        """``tee_tcb_svn`` is the TDX module's TCB; ``collateral`` the PCS collateral the guest presents
        (default: the emulator's, in which the default TCB is ``UpToDate``)."""
        if len(policy_hash) != 32:
            raise ValueError("the policy hash must be 32 bytes")
        self._emulator = emulator
        self._mr_config_id = policy_hash + bytes(16)
        self._mrtd = mrtd
        self._rtmrs = rtmrs
        self._version = version
        self._tee_tcb_svn = tee_tcb_svn
        self._collateral = collateral or emulator.collateral()

    @property
    def tee(self) -> Tee:
        return "tdx"

    @property
    def name(self) -> str:
        return "Emulated-TDX"

    @property
    def emulator_root(self) -> str | None:
        return self._emulator.root_fingerprint

    async def evidence(self, report_data: bytes) -> Evidence:
        quote = self._emulator.quote(
            report_data=check_report_data(report_data),
            mr_config_id=self._mr_config_id,
            mrtd=self._mrtd,
            rtmrs=self._rtmrs,
            version=self._version,
            tee_tcb_svn=self._tee_tcb_svn,
        )
        log.warning("INSECURE: evidence comes from the TDX emulator, not from hardware")
        return Evidence(tee="tdx", report=quote, tdx_collateral=self._collateral)


async def load_emulated(kind: Tee, state_dir: Path, policy_hash: bytes) -> EmulatedSnp | EmulatedTdx:
    """Load (or create) the emulator in ``state_dir`` off the event loop; key generation takes seconds."""
    if kind == "snp":
        snp = await asyncio.to_thread(load_snp_emulator, state_dir)
        return EmulatedSnp(snp, host_data=policy_hash)
    tdx = await asyncio.to_thread(load_tdx_emulator, state_dir)
    return await asyncio.to_thread(lambda: EmulatedTdx(tdx, policy_hash=policy_hash))
