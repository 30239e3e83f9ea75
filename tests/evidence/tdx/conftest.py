"""Fixtures for the TDX tests (defined in :mod:`tests.evidence.tdx.tdx_helpers`)."""

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
    "expected",
    "intel_verifier",
    "platform",
    "real_collateral",
    "real_quote",
]
