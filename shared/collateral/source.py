"""What a vendor answer is worth and for how long: retries, freshness, the shared cache, stale-if-error.

:class:`VendorSource` asks a vendor through a :class:`~contrast.collateral.fetch.Fetcher`, retrying transient
failures (timeouts, HTTP 429 and 5xx, honouring Retry-After) with backoff inside a time budget, and checks
that the answer is what it claims to be (a certificate, a CRL, a TCB document with its issuer chain) before
anything stores it. Authenticity is not checked here: the verifier checks every signature later.

:class:`CachedSource` keeps answers in a shared store (JetStream KV ``collateral``, shared by all replicas),
keyed by exactly what an answer identifies (:attr:`Item.key`, e.g. one chip at one TCB, one FMSPC), never by
where it came from. An answer's freshness comes from the vendor's own dates:

- certificates (VCEK, ASK/ARK chain) never change: fresh until their ``notAfter``;
- CRLs and Intel's TCB info and QE identity are fresh until their ``nextUpdate``, and re-fetched at least
  every ``refresh`` seconds (default one hour), so that revocations and TCB recoveries arrive before it;
- when a re-fetch fails (vendor outage, no egress), the cached answer is served stale-if-error while it is
  inside the vendor's validity *and* was fetched at most ``max_age`` seconds ago (default 7 days,
  ``CONTRAST_COLLATERAL_MAX_AGE_S``); beyond that the request fails closed with ``collateral.stale``.

Concurrent requests for one item share one upstream request, and an item whose fetch failed is not asked for
again before a growing backoff (1 s doubling to 60 s) has passed, so a burst of attestations never hammers a
vendor that is down or rate-limiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import msgspec
from cryptography import x509

from contrast.cache import BoundedCache
from contrast.collateral.fetch import Fetcher, FetchFailed
from contrast.errors import CollateralError, ContrastError
from contrast.evidence.snp.verify import load_certificate, split_certificates
from contrast.evidence.tdx import pcs
from contrast.kv import KvEntry

MAX_ITEM: Final = 256 * 1024  # the collateral bucket's max value size
DEFAULT_TIMEOUT: Final = 2.0  # one vendor request
DEFAULT_BUDGET: Final = 3.0  # all attempts for one item: below the verifier's 4 s handler timeout
DEFAULT_REFRESH: Final = 3600.0
DEFAULT_MAX_AGE: Final = 7 * 86400.0
_BACKOFF_FIRST: Final = 1.0
_BACKOFF_CAP: Final = 60.0

Kind = Literal["vcek", "chain", "crl", "tcb", "qe"]


class Fetched(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One collateral item as the vendor served it: the body and, for Intel, the issuer chain header."""

    body: bytes
    chain: bytes = b""  # PEM issuer chain (Intel's *-Issuer-Chain header, URL-decoded); empty for AMD


@dataclass(frozen=True, slots=True)
class Item:
    """A collateral item: ``key`` names exactly what it identifies (the cache key), ``url`` where to get it,
    ``kind`` how to read its validity, ``chain_headers`` the response headers that may carry its PEM issuer
    chain (the first present one counts; Intel names it differently across API versions)."""

    key: str
    url: str
    kind: Kind
    chain_headers: tuple[str, ...] = ()


class Source(Protocol):
    async def get(self, item: Item) -> Fetched: ...


class Store(Protocol):
    """What the cache needs of a key-value store (:class:`contrast.kv.KeyValue` has it)."""

    async def get(self, key: str) -> KvEntry | None: ...

    async def put(self, key: str, value: bytes) -> int: ...


class ReadOnly:
    """A shared store this process reads but never writes: an initializer's view of the Coordinator's cache.

    Initializers run in workloads, which must not fill the Coordinator's cache (their NATS users may only read
    it). Writing anyway would cost each refused JetStream publish its whole timeout, so nothing is sent.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, key: str) -> KvEntry | None:
        return await self._store.get(key)

    async def put(self, key: str, value: bytes) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class Validity:
    """The vendor's own dates for an answer, in seconds since the epoch."""

    issued: float
    expires: float


def _ts(t: dt.datetime) -> float:
    return t.timestamp()


def validity(item: Item, fetched: Fetched) -> Validity:
    """Read the vendor's dates from an answer; a malformed answer is ``collateral.unavailable``.

    This is a format check, not verification: signatures are checked by the verifier on every use.
    """
    try:
        if item.kind in ("vcek", "chain"):
            # Real VCEKs have serial 0, which load_certificate reads on purpose.
            certs = [load_certificate(der) for der in split_certificates(fetched.body)]
            return Validity(
                issued=max(_ts(c.not_valid_before_utc) for c in certs),
                expires=min(_ts(c.not_valid_after_utc) for c in certs),
            )
        if item.kind == "crl":
            body = fetched.body
            crl = (
                x509.load_pem_x509_crl(body)
                if b"-----BEGIN X509 CRL-----" in body
                else x509.load_der_x509_crl(body)
            )
            if crl.next_update_utc is None:
                raise ValueError("the CRL has no nextUpdate")
            return Validity(issued=_ts(crl.last_update_utc), expires=_ts(crl.next_update_utc))
        raw, _ = pcs.split_signed_document(
            fetched.body, "tcbInfo" if item.kind == "tcb" else "enclaveIdentity"
        )
        doc = pcs.decode_tcb_info(raw) if item.kind == "tcb" else pcs.decode_qe_identity(raw)
        return Validity(
            issued=_ts(pcs.parse_time(doc.issue_date, item.kind)),
            expires=_ts(pcs.parse_time(doc.next_update, item.kind)),
        )
    except (ValueError, TypeError, ContrastError) as e:
        raise FetchFailed(f"{item.url}: the answer is not a valid {item.kind}: {e}", retry=False) from e


class VendorSource:
    """The vendor services through a :class:`Fetcher`: bounded answers, transient failures retried with
    jittered backoff within ``budget`` seconds, and only well-formed answers returned."""

    def __init__(
        self,
        fetcher: Fetcher,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        budget: float = DEFAULT_BUDGET,
        attempts: int = 3,
        max_length: int = MAX_ITEM,
    ) -> None:
        self._fetcher, self._timeout, self._budget = fetcher, timeout, budget
        self._attempts, self._max = attempts, max_length

    async def get(self, item: Item) -> Fetched:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget
        delay = 0.1
        for attempt in range(1, self._attempts + 1):
            try:
                remaining = deadline - loop.time()
                fetched = await self._once(item, max(0.1, min(self._timeout, remaining)))
                validity(item, fetched)
                return fetched
            except FetchFailed as e:
                wait = (
                    e.retry_after if e.retry_after is not None else delay * (1 + secrets.randbelow(100) / 100)
                )
                if not e.retry or attempt == self._attempts or loop.time() + wait >= deadline:
                    raise
                await asyncio.sleep(wait)
                delay *= 3
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, item: Item, timeout: float) -> Fetched:
        try:
            body, headers = await self._fetcher.fetch(item.url, max_length=self._max, timeout=timeout)
        except FetchFailed:
            raise
        except ContrastError as e:
            raise FetchFailed(f"{item.url}: {e.message}", retry=False) from e
        except Exception as e:  # a plug-in must not leak odd exceptions (TUF's fetcher rule)
            raise FetchFailed(f"{item.url}: {type(e).__name__}", retry=True) from e
        if len(body) > self._max:
            raise FetchFailed(f"{item.url}: answer exceeds {self._max} bytes", retry=False)
        chain = b""
        if item.chain_headers:
            lower = {k.lower(): v for k, v in headers.items()}
            raw = next((lower[h.lower()] for h in item.chain_headers if lower.get(h.lower())), "")
            if not raw:
                raise FetchFailed(f"{item.url}: no {' or '.join(item.chain_headers)} header", retry=False)
            chain = urllib.parse.unquote(raw).encode()
        return Fetched(body=body, chain=chain)


class _Cached(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fetched_at: float
    issued: float
    expires: float
    item: Fetched


@dataclass(slots=True)
class _Failure:
    until: float
    delay: float
    error: CollateralError


def max_age_from_env(env: Mapping[str, str] | None = None) -> float:
    """``CONTRAST_COLLATERAL_MAX_AGE_S``: how long a cached answer may be served while re-fetches fail."""
    env = os.environ if env is None else env
    raw = env.get("CONTRAST_COLLATERAL_MAX_AGE_S", "")
    value = float(raw) if raw else DEFAULT_MAX_AGE
    if value <= 0:
        raise ValueError("CONTRAST_COLLATERAL_MAX_AGE_S must be positive")
    return value


class CachedSource:
    """A shared cache in front of ``upstream`` (module docstring)."""

    def __init__(
        self,
        upstream: Source,
        store: Store,
        *,
        refresh: float = DEFAULT_REFRESH,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if refresh <= 0 or max_age <= 0:
            raise ValueError("refresh and max_age must be positive")
        self._up, self._store, self._refresh, self._max_age, self._clock = (
            upstream,
            store,
            refresh,
            max_age,
            clock,
        )
        self._inflight: dict[str, asyncio.Future[Fetched]] = {}
        self._failures: BoundedCache[str, _Failure] = BoundedCache(4096)

    @staticmethod
    def key(item: Item) -> str:
        """The store key of an item: a hash of exactly what it identifies."""
        return "c/" + hashlib.sha256(item.key.encode()).hexdigest()

    async def _read(self, item: Item) -> _Cached | None:
        try:
            entry = await self._store.get(self.key(item))
            return None if entry is None else msgspec.msgpack.decode(entry.value, type=_Cached)
        except (
            Exception
        ):  # garbage or an unreachable store is a miss; verification would refuse garbage anyway
            return None

    def _fresh(self, item: Item, cached: _Cached, now: float) -> bool:
        if not cached.fetched_at <= now < cached.expires:
            return False
        return item.kind in ("vcek", "chain") or now < cached.fetched_at + self._refresh

    async def get(self, item: Item) -> Fetched:
        cached = await self._read(item)
        if cached is not None and self._fresh(item, cached, self._clock()):
            return cached.item
        task = self._inflight.get(item.key)
        if task is None:
            task = asyncio.ensure_future(self._renew(item, cached))
            self._inflight[item.key] = task
            task.add_done_callback(
                lambda t: (self._inflight.pop(item.key, None), t.cancelled() or t.exception())
            )
        return await asyncio.shield(task)

    async def _renew(self, item: Item, cached: _Cached | None) -> Fetched:
        now = self._clock()
        failure = self._failures.get(item.key)
        try:
            if failure is not None and now < failure.until:
                raise failure.error
            fetched = await self._up.get(item)
            valid = validity(item, fetched)
            if valid.expires <= now:
                raise FetchFailed(f"{item.url}: the vendor served an answer that expired", retry=False)
        except CollateralError as e:
            delay = _BACKOFF_FIRST if failure is None else min(failure.delay * 2, _BACKOFF_CAP)
            if failure is None or now >= failure.until:
                self._failures.put(item.key, _Failure(until=now + delay, delay=delay, error=e))
            return self._stale_if_error(item, cached, now, e)
        self._failures.pop(item.key)
        entry = _Cached(fetched_at=now, issued=valid.issued, expires=valid.expires, item=fetched)
        # A cache write failure must not fail the verification that needed the item.
        with contextlib.suppress(Exception):
            await self._store.put(self.key(item), msgspec.msgpack.encode(entry))
        return fetched

    def _stale_if_error(
        self, item: Item, cached: _Cached | None, now: float, error: CollateralError
    ) -> Fetched:
        if cached is None:
            raise error
        age = now - cached.fetched_at
        if now < cached.expires and 0 <= age <= self._max_age:
            return cached.item
        until = dt.datetime.fromtimestamp(cached.expires, dt.UTC).isoformat()
        raise CollateralError(
            "stale",
            f"{item.key}: the cached answer was fetched {age:.0f} s ago (maximum age {self._max_age:.0f} s, "
            f"vendor validity until {until}) and cannot be renewed: {error.message}",
        ) from error
