"""The initializer's side of workload attestation, as a library (docs/protocol.md §3).

:class:`Initializer.attest` runs the whole flow with retries until a deadline; each attempt
(:meth:`Initializer.attempt`):

1. makes a fresh P-256 TLS key and a fresh HPKE key;
2. asks for a nonce (:func:`ask_nonce`): a request naming a fresh reply inbox of its own, on its source's
   subject (its NATS user, or the default), where the source's stream ``NONCE_<source>`` keeps it until a
   verifier pulls it; the answer comes on that inbox, or the request is asked again after ``nonce_timeout``;
3. gets evidence with REPORT_DATA = SHA-512(mesh-cert label ‖ nonce ‖ TLS SPKI ‖ HPKE key);
4. subscribes to ``contrast.v1.attest.result.<request_id>``, where the server republishes the KV ``results``
   entry of the request once it is stored (and only then), then publishes the request to stream ``ATTEST``
   with ``Nats-Msg-Id = request_id`` (a re-publish after a lost PubAck is deduplicated);
5. waits for the result on the subject, and polls KV ``results`` as a fallback (a reconnect loses core
   messages, and so does a stream leader that dies between storing and republishing);
6. believes only an answer that authenticates (:mod:`contrast.attestation.bundle`: a bundle from a pinned
   ``ca`` policy, a rejection from a pinned ``verifier`` policy): a forged answer is ignored and the wait
   goes on; an authenticated rejection of *this* request ends the attempt, and so does an authentic bundle
   from a Coordinator whose root CA is not the pinned one (``policy.coordinator_root_mismatch``). The
   answering replica's statement carries its collateral; with a ``collateral`` provider, a part that is
   missing or past its validity is fetched (shared cache, then the vendor) before the statement is checked.

Between attempts it backs off (jittered, capped); at the deadline it raises the last reason.

One :class:`Initializer` can run many attestations concurrently (the bench drives hundreds of emulated
initializers in one process): they share the evidence verifier's chain cache and the statement cache.

Tracing: one trace per attestation. Its root span ``attest`` (TEE, own policy-hash prefix, final verdict
and reason) holds, per attempt, the ``PRODUCER`` span of the nonce request (the verifier's span continues it),
the ``PRODUCER`` span of the publish to ``ATTEST``, whose
``traceparent`` the verifier's and then the CA's span continue, and the ``result`` span of the wait for the
answer (verdict and reason code).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.client import NO_RESPONDERS_STATUS, Client
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue as NatsKv
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from contrast import subjects
from contrast.attestation.bundle import Expectation, OpenedBundle, StatementCache, open_rejection, open_result
from contrast.collateral.provider import CollateralProvider
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.statement import spki
from contrast.crypto.hpke import HpkePrivateKey
from contrast.errors import ContrastError, PolicyError, StateError
from contrast.evidence.binding import Label, report_data
from contrast.evidence.verifier import Evidence, EvidenceVerifier, OwnIdentity
from contrast.pki.service import ServiceRole
from contrast.platform.base import Platform
from contrast.runtime.connection import inbox_prefix
from contrast.runtime.logs import get_logger
from contrast.runtime.pull import STATUS_HEADER
from contrast.runtime.tracing import ATTR_REQUEST_ID, annotate_attestation, current_tracer, inject
from contrast.wire.v1 import AttestRequest, AttestResult, NonceReply, NonceRequest, decoder, encode

_log = get_logger(__name__)
MSG_ID_HEADER = "Nats-Msg-Id"
_PUBLISH_ATTRIBUTES = {"messaging.system": "nats", "messaging.operation.type": "send"}


class _Refusal(msgspec.Struct):
    """The server's answer to a publish it did not store (JSON; a stored one's PubAck has no ``error``)."""

    error: dict[str, object]


_REFUSED_BACKOFF = (0.01, 0.2)  # seconds: first and largest pause before asking again after a refusal
# Seconds without an answer before the same request is sent again, on the same inbox (doubling). In a cluster
# the node the answer is published on learns of our fresh inbox asynchronously, over a route that a flood can
# hold up for seconds; an answer published before that is dropped there. An answer takes milliseconds.
NONCE_RESEND_AFTER = 0.25


async def ask_nonce(
    nc: Client,
    source: str,
    *,
    timeout: float,
    tracer: Tracer | None = None,
    resend_after: float = NONCE_RESEND_AFTER,
) -> bytes:
    """A fresh nonce for an initializer of ``source`` (the NATS user ``nc`` connects as).

    Publishes a :class:`NonceRequest` that names a fresh inbox of the source on its nonce subject, where the
    source's stream ``NONCE_<source>`` keeps it for a verifier, and waits for the :class:`NonceReply` on that
    inbox. The stored message loses the publish's reply subject, which is that same inbox: there the server
    acknowledges the publish, or says that it refused it because the source's stream is full; then it is
    asked again after a short, growing, jittered pause (a burst of one namespace's pods gets in as the queue
    drains, instead of waiting out the timeout). Without any answer after ``resend_after`` (then twice that,
    and so on), the request is sent again on the same inbox: an answer lost on the way (published on a node
    that did not know the inbox yet) is replaced by the next one. Raises ``state.unavailable`` if no nonce
    comes within ``timeout`` (dropped over the source's ration, lost, or still refused) or nothing serves
    the subject.
    """
    tracer = tracer or current_tracer()
    # An inbox of the source's own (whatever inbox prefix ``nc`` was given): the only kind a verifier answers.
    inbox = f"{inbox_prefix(source)}.{secrets.token_urlsafe(16)}"
    answers: asyncio.Queue[Msg] = asyncio.Queue(maxsize=16)

    async def on_answer(msg: Msg) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # only verifiers and the server publish here
            answers.put_nowait(msg)

    subject = subjects.attest_nonce(source)
    # Subscribed before the request leaves: the subscription reaches the server first on this connection.
    sub = await nc.subscribe(inbox, cb=on_answer)
    try:
        with tracer.start_as_current_span(
            subjects.ATTEST_NONCE, kind=SpanKind.PRODUCER, attributes=_PUBLISH_ATTRIBUTES
        ) as span:
            request, headers = encode(NonceRequest(reply=inbox)), inject({})
            refusals = resends = 0
            wait = resend_after
            try:
                async with asyncio.timeout(timeout):
                    await nc.publish(subject, request, reply=inbox, headers=headers)
                    while True:
                        try:
                            async with asyncio.timeout(wait):
                                msg = await answers.get()
                        except TimeoutError:
                            resends, wait = resends + 1, 2 * wait
                            await nc.publish(subject, request, reply=inbox, headers=headers)
                            continue
                        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS_STATUS:
                            span.set_status(Status(StatusCode.ERROR, "no responders"))
                            raise StateError(
                                "unavailable",
                                f"nothing stores requests on {subject}: source {source!r} has no nonce "
                                "stream (is it among the verifiers' CONTRAST_SOURCES?)",
                            )
                        with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                            return decoder(NonceReply).decode(msg.data).nonce
                        with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                            msgspec.json.decode(msg.data, type=_Refusal)
                            refusals += 1
                            first, cap = _REFUSED_BACKOFF
                            await asyncio.sleep(random.uniform(0, min(cap, first * 2**refusals)))
                            await nc.publish(subject, request, reply=inbox, headers=headers)
            except TimeoutError:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                raise StateError(
                    "unavailable",
                    f"no nonce within {timeout} s ({refusals} refused by a full queue, {resends} sent again)",
                ) from None
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


@dataclass(frozen=True, kw_only=True)
class InitializerConfig:
    pins: CoordinatorPins  # from the pod's measured environment (contrast.coordinator.pins)
    deadline: float = 300.0  # seconds for the whole flow, retries included
    attempt_timeout: float = 15.0  # seconds to wait for one request's answer
    request_timeout: float = 5.0  # publish
    # A nonce answer takes milliseconds; a request lost (refused by its source's full nonce stream, dropped
    # over the source's ration, a node froze) is asked again after this, not after
    # request_timeout: it is cheap and rationed per source.
    nonce_timeout: float = 1.0
    nonce_resend: float = NONCE_RESEND_AFTER  # the same request again, on the same inbox, without an answer
    # KV fallback: the stored result is read if it has not come on its subject after first_poll (a stored
    # answer republished before the subscription reached the node it was stored on is lost: docs/protocol.md
    # §3), then every poll_interval.
    first_poll: float = 0.5
    poll_interval: float = 2.0
    backoff_base: float = 0.2
    backoff_cap: float = 5.0

    def __post_init__(self) -> None:
        for role in (ServiceRole.CA, ServiceRole.VERIFIER):
            if not self.pins.of(role):
                raise ValueError(
                    f"no {role.value} policy hash is pinned: Coordinator answers cannot be authenticated"
                )
        timeouts = (self.deadline, self.attempt_timeout, self.request_timeout, self.nonce_timeout)
        if min(*timeouts, self.poll_interval, self.first_poll, self.nonce_resend) <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True)
class Credentials:
    """What a successful attestation yields. Holds the TLS private key: never log it."""

    tls_key: ec.EllipticCurvePrivateKey
    bundle: OpenedBundle
    request_id: str
    attempts: int

    def __repr__(self) -> str:
        return f"Credentials(request_id={self.request_id}, attempts={self.attempts})"


class AttestationFailed(Exception):
    """The deadline passed without a certificate; ``last`` is the last reason."""

    def __init__(self, last: ContrastError, attempts: int) -> None:
        super().__init__(f"no certificate after {attempts} attempt(s): {last}")
        self.last = last
        self.attempts = attempts


@dataclass
class Initializer:
    nc: Client
    platform: Platform
    config: InitializerConfig
    verifier: EvidenceVerifier = field(default_factory=EvidenceVerifier)
    statements: StatementCache = field(default_factory=StatementCache)
    clock: Callable[[], float] = time.time
    tracer: Tracer | None = None  # default: the current tracer (the initializer process's own)
    collateral: CollateralProvider | None = None
    source: str = subjects.DEFAULT_SOURCE  # the NATS user this initializer connects as (its namespace's)
    _own: OwnIdentity | None = None
    _results: NatsKv | None = None
    _js: JetStreamContext | None = None

    @property
    def _tracer(self) -> Tracer:
        return self.tracer or current_tracer()

    async def attest(self) -> Credentials:
        with self._tracer.start_as_current_span("attest", kind=SpanKind.INTERNAL) as span:
            annotate_attestation(span, tee=self.platform.tee)
            try:
                creds = await self._attest()
            except AttestationFailed as e:
                rejected = e.last.code.startswith(("evidence.", "policy."))
                annotate_attestation(span, verdict="rejected" if rejected else "failed", reason=e.last.code)
                span.set_status(Status(StatusCode.ERROR, e.last.code))
                raise
            annotate_attestation(span, verdict="issued", request_id=creds.request_id)
            span.set_attribute("contrast.attempts", creds.attempts)
            return creds

    async def _attest(self) -> Credentials:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.deadline
        attempts = 0
        last: ContrastError = StateError("unavailable", "no attempt finished")
        while True:
            attempts += 1
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(max(0.05, remaining)):
                    tls_key, bundle, rid = await self.attempt()
                return Credentials(tls_key=tls_key, bundle=bundle, request_id=rid, attempts=attempts)
            except ContrastError as e:
                last = e
                _log.info("attestation_attempt_failed", code=e.code, attempt=attempts)
            except TimeoutError:
                last = StateError("timeout", "no authenticated answer before the deadline")
            except Exception as e:  # NATS trouble (reconnecting, no responders): retry
                last = StateError("unavailable", f"{type(e).__name__} talking to the Coordinator")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AttestationFailed(last, attempts)
            delay = random.uniform(0, min(self.config.backoff_cap, self.config.backoff_base * 2**attempts))
            await asyncio.sleep(min(remaining, delay))

    def _own_identity(self, evidence: Evidence, now: dt.datetime) -> OwnIdentity:
        """What our own evidence proves about us: the yardstick for the Coordinator's statement (once)."""
        if self._own is None:
            root = self.platform.emulator_root
            claims = self.verifier.authenticate(evidence, emulator_root=root, now=now)
            self._own = OwnIdentity.from_claims(claims, emulator_root=root)
        return self._own

    async def attempt(self) -> tuple[ec.EllipticCurvePrivateKey, OpenedBundle, str]:
        """One request: returns (TLS key, checked bundle, request id) or raises the reason."""
        cfg = self.config
        tls_key = ec.generate_private_key(ec.SECP256R1())
        tls_public = tls_key.public_key()
        hpke_key = HpkePrivateKey.generate()
        tls_spki = spki(tls_public)
        hpke_pub = hpke_key.public_bytes()
        tracer = self._tracer
        nonce = await ask_nonce(
            self.nc, self.source, timeout=cfg.nonce_timeout, tracer=tracer, resend_after=cfg.nonce_resend
        )
        evidence = await self.platform.evidence(report_data(Label.MESH_CERT, nonce, tls_spki, hpke_pub))
        own = self._own_identity(evidence, dt.datetime.fromtimestamp(self.clock(), dt.UTC))
        annotate_attestation(policy_hash=own.policy_hash)  # on the attestation's root span
        rid = secrets.token_urlsafe(24)
        req = AttestRequest(
            request_id=rid, nonce=nonce, evidence=evidence, tls_public_key=tls_spki, hpke_public_key=hpke_pub
        )
        data = encode(req)
        exp = Expectation(
            request_id=rid,
            request_digest=hashlib.sha256(data).digest(),
            tls_public_key=tls_public,
            hpke_key=hpke_key,
            own=own,
            pins=cfg.pins,
        )
        inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)

        async def on_result(msg: Msg) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a flood of forgeries must not grow memory
                inbox.put_nowait(msg.data)

        sub = await self.nc.subscribe(subjects.attest_result(rid), cb=on_result)
        try:
            with tracer.start_as_current_span(
                subjects.ATTEST_REQUESTED,
                kind=SpanKind.PRODUCER,
                attributes={**_PUBLISH_ATTRIBUTES, ATTR_REQUEST_ID: rid},
            ):
                await self._publish(data, rid)
            with tracer.start_as_current_span("result", kind=SpanKind.INTERNAL) as span:
                annotate_attestation(span, request_id=rid)
                async with asyncio.timeout(cfg.attempt_timeout):
                    return tls_key, await self._await_answer(inbox, exp), rid
        except TimeoutError:
            raise StateError("timeout", f"no authenticated answer within {cfg.attempt_timeout} s") from None
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _publish(self, data: bytes, rid: str) -> None:
        if self._js is None:
            self._js = self.nc.jetstream()
        # The trace context travels with the request: the verifier's span continues this trace.
        headers = inject({MSG_ID_HEADER: rid})
        for attempt in range(3):
            try:
                await self._js.publish(
                    subjects.attest_requested(self.source),
                    data,
                    timeout=self.config.request_timeout,
                    headers=headers,
                )
                return
            except Exception:
                # Same msg id: if the first publish was stored after all, the server deduplicates this one.
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _await_answer(self, inbox: asyncio.Queue[bytes], exp: Expectation) -> OpenedBundle:
        wait = min(self.config.first_poll, self.config.poll_interval)
        while True:
            try:
                async with asyncio.timeout(wait):  # unlike wait_for, no task per wait
                    raw = await inbox.get()
            except TimeoutError:
                wait = self.config.poll_interval
                stored = await self._stored(exp.request_id)
                if stored is None:
                    continue
                raw = stored
            outcome = await self._judge(raw, exp)
            if isinstance(outcome, OpenedBundle):
                annotate_attestation(verdict="issued")
                return outcome
            if outcome is not None:
                annotate_attestation(verdict="rejected", reason=outcome.code)
                raise outcome

    async def _stored(self, rid: str) -> bytes | None:
        try:
            if self._results is None:
                self._results = await self.nc.jetstream().key_value(subjects.RESULTS.bucket)
            entry = await self._results.get(rid)
        except Exception:  # absent, or the bus is down: keep waiting for the subject
            return None
        return entry.value

    async def _judge(self, raw: bytes, exp: Expectation) -> OpenedBundle | ContrastError | None:
        """An opened bundle, the error of an authenticated rejection or of a bundle from a Coordinator with
        another root than the pinned one, or None for anything not to believe."""
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        try:
            result = decoder(AttestResult).decode(raw)
            if self.collateral is not None:
                result = await self._with_collateral(result, exp.own, now)
            if result.outcome == "issued":
                bundle = open_result(result, exp, self.verifier, now, self.statements)
                try:
                    self.config.pins.check_root(bundle.root_ca.public_bytes(serialization.Encoding.DER))
                except PolicyError as e:
                    return e  # authentic, but from another Coordinator: nothing of it is written
                return bundle
            return open_rejection(result, exp, self.verifier, now, self.statements)
        except (msgspec.ValidationError, msgspec.DecodeError):
            _log.warning("result_ignored", request_id=exp.request_id, code="request.decode")
        except ContrastError as e:
            _log.warning("result_ignored", request_id=exp.request_id, code=e.code)
        return None

    async def _with_collateral(
        self, result: AttestResult, own: OwnIdentity, now: dt.datetime
    ) -> AttestResult:
        assert self.collateral is not None
        st = result.envelope.statement
        evidence = await self.collateral.complete(st.evidence, now=now, crl=own.emulator_root is None)
        if evidence is st.evidence:
            return result
        envelope = msgspec.structs.replace(
            result.envelope, statement=msgspec.structs.replace(st, evidence=evidence)
        )
        return msgspec.structs.replace(result, envelope=envelope)
