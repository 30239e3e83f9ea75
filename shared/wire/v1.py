"""Version 1 of the wire schema: every msgspec Struct sent over NATS, in one module.

Encoding is **MessagePack** (msgspec): compact, binary-safe for keys, evidence and certificates without
base64, and decoded by msgspec at ~0.5 M msgs/s. Every message type subclasses :class:`WireStruct` (declare
``frozen=True, kw_only=True`` again on each subclass: msgspec does not inherit ``kw_only``, and mypy needs
``frozen`` restated): frozen, keyword-only, and rejecting unknown
fields; :func:`decoder` returns a cached strict decoder, which also rejects wrong types and trailing bytes.
Size bounds are checked by the runtime *before* decoding (see ``contrast.runtime.endpoint``);
bytes and list fields that can be large carry ``Meta(max_length=...)`` as a second bound.

Signed documents (verdicts, history entries) must be encoded with :func:`encode_deterministic` and their
signature checked over the *received* bytes before they are decoded.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from contrast.evidence.binding import Label, report_data
from contrast.evidence.result import Claims
from contrast.evidence.verifier import Evidence

SCHEMA_VERSION: Final = 1

# A Struct's ``code`` is ``family.reason`` as defined in ``contrast.errors``; bounded so that a hostile peer
# cannot make us log or store megabytes of "error code".
ErrorCode = Annotated[
    str, msgspec.Meta(min_length=3, max_length=128, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
]
ShortText = Annotated[str, msgspec.Meta(max_length=1024)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class WireStruct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every message on the wire: immutable, keyword-only, unknown fields rejected."""


S = TypeVar("S", bound=msgspec.Struct)

_ENCODER: Final = msgspec.msgpack.Encoder()
_DETERMINISTIC: Final = msgspec.msgpack.Encoder(order="deterministic")


def encode(message: msgspec.Struct) -> bytes:
    """Encode a wire message as MessagePack."""
    return _ENCODER.encode(message)


def encode_deterministic(message: msgspec.Struct) -> bytes:
    """Encode with sorted map keys, so that the same value always gives the same bytes (for signing)."""
    return _DETERMINISTIC.encode(message)


@functools.cache
def _decoder(message_type: type[Any]) -> msgspec.msgpack.Decoder[Any]:
    config = getattr(message_type, "__struct_config__", None)
    if config is None or not config.forbid_unknown_fields:
        raise TypeError(f"{message_type.__name__} is not a strict wire Struct (forbid_unknown_fields)")
    return msgspec.msgpack.Decoder(message_type)


def decoder(message_type: type[S]) -> msgspec.msgpack.Decoder[S]:
    """Return the cached strict MessagePack decoder for ``message_type``.

    ``decoder(T).decode(data)`` raises ``msgspec.ValidationError`` (wrong type, unknown field, bound exceeded)
    or ``msgspec.DecodeError`` (malformed or trailing bytes). The runtime maps both to ``request.decode``.
    """
    return _decoder(message_type)


# --- runtime (errors, readiness) ---


class ErrorReply(WireStruct, frozen=True, kw_only=True):
    """A typed error reply. It carries a stable code and a human message, never a traceback or a ``repr``.

    ``correlation_id`` lets an operator find the replica's log line for an ``internal.*`` error.
    """

    code: ErrorCode
    message: ShortText
    correlation_id: Annotated[str, msgspec.Meta(max_length=64)] = ""


class ReadinessCheck(WireStruct, frozen=True, kw_only=True):
    """One condition of readiness ("can do the job"): NATS connected, subscribed, keys loaded, ..."""

    name: Name
    ok: bool
    detail: ShortText = ""


class ReadinessReply(WireStruct, frozen=True, kw_only=True):
    """Answer of a replica's readiness endpoint (``contrast.v1.health.<service>``)."""

    service: Name
    replica: Name
    version: Name
    ready: bool
    checks: Annotated[list[ReadinessCheck], msgspec.Meta(max_length=64)] = []


class ReadinessRequest(WireStruct, frozen=True, kw_only=True):
    """Empty request to the readiness endpoint."""


# --- shared field types ---

# A request id is one NATS subject token (it names the result subject) and the JetStream dedup id.
RequestId = Annotated[str, msgspec.Meta(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Nonce32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Hash32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
P256Spki = Annotated[bytes, msgspec.Meta(min_length=91, max_length=91)]
HpkePublic = Annotated[bytes, msgspec.Meta(min_length=1216, max_length=1216)]
AttestCertDer = Annotated[bytes, msgspec.Meta(min_length=1, max_length=16 * 1024)]
SignatureDer = Annotated[bytes, msgspec.Meta(min_length=8, max_length=80)]
Outcome = Literal["issued", "rejected"]


# --- Coordinator statements (docs/protocol.md §1) ---


class Statement(WireStruct, frozen=True, kw_only=True):
    """Evidence that genuine hardware running attested code holds ``service_key`` and ``hpke_key``."""

    evidence: Evidence
    nonce: Nonce32
    service_key: P256Spki
    hpke_key: HpkePublic

    def expected_report_data(self) -> bytes:
        return report_data(Label.COORDINATOR_STATEMENT, self.nonce, self.service_key, self.hpke_key)


class SignedEnvelope(WireStruct, frozen=True, kw_only=True):
    """A payload signed by a Coordinator replica's service key, with that replica's statement
    (``contrast.coordinator.statement``)."""

    purpose: Annotated[str, msgspec.Meta(max_length=64)]
    payload: Annotated[bytes, msgspec.Meta(max_length=256 * 1024)]
    signature: Annotated[bytes, msgspec.Meta(max_length=80)]
    statement: Statement


# --- attestation flow ---


# A literal NATS subject of two to four tokens: no wildcard, no space, nothing that addresses many inboxes.
_LITERAL_SUBJECT: Final = r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){1,3}$"
ReplySubject = Annotated[str, msgspec.Meta(min_length=3, max_length=160, pattern=_LITERAL_SUBJECT)]


class NonceRequest(WireStruct, frozen=True, kw_only=True):
    """``contrast.v1.attest.nonce.<source>``, stored in stream ``NONCE_<source>``: ask for a fresh nonce,
    answered with a :class:`NonceReply` on ``reply`` (docs/protocol.md §3.1).

    A stored message loses the publisher's reply subject, so the request names its inbox itself. A verifier
    answers only on an inbox of the source the subject names (``_INBOX.<source>.<token>``): nobody can have
    answers sent to another's inbox or onto any other subject.
    """

    reply: ReplySubject


class NonceReply(WireStruct, frozen=True, kw_only=True):
    nonce: Nonce32


class AttestRequest(WireStruct, frozen=True, kw_only=True):
    """Published to stream ``ATTEST`` with ``Nats-Msg-Id = request_id`` (docs/protocol.md §3.2).

    Nothing here is trusted: the keys count only because REPORT_DATA binds them, and the identity comes only
    from the verified evidence.
    """

    request_id: RequestId
    nonce: Nonce32
    evidence: Evidence
    tls_public_key: P256Spki
    hpke_public_key: HpkePublic


class Verdict(WireStruct, frozen=True, kw_only=True):
    """A verifier's decision on one request; signed as deterministic MessagePack (never decoded unsigned).

    ``request_digest`` is SHA-256 of the request as the verifier decoded it, so a requester can tell a verdict
    on *its* request from one on a replayed or mutated copy under the same request id.
    """

    request_id: RequestId
    request_digest: Hash32
    accepted: bool
    reason: Annotated[str, msgspec.Meta(max_length=128)] = ""  # an error code when rejected
    message: ShortText = ""
    tee: Literal["snp", "tdx"]
    policy_hash: Annotated[bytes, msgspec.Meta(max_length=32)] = b""  # from verified evidence only
    tls_public_key: P256Spki
    hpke_public_key: HpkePublic
    generation: Annotated[int, msgspec.Meta(ge=0)]
    transition_hash: Annotated[bytes, msgspec.Meta(max_length=32)] = b""
    issued_at_ms: Annotated[int, msgspec.Meta(ge=0)]
    verifier: Name
    claims: Claims | None = None


class SignedVerdict(WireStruct, frozen=True, kw_only=True):
    """Stream ``VERDICTS``: a verdict signed by a verifier's service key, with the root-issued certificate
    of that key (role ``verifier``). The signature covers ``payload`` as received
    (``contrast.attestation.verdict``).
    """

    payload: Annotated[bytes, msgspec.Meta(max_length=48 * 1024)]
    signature: SignatureDer
    service_cert: AttestCertDer


class IssuedResult(WireStruct, frozen=True, kw_only=True):
    """Payload of a CA's signed result envelope: the HPKE-sealed :class:`ResultBundle` and what it answers."""

    request_id: RequestId
    request_digest: Hash32
    generation: Annotated[int, msgspec.Meta(ge=1)]
    sealed: Annotated[bytes, msgspec.Meta(max_length=64 * 1024)]


class ResultBundle(WireStruct, frozen=True, kw_only=True):
    """The plaintext sealed to the initializer's attested HPKE key. Never on the bus unsealed."""

    cert_chain: Annotated[list[AttestCertDer], msgspec.Meta(min_length=2, max_length=2)]  # leaf, intermediate
    mesh_ca: AttestCertDer
    root_ca: AttestCertDer
    workload_secret: Annotated[bytes, msgspec.Meta(max_length=64)] = b""  # empty: no WorkloadSecretID


class AttestResult(WireStruct, frozen=True, kw_only=True):
    """On ``contrast.v1.attest.result.<request_id>`` and in KV ``results``: a Coordinator replica's answer.

    ``issued``: a CA envelope (purpose ``attest-result``) over an :class:`IssuedResult`. ``rejected``: a
    verifier envelope (purpose ``attest-rejected``) over a negative :class:`Verdict`. Either way the envelope
    carries the signer's statement, which the initializer checks before it believes anything
    (docs/protocol.md §1).
    """

    request_id: RequestId
    outcome: Outcome
    envelope: SignedEnvelope


# --- user API (manifest service) ---

# The manifest service's replies to the owners' CLI (docs/protocol.md §5, contrast.coordinator.user_protocol).
# Policies and manifests are bounded by contrast.coordinator.manifest_format (1 MiB each); the endpoint bounds
# the whole request before decoding.
Nonce = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Digest = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
OptionalDigest = Annotated[bytes, msgspec.Meta(max_length=32)]  # empty or 32 bytes (checked by the handler)
CertDer = Annotated[bytes, msgspec.Meta(min_length=1, max_length=16 * 1024)]
DocumentBytes = Annotated[bytes, msgspec.Meta(max_length=1 << 20)]
MAX_POLICY_DOCUMENTS: Final = 256
MAX_HISTORY_RECORDS: Final = 4096


class AttestedReply(WireStruct, frozen=True, kw_only=True):
    """A manifest-service reply that a relying party depends on, with the replica's fresh evidence.

    ``evidence`` has ``REPORT_DATA = report_data(Label.USER_API, client nonce, transcript hash)``, where the
    transcript hash covers ``transition_hash``, the hashes of ``root_ca`` and ``mesh_ca`` and the ``payload``
    bytes (``contrast.coordinator.user_protocol.user_api_transcript``). The payload is decoded only after the
    evidence and the binding were checked.
    """

    payload: Annotated[bytes, msgspec.Meta(max_length=48 * 1024 * 1024)]
    transition_hash: Digest
    root_ca: CertDer
    mesh_ca: CertDer
    evidence: Evidence


class SetManifestRequest(WireStruct, frozen=True, kw_only=True):
    """``contrast set``: the manifest bytes exactly as the owner wrote them, and one document per policy."""

    nonce: Nonce
    manifest: DocumentBytes
    policies: Annotated[list[DocumentBytes], msgspec.Meta(max_length=MAX_POLICY_DOCUMENTS)] = []
    signature: Annotated[bytes, msgspec.Meta(max_length=256)] = b""  # workload owner, DER ECDSA P-384
    expected_previous: OptionalDigest = b""  # --atomic: the transition the update was prepared against


class SetManifestResult(WireStruct, frozen=True, kw_only=True):
    """Payload of the ``set`` reply. ``seed_shares`` is ``seed-shares.json``, on the first set only."""

    generation: int
    transition_hash: Digest
    manifest_hash: Digest
    seed_shares: Annotated[bytes, msgspec.Meta(max_length=1 << 20)] = b""


class GetManifestRequest(WireStruct, frozen=True, kw_only=True):
    nonce: Nonce


class HistoryExport(WireStruct, frozen=True, kw_only=True):
    """Payload of the ``get`` reply: the whole history, content-addressed records as stored."""

    generation: int
    latest_pointer: Annotated[bytes, msgspec.Meta(max_length=256)]  # the signed ``latest`` record
    history_public_key: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]  # raw Ed25519
    intermediate: CertDer  # root-signed intermediate of the current mesh CA
    transitions: Annotated[
        list[Annotated[bytes, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=MAX_HISTORY_RECORDS)
    ]
    manifests: Annotated[list[DocumentBytes], msgspec.Meta(max_length=MAX_HISTORY_RECORDS)]
    policies: Annotated[list[DocumentBytes], msgspec.Meta(max_length=MAX_HISTORY_RECORDS)]


class StatusRequest(WireStruct, frozen=True, kw_only=True):
    """``contrast.v1.user.status``: the answering replica's state, attested (``contrast set`` asks before a
    first set, so that it sends its manifest only to a Coordinator that its manifest accepts)."""

    nonce: Nonce


class CoordinatorStatus(WireStruct, frozen=True, kw_only=True):
    """Payload of the status reply: one replica's state and, when ready, its generation (else 0)."""

    replica: Name
    state: Literal["uninitialized", "ready", "stale"]
    generation: Annotated[int, msgspec.Meta(ge=0)]


class AttestedStatus(WireStruct, frozen=True, kw_only=True):
    """The status reply: ``payload`` is a :class:`CoordinatorStatus` encoded deterministically, and
    ``REPORT_DATA = report_data(Label.USER_STATUS, client nonce, SHA-256(payload))``
    (``contrast.coordinator.user_protocol.status_report_data``); the payload is decoded only after the
    evidence and the binding were checked."""

    payload: Annotated[bytes, msgspec.Meta(max_length=512)]
    evidence: Evidence


class RecoveryChallengeRequest(WireStruct, frozen=True, kw_only=True):
    """Step 1 of ``contrast recover`` (``contrast.v1.user.recover``, any stale replica answers)."""

    nonce: Nonce
    force: bool = False


class RecoveryChallenge(WireStruct, frozen=True, kw_only=True):
    """A stale replica's key to seal the seed to and the stored head it will adopt, with evidence for both.

    ``head_pointer`` is the stored ``latest`` record and ``head_transitions`` the transition records from the
    first to the head, as the replica read them (it cannot check the pointer's signature without the seed).
    ``REPORT_DATA = report_data(Label.RECOVERY, client nonce, hpke_key, recovery_nonce, head transcript)``
    (``contrast.coordinator.user_protocol.recovery_report_data``). The owner authenticates the head with the
    seed and checks it against the trusted state before sealing; the replica adopts that head only. Step 2
    goes to ``contrast.v1.user.recover.<replica>`` so that it reaches the replica that holds the key.
    """

    replica: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
    hpke_key: Annotated[bytes, msgspec.Meta(max_length=2048)]
    recovery_nonce: Nonce
    head_pointer: Annotated[bytes, msgspec.Meta(min_length=1, max_length=256)]
    head_transitions: Annotated[
        list[Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]],
        msgspec.Meta(min_length=1, max_length=MAX_HISTORY_RECORDS),
    ]
    evidence: Evidence


class RecoverRequest(WireStruct, frozen=True, kw_only=True):
    """Step 2: seed ‖ salt HPKE-sealed to the challenge key, and the seed-share owner's RSA-PSS signature.

    ``head_generation`` and ``head_transition`` name the attested head the owner checked; the HPKE context
    binds them too (``contrast.coordinator.user_protocol.recovery_context``), and the replica adopts that head
    only.
    """

    nonce: Nonce  # the client's nonce for the attested reply
    recovery_nonce: Nonce
    head_generation: Annotated[int, msgspec.Meta(ge=1)]
    head_transition: Digest
    sealed_secret: Annotated[bytes, msgspec.Meta(max_length=4096)]
    signature: Annotated[bytes, msgspec.Meta(max_length=2048)]
    force: bool = False


class RecoverResult(WireStruct, frozen=True, kw_only=True):
    """Payload of the recover reply."""

    generation: int
    transition_hash: Digest


class ManifestUpdated(WireStruct, frozen=True, kw_only=True):
    """Event on ``contrast.v1.events.manifest.updated``: a replica committed a new manifest (a hint only:
    listeners re-read the authenticated history, they never trust the event's fields)."""

    replica: Name
    generation: int
    transition_hash: Digest
    manifest_hash: Digest


class ManifestReplicaState(WireStruct, frozen=True, kw_only=True):
    """Event on ``contrast.v1.events.state``: a manifest replica changed state (``uninitialized``,
    ``ready``, ``stale``) or found its store tampered (``fault`` is the ``store.*`` code)."""

    service: Name
    replica: Name
    state: Annotated[str, msgspec.Meta(max_length=32)]
    generation: int
    fault: Annotated[str, msgspec.Meta(max_length=128)] = ""


# --- coordinator join ---


class JoinNonceRequest(WireStruct, frozen=True, kw_only=True):
    """Ask a ready manifest replica for a join nonce (``contrast.v1.coordinator.join.nonce``)."""


class JoinNonceReply(WireStruct, frozen=True, kw_only=True):
    nonce: Nonce


class JoinRequest(WireStruct, frozen=True, kw_only=True):
    """A replica's statement, made with a join nonce, asking for the keys of ``role``."""

    role: Annotated[str, msgspec.Meta(max_length=16)]
    replica: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    statement: Statement
    client_nonce: Nonce


class JoinGrant(WireStruct, frozen=True, kw_only=True):
    """The signed payload of a join reply: public parts in the clear, the role's secrets sealed.

    ``sealed_keys`` is ``rolekeys.seal_role_keys`` to the statement's HPKE key with context
    ``join nonce ‖ client nonce``; the opened bundle must repeat the public parts exactly.
    """

    role: Annotated[str, msgspec.Meta(max_length=16)]
    generation: int
    transition_hash: Digest
    history_public_key: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    root_cert: CertDer
    intermediate: CertDer
    mesh_ca: CertDer
    service_cert: CertDer
    sealed_keys: Annotated[bytes, msgspec.Meta(max_length=256 * 1024)]


class JoinReply(WireStruct, frozen=True, kw_only=True):
    """The responder's :class:`JoinGrant`, signed over ``client nonce ‖ join nonce`` with its statement."""

    envelope: SignedEnvelope


# --- events ---


class AttestationEvent(WireStruct, frozen=True, kw_only=True):
    """``contrast.v1.events.attestation``: one verified, rejected or issued attestation (audit, metrics).

    Public facts only (no keys, no secrets); an event is a hint for operators, not an authority.
    """

    request_id: RequestId
    stage: Literal["verified", "rejected", "issued"]
    service: Name
    replica: Name
    tee: Literal["snp", "tdx"]
    policy_hash: Annotated[bytes, msgspec.Meta(max_length=32)] = b""
    reason: Annotated[str, msgspec.Meta(max_length=128)] = ""
    generation: Annotated[int, msgspec.Meta(ge=0)] = 0
    at_ms: Annotated[int, msgspec.Meta(ge=0)]


class DeadLetter(WireStruct, frozen=True, kw_only=True):
    """Event on ``contrast.v1.events.deadletter``: a stream message was given up on (terminated).

    ``payload`` is the original message (bounded by the stream's max message size) so that an operator can
    replay it after a fix; it may contain only what the stream held anyway. A message that does not even
    decode (``request.decode``, ``request.too_large``) keeps only its first KiB: it cannot be replayed, and a
    flood of garbage must not fill the audit log.
    """

    stream: Name
    consumer: Name
    stream_seq: int
    subject: Annotated[str, msgspec.Meta(max_length=256)]
    msg_id: Annotated[str, msgspec.Meta(max_length=256)] = ""
    deliveries: int
    code: ErrorCode
    message: ShortText
    payload: bytes = b""
