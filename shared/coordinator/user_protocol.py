"""The user API's attested replies and recovery messages: pure functions shared by the service and the CLI.

**Attested replies** (``set``, ``get``, ``recover``). The manifest replica answers with an
:class:`~contrast.wire.v1.AttestedReply` whose evidence is made for this reply alone::

    transcript  = SHA-256("contrast user api transcript v1" ‖ 0x00 ‖ latest transition hash
                          ‖ SHA-256(root CA DER) ‖ SHA-256(mesh CA DER) ‖ SHA-256(payload))
    REPORT_DATA = report_data(Label.USER_API, client nonce, transcript)

so one attestation proves, to the holder of the nonce, that attested code with that policy hash currently
stands at that transition with those two CA certificates, and said exactly this payload.
:func:`verify_attested_reply` checks the evidence against the *caller's* manifest: its reference values, a
``Role: coordinator`` policy bound to ``CoordinatorRole: manifest`` for HOST_DATA / MR_CONFIG_ID (only the
manifest service speaks for the Coordinator, and only it may receive the seed), and the binding. A reply
captured for another nonce fails the binding.

**Status** (asked by ``set`` before a first set). A replica in any state answers
:class:`~contrast.wire.v1.AttestedStatus`: its state as a deterministic payload, with
``REPORT_DATA = report_data(Label.USER_STATUS, client nonce, SHA-256(payload))``. No manifest is set yet, so
this is the only attested word of an uninitialized Coordinator; the CLI judges it by its *local* manifest
before it sends that manifest (:func:`verify_attested_status`).

**Recovery.** A stale replica shows an HPKE key in evidence bound with ``Label.RECOVERY`` to the client's
nonce, a one-time recovery nonce of its own and the stored head it will adopt::

    REPORT_DATA = report_data(Label.RECOVERY, client nonce, hpke_key, recovery_nonce,
                              head_transcript(latest pointer, transitions))

(:mod:`contrast.coordinator.recovery_head`). The seed-share owner authenticates that head with the seed,
checks it against its trusted state, seals ``seed ‖ salt`` to the key (HPKE protocol ``recovery``, context =
:func:`~contrast.coordinator.recovery_head.recovery_context`: the recovery nonce, the head's generation and
transition hash) and signs :func:`contrast.crypto.seedshare.recovery_signing_message` with the same key and
nonce. The replica opens it only with the head it attested for that nonce, and adopts that head only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Final

import msgspec

from contrast import subjects
from contrast.coordinator.manifest_format import ROLE_COORDINATOR, Manifest
from contrast.coordinator.recovery_head import head_transcript, recovery_context
from contrast.crypto.hpke import HpkePrivateKey, HpkePublicKey, Protocol
from contrast.crypto.kdf import SALT_SIZE, SEED_SIZE
from contrast.errors import AuthError, InternalError, PolicyError, RequestError
from contrast.evidence.binding import Label, report_data
from contrast.evidence.result import Claims
from contrast.evidence.verifier import Evidence, EvidenceVerifier
from contrast.pki.service import ServiceRole
from contrast.wire.v1 import AttestedReply, AttestedStatus, CoordinatorStatus, decoder

_TRANSCRIPT_LABEL: Final = b"contrast user api transcript v1\x00"


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def user_api_transcript(
    transition_hash: bytes, root_ca_der: bytes, mesh_ca_der: bytes, payload: bytes
) -> bytes:
    """The 32-byte transcript hash that an attested user-API reply binds."""
    if len(transition_hash) != 32:
        raise ValueError("transition hash is 32 bytes")
    return _sha256(
        _TRANSCRIPT_LABEL + transition_hash + _sha256(root_ca_der) + _sha256(mesh_ca_der) + _sha256(payload)
    )


def user_api_report_data(
    nonce: bytes, transition_hash: bytes, root_ca_der: bytes, mesh_ca_der: bytes, payload: bytes
) -> bytes:
    return report_data(
        Label.USER_API, nonce, user_api_transcript(transition_hash, root_ca_der, mesh_ca_der, payload)
    )


def recovery_report_data(
    client_nonce: bytes,
    hpke_key: bytes,
    recovery_nonce: bytes,
    head_pointer: bytes,
    head_transitions: Sequence[bytes],
) -> bytes:
    """REPORT_DATA of a recovery challenge: the key, the nonces and the stored head the replica will adopt."""
    return report_data(
        Label.RECOVERY,
        client_nonce,
        hpke_key,
        recovery_nonce,
        head_transcript(head_pointer, head_transitions),
    )


def recover_subject(replica: str) -> str:
    """Step 2 of recovery goes to the challenging replica: ``contrast.v1.user.recover.<replica>``."""
    try:
        return subjects.user_recover(replica)
    except ValueError as e:
        raise RequestError("bad_replica", f"invalid replica name {replica!r}") from e


def check_coordinator_evidence(
    evidence: Evidence,
    manifest: Manifest,
    expected_report_data: bytes,
    *,
    verifier: EvidenceVerifier,
    now: dt.datetime,
) -> Claims:
    """Evidence of a manifest replica, judged by the caller's manifest; returns its claims or raises.

    Checks authenticity, the reference values (which also pin the vendor root or, for the emulator, its root
    fingerprint), REPORT_DATA, and that the policy hash is a ``Role: coordinator`` policy of ``manifest``
    bound to the ``manifest`` service role: a verifier or CA replica can neither answer for the Coordinator
    nor, in recovery, receive the seed (``policy.wrong_coordinator_role``).
    """
    claims = verifier.verify(
        evidence, manifest.ReferenceValues, expected_report_data=expected_report_data, now=now
    ).require()
    entry = manifest.policy(claims.policy_hash)
    if entry is None:
        raise PolicyError(
            "policy_unknown",
            f"the Coordinator's policy hash {claims.policy_hash.hex()} is not in the manifest",
        )
    if entry.Role != ROLE_COORDINATOR:
        raise PolicyError(
            "not_coordinator",
            f"the Coordinator runs policy {claims.policy_hash.hex()}, which is not a coordinator policy",
        )
    if entry.service_role is not ServiceRole.MANIFEST:
        raise PolicyError(
            "wrong_coordinator_role",
            f"policy {claims.policy_hash.hex()} is bound to Coordinator role "
            f"{entry.CoordinatorRole or 'none'}, not manifest: only the manifest service answers owners and "
            "receives the seed",
        )
    return claims


def verify_attested_reply(
    reply: AttestedReply,
    nonce: bytes,
    manifest: Manifest,
    *,
    verifier: EvidenceVerifier,
    now: dt.datetime,
) -> Claims:
    """Check an attested user-API reply for our ``nonce`` against ``manifest``; then ``reply.payload`` is
    what the attested replica said."""
    expected = user_api_report_data(nonce, reply.transition_hash, reply.root_ca, reply.mesh_ca, reply.payload)
    return check_coordinator_evidence(reply.evidence, manifest, expected, verifier=verifier, now=now)


def status_report_data(nonce: bytes, payload: bytes) -> bytes:
    """REPORT_DATA of a status reply: the client's nonce and the status payload."""
    return report_data(Label.USER_STATUS, nonce, _sha256(payload))


def verify_attested_status(
    reply: AttestedStatus,
    nonce: bytes,
    manifest: Manifest,
    *,
    verifier: EvidenceVerifier,
    now: dt.datetime,
) -> tuple[Claims, CoordinatorStatus]:
    """Check a status reply for our ``nonce`` against ``manifest``; then decode what the replica said."""
    claims = check_coordinator_evidence(
        reply.evidence, manifest, status_report_data(nonce, reply.payload), verifier=verifier, now=now
    )
    try:
        status = decoder(CoordinatorStatus).decode(reply.payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:  # attested, but malformed
        raise InternalError("bad_reply", "the attested status does not decode") from e
    return claims, status


def seal_recovery_secret(
    hpke_key: bytes, recovery_nonce: bytes, generation: int, transition_hash: bytes, seed: bytes, salt: bytes
) -> bytes:
    """``seed ‖ salt`` sealed to the challenge key, opening only for this nonce and this head."""
    if len(seed) != SEED_SIZE or len(salt) != SALT_SIZE:
        raise ValueError("seed is 64 and salt 32 bytes")
    context = recovery_context(recovery_nonce, generation, transition_hash)
    return HpkePublicKey(hpke_key).seal(Protocol.RECOVERY, context, seed + salt)


def open_recovery_secret(
    key: HpkePrivateKey, recovery_nonce: bytes, generation: int, transition_hash: bytes, sealed: bytes
) -> tuple[bytes, bytes]:
    raw = key.open(Protocol.RECOVERY, recovery_context(recovery_nonce, generation, transition_hash), sealed)
    if len(raw) != SEED_SIZE + SALT_SIZE:
        raise AuthError("bad_recovery_secret", "the sealed recovery secret has the wrong size")
    return raw[:SEED_SIZE], raw[SEED_SIZE:]
