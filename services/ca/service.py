"""The CA service: signed verdicts from stream ``VERDICTS`` become sealed certificate bundles.

Each verdict is checked and answered as docs/protocol.md §3 step 4 says (:meth:`_Ca.handle`): a forged,
unsigned or old verdict is an ``auth.*`` error and dead-lettered, never issued; a verdict for a newer
generation makes the replica re-join and is retried. Answers are stored idempotently per request id
(:meth:`_Ca._store`): an authentic earlier answer stands, anything else in the store is overwritten.

Storing is delivering: the server republishes an entry of KV ``results`` to the initializer only once it is
stored (``contrast.subjects.RESULTS``), so a write that loses the race to another replica's, or that a dying
stream leader never stored, reaches nobody. However many CA replicas answer one request, and however often
its verdict is redelivered, the pod receives one bundle: the stored one.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from dataclasses import dataclass

import msgspec

from contrast import subjects
from contrast.attestation.bundle import PURPOSE_ISSUED, issue
from contrast.attestation.verdict import VerdictChecker
from contrast.coordinator.manifest_format import ROLE_COORDINATOR, Manifest
from contrast.coordinator.statement import CoordinatorIdentity, open_envelope
from contrast.errors import AuthError, ContrastError, StateError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.kv import KvConflict
from contrast.pki.mesh import MeshAuthority
from contrast.pki.service import ServiceRole
from contrast.replica.deps import ReplicaDeps
from contrast.replica.lifecycle import CoordinatorReplica
from contrast.replica.membership import Membership
from contrast.runtime import DeliveryContext, Handlers, Runtime, Service, StreamWorker, get_logger
from contrast.runtime.kv import NatsKeyValue
from contrast.runtime.tracing import annotate_attestation
from contrast.wire.v1 import (
    AttestationEvent,
    AttestResult,
    IssuedResult,
    SignedVerdict,
    Verdict,
    decoder,
    encode,
)

_log = get_logger(__name__)
VERSION = "0.1.0"
HEAD_MAX_AGE = 1.0  # seconds


class SignerPolicies:
    """The ``verifier`` policy hashes of the manifest object last seen (only a policy bound to the verifier
    role signs verdicts): an O(n) decode of every policy hash that would otherwise run per verdict. A new
    manifest is a new object; the last one is held, so that its identity cannot be reused by another
    object."""

    def __init__(self) -> None:
        self._last: tuple[Manifest, frozenset[bytes]] | None = None

    def of(self, manifest: Manifest) -> frozenset[bytes]:
        last = self._last
        if last is None or last[0] is not manifest:
            last = (manifest, manifest.coordinator_policy_hashes(ServiceRole.VERIFIER))
            self._last = last
        return last[1]


@dataclass(frozen=True, slots=True)
class _Signing:
    """The per-membership signing state (rebuilt when the replica re-joins)."""

    membership: Membership
    checker: VerdictChecker
    mesh: MeshAuthority
    pod_state_secret: bytes


class _Ca:
    def __init__(
        self,
        rt: Runtime,
        deps: ReplicaDeps,
        replica: CoordinatorReplica,
        results: NatsKeyValue,
        verifier: EvidenceVerifier,
    ) -> None:
        self.rt, self.deps, self.replica, self.results = rt, deps, replica, results
        self.verifier = verifier
        self._signing: _Signing | None = None
        self.signer_policies = SignerPolicies()

    def signing(self, m: Membership) -> _Signing:
        if self._signing is None or self._signing.membership is not m:
            self._signing = _Signing(
                membership=m,
                checker=VerdictChecker(
                    m.root_cert,
                    generation=m.generation,
                    transition_hash=m.transition_hash,
                    max_age=dt.timedelta(seconds=self.deps.verdict_max_age_s),
                ),
                mesh=m.keys.mesh_authority(),
                pod_state_secret=m.keys.pod_state_secret,
            )
        return self._signing

    async def handle(self, signed: SignedVerdict, ctx: DeliveryContext) -> None:
        # "The generation is current" is checked against a head read from the authenticated history at most
        # HEAD_MAX_AGE ago (one read per second at most, shared by concurrent verdicts), not only against
        # what the forgeable update event told us.
        started = time.perf_counter()
        view = await self.replica.current(HEAD_MAX_AGE)
        request_id = ctx.msg_id
        try:
            subjects.attest_result(request_id)  # the request id must be a valid KV key and subject token
        except ValueError:
            raise AuthError("wrong_request", "the verdict was delivered without a valid request id") from None
        now_s = self.deps.clock()
        now = dt.datetime.fromtimestamp(now_s, dt.UTC)
        s = self.signing(view.membership)
        manifest = view.manifest
        # Checked first: the signer's policy is judged against this manifest, so it must be the manifest of
        # the head our role keys (and the checker's generation) belong to.
        if not hmac.compare_digest(manifest.transition_hash, view.membership.transition_hash):
            self.replica.poke()
            raise StateError("stale", "the manifest view and the role keys belong to different heads")
        try:
            checked = s.checker.check(
                signed,
                request_id=request_id,
                signer_policy_hashes=self.signer_policies.of(manifest.document.manifest),
                now=now,
            )
        except StateError:
            self.replica.poke()  # a newer generation: re-join, then this verdict is redelivered
            raise
        verdict = checked.verdict
        annotate_attestation(
            tee=verdict.tee, policy_hash=verdict.policy_hash, verdict="accepted", request_id=request_id
        )
        entry = manifest.document.manifest.policy(verdict.policy_hash)
        if entry is None or entry.Role == ROLE_COORDINATOR:
            raise AuthError("policy_not_issuable", "the verdict's policy hash has no workload entry")
        # Idempotency per request id is the compare-and-set in _store: a redelivered verdict (to this replica
        # or another) issues anew, loses the race to the stored answer and leaves it standing. Only a stored
        # answer is delivered, so the new one never leaves the server. Checking first would cost every
        # attestation a KV round trip to save work only on redeliveries.
        result_bytes = encode(
            issue(
                verdict=verdict,
                entry=entry,
                mesh=s.mesh,
                root_cert=view.membership.root_cert,
                pod_state_secret=s.pod_state_secret,
                identity=view.identity,
                now=now,
            )
        )
        stored = _StoredCheck(
            verdict=verdict,
            identity=view.identity,
            verifier=self.verifier,
            now=now,
            tdx_statuses=self.deps.pins.tdx_statuses,
        )
        data = await self._store(request_id, result_bytes, stored)
        self.rt.metrics.issuance_seconds.observe(time.perf_counter() - started)
        annotate_attestation(verdict="issued")
        if data is not result_bytes:
            return  # an earlier delivery's answer stands; it was delivered when it was stored
        self.rt.metrics.certificates_issued.inc()
        event = AttestationEvent(
            request_id=request_id,
            stage="issued",
            service="ca",
            replica=self.rt.replica[:128],
            tee=verdict.tee,
            policy_hash=verdict.policy_hash,
            generation=verdict.generation,
            at_ms=int(now_s * 1000),
        )
        await self.rt.nc.publish(subjects.EVENT_ATTESTATION, encode(event))

    async def _existing(self, request_id: str, check: _StoredCheck) -> bytes | None:
        """An authentic result this (or another) CA replica already issued for ``request_id``, as stored."""
        entry = await self.results.get(request_id)
        if entry is None:
            return None
        if check.authentic(request_id, entry.value):
            return entry.value
        # Garbage, a rejection or a forgery (the bus is hostile): overwrite it with a real answer.
        _log.warning("results_entry_not_authentic", request_id=request_id)
        return None

    async def _store(self, request_id: str, data: bytes, check: _StoredCheck) -> bytes:
        """Store our result unless another replica won the race; return what is stored (and so delivered)."""
        try:
            await self.results.create(request_id, data)
            return data
        except KvConflict:
            pass
        existing = await self._existing(request_id, check)
        if existing is not None:
            return existing
        current = await self.results.get(request_id)
        try:
            if current is None:
                await self.results.create(request_id, data)
            else:
                await self.results.update(request_id, data, last=current.revision)
        except KvConflict:
            existing = await self._existing(request_id, check)
            if existing is None:
                raise StateError("result_conflict", "the results entry keeps changing; retrying") from None
            return existing
        return data


@dataclass(frozen=True, slots=True)
class _StoredCheck:
    """Whether a stored ``results`` entry is an answer this Coordinator really issued for this verdict.

    The yardstick is what an initializer checks (:func:`contrast.attestation.bundle.open_result` steps 1-3),
    with this replica's own identity in the initializer's place: the envelope's statement is genuine
    evidence of our launch measurement, root kind and policy hash, binding the key that signed the payload
    under this request id; the payload answers this verdict's request digest. Only on the rare conflict
    path, so the evidence check (CPU only, no I/O) runs inline.
    """

    verdict: Verdict
    identity: CoordinatorIdentity
    verifier: EvidenceVerifier
    now: dt.datetime
    tdx_statuses: frozenset[str]

    def authentic(self, request_id: str, value: bytes) -> bool:
        try:
            stored = decoder(AttestResult).decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return False
        if stored.outcome != "issued" or stored.request_id != request_id:
            return False
        own = self.identity.own
        try:
            payload, _ = open_envelope(
                stored.envelope,
                purpose=PURPOSE_ISSUED,
                binding=request_id.encode(),
                verifier=self.verifier,
                own=own,
                allowed_policy_hashes=(own.policy_hash,),
                now=self.now,
                accepted_tdx_statuses=self.tdx_statuses,
            )
            issued = decoder(IssuedResult).decode(payload)
        except (ContrastError, msgspec.ValidationError, msgspec.DecodeError):
            return False
        return issued.request_id == request_id and hmac.compare_digest(
            issued.request_digest, self.verdict.request_digest
        )


def make_service(deps: ReplicaDeps | None = None) -> Service:
    deps = deps or ReplicaDeps()

    async def build(rt: Runtime) -> Handlers:
        await rt.stream(subjects.EVENTS)
        results = NatsKeyValue(await rt.kv(subjects.RESULTS))
        history = NatsKeyValue(await rt.kv(subjects.HISTORY))
        verifier = deps.evidence_verifier()
        collateral = deps.collateral(NatsKeyValue(await rt.kv(subjects.COLLATERAL)))
        replica = CoordinatorReplica(
            role=ServiceRole.CA,
            platform=deps.attached_platform(collateral),
            key_source=deps.key_source(rt.replica, deps.pins),
            history_kv=history,
            nc=rt.nc,
            metrics=rt.metrics,
            verifier=verifier,
            rejoin_on_new_head=True,  # the mesh key belongs to one generation
        )
        await rt.stack.enter_async_context(replica)
        ca = _Ca(rt, deps, replica, results, verifier)
        return Handlers(
            workers=(
                StreamWorker(
                    name="issue",
                    consumer=subjects.CA_CONSUMER,
                    message_type=SignedVerdict,
                    handler=ca.handle,
                    max_in_flight=deps.max_in_flight,
                    timeout=4.0,
                ),
            ),
            ready_checks={"joined": replica.ready_check},
        )

    return Service(
        name="ca",
        version=VERSION,
        description="Contrast CA: signed verdicts to sealed mesh certificates and workload secrets",
        build=build,
    )
