"""Verifying mesh leaves with ``cryptography.x509.verification``, against either trust anchor."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.x509 import verification

from contrast.errors import AuthError


def verify_leaf(
    leaf: x509.Certificate,
    *,
    anchor: x509.Certificate,
    intermediates: list[x509.Certificate] | tuple[x509.Certificate, ...] = (),
    now: dt.datetime,
) -> list[x509.Certificate]:
    """Verify a mesh leaf as a TLS client certificate against one anchor; returns the built chain.

    Use ``anchor=mesh_ca`` with no intermediates, or ``anchor=root`` with ``intermediates=[intermediate]``.
    Raises ``auth.bad_certificate`` on any failure.
    """
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([anchor]))
        .time(now)
        .max_chain_depth(2)
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except verification.VerificationError as e:
        raise AuthError("bad_certificate", f"certificate chain rejected: {e}") from e
