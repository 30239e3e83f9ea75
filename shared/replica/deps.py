"""What a Coordinator replica service (verifier or CA) depends on, injected.

Production takes the defaults: the platform from ``CONTRAST_PLATFORM``, the real join, the Coordinator pins
of the measured environment (:mod:`contrast.coordinator.pins`), the system clock, the pinned vendor roots,
the collateral provider over the shared cache and the bounds from the environment. Tests pass their own
platform, pins, key source, clock, evidence verifier (with a stand-in vendor root) and provider.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from contrast import subjects
from contrast.attestation.nonce import DEFAULT_LIFETIME_MS
from contrast.collateral.provider import AttachingPlatform, CollateralProvider
from contrast.collateral.source import Store
from contrast.coordinator.pins import CoordinatorPins
from contrast.evidence.verifier import EvidenceVerifier
from contrast.platform.base import Platform
from contrast.platform.select import platform_from_env
from contrast.replica.membership import JoinKeySource, KeySource
from contrast.runtime.admission import Rate


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw else default


def _env_rate(name: str, default: int) -> Rate:
    # A sustained rate per second; bursts of four seconds' worth.
    per_second = _env_int(name, default)
    return Rate(per_second=per_second, burst=max(1, 4 * per_second))


def _pull_rate(name: str, default: int) -> Rate:
    per_second = _env_int(name, default)
    if per_second < 1:
        raise ValueError(f"{name} must be at least 1: at 0 nothing is ever pulled")
    return Rate(per_second=per_second, burst=max(1, per_second // 10))


@dataclass(frozen=True, kw_only=True)
class ReplicaDeps:
    """Dependencies of a Coordinator replica service (verifier or CA)."""

    platform: Callable[[], Awaitable[Platform]] = platform_from_env
    # What this replica's measured configuration pins: the manifest policies it joins, its root. A malformed
    # value is a ValueError here, at start, never a silently empty pin.
    pins: CoordinatorPins = field(default_factory=lambda: CoordinatorPins.from_env(os.environ))
    key_source: Callable[[str, CoordinatorPins], KeySource] = JoinKeySource  # (replica name, pins)
    clock: Callable[[], float] = time.time  # seconds since the epoch; one reading per request
    evidence_verifier: Callable[[], EvidenceVerifier] = EvidenceVerifier  # the pinned vendor roots
    collateral: Callable[[Store], CollateralProvider] = CollateralProvider.build  # over the shared KV
    nonce_lifetime_ms: int = field(
        default_factory=lambda: _env_int("CONTRAST_NONCE_LIFETIME_MS", DEFAULT_LIFETIME_MS)
    )
    max_in_flight: int = field(default_factory=lambda: _env_int("CONTRAST_MAX_IN_FLIGHT", 64))
    verdict_max_age_s: int = field(default_factory=lambda: _env_int("CONTRAST_VERDICT_MAX_AGE_S", 120))
    # Verifier: nonces one replica hands to one source (an initializer user) per second; a pod needs one per
    # attempt, and only a holder of a fresh nonce can make the verifier check evidence.
    nonces_per_source: Rate = field(default_factory=lambda: _env_rate("CONTRAST_NONCE_RATE", 100))
    # Verifier: the initializer sources (namespaces with a NATS user of their own) whose nonce streams it
    # creates and pulls; the default source always. The NATS server's auth block lists the same users.
    sources: tuple[str, ...] = field(
        default_factory=lambda: subjects.parse_sources(os.environ.get("CONTRAST_SOURCES", ""))
    )
    # Verifier: nonce requests one replica pulls per second from each source's stream; the rest wait in the
    # server's bounded queue of that source. Bursts of a tenth of a second's worth.
    nonce_pull_rate: Rate = field(default_factory=lambda: _pull_rate("CONTRAST_NONCE_PULL_RATE", 250))
    # Verifier: attestation requests one replica pulls per second from each source's stream, so that a source
    # flooding its stream with garbage takes at most this much of the replica's work (dead-lettering costs
    # about 0.3 ms a message) and the other sources' requests are verified as if it were quiet. About what a
    # replica at its CPU request verifies; raise it for bigger replicas or single-namespace rollouts.
    attest_pull_rate: Rate = field(default_factory=lambda: _pull_rate("CONTRAST_ATTEST_PULL_RATE", 250))
    # Verifier: signed answers to rejected requests per second (each one a signature and a stored result);
    # beyond it a rejection is counted but not answered, so a flood cannot fill the results bucket.
    rejection_answers: Rate = field(default_factory=lambda: _env_rate("CONTRAST_REJECTION_ANSWER_RATE", 20))

    def __post_init__(self) -> None:
        if subjects.DEFAULT_SOURCE not in self.sources:
            raise ValueError(f"the default source {subjects.DEFAULT_SOURCE!r} must be among the sources")

    def attached_platform(self, provider: CollateralProvider) -> Callable[[], Awaitable[Platform]]:
        """The platform factory whose evidence carries its collateral (:class:`AttachingPlatform`)."""

        async def platform() -> Platform:
            return AttachingPlatform(await self.platform(), provider)

        return platform
