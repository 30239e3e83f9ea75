"""Signed verdicts: how a verifier signs its decision and how a CA replica checks one (docs/protocol.md §3.4).

A :class:`~contrast.wire.v1.SignedVerdict` carries the deterministic MessagePack of a
:class:`~contrast.wire.v1.Verdict`, an ECDSA P-256 signature over the transcript
``contrast.coordinator.statement.transcript(PURPOSE, request_id, payload)`` and the signer's service
certificate. :class:`VerdictChecker` accepts it only if, in this order:

1. the certificate was issued directly by the root CA, is valid now and has role ``verifier``
   (:func:`contrast.pki.service.verify_service_cert`), and the policy hash it certifies (taken from the
   verifier's join evidence) is one of ``signer_policy_hashes``: the ``Role: coordinator`` entries bound to
   the ``verifier`` role in the manifest the verdict is checked against. A verifier whose policy an update
   removed (a vulnerable image, or a key stolen from one) signs nothing the CA accepts any more, however
   long its certificate runs;
2. the signature verifies over the *received* payload bytes and the request id it was delivered under;
3. the payload decodes strictly and names that request id;
4. the verdict is positive, fresh (issued within ``max_age``, not in the future) and for the current
   generation and transition (an older one is ``auth.stale_generation``; a newer one ``state.stale``: the CA
   must re-join first).

Step 1 costs a P-384 verify; its result is cached per certificate (keyed by the exact DER bytes, bounded,
and re-checked against the certificate's validity on every use), together with what the hot path would
otherwise recompute per verdict (validity bounds, the signature algorithm for the key's curve), so a verdict
costs one P-256 verify and little else. Step 1's policy check is not cached: it depends on the manifest.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.cache import BoundedCache
from contrast.coordinator.statement import transcript
from contrast.errors import AuthError, StateError
from contrast.pki.service import ServiceIdentity, ServiceRole, verify_service_cert
from contrast.wire.v1 import SignedVerdict, Verdict, decoder, encode_deterministic

PURPOSE: Final = "contrast verdict v1"
DEFAULT_MAX_AGE: Final = dt.timedelta(minutes=2)
# A verifier's clock may run a little ahead of the CA's.
MAX_FUTURE_SKEW: Final = dt.timedelta(seconds=5)
_CERT_CACHE_SIZE: Final = 256


def _algorithm(curve: ec.EllipticCurve) -> ec.ECDSA:
    """ECDSA-SHA-256 for P-256 service keys, SHA-384 otherwise (a P-384 key): signer and checker agree."""
    return ec.ECDSA(hashes.SHA256() if isinstance(curve, ec.SECP256R1) else hashes.SHA384())


def sign_verdict(
    verdict: Verdict, key: ec.EllipticCurvePrivateKey, service_cert: x509.Certificate
) -> SignedVerdict:
    payload = encode_deterministic(verdict)
    sig = key.sign(transcript(PURPOSE, verdict.request_id.encode(), payload), _algorithm(key.curve))
    return SignedVerdict(
        payload=payload, signature=sig, service_cert=service_cert.public_bytes(serialization.Encoding.DER)
    )


@dataclass(frozen=True, slots=True)
class _Signer:
    """A verified service certificate with what checking each of its verdicts needs, computed once."""

    identity: ServiceIdentity
    not_before: dt.datetime
    not_after: dt.datetime
    algorithm: ec.ECDSA

    @classmethod
    def of(cls, identity: ServiceIdentity) -> _Signer:
        return cls(
            identity=identity,
            not_before=identity.certificate.not_valid_before_utc,
            not_after=identity.certificate.not_valid_after_utc,
            algorithm=_algorithm(identity.public_key.curve),
        )


@dataclass(frozen=True, slots=True)
class CheckedVerdict:
    verdict: Verdict
    signer: ServiceIdentity


class VerdictChecker:
    """Checks verdicts for one CA replica's view: a root certificate, a generation and its transition."""

    def __init__(
        self,
        root_cert: x509.Certificate,
        *,
        generation: int,
        transition_hash: bytes,
        max_age: dt.timedelta = DEFAULT_MAX_AGE,
    ) -> None:
        self._root = root_cert
        self.generation = generation
        self.transition_hash = transition_hash
        self._max_age = max_age
        # Keyed by the certificate's exact bytes: a hit is the very certificate that was verified.
        self._signers: BoundedCache[bytes, _Signer] = BoundedCache(_CERT_CACHE_SIZE)

    def _signer(self, cert_der: bytes, now: dt.datetime) -> _Signer:
        hit = self._signers.get(cert_der)
        if hit is not None:
            if hit.not_before <= now <= hit.not_after:
                return hit
            self._signers.pop(cert_der)
        signer = _Signer.of(verify_service_cert(cert_der, self._root, ServiceRole.VERIFIER, now))
        self._signers.put(bytes(cert_der), signer)
        return signer

    def check(
        self,
        signed: SignedVerdict,
        *,
        request_id: str,
        signer_policy_hashes: Collection[bytes],
        now: dt.datetime,
    ) -> CheckedVerdict:
        """``signer_policy_hashes``: the current manifest's ``verifier`` policies (``auth.signer_revoked`` if
        the signer's certified policy is not among them)."""
        cached = self._signer(signed.service_cert, now)
        signer = cached.identity
        if not any(hmac.compare_digest(signer.policy_hash, h) for h in signer_policy_hashes):
            raise AuthError(
                "signer_revoked", "the verdict's signer runs a policy the current manifest no longer allows"
            )
        try:
            signer.public_key.verify(
                signed.signature,
                transcript(PURPOSE, request_id.encode(), signed.payload),
                cached.algorithm,
            )
        except InvalidSignature as e:
            raise AuthError("bad_signature", "the verdict's signature does not verify") from e
        try:
            verdict = decoder(Verdict).decode(signed.payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise AuthError("malformed_verdict", "a signed verdict that does not decode") from e
        if verdict.request_id != request_id:
            raise AuthError("wrong_request", "the verdict names another request id")
        if not verdict.accepted:
            raise AuthError("not_accepted", "a negative verdict never leads to issuance")
        if verdict.generation < self.generation:
            raise AuthError("stale_generation", f"verdict for generation {verdict.generation}")
        if verdict.generation > self.generation:
            raise StateError(
                "stale", f"verdict for generation {verdict.generation}; this CA holds {self.generation}"
            )
        if not hmac.compare_digest(verdict.transition_hash, self.transition_hash):
            raise AuthError("stale_generation", "the verdict names another history transition")
        issued = dt.datetime.fromtimestamp(verdict.issued_at_ms / 1000, dt.UTC)
        if issued > now + MAX_FUTURE_SKEW:
            raise AuthError("verdict_from_future", "the verdict was issued in the future")
        if now - issued > self._max_age:
            raise AuthError(
                "stale_verdict", f"the verdict is older than {self._max_age.total_seconds():.0f} s"
            )
        return CheckedVerdict(verdict=verdict, signer=signer)
