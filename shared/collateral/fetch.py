"""Fetching vendor collateral: the HTTPS transport, the vendor endpoints, and the switch that turns it off.

``CONTRAST_COLLATERAL_FETCH`` is ``https`` (the default) or ``off``; the CLI's ``--offline`` is ``off``. Off
refuses every fetch with ``collateral.unavailable``, said plainly, so a cluster without egress fails fast
instead of waiting on timeouts (it runs from a pre-seeded cache, README "Running on real hardware").

The endpoints default to the vendors' own services (``CONTRAST_KDS_URL``, ``CONTRAST_PCS_URL``,
``CONTRAST_INTEL_ROOT_CRL_URL`` name a caching proxy such as a PCCS instead); nothing is trusted because of
where it came from, so an endpoint is a matter of reachability, not of trust.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from contrast.errors import CollateralError

KDS_BASE: Final = "https://kdsintf.amd.com"
PCS_BASE: Final = "https://api.trustedservices.intel.com"
INTEL_ROOT_CRL: Final = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


class FetchFailed(CollateralError):
    """A vendor request failed: ``retry`` says whether trying again can help (timeouts, 429, 5xx) and
    ``retry_after`` carries the vendor's Retry-After, in seconds, when it sent one."""

    def __init__(self, message: str, *, retry: bool, retry_after: float | None = None) -> None:
        super().__init__("unavailable", message)
        self.retry, self.retry_after = retry, retry_after


@dataclass(frozen=True)
class Endpoints:
    """Where collateral is fetched from: AMD KDS, Intel PCS and Intel's root CA CRL (all HTTPS)."""

    kds: str = KDS_BASE
    pcs: str = PCS_BASE
    intel_root_crl: str = INTEL_ROOT_CRL

    def __post_init__(self) -> None:
        for name, url in (("kds", self.kds), ("pcs", self.pcs), ("intel_root_crl", self.intel_root_crl)):
            if not url.startswith("https://"):
                raise ValueError(f"collateral endpoint {name} must be an https:// URL, got {url!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Endpoints:
        env = os.environ if env is None else env
        return cls(
            kds=env.get("CONTRAST_KDS_URL", KDS_BASE).rstrip("/"),
            pcs=env.get("CONTRAST_PCS_URL", PCS_BASE).rstrip("/"),
            intel_root_crl=env.get("CONTRAST_INTEL_ROOT_CRL_URL", INTEL_ROOT_CRL),
        )


class Fetcher(Protocol):
    async def fetch(self, url: str, *, max_length: int, timeout: float) -> tuple[bytes, Mapping[str, str]]:
        """GET ``url``: (body, headers); raise :class:`FetchFailed` on any failure or an answer over
        ``max_length`` bytes."""
        ...


class OfflineFetcher:
    """Fetching turned off (``--offline``, ``CONTRAST_COLLATERAL_FETCH=off``): every miss says so."""

    async def fetch(self, url: str, *, max_length: int, timeout: float) -> tuple[bytes, Mapping[str, str]]:
        raise FetchFailed(f"collateral fetching is off; {url} was not fetched", retry=False)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpsFetcher:
    """``urllib`` in a worker thread (no blocking I/O on the event loop), HTTPS only, bounded in size and
    time.

    ``ssl_context`` defaults to the system's trust store; the vendors' TLS is a matter of reachability only.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context

    async def fetch(self, url: str, *, max_length: int, timeout: float) -> tuple[bytes, Mapping[str, str]]:
        if not url.startswith("https://"):
            raise FetchFailed("collateral is fetched over HTTPS only", retry=False)
        try:
            async with asyncio.timeout(timeout + 1):
                return await asyncio.to_thread(self._get, url, max_length, timeout)
        except FetchFailed:
            raise
        except urllib.error.HTTPError as e:
            retry = e.code in _RETRYABLE_STATUS
            after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
            raise FetchFailed(f"{url}: HTTP {e.code}", retry=retry, retry_after=after) from e
        except (OSError, TimeoutError, ValueError, urllib.error.URLError) as e:
            raise FetchFailed(f"{url}: {type(e).__name__}", retry=True) from e

    def _get(self, url: str, max_length: int, timeout: float) -> tuple[bytes, Mapping[str, str]]:
        req = urllib.request.Request(url, headers={"User-Agent": "contrast-collateral/1"})  # noqa: S310
        with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as resp:  # noqa: S310 - https only
            body = resp.read(max_length + 1)
            if len(body) > max_length:
                raise FetchFailed(f"{url}: answer exceeds {max_length} bytes", retry=False)
            return body, dict(resp.headers.items())


def fetcher_from_env(env: Mapping[str, str] | None = None) -> Fetcher:
    """``CONTRAST_COLLATERAL_FETCH``: ``https`` (the default) or ``off``."""
    env = os.environ if env is None else env
    mode = env.get("CONTRAST_COLLATERAL_FETCH", "https")
    if mode == "https":
        return HttpsFetcher()
    if mode == "off":
        return OfflineFetcher()
    raise ValueError(f"CONTRAST_COLLATERAL_FETCH={mode!r}; expected 'https' or 'off'")
