"""A Coordinator replica's attested identity, and signed responses that a receiver can tie to it.

See ``docs/protocol.md`` §1. Each replica makes a P-256 service key and an HPKE key at start and obtains
evidence binding both (label ``COORDINATOR_STATEMENT``). The resulting :class:`~contrast.wire.v1.Statement`
travels with every response that carries a decision, inside a :class:`~contrast.wire.v1.SignedEnvelope`
whose signature covers a transcript that includes the requester's nonce or request id. The receiver checks
the statement with :func:`contrast.evidence.verifier.verify_peer` (same launch measurement, a TCB at least
ours, a policy hash of the Coordinator role that may send this kind of response, our kind of root), then the
signature over the *received* payload bytes, and only
then decodes the payload.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.crypto.hpke import HpkePrivateKey
from contrast.errors import AuthError
from contrast.evidence.binding import Label, report_data
from contrast.evidence.peertcb import DEFAULT_PEER_TDX_STATUSES
from contrast.evidence.result import Claims
from contrast.evidence.verifier import EvidenceVerifier, OwnIdentity, verify_peer
from contrast.platform.base import Platform
from contrast.wire.v1 import SignedEnvelope, Statement

_TRANSCRIPT_PREFIX: Final = b"contrast signed response v1\x00"
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())  # immutable; made once instead of per signature


def transcript(purpose: str, binding: bytes, payload: bytes) -> bytes:
    """What a service key signs: the purpose, the requester's nonce or request id, and the payload bytes."""
    p = purpose.encode()
    return (
        _TRANSCRIPT_PREFIX
        + struct.pack(">H", len(p))
        + p
        + struct.pack(">I", len(binding))
        + binding
        + hashlib.sha256(payload).digest()
    )


def spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class CoordinatorIdentity:
    """This replica's keys, its statement and what its own evidence says about it. Keys stay in memory."""

    service_key: ec.EllipticCurvePrivateKey
    hpke_key: HpkePrivateKey
    statement: Statement
    own: OwnIdentity
    claims: Claims

    def __repr__(self) -> str:
        return f"CoordinatorIdentity(policy_hash={self.own.policy_hash.hex()}, tee={self.own.tee})"

    @classmethod
    async def create(
        cls, platform: Platform, verifier: EvidenceVerifier, now: datetime, nonce: bytes | None = None
    ) -> CoordinatorIdentity:
        """Make fresh keys and evidence binding them; ``nonce`` is a join nonce (random for a first replica).

        Our own evidence is authenticated against the same roots we will demand of peers, so a replica on a
        broken platform fails at start rather than on its first peer.
        """
        nonce = secrets.token_bytes(32) if nonce is None else nonce
        service_key = ec.generate_private_key(ec.SECP256R1())
        hpke_key = HpkePrivateKey.generate()
        service_spki = spki(service_key.public_key())
        hpke_public = hpke_key.public_bytes()
        evidence = await platform.evidence(
            report_data(Label.COORDINATOR_STATEMENT, nonce, service_spki, hpke_public)
        )
        statement = Statement(evidence=evidence, nonce=nonce, service_key=service_spki, hpke_key=hpke_public)
        claims = verifier.authenticate(evidence, emulator_root=platform.emulator_root, now=now)
        own = OwnIdentity.from_claims(claims, emulator_root=platform.emulator_root)
        return cls(service_key=service_key, hpke_key=hpke_key, statement=statement, own=own, claims=claims)

    def sign(self, purpose: str, binding: bytes, payload: bytes) -> SignedEnvelope:
        signature = self.service_key.sign(transcript(purpose, binding, payload), _ECDSA_SHA256)
        return SignedEnvelope(purpose=purpose, payload=payload, signature=signature, statement=self.statement)


def open_envelope(
    envelope: SignedEnvelope,
    *,
    purpose: str,
    binding: bytes,
    verifier: EvidenceVerifier,
    own: OwnIdentity,
    allowed_policy_hashes: Collection[bytes],
    now: datetime,
    accepted_tdx_statuses: Collection[str] = DEFAULT_PEER_TDX_STATUSES,
) -> tuple[bytes, Claims]:
    """Check the statement, then the signature; return the authenticated payload and the signer's claims.

    ``allowed_policy_hashes`` are the policies of the one Coordinator role that may send this purpose.
    """
    if envelope.purpose != purpose:
        raise AuthError("wrong_purpose", f"expected a {purpose!r} envelope, got {envelope.purpose!r}")
    st = envelope.statement
    claims = verify_peer(
        verifier,
        st.evidence,
        own,
        allowed_policy_hashes=allowed_policy_hashes,
        expected_report_data=st.expected_report_data(),
        now=now,
        accepted_tdx_statuses=accepted_tdx_statuses,
    )
    try:
        key = serialization.load_der_public_key(st.service_key)
    except ValueError as e:
        raise AuthError("bad_key", "the statement's service key does not parse") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AuthError("bad_key", "the statement's service key is not a P-256 key")
    try:
        key.verify(
            envelope.signature, transcript(purpose, binding, envelope.payload), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature as e:
        raise AuthError("bad_signature", f"the {purpose} envelope's signature does not verify") from e
    return envelope.payload, claims
