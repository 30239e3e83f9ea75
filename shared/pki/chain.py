"""Verifying mesh leaves with ``cryptography.x509.verification``, against either trust anchor.

:func:`verify_leaf` builds a verifier per call. :class:`AnchorVerifiers` gives the same verdicts for a
process that checks many leaves under the same few anchors (an initializer's answers, the bench's hundreds
of emulated pods): it keeps one verifier per anchor, keyed by the anchor's exact DER, for at most
``window``, so that the anchor's key is parsed and prepared once rather than per leaf.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

from contrast.cache import BoundedCache
from contrast.errors import AuthError

MAX_CHAIN_DEPTH: Final = 2  # leaf -> intermediate -> root at most


def _build(anchor: x509.Certificate, now: dt.datetime) -> verification.ClientVerifier:
    return (
        verification.PolicyBuilder()
        .store(verification.Store([anchor]))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .build_client_verifier()
    )


def _verify(
    verifier: verification.ClientVerifier,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except verification.VerificationError as e:
        raise AuthError("bad_certificate", f"certificate chain rejected: {e}") from e


def verify_leaf(
    leaf: x509.Certificate,
    *,
    anchor: x509.Certificate,
    intermediates: Sequence[x509.Certificate] = (),
    now: dt.datetime,
) -> list[x509.Certificate]:
    """Verify a mesh leaf as a TLS client certificate against one anchor; returns the built chain.

    Use ``anchor=mesh_ca`` with no intermediates, or ``anchor=root`` with ``intermediates=[intermediate]``.
    Raises ``auth.bad_certificate`` on any failure.
    """
    return _verify(_build(anchor, now), leaf, intermediates)


def _valid_at(chain: Sequence[x509.Certificate], now: dt.datetime) -> bool:
    return all(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in chain)


@dataclass(frozen=True, slots=True)
class _Built:
    verifier: verification.ClientVerifier
    at: dt.datetime


class AnchorVerifiers:
    """:func:`verify_leaf` with one reusable verifier per anchor. Verdicts are exactly those of
    :func:`verify_leaf` at ``now``:

    - a verifier is keyed by the anchor's exact DER bytes, so another anchor (another generation's mesh CA,
      another root, a forged anchor under the same name) never meets a verifier built for a different one;
    - the only input that changes with time is the validity periods. A verifier built at ``at`` is used for
      ``at <= now < at + window``; a chain it accepts is taken only if every certificate in it is also valid
      at ``now`` exactly (valid at both instants is valid at ``now``), and anything it refuses or that fails
      this check is decided by a fresh verifier built at ``now``.

    Bounded: the ``size`` most recently used anchors are kept.
    """

    def __init__(self, *, size: int = 16, window: dt.timedelta = dt.timedelta(seconds=1)) -> None:
        if size < 1 or window <= dt.timedelta(0):
            raise ValueError("size and window must be positive")
        self._window = window
        self._built: BoundedCache[bytes, _Built] = BoundedCache(size)

    def __len__(self) -> int:
        return len(self._built)

    def verify(
        self,
        leaf: x509.Certificate,
        *,
        anchor: x509.Certificate,
        intermediates: Sequence[x509.Certificate] = (),
        now: dt.datetime,
        anchor_der: bytes | None = None,
    ) -> list[x509.Certificate]:
        """Like :func:`verify_leaf`; ``anchor_der`` saves re-encoding when the caller has the bytes (it must
        be ``anchor``'s DER: it is the cache key)."""
        key = anchor_der if anchor_der is not None else anchor.public_bytes(serialization.Encoding.DER)
        built = self._built.get(key)
        if built is not None and built.at <= now < built.at + self._window:
            try:
                chain = _verify(built.verifier, leaf, intermediates)
            except AuthError:
                chain = None  # perhaps only because of the instant: let a verifier at ``now`` decide
            if chain is not None and _valid_at(chain, now):
                return chain
        fresh = _build(anchor, now)
        self._built.put(key, _Built(verifier=fresh, at=now))
        return _verify(fresh, leaf, intermediates)


class ParsedCertificates:
    """Certificates parsed once per exact DER encoding (bounded, least recently used out).

    For certificates that recur across many messages (a generation's mesh CA and intermediate, the root): the
    parsed object keeps what ``cryptography`` computes lazily (public key, extensions), so a later message
    with the same bytes does not pay for it again. Keyed by the bytes themselves, never by a name or digest.
    """

    def __init__(self, *, size: int = 32) -> None:
        self._parsed: BoundedCache[bytes, x509.Certificate] = BoundedCache(size)

    def __len__(self) -> int:
        return len(self._parsed)

    def load(self, der: bytes) -> x509.Certificate:
        """``x509.load_der_x509_certificate(der)``, from the cache when these exact bytes were seen."""
        # A ValueError propagates and nothing is cached.
        return self._parsed.get_or_compute(der, lambda: x509.load_der_x509_certificate(der))
