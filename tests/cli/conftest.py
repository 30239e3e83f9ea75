"""The evidence CLI tests use the fixtures of the SNP and TDX tests: real vectors and emulated platforms."""

from tests.evidence.snp.snp_fixtures import emulator, vector
from tests.evidence.tdx.tdx_helpers import (
    emu_collateral,
    emu_verifier,
    expected,
    intel_verifier,
    platform,
    real_collateral,
    real_quote,
)

__all__ = [
    "emu_collateral",
    "emu_verifier",
    "emulator",
    "expected",
    "intel_verifier",
    "platform",
    "real_collateral",
    "real_quote",
    "vector",
]
