"""What a verifier replica depends on, injected (tests pass their own platform, key source and clock)."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from contrast.attestation.nonce import DEFAULT_LIFETIME_MS
from contrast.platform.base import Platform
from contrast.platform.select import platform_from_env
from contrast.replica.membership import KeySource, key_source_from_env
from contrast.verifier.collateral import Fetcher, fetcher_from_env


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw else default


@dataclass(frozen=True, kw_only=True)
class ReplicaDeps:
    """Dependencies of a Coordinator replica service (verifier or CA)."""

    platform: Callable[[], Awaitable[Platform]] = platform_from_env
    key_source: Callable[[str], KeySource] = key_source_from_env
    clock: Callable[[], float] = time.time  # seconds since the epoch; one reading per request
    nonce_lifetime_ms: int = field(
        default_factory=lambda: _env_int("CONTRAST_NONCE_LIFETIME_MS", DEFAULT_LIFETIME_MS)
    )
    max_in_flight: int = field(default_factory=lambda: _env_int("CONTRAST_MAX_IN_FLIGHT", 64))
    collateral_fetcher: Callable[[], Fetcher] = fetcher_from_env  # vendor fetching (off unless configured)
    verdict_max_age_s: int = field(default_factory=lambda: _env_int("CONTRAST_VERDICT_MAX_AGE_S", 120))
