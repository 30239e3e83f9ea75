"""The sealed result bundle: what a CA replica issues, and what an initializer checks before trusting it.

Issuance (:func:`issue`, CA side, docs/protocol.md §3.4): a P-256 leaf from the generation's mesh authority
with SANs, claims and WorkloadSecretID from the manifest entry; the workload secret
HKDF(pod-state secret, ``WORKLOAD SECRET ID: <id>``); all sealed with HPKE to the verdict's HPKE key
(protocol ``workload-bundle``, context = request id), wrapped in an :class:`IssuedResult` and signed by the
CA's service key in an envelope that carries its statement.

Acceptance (:func:`open_result`, initializer side, §3.5), in this order:

1. the envelope's statement: genuine hardware, our launch measurement and root kind, a TCB at least ours,
   and a policy hash of the ``ca`` role pinned in our configuration
   (:func:`contrast.coordinator.statement.open_envelope`);
2. its signature over the received payload and *our* request id;
3. the payload answers our request digest; only now is the bundle opened with our HPKE key;
4. the leaf is for our TLS key and our policy hash, and chains both to the mesh CA and, through the
   intermediate, to the root; the workload secret is present exactly when the leaf names an ID.

A rejection (:func:`open_rejection`) is believed only after the same statement and signature checks, from a
``verifier`` policy pinned in our configuration, and only if it concerns our request digest. Whether the
bundle's root CA is the one pinned for the pod (if any) is the initializer's last check
(:meth:`contrast.coordinator.pins.CoordinatorPins.check_root`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final, NamedTuple

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.cache import BoundedCache
from contrast.coordinator.manifest_format import PolicyEntry
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.statement import CoordinatorIdentity, open_envelope, transcript
from contrast.crypto.hpke import HpkePrivateKey, HpkePublicKey, Protocol
from contrast.crypto.kdf import derive_workload_secret
from contrast.errors import AuthError, ContrastError, PolicyError, from_code
from contrast.evidence.verifier import EvidenceVerifier, OwnIdentity
from contrast.pki.chain import AnchorVerifiers, ParsedCertificates
from contrast.pki.mesh import MeshAuthority, leaf_claims
from contrast.pki.service import ServiceRole
from contrast.wire.v1 import (
    AttestResult,
    IssuedResult,
    ResultBundle,
    SignedEnvelope,
    Statement,
    Verdict,
    decoder,
    encode,
    encode_deterministic,
)

PURPOSE_ISSUED: Final = "attest-result"
PURPOSE_REJECTED: Final = "attest-rejected"
# Who may sign which answer: a CA replica issues, a verifier replica rejects. Nobody else does either.
SENDER_ROLES: Final = {PURPOSE_ISSUED: ServiceRole.CA, PURPOSE_REJECTED: ServiceRole.VERIFIER}
_DER = serialization.Encoding.DER


class _ChainDer(NamedTuple):
    """The authority certificates of a bundle, as received (the keys of every cache)."""

    intermediate: bytes
    mesh_ca: bytes
    root: bytes


class _Chain(NamedTuple):
    intermediate: x509.Certificate
    mesh_ca: x509.Certificate
    root: x509.Certificate


def issue(
    *,
    verdict: Verdict,
    entry: PolicyEntry,
    mesh: MeshAuthority,
    root_cert: x509.Certificate,
    pod_state_secret: bytes,
    identity: CoordinatorIdentity,
    now: dt.datetime,
) -> AttestResult:
    """Issue, seal and sign the answer to an accepted ``verdict`` (already checked by the caller)."""
    tls_key = serialization.load_der_public_key(verdict.tls_public_key)
    if not isinstance(tls_key, ec.EllipticCurvePublicKey) or not isinstance(tls_key.curve, ec.SECP256R1):
        raise PolicyError("bad_tls_key", "the attested TLS key is not a P-256 key")
    leaf_der = mesh.issue_leaf_der(
        tls_key,
        sans=entry.SANs,
        policy_hash=verdict.policy_hash,
        tee=verdict.tee,
        workload_secret_id=entry.WorkloadSecretID,
        now=now,
    )
    secret = (
        derive_workload_secret(pod_state_secret, entry.WorkloadSecretID) if entry.WorkloadSecretID else b""
    )
    bundle = ResultBundle(
        cert_chain=[leaf_der, mesh.intermediate_der],
        mesh_ca=mesh.mesh_ca_der,
        root_ca=root_cert.public_bytes(_DER),
        workload_secret=secret,
    )
    rid = verdict.request_id.encode()
    sealed = HpkePublicKey(verdict.hpke_public_key).seal(Protocol.WORKLOAD_BUNDLE, rid, encode(bundle))
    payload = IssuedResult(
        request_id=verdict.request_id,
        request_digest=verdict.request_digest,
        generation=verdict.generation,
        sealed=sealed,
    )
    envelope = identity.sign(PURPOSE_ISSUED, rid, encode_deterministic(payload))
    return AttestResult(request_id=verdict.request_id, outcome="issued", envelope=envelope)


def rejection(verdict: Verdict, identity: CoordinatorIdentity) -> AttestResult:
    """A verifier's signed negative verdict, as delivered to the requester."""
    if verdict.accepted:
        raise ValueError("not a negative verdict")
    rid = verdict.request_id
    envelope = identity.sign(PURPOSE_REJECTED, rid.encode(), encode_deterministic(verdict))
    return AttestResult(request_id=rid, outcome="rejected", envelope=envelope)


@dataclass(frozen=True, slots=True)
class Expectation:
    """What an initializer knows about its own request: the yardstick for the answer."""

    request_id: str
    request_digest: bytes
    tls_public_key: ec.EllipticCurvePublicKey
    hpke_key: HpkePrivateKey
    own: OwnIdentity
    pins: CoordinatorPins

    def senders(self, purpose: str) -> frozenset[bytes]:
        """The pinned policy hashes of the one Coordinator role that may send an answer of ``purpose``."""
        return self.pins.of(SENDER_ROLES[purpose])


@dataclass(frozen=True, slots=True)
class OpenedBundle:
    """A checked bundle: certificates parsed and verified, the secret ready to write."""

    leaf: x509.Certificate
    intermediate: x509.Certificate
    mesh_ca: x509.Certificate
    root_ca: x509.Certificate
    workload_secret: bytes
    workload_secret_id: str
    generation: int

    def __repr__(self) -> str:  # never print the secret
        return f"OpenedBundle(generation={self.generation}, leaf_serial={self.leaf.serial_number:x})"


@dataclass(frozen=True, slots=True)
class _TrustedStatement:
    service_key: ec.EllipticCurvePublicKey  # parsed once
    checked_at: dt.datetime


class StatementCache:
    """What an initializer process already verified, so that checking many answers from the same few
    Coordinator replicas (the bench drives hundreds of emulated pods in one process) costs less. It is the one
    verification path of :func:`open_result` and :func:`open_rejection`: without a long-lived cache they use a
    fresh one, which checks everything.

    - statements that passed :func:`verify_peer` for one yardstick (``own``, the purpose's allowed policy
      hashes and the accepted TDX statuses):
      the statement's P-384 verification is paid once per replica, not once per answer; the signature over
      each payload is still checked every time;
    - the mesh CA, intermediate and root certificates, parsed once per exact DER
      (:class:`ParsedCertificates`);
    - one X.509 verifier per trust anchor, keyed by the anchor's exact DER (:class:`AnchorVerifiers`): every
      leaf's signature is still checked under the mesh CA, with the verdict :func:`verify_leaf` would give;
    - (intermediate, root) pairs, by their exact DER, through which a leaf verified as a TLS client chain: a
      later leaf that verifies under the mesh CA -- the same key and subject as that intermediate -- then
      chains to the root too, without checking the intermediate's root signature again.

    Every table is bounded (``size``); statements and links are trusted for ``ttl`` at most, links only while
    the intermediate is valid.
    """

    def __init__(self, *, ttl: dt.timedelta = dt.timedelta(minutes=5), size: int = 64) -> None:
        self._ttl = ttl
        self._statements: BoundedCache[bytes, _TrustedStatement] = BoundedCache(size)
        self._links: BoundedCache[tuple[bytes, bytes], dt.datetime] = BoundedCache(size)
        self.certificates = ParsedCertificates(size=size)
        self.anchors = AnchorVerifiers(size=size)

    def _fresh(self, seen: dt.datetime | None, now: dt.datetime) -> bool:
        return seen is not None and seen <= now < seen + self._ttl

    @staticmethod
    def _key(statement: Statement, exp: Expectation, purpose: str) -> bytes:
        h = hashlib.sha256(encode(statement))
        h.update(encode(exp.own))
        h.update(purpose.encode() + b"\x00")
        for ph in sorted(exp.senders(purpose)):
            h.update(ph)
        for status in sorted(exp.pins.tdx_statuses):
            h.update(status.encode() + b"\x00")
        return h.digest()

    def open(
        self,
        env: SignedEnvelope,
        purpose: str,
        exp: Expectation,
        verifier: EvidenceVerifier,
        now: dt.datetime,
    ) -> bytes:
        """Steps 1-2: the envelope's statement and its signature over the payload; returns the payload."""
        if env.purpose != purpose:
            raise AuthError("wrong_purpose", f"expected a {purpose!r} envelope, got {env.purpose!r}")
        key = self._key(env.statement, exp, purpose)
        trusted = self._statements.get(key)
        if trusted is None or not self._fresh(trusted.checked_at, now):
            payload, _ = open_envelope(
                env,
                purpose=purpose,
                binding=exp.request_id.encode(),
                verifier=verifier,
                own=exp.own,
                allowed_policy_hashes=exp.senders(purpose),
                now=now,
                accepted_tdx_statuses=exp.pins.tdx_statuses,
            )
            parsed = serialization.load_der_public_key(env.statement.service_key)  # open_envelope checked it
            if not isinstance(parsed, ec.EllipticCurvePublicKey):
                raise AuthError("bad_key", "the statement's service key is not an EC key")
            self._statements.put(key, _TrustedStatement(service_key=parsed, checked_at=now))
            return payload
        try:
            trusted.service_key.verify(
                env.signature,
                transcript(purpose, exp.request_id.encode(), env.payload),
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature as e:
            raise AuthError("bad_signature", f"the {purpose} envelope's signature does not verify") from e
        return env.payload

    def verify_chains(self, leaf: x509.Certificate, ders: _ChainDer, certs: _Chain, now: dt.datetime) -> None:
        """Step 4's chains: leaf → mesh CA, and leaf → intermediate → root (``auth.bad_certificate``)."""
        if not _same_authority(certs.mesh_ca, certs.intermediate):
            raise AuthError("bad_certificate", "the mesh CA and the intermediate are not one key and name")
        self.anchors.verify(leaf, anchor=certs.mesh_ca, now=now, anchor_der=ders.mesh_ca)
        link = (ders.intermediate, ders.root)
        if self._fresh(self._links.get(link), now) and now <= certs.intermediate.not_valid_after_utc:
            return  # the leaf's signature just verified under this intermediate's key and name
        self.anchors.verify(
            leaf, anchor=certs.root, intermediates=[certs.intermediate], now=now, anchor_der=ders.root
        )
        self._links.put(link, now)


def _authenticated(
    result: AttestResult,
    purpose: str,
    exp: Expectation,
    verifier: EvidenceVerifier,
    now: dt.datetime,
    cache: StatementCache,
) -> bytes:
    if result.request_id != exp.request_id:
        raise AuthError("wrong_request", "the result names another request id")
    return cache.open(result.envelope, purpose, exp, verifier, now)


def _same_authority(mesh_ca: x509.Certificate, intermediate: x509.Certificate) -> bool:
    return mesh_ca.public_key() == intermediate.public_key() and mesh_ca.subject == intermediate.subject


def open_rejection(
    result: AttestResult,
    exp: Expectation,
    verifier: EvidenceVerifier,
    now: dt.datetime,
    cache: StatementCache | None = None,
) -> ContrastError:
    """The typed error of an authenticated rejection of *our* request (raises ``auth.*`` otherwise)."""
    if result.outcome != "rejected":
        raise ValueError("not a rejection")
    payload = _authenticated(result, PURPOSE_REJECTED, exp, verifier, now, cache or StatementCache())
    try:
        verdict = decoder(Verdict).decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise AuthError("malformed_verdict", "a signed rejection that does not decode") from e
    if verdict.accepted or not hmac.compare_digest(verdict.request_digest, exp.request_digest):
        raise AuthError("wrong_request", "the rejection concerns another request under our id")
    return from_code(verdict.reason or "policy.rejected", verdict.message)


def open_result(
    result: AttestResult,
    exp: Expectation,
    verifier: EvidenceVerifier,
    now: dt.datetime,
    cache: StatementCache | None = None,
) -> OpenedBundle:
    """Authenticate, open and check an issued result (steps 1-4 above); raises ``auth.*`` on any failure."""
    if result.outcome != "issued":
        raise ValueError("not an issued result")
    cache = cache or StatementCache()
    payload = _authenticated(result, PURPOSE_ISSUED, exp, verifier, now, cache)
    try:
        issued = decoder(IssuedResult).decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise AuthError("malformed_result", "a signed result that does not decode") from e
    if issued.request_id != exp.request_id or not hmac.compare_digest(
        issued.request_digest, exp.request_digest
    ):
        raise AuthError("wrong_request", "the result answers another request")
    raw = exp.hpke_key.open(Protocol.WORKLOAD_BUNDLE, exp.request_id.encode(), issued.sealed)
    try:
        bundle = decoder(ResultBundle).decode(raw)
        leaf = x509.load_der_x509_certificate(bundle.cert_chain[0])
        ders = _ChainDer(intermediate=bundle.cert_chain[1], mesh_ca=bundle.mesh_ca, root=bundle.root_ca)
        load = cache.certificates.load
        certs = _Chain(intermediate=load(ders.intermediate), mesh_ca=load(ders.mesh_ca), root=load(ders.root))
        claims = leaf_claims(leaf)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as e:
        raise AuthError("malformed_bundle", "the sealed bundle does not decode") from e
    if leaf.public_key() != exp.tls_public_key:
        raise AuthError("wrong_leaf_key", "the leaf certifies another key than ours")
    if not hmac.compare_digest(claims.policy_hash, exp.own.policy_hash) or claims.tee != exp.own.tee:
        raise AuthError("wrong_leaf_claims", "the leaf names another workload than us")
    cache.verify_chains(leaf, ders, certs, now)
    want_secret = bool(claims.workload_secret_id)
    if want_secret != bool(bundle.workload_secret) or (want_secret and len(bundle.workload_secret) != 64):
        raise AuthError("bad_workload_secret", "the workload secret does not match the leaf's secret id")
    return OpenedBundle(
        leaf=leaf,
        intermediate=certs.intermediate,
        mesh_ca=certs.mesh_ca,
        root_ca=certs.root,
        workload_secret=bundle.workload_secret,
        workload_secret_id=claims.workload_secret_id,
        generation=issued.generation,
    )
