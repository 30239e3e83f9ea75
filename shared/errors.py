"""One exception root for everything Contrast decides, split by who is at fault.

Every error carries a stable ``code`` of the form ``<family>.<reason>`` (``evidence.bad_signature``,
``policy.debug_enabled``, ``request.too_large`` …). The code is what callers branch on, what tests assert on,
what the metrics ``reason`` label carries and what a typed error reply sends; the message is for humans only.

Families:

- ``evidence.*`` (:class:`EvidenceError`): the evidence itself is broken, forged or unsupported.
- ``policy.*`` (:class:`PolicyError`): the evidence is authentic but violates the reference values.
- ``collateral.*`` (:class:`CollateralError`): a certificate, CRL or TCB document could not be had or is
  stale; "retry later", not "reject forever".
- ``request.*`` (:class:`RequestError`): a caller sent something malformed, oversized or replayed.
- ``store.*`` (:class:`StoreError`): state read back from JetStream failed authentication.
- ``auth.*`` (:class:`AuthError`): a signature or credential on a cross-service message is missing or wrong.
- ``state.*`` (:class:`StateError`): the service is in the wrong state for the request (not ready, stale).
- ``internal.*`` (:class:`InternalError`): a fault of our own; its details stay in the replica's log.

Misuse of an API by our own code stays ``RuntimeError``/``TypeError``/``ValueError``. Raise ``from`` the
cause.
"""

from __future__ import annotations

import re
from typing import ClassVar

_REASON = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


class ContrastError(Exception):
    """Base of every error with a stable code."""

    family: ClassVar[str] = "internal"

    def __init__(self, reason: str, message: str) -> None:
        if not _REASON.match(reason):
            raise ValueError(f"invalid reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def code(self) -> str:
        return f"{self.family}.{self.reason}"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class EvidenceError(ContrastError):
    """The evidence is malformed, unsupported, or not signed by a trusted chain."""

    family = "evidence"


class PolicyError(ContrastError):
    """The evidence is authentic but does not satisfy the reference values."""

    family = "policy"


class CollateralError(ContrastError):
    """Collateral (certificates, CRLs, TCB info) is unavailable or stale: retry later."""

    family = "collateral"


class RequestError(ContrastError):
    """The caller's request is malformed, too large, or replayed."""

    family = "request"


class StoreError(ContrastError):
    """State read back from the (untrusted) store failed authentication."""

    family = "store"


class AuthError(ContrastError):
    """A cross-service message carries a missing or wrong signature or credential."""

    family = "auth"


class StateError(ContrastError):
    """The service cannot do this now (not ready, stale, already initialized)."""

    family = "state"


class InternalError(ContrastError):
    """A fault of our own. The reply carries only a correlation id; details stay in the log."""

    family = "internal"


FAMILIES: dict[str, type[ContrastError]] = {
    cls.family: cls
    for cls in (
        EvidenceError,
        PolicyError,
        CollateralError,
        RequestError,
        StoreError,
        AuthError,
        StateError,
        InternalError,
    )
}


def from_code(code: str, message: str) -> ContrastError:
    """Rebuild a typed error from a ``family.reason`` code received on the wire.

    An unknown family becomes :class:`InternalError`, so a peer cannot make us raise a type we do not know.
    """
    family, _, reason = code.partition(".")
    cls = FAMILIES.get(family)
    if cls is None or not reason or not _REASON.match(reason):
        return InternalError("unknown_code", f"{code}: {message}")
    return cls(reason, message)
