"""The verifier service: nonces for the requests in the ``NONCE_<source>`` streams, signed verdicts on the
attestation requests in the ``ATTEST_<source>`` streams.

Every source (an initializer's NATS user, ``ReplicaDeps.sources``) has its own two streams, which the
stateless replicas pull through shared durable consumers: a source flooding either at full speed fills only
its own stream's intake in the NATS server and only its own share of a replica's work. Each request is checked
in the order of docs/protocol.md §3 step 3 (:meth:`_Verifier._check`): everything that costs no public-key
operation first (request id, nonce MAC and expiry, a look at the nonce's single-use mark, key shapes), so that
garbage, forged or expired nonces and replays are turned away for the price of a decode, an HMAC and one KV
read. An acceptance goes to stream ``VERDICTS``; a rejection is a signed negative verdict in KV ``results``,
within a budget of signed answers per second (``ReplicaDeps.rejection_answers``): past it, a rejection is
counted but not answered, so a flood cannot spend the replica's signatures or fill the results bucket.

Nonce requests (``contrast.v1.attest.nonce.<source>``) wait in their source's bounded work queue
``NONCE_<source>``, which each replica pulls at a paced rate (``ReplicaDeps.nonce_pull_rate``): a flood of
them costs a verifier a bounded share of its CPU and is refused by the NATS server, in the flooding source's
own stream, beyond that. A nonce is answered only on an inbox of the request's own source, and issued within
the source's ration (``ReplicaDeps.nonces_per_source``, which bounds the forged-evidence checks one source can
cause); over it, the request is dropped unanswered. A transient fault (collateral, not ready) naks the request
for a retry; a request still waiting for collateral at its last delivery gets a signed negative verdict with
the ``collateral.*`` code, so that it fails closed with a named reason. Nothing a client sends can crash the
replica.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast import subjects
from contrast.attestation.bundle import rejection
from contrast.attestation.nonce import NonceAuthority, check_unused, consume
from contrast.attestation.verdict import sign_verdict
from contrast.collateral.provider import CollateralProvider
from contrast.coordinator.manifest_format import ROLE_COORDINATOR, ManifestDocument
from contrast.crypto.hpke import HpkePublicKey
from contrast.errors import CollateralError, ContrastError, EvidenceError, PolicyError, RequestError
from contrast.evidence.binding import Label, report_data
from contrast.evidence.result import first_error
from contrast.evidence.verifier import EvidenceVerifier
from contrast.kv import KvConflict
from contrast.pki.service import ServiceRole
from contrast.replica.deps import ReplicaDeps
from contrast.replica.lifecycle import CoordinatorReplica, ReplicaView
from contrast.replica.membership import Membership
from contrast.runtime import (
    DeliveryContext,
    Handlers,
    Runtime,
    Service,
    StreamWorker,
    get_logger,
)
from contrast.runtime.admission import PerSource, TokenBucket
from contrast.runtime.connection import is_inbox_of
from contrast.runtime.kv import NatsKeyValue
from contrast.runtime.tracing import annotate_attestation, inject
from contrast.wire.v1 import (
    AttestationEvent,
    AttestRequest,
    NonceReply,
    NonceRequest,
    Verdict,
    encode,
)

_log = get_logger(__name__)
VERSION = "0.1.0"
NONCE_ENDPOINT = "nonce"  # the `endpoint` label of the nonce requests' outcomes in contrast_requests_total
RATE_LIMITED = "request.rate_limited"


class _Rejected(Exception):
    """Control flow inside the verifier: this request gets a signed negative verdict with ``error``'s code."""

    def __init__(self, error: ContrastError, tee: str, policy_hash: bytes = b"") -> None:
        super().__init__(error.code)
        self.error, self.tee, self.policy_hash = error, tee, policy_hash


class _Verifier:
    def __init__(
        self,
        rt: Runtime,
        deps: ReplicaDeps,
        replica: CoordinatorReplica,
        nonces: NatsKeyValue,
        results: NatsKeyValue,
        collateral: CollateralProvider,
        evidence: EvidenceVerifier,
    ) -> None:
        self.rt, self.deps, self.replica = rt, deps, replica
        self.nonces, self.results, self.collateral = nonces, results, collateral
        self.evidence = evidence  # one per process: its chain cache is shared with the replica's own checks
        self._authority: tuple[Membership, NonceAuthority] | None = None
        self._answers = TokenBucket(deps.rejection_answers)
        self._nonce_ration = PerSource(deps.nonces_per_source)
        self._nonce_outcomes = {
            code: rt.metrics.requests.labels(NONCE_ENDPOINT, code)
            for code in ("ok", RATE_LIMITED, "request.reply_subject")
        }

    def authority(self, membership: Membership) -> NonceAuthority:
        if self._authority is None or self._authority[0] is not membership:
            auth = NonceAuthority(membership.keys.nonce_mac_key, lifetime_ms=self.deps.nonce_lifetime_ms)
            self._authority = (membership, auth)
        return self._authority[1]

    async def nonce(self, req: NonceRequest, ctx: DeliveryContext) -> None:
        """Answer one queued nonce request on its own source's inbox, within the source's ration.

        Returns (the request is acked) with or without an answer; a reply subject that is not an inbox of the
        request's source is a ``request.reply_subject`` error (dropped: no answer is sent anywhere); not ready
        naks it for another replica."""
        source = subjects.source_of(ctx.subject)
        if not is_inbox_of(req.reply, source):
            self._nonce_outcomes["request.reply_subject"].inc()
            raise RequestError("reply_subject", f"{req.reply!r} is not an inbox of source {source!r}")
        if not self._nonce_ration.admit(source):
            self._nonce_outcomes[RATE_LIMITED].inc()  # no answer: answering a flood only doubles it
            return
        view = self.replica.view()  # state.not_ready → nak: another replica answers
        reply = NonceReply(nonce=self.authority(view.membership).issue(int(self.deps.clock() * 1000)))
        # Core publish, with this delivery's trace context (the requester's trace continues here).
        await ctx.nc.publish(req.reply, encode(reply), headers=inject({}))
        self._nonce_outcomes["ok"].inc()

    async def verify(self, req: AttestRequest, ctx: DeliveryContext) -> None:
        view = self.replica.view()  # state.not_ready → nak, retried by another replica or later
        now_s = self.deps.clock()
        now_ms = int(now_s * 1000)
        now = dt.datetime.fromtimestamp(now_s, dt.UTC)
        digest = hashlib.sha256(encode(req)).digest()
        m = self.rt.metrics
        m.attestation_requests.labels(req.evidence.tee).inc()
        manifest = view.manifest
        try:
            last = ctx.num_delivered >= subjects.ATTEST_MAX_DELIVER
            policy_hash = await self._check(
                req, ctx.msg_id, digest, view.membership, manifest.document, now, now_ms, last
            )
        except _Rejected as r:
            await self._reject(req, digest, r, view, now_ms, ctx)
            return
        verdict = Verdict(
            request_id=req.request_id,
            request_digest=digest,
            accepted=True,
            tee=req.evidence.tee,
            policy_hash=policy_hash,
            tls_public_key=req.tls_public_key,
            hpke_public_key=req.hpke_public_key,
            generation=manifest.generation,
            transition_hash=manifest.transition_hash,
            issued_at_ms=now_ms,
            verifier=self.rt.replica[:128],
        )
        signed = sign_verdict(verdict, view.identity.service_key, view.membership.service_cert)
        # On this delivery's span, which the CA's continues (ctx.publish carries its traceparent).
        annotate_attestation(
            tee=req.evidence.tee, policy_hash=policy_hash, verdict="accepted", request_id=req.request_id
        )
        await ctx.publish(subjects.ATTEST_VERIFIED, signed, msg_id=req.request_id)
        await self._event(req, "verified", "", policy_hash, manifest.generation, now_ms)

    async def _check(
        self,
        req: AttestRequest,
        msg_id: str,
        digest: bytes,
        membership: Membership,
        doc: ManifestDocument,
        now: dt.datetime,
        now_ms: int,
        last_delivery: bool,
    ) -> bytes:
        tee = req.evidence.tee
        try:
            # (1) shape, (2) nonce MAC and expiry, and a look at its single-use mark: no public-key
            # operation so far, so a flood of garbage, forged or old nonces and replays stays cheap.
            if msg_id != req.request_id:
                raise RequestError("msg_id_mismatch", "the Nats-Msg-Id must be the request id")
            token = self.authority(membership).check(req.nonce, now_ms)
            await check_unused(self.nonces, token, digest)
            key = serialization.load_der_public_key(req.tls_public_key)
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
                raise RequestError("bad_tls_key", "the TLS key is not a P-256 key")
            HpkePublicKey(req.hpke_public_key)
        except ValueError as e:
            raise _Rejected(RequestError("bad_tls_key", "the TLS key does not parse"), tee) from e
        except ContrastError as e:
            if e.code == "policy.nonce_reused":
                self.rt.metrics.nonce_replays.inc()
            raise _Rejected(e, tee) from e
        # (3) evidence, reference values and REPORT_DATA
        expected = report_data(Label.MESH_CERT, req.nonce, req.tls_public_key, req.hpke_public_key)
        refs = doc.manifest.ReferenceValues
        try:
            # Missing collateral: shared cache, then the vendor. collateral.* propagates: nak, retry later,
            # until the last delivery, which fails closed with the named reason.
            evidence = await self.collateral.complete_for(req.evidence, refs, now=now)
        except (EvidenceError, PolicyError) as e:  # the report does not even parse
            raise _Rejected(e, tee) from e
        except CollateralError as e:
            self.rt.metrics.collateral_fetch_failures.labels(tee, e.code).inc()
            if last_delivery:
                raise _Rejected(e, tee) from e
            raise
        started = time.perf_counter()
        result = self.evidence.verify(evidence, refs, expected_report_data=expected, now=now)
        self.rt.metrics.verification_seconds.observe(time.perf_counter() - started)
        if not result.accepted:
            raise _Rejected(first_error(result.findings), tee, result.claims.policy_hash)
        policy_hash = result.claims.policy_hash
        # (4) identity from hardware only → manifest entry
        entry = doc.manifest.policy(policy_hash)
        if entry is None:
            raise _Rejected(
                PolicyError("policy_unknown", f"policy hash {policy_hash.hex()} is not in the manifest"),
                tee,
                policy_hash,
            )
        if entry.Role == ROLE_COORDINATOR:
            raise _Rejected(
                PolicyError(
                    "role_mismatch", "a Coordinator policy joins; it does not get a mesh certificate"
                ),
                tee,
                policy_hash,
            )
        # (5) single use, last: a rejected request must not burn the nonce of a genuine one
        try:
            await consume(self.nonces, token, digest)
        except PolicyError as e:
            self.rt.metrics.nonce_replays.inc()
            raise _Rejected(e, tee, policy_hash) from e
        return policy_hash

    async def _reject(
        self,
        req: AttestRequest,
        digest: bytes,
        r: _Rejected,
        view: ReplicaView,
        now_ms: int,
        ctx: DeliveryContext,
    ) -> None:
        code = r.error.code
        tee = req.evidence.tee
        self.rt.metrics.attestation_failures.labels(tee, code).inc()
        annotate_attestation(
            tee=tee, policy_hash=r.policy_hash, verdict="rejected", reason=code, request_id=req.request_id
        )
        if not self._answers.take():
            # Over the answer budget (a flood): no signature, no stored result, no event. A genuine requester
            # times out and asks again with a fresh nonce.
            self.rt.metrics.rejections_unanswered.labels(code).inc()
            _log.debug("attestation_rejected_unanswered", request_id=req.request_id, code=code)
            return
        verdict = Verdict(
            request_id=req.request_id,
            request_digest=digest,
            accepted=False,
            reason=code[:128],
            message=r.error.message[:1024],
            tee=tee,
            policy_hash=r.policy_hash if len(r.policy_hash) == 32 else b"",
            tls_public_key=req.tls_public_key,
            hpke_public_key=req.hpke_public_key,
            generation=view.manifest.generation,
            transition_hash=view.manifest.transition_hash,
            issued_at_ms=now_ms,
            verifier=self.rt.replica[:128],
        )
        result = rejection(verdict, view.identity)
        data = encode(result)
        # An answer may exist (perhaps an issued bundle): never overwrite it with a rejection. Storing is
        # delivering: the server republishes the entry to the initializer once stored, and a refused
        # `create` reaches nobody.
        with contextlib.suppress(KvConflict):
            await self.results.create(req.request_id, data)
        _log.info("attestation_rejected", request_id=req.request_id, code=code)
        await self._event(req, "rejected", code, verdict.policy_hash, verdict.generation, now_ms)

    async def _event(
        self, req: AttestRequest, stage: str, reason: str, policy_hash: bytes, generation: int, now_ms: int
    ) -> None:
        # Core publish: the EVENTS stream stores it; an audit hint must not add a round trip to the hot path.
        event = AttestationEvent(
            request_id=req.request_id,
            stage=stage,  # type: ignore[arg-type]
            service="verifier",
            replica=self.rt.replica[:128],
            tee=req.evidence.tee,
            policy_hash=policy_hash,
            reason=reason[:128],
            generation=generation,
            at_ms=now_ms,
        )
        await self.rt.nc.publish(subjects.EVENT_ATTESTATION, encode(event))


def make_service(deps: ReplicaDeps | None = None) -> Service:
    """The verifier service; its collateral provider and evidence verifier come from ``deps``."""
    deps = deps or ReplicaDeps()

    async def build(rt: Runtime) -> Handlers:
        await rt.stream(subjects.VERDICTS)
        await rt.stream(subjects.EVENTS)
        nonces = NatsKeyValue(await rt.kv(subjects.NONCES))
        results = NatsKeyValue(await rt.kv(subjects.RESULTS))
        history = NatsKeyValue(await rt.kv(subjects.HISTORY))
        evidence = deps.evidence_verifier()
        collateral = deps.collateral(NatsKeyValue(await rt.kv(subjects.COLLATERAL)))
        replica = CoordinatorReplica(
            role=ServiceRole.VERIFIER,
            platform=deps.attached_platform(collateral),
            key_source=deps.key_source(rt.replica, deps.pins),
            history_kv=history,
            nc=rt.nc,
            metrics=rt.metrics,
            verifier=evidence,
            rejoin_on_new_head=False,  # the nonce key is seed-derived: it does not change with the manifest
        )
        await rt.stack.enter_async_context(replica)
        v = _Verifier(rt, deps, replica, nonces, results, collateral, evidence)
        # Two workers per source, one per stream of its own, each at its pace and the attestation stream with
        # a share of the in-flight slots: a flooding source's streams are pulled no faster, and the other
        # sources' as if it were quiet.
        share = max(8, deps.max_in_flight // len(deps.sources))
        workers: list[StreamWorker[Any]] = []
        for source in deps.sources:
            workers.append(
                StreamWorker(
                    name=f"{NONCE_ENDPOINT}-{source}",
                    consumer=subjects.nonce_consumer(source),
                    message_type=NonceRequest,
                    handler=v.nonce,
                    max_in_flight=8,
                    timeout=1.0,
                    pace=deps.nonce_pull_rate,
                )
            )
            workers.append(
                StreamWorker(
                    name=f"verify-{source}",
                    consumer=subjects.verifier_consumer(source),
                    message_type=AttestRequest,
                    handler=v.verify,
                    max_in_flight=share,
                    timeout=4.0,
                    pace=deps.attest_pull_rate,
                )
            )
        return Handlers(
            workers=tuple(workers),
            ready_checks={"joined": replica.ready_check},
        )

    return Service(
        name="verifier",
        version=VERSION,
        description="Contrast verifier: nonces and signed verdicts on workload evidence",
        build=build,
    )
