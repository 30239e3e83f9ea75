"""Token buckets: what a replica admits per source, how many costly answers it gives and how many queued
requests it pulls per second.

A source is the last subject token of a request (an initializer's NATS user: one per namespace, see
:mod:`contrast.subjects`); the server's permissions keep a client on its own source's subjects. A flood from
one source then spends that source's bucket only: other sources are admitted as before. Without per-source
users every initializer shares one source, and the bucket protects the Coordinator, not its other clients.

Buckets are kept for at most ``max_sources`` sources (least recently seen evicted): a client that could use
any token (a server without users) gains a fresh bucket by inventing sources, but cannot grow memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from contrast.cache import BoundedCache


@dataclass(frozen=True)
class Rate:
    """``per_second`` sustained, with bursts of up to ``burst``."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second < 0 or self.burst < 1:
            raise ValueError("a rate needs per_second >= 0 and burst >= 1")


class TokenBucket:
    """Starts full (``burst`` tokens), refills at ``per_second``; :meth:`take` spends one if there is one."""

    __slots__ = ("_clock", "_stamp", "_tokens", "rate")

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = float(rate.burst)
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(float(self.rate.burst), self._tokens + (now - self._stamp) * self.rate.per_second)
        self._stamp = now
        return self._tokens

    def take(self) -> bool:
        return self.take_up_to(1) == 1

    def take_up_to(self, n: int) -> int:
        """Spend as many whole tokens as there are, at most ``n``; returns how many."""
        taken = min(n, int(self._refill()))
        self._tokens -= taken
        return taken

    def give_back(self, n: int) -> None:
        """Return ``n`` tokens taken but not used (never above the burst)."""
        self._tokens = min(float(self.rate.burst), self._tokens + n)

    def wait(self, n: int = 1) -> float:
        """Seconds until ``n`` whole tokens are there (0 if they are; infinite at a rate of 0)."""
        missing = min(n, self.rate.burst) - self._refill()
        if missing <= 0:
            return 0.0
        return missing / self.rate.per_second if self.rate.per_second > 0 else float("inf")


class PerSource:
    """One :class:`TokenBucket` per source."""

    def __init__(
        self, rate: Rate, *, max_sources: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: BoundedCache[str, TokenBucket] = BoundedCache(max_sources)

    def admit(self, source: str) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = TokenBucket(self.rate, self._clock)
            self._buckets.put(source, bucket)
        return bucket.take()
