"""Coordinator join (docs/protocol.md §4): both sides, as a library.

A verifier, CA or (peer-recovering) manifest replica joins the Coordinator trust domain like this:

1. it asks ``contrast.v1.coordinator.join.nonce`` for a join nonce (any *ready* manifest replica answers);
2. it builds its :class:`~contrast.coordinator.statement.CoordinatorIdentity` with that nonce, so its
   evidence binds the nonce, its service key and its HPKE key;
3. it sends ``JoinRequest{role, replica, statement, client_nonce}`` to ``contrast.v1.coordinator.join``;
4. the ready manifest replica (:func:`answer_join`) checks, in this order: the role's name; the nonce's MAC
   and expiry; the evidence against the **current manifest's** reference values with the statement's
   binding; that the policy hash names a ``Role: coordinator`` entry whose ``CoordinatorRole`` is the role
   asked for (``policy.wrong_coordinator_role`` otherwise: a replica never chooses its own role); that the
   joiner's TCB is at least the responder's own (:func:`~contrast.evidence.peertcb.check_peer_tcb`); for
   the ``manifest`` role (which receives the seed) that the joiner runs exactly the responder's code (same
   policy hash and launch measurement); and last the nonce's single use. It then certifies the joiner's
   service key with the root CA (role and the policy hash of its *verified* evidence in extensions), seals
   exactly the role's keys to the joiner's attested HPKE key, and signs a
   :class:`~contrast.wire.v1.JoinGrant` with its own service key over ``client nonce ‖ join nonce``;
5. the joiner (:func:`join`) checks the responder's statement (same launch measurement, a TCB at least its
   own, a ``manifest`` policy hash pinned in its own measured configuration, same kind of root), the
   signature, the certificates (its own key, its role, issued by the root, the pinned root if one is
   pinned) and that the opened bundle repeats the public parts; only then does it return a
   :class:`JoinResult`.

Join nonces are :class:`~contrast.attestation.nonce.NonceAuthority` tokens of kind
:data:`~contrast.attestation.nonce.JOIN` (docs/protocol.md §2's format under their own label and key, so the
two kinds never substitute for each other)::

    join_key = HKDF-SHA256(IKM = nonce-MAC key, salt = none, info = "contrast join nonce key v1", L = 32)

Every ready manifest replica derives the same key from the seed, so any of them can check a nonce that
another issued. Single use is a KV ``create`` of ``join/<hex(random)>`` in the ``nonces`` bucket, whose TTL
exceeds the lifetime.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nats.aio.client import Client

from contrast import subjects
from contrast.attestation.nonce import JOIN, NonceAuthority, NonceToken, consume
from contrast.collateral.provider import CollateralProvider
from contrast.coordinator.manifest_format import ROLE_COORDINATOR, Manifest
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.rolekeys import RoleKeys, keys_for_role, open_role_keys, seal_role_keys
from contrast.coordinator.statement import CoordinatorIdentity, open_envelope, spki
from contrast.crypto.kdf import SeedEngine
from contrast.errors import AuthError, ContrastError, PolicyError, RequestError, StateError
from contrast.evidence.peertcb import DEFAULT_PEER_TDX_STATUSES, check_peer_tcb
from contrast.evidence.refvalues import ReferenceValues
from contrast.evidence.result import Claims, ValidationResult
from contrast.evidence.verifier import EvidenceVerifier
from contrast.kv import KeyValue
from contrast.pki.mesh import MeshAuthority
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole, issue_service_cert, replica_label, verify_service_cert
from contrast.platform.base import Platform
from contrast.runtime.client import request
from contrast.wire.v1 import (
    JoinGrant,
    JoinNonceReply,
    JoinNonceRequest,
    JoinReply,
    JoinRequest,
    decoder,
    encode_deterministic,
)

JOIN_PURPOSE: Final = "coordinator-join"
JOIN_NONCE_LIFETIME_MS: Final = 10_000  # the evidence round trip of a joiner takes well under a second


def join_nonces(engine: SeedEngine) -> NonceAuthority:
    """The join-nonce authority of a ready manifest replica. Its key comes from the seed under its own label,
    so verifier replicas (which hold only the attestation nonce-MAC key) can neither mint nor recognise join
    nonces."""
    return NonceAuthority(engine.join_nonce_key(), kind=JOIN, lifetime_ms=JOIN_NONCE_LIFETIME_MS)


@dataclass(frozen=True, slots=True)
class JoinAuthority:
    """What a ready manifest replica answers joins with: its identity, the seed and the current generation."""

    identity: CoordinatorIdentity
    engine: SeedEngine
    mesh: MeshAuthority
    manifest: Manifest
    generation: int
    transition_hash: bytes

    def __repr__(self) -> str:
        return f"JoinAuthority(generation={self.generation})"


def _role(value: str) -> ServiceRole:
    try:
        return ServiceRole(value)
    except ValueError:
        raise RequestError("bad_role", f"unknown Coordinator role {value!r}") from None


def _service_key(der: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_der_public_key(der)
    except ValueError as e:
        raise RequestError("bad_key", "the statement's service key does not parse") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise RequestError("bad_key", "the statement's service key is not a P-256 key")
    return key


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def answer_join(
    req: JoinRequest,
    *,
    authority: JoinAuthority,
    nonces: NonceAuthority,
    verifier: EvidenceVerifier,
    now: dt.datetime,
) -> tuple[ServiceRole, Claims, NonceToken]:
    """Steps 1-4 of the server side, without the single-use mark: raise unless the joiner may have ``role``.

    Returns the role, the joiner's verified claims and its nonce token. The caller then marks the token used
    (:func:`~contrast.attestation.nonce.consume`) and calls :func:`grant`; :func:`handle_join` does all three.
    """
    role = _role(req.role)
    st = req.statement
    token = nonces.check(st.nonce, int(now.timestamp() * 1000))
    references = authority.manifest.ReferenceValues
    result = verifier.verify(st.evidence, references, expected_report_data=st.expected_report_data(), now=now)
    claims = result.require()
    entry = authority.manifest.policy(claims.policy_hash)
    if entry is None:
        raise PolicyError("policy_unknown", "the joiner's policy hash is not in the manifest")
    if entry.Role != ROLE_COORDINATOR:
        raise PolicyError("not_coordinator", "the joiner's policy is not a Coordinator policy")
    bound = entry.service_role
    if bound is not role:
        # The role comes from the manifest, never from the request: a compromised verifier that asks for the
        # CA's or the manifest service's keys gets nothing.
        raise PolicyError(
            "wrong_coordinator_role",
            f"the joiner's policy is bound to Coordinator role {bound.value if bound else 'none'}, "
            f"not {role.value}",
        )
    own = authority.identity.own
    check_peer_tcb(claims, own.tee, own.tcb, accepted_tdx_statuses=_accepted_statuses(references, result))
    if role is ServiceRole.MANIFEST:
        # The seed goes only to exactly our code: same policy and same launch measurement.
        if not hmac.compare_digest(claims.policy_hash, own.policy_hash):
            raise PolicyError("policy_mismatch", "a manifest replica must run this replica's policy")
        if not hmac.compare_digest(claims.measurement, own.measurement):
            raise PolicyError("measurement_mismatch", "a manifest replica must run this replica's image")
    return role, claims, token


def _accepted_statuses(references: ReferenceValues, result: ValidationResult) -> frozenset[str]:
    """The TDX TCB statuses the reference set that accepted the joiner allows (UpToDate for SNP)."""
    i = result.matched_reference
    if result.claims.tee == "tdx" and i is not None and i < len(references.tdx):
        return frozenset(references.tdx[i].AcceptedTCBStatuses)
    return DEFAULT_PEER_TDX_STATUSES


def grant(
    req: JoinRequest, role: ServiceRole, joiner: Claims, *, authority: JoinAuthority, now: dt.datetime
) -> JoinReply:
    """Certify the joiner's key, seal its role's keys, and sign the grant (step 4, after all checks).

    ``joiner`` is what :func:`answer_join` verified; its policy hash goes into the service certificate so that
    the certificate stops counting once an update removes that Coordinator policy from the manifest.
    """
    st = req.statement
    root_key = authority.engine.root_ca_key()
    root_cert = root_certificate(root_key)
    cert = issue_service_cert(
        root_key,
        root_cert,
        _service_key(st.service_key),
        role=role,
        replica_id=replica_label(req.replica),
        policy_hash=joiner.policy_hash,
        now=now,
    )
    bundle = keys_for_role(
        role,
        engine=authority.engine,
        mesh=authority.mesh,
        generation=authority.generation,
        head_transition=authority.transition_hash,
        service_cert=cert,
    )
    sealed = seal_role_keys(bundle, st.hpke_key, st.nonce + req.client_nonce)
    payload = JoinGrant(
        role=role.value,
        generation=bundle.generation,
        transition_hash=bundle.head_transition,
        history_public_key=bundle.history_public_key,
        root_cert=bundle.root_cert,
        intermediate=bundle.intermediate,
        mesh_ca=bundle.mesh_ca,
        service_cert=bundle.service_cert,
        sealed_keys=sealed,
    )
    envelope = authority.identity.sign(
        JOIN_PURPOSE, req.client_nonce + st.nonce, encode_deterministic(payload)
    )
    return JoinReply(envelope=envelope)


async def handle_join(
    req: JoinRequest,
    *,
    authority: JoinAuthority,
    nonces: NonceAuthority,
    marks: KeyValue,
    verifier: EvidenceVerifier,
    now: dt.datetime,
    collateral: CollateralProvider | None = None,
) -> JoinReply:
    """The whole server side of a join: check, mark the nonce used in ``marks``, grant.

    With ``collateral``, the joiner's evidence is first completed with what its verification needs (the
    joiner attaches its collateral; a part that is missing or past its validity is fetched)."""
    if collateral is not None:
        refs = authority.manifest.ReferenceValues
        evidence = await collateral.complete_for(req.statement.evidence, refs, now=now)
        req = msgspec.structs.replace(
            req, statement=msgspec.structs.replace(req.statement, evidence=evidence)
        )
    role, claims, token = answer_join(req, authority=authority, nonces=nonces, verifier=verifier, now=now)
    await consume(marks, token)
    return grant(req, role, claims, authority=authority, now=now)


# ---- the joiner's side ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What a joined replica holds: its certificate, the Coordinator's CA certificates, the head it joined at,
    the history public key and exactly the keys of its role (``keys``, already checked)."""

    identity: CoordinatorIdentity
    role: ServiceRole
    service_cert: x509.Certificate
    root_cert: x509.Certificate
    intermediate: x509.Certificate
    mesh_ca: x509.Certificate
    generation: int
    transition_hash: bytes
    history_public_key: ed25519.Ed25519PublicKey
    keys: RoleKeys
    responder: Claims

    def __repr__(self) -> str:
        return f"JoinResult(role={self.role.value}, generation={self.generation})"


def responder_policy_hashes(
    role: ServiceRole, identity: CoordinatorIdentity, pins: CoordinatorPins
) -> frozenset[bytes]:
    """Whose grant a joiner believes: a manifest replica (peer recovery) only its own exact code; a verifier
    or CA replica the ``manifest`` policy hashes pinned in its own measured configuration (an empty pin fails
    closed). A verifier or CA policy never answers a join: it holds no seed."""
    if role is ServiceRole.MANIFEST:
        return frozenset({identity.own.policy_hash})
    return pins.of(ServiceRole.MANIFEST)


def check_grant(
    reply: JoinReply,
    *,
    identity: CoordinatorIdentity,
    role: ServiceRole,
    client_nonce: bytes,
    verifier: EvidenceVerifier,
    pins: CoordinatorPins,
    now: dt.datetime,
) -> JoinResult:
    """Check a join reply as the joiner (step 5) and open the bundle; raise ``auth.*``/``policy.*`` if not."""
    payload, responder = open_envelope(
        reply.envelope,
        purpose=JOIN_PURPOSE,
        binding=client_nonce + identity.statement.nonce,
        verifier=verifier,
        own=identity.own,
        allowed_policy_hashes=responder_policy_hashes(role, identity, pins),
        now=now,
        accepted_tdx_statuses=pins.tdx_statuses,
    )
    try:
        g = decoder(JoinGrant).decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:  # signed, but malformed
        raise AuthError("bad_join_reply", "the signed join grant does not decode") from e
    if g.role != role.value:
        raise AuthError("bad_join_reply", f"asked to join as {role.value}, granted {g.role}")
    keys = open_role_keys(identity.hpke_key, role, identity.statement.nonce + client_nonce, g.sealed_keys)
    public = (
        keys.generation,
        keys.head_transition,
        keys.history_public_key,
        keys.root_cert,
        keys.intermediate,
        keys.mesh_ca,
        keys.service_cert,
    )
    if public != (
        g.generation,
        g.transition_hash,
        g.history_public_key,
        g.root_cert,
        g.intermediate,
        g.mesh_ca,
        g.service_cert,
    ):
        raise AuthError("bad_join_reply", "the sealed bundle does not match the signed public parts")
    pins.check_root(g.root_cert)  # a pinned replica takes keys only from the Coordinator of its root
    try:
        root = x509.load_der_x509_certificate(g.root_cert)
        intermediate = x509.load_der_x509_certificate(g.intermediate)
        mesh_ca = x509.load_der_x509_certificate(g.mesh_ca)
    except ValueError as e:
        raise AuthError("bad_join_reply", "a CA certificate in the grant does not parse") from e
    service = verify_service_cert(g.service_cert, root, role, now)
    if spki(service.public_key) != identity.statement.service_key:
        raise AuthError("bad_join_reply", "the service certificate is not for this replica's key")
    if mesh_ca.public_key() != intermediate.public_key() or mesh_ca.subject != intermediate.subject:
        raise AuthError("bad_join_reply", "the mesh CA does not belong to the intermediate")
    _check_intermediate(intermediate, root)
    if role is ServiceRole.MANIFEST:
        engine = SeedEngine(keys.seed, keys.salt)
        if _der(root_certificate(engine.root_ca_key())) != g.root_cert:
            raise AuthError("bad_join_reply", "the seed does not derive the granted root CA")
    elif role is ServiceRole.CA:
        keys.root_key_object()
    if role in (ServiceRole.CA, ServiceRole.MANIFEST):
        keys.mesh_authority()  # the mesh key matches both certificates
    return JoinResult(
        identity=identity,
        role=role,
        service_cert=service.certificate,
        root_cert=root,
        intermediate=intermediate,
        mesh_ca=mesh_ca,
        generation=g.generation,
        transition_hash=g.transition_hash,
        history_public_key=keys.history_verify_key(),
        keys=keys,
        responder=responder,
    )


def _check_intermediate(intermediate: x509.Certificate, root: x509.Certificate) -> None:
    try:
        intermediate.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise AuthError("bad_join_reply", "the intermediate is not issued by the root CA") from e


async def join(
    nc: Client,
    platform: Platform,
    role: ServiceRole,
    *,
    replica: str,
    verifier: EvidenceVerifier,
    pins: CoordinatorPins,
    timeout: float = 60.0,
    attempt_timeout: float = 5.0,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> JoinResult:
    """Join the Coordinator as ``role`` (client side, steps 1-5); returns the checked :class:`JoinResult`.

    Every attempt makes a fresh :class:`CoordinatorIdentity` bound to a fresh join nonce; use
    ``result.identity`` from then on (its service key is the certified one). ``pins`` is what this replica's
    measured configuration pins (:func:`responder_policy_hashes`, the root). Attempts are retried with
    jittered backoff until ``timeout`` (no ready manifest replica yet, a stale one answered, a forged reply on
    the bus); the last error is raised then. Nothing is returned that was not fully checked.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.2
    last: ContrastError = StateError("unavailable", "no ready manifest replica answered the join")
    while True:
        try:
            async with asyncio.timeout(max(0.1, min(attempt_timeout * 2, deadline - loop.time()))):
                return await join_once(
                    nc,
                    platform,
                    role,
                    replica=replica,
                    verifier=verifier,
                    pins=pins,
                    attempt_timeout=attempt_timeout,
                    now=now(),
                )
        except ContrastError as e:
            last = e
        except TimeoutError:
            last = StateError("unavailable", "the join attempt timed out")
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise last
        await asyncio.sleep(min(remaining, delay * (0.5 + secrets.randbelow(1000) / 1000)))
        delay = min(delay * 2, 2.0)


async def join_once(
    nc: Client,
    platform: Platform,
    role: ServiceRole,
    *,
    replica: str,
    verifier: EvidenceVerifier,
    pins: CoordinatorPins,
    attempt_timeout: float = 5.0,
    now: dt.datetime,
) -> JoinResult:
    """One join attempt, no retries."""
    nonce = (
        await request(
            nc, subjects.COORDINATOR_JOIN_NONCE, JoinNonceRequest(), JoinNonceReply, timeout=attempt_timeout
        )
    ).nonce
    identity = await CoordinatorIdentity.create(platform, verifier, now, nonce=nonce)
    client_nonce = secrets.token_bytes(32)
    req = JoinRequest(
        role=role.value, replica=replica, statement=identity.statement, client_nonce=client_nonce
    )
    reply = await request(nc, subjects.COORDINATOR_JOIN, req, JoinReply, timeout=attempt_timeout)
    return check_grant(
        reply, identity=identity, role=role, client_nonce=client_nonce, verifier=verifier, pins=pins, now=now
    )
