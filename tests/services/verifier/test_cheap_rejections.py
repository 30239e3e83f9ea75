"""Garbage, bad nonces and replays are rejected before any public-key operation.

The verifier runs in this process; :class:`~contrast.testing.pkops.PublicKeyOps` counts every call into
``cryptography``'s asymmetric primitives while it handles a batch of one class of bad request (built
beforehand). With its answer budget spent, handling a whole batch of garbage, malformed keys, forged nonces,
expired nonces or replays must cost zero public-key operations; the control classes show that the count
sees the verifier's work: a valid nonce with forged evidence costs a signature check each, a genuine request
many. With budget left, each of those rejections costs exactly its answer's one signature.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client

from contrast import subjects
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.runtime.admission import Rate
from contrast.runtime.natsserver import NatsServer
from contrast.testing.pkops import PublicKeyOps
from contrast.wire.v1 import AttestRequest, encode
from tests.services.evil_bus import EvilBus, build_request, eventually, new_request_id, rejection_code
from tests.services.pipeline import H_DB, Pipeline, pipeline, wait_ready

BATCH = 8
LIFETIME_MS = 4000
NO_BUDGET = Rate(per_second=0, burst=1)  # one signed answer, spent before anything is counted


async def drained(nc: Client) -> None:
    js = nc.jetstream()

    async def empty() -> bool:
        consumer = subjects.verifier_consumer(subjects.DEFAULT_SOURCE)
        info = await js.consumer_info(consumer.stream.name, consumer.durable)
        return info.num_pending + info.num_ack_pending == 0

    async with asyncio.timeout(20):
        while not await empty():  # noqa: ASYNC110 - polling the server
            await asyncio.sleep(0.05)


async def publish(nc: Client, payloads: list[tuple[str, bytes]]) -> None:
    js = nc.jetstream()
    for msg_id, data in payloads:
        await js.publish(
            subjects.attest_requested(subjects.DEFAULT_SOURCE), data, headers={"Nats-Msg-Id": msg_id}
        )


def forge_report(req: AttestRequest) -> AttestRequest:
    report = bytearray(req.evidence.report)
    report[0x2A0] ^= 0x01  # inside the signature: the report no longer verifies
    return msgspec.structs.replace(req, evidence=msgspec.structs.replace(req.evidence, report=bytes(report)))


Builder = Callable[[Pipeline, AttestRequest], Awaitable[list[tuple[str, bytes]]]]


async def garbage(p: Pipeline, accepted: AttestRequest) -> list[tuple[str, bytes]]:
    return [(new_request_id(), secrets.token_bytes(64)) for _ in range(BATCH)]


async def malformed_keys(p: Pipeline, accepted: AttestRequest) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(BATCH):
        req, _, _ = await build_request(p.nc, p.platform(H_DB))
        bad = msgspec.structs.replace(req, tls_public_key=b"\x30" + bytes(90))
        out.append((bad.request_id, encode(bad)))
    return out


async def forged_nonces(p: Pipeline, accepted: AttestRequest) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(BATCH):
        req, _, _ = await build_request(p.nc, p.platform(H_DB), nonce=secrets.token_bytes(32))
        out.append((req.request_id, encode(req)))
    return out


async def expired_nonces(p: Pipeline, accepted: AttestRequest) -> list[tuple[str, bytes]]:
    reqs = [(await build_request(p.nc, p.platform(H_DB)))[0] for _ in range(BATCH)]
    await asyncio.sleep(LIFETIME_MS / 1000 + 0.3)
    return [(r.request_id, encode(r)) for r in reqs]


async def replays_under_new_ids(p: Pipeline, accepted: AttestRequest) -> list[tuple[str, bytes]]:
    accepted = await accepted_request(p)  # captured now: its nonce is still fresh
    out = []
    for _ in range(BATCH):
        replay = msgspec.structs.replace(accepted, request_id=new_request_id())
        out.append((replay.request_id, encode(replay)))
    return out


async def forged_evidence(p: Pipeline, accepted: AttestRequest) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(BATCH):
        req = forge_report((await build_request(p.nc, p.platform(H_DB)))[0])
        out.append((req.request_id, encode(req)))
    return out


async def genuine(p: Pipeline, accepted: AttestRequest) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(BATCH):
        req, _, _ = await build_request(p.nc, p.platform(H_DB))
        out.append((req.request_id, encode(req)))
    return out


CHEAP: dict[str, tuple[Builder, str]] = {
    # class: (builder, what the verifier decides)
    "garbage": (garbage, "request.decode"),
    "malformed keys": (malformed_keys, "request.bad_tls_key"),
    "forged nonces": (forged_nonces, "policy.nonce_unknown"),
    "expired nonces": (expired_nonces, "policy.nonce_expired"),
    "replays under new request ids": (replays_under_new_ids, "policy.nonce_reused"),
}


async def accepted_request(p: Pipeline) -> AttestRequest:
    """A request the Coordinator accepted (and issued on): what an attacker on the bus captures."""
    evil = await EvilBus.connect(p.url)
    try:
        await p.initializer(H_DB).attest()
        captured = evil.on(subjects.attest_requested(subjects.DEFAULT_SOURCE))
        return msgspec.msgpack.decode(captured[0].data, type=AttestRequest)
    finally:
        await evil.close()


def count(p: Pipeline, metric: str, **labels: str) -> float:
    value = p.running["verifier-1"].runtime.metrics.registry.get_sample_value(metric, labels)
    return float(value or 0.0)


def decided(p: Pipeline, code: str) -> float:
    if code == "request.decode":  # undecodable: dead-lettered by the stream worker
        durable = subjects.verifier_consumer(subjects.DEFAULT_SOURCE).durable
        return count(p, "contrast_deadletters_total", consumer=durable, reason=code)
    return count(p, "contrast_attestation_failures_total", tee="snp", reason=code)


async def handle(p: Pipeline, payloads: list[tuple[str, bytes]]) -> PublicKeyOps:
    """Publish the batch and count the public-key operations until the verifier has handled all of it."""
    with PublicKeyOps() as ops:
        await publish(p.nc, payloads)
        await drained(p.nc)
    return ops


async def test_cheap_classes_cost_no_public_key_operation(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator, verifiers=0) as p:
        await p.start("verifier", "verifier-1", rejection_answers=NO_BUDGET, nonce_lifetime_ms=LIFETIME_MS)
        await wait_ready(p.nc, "verifier")
        accepted = await accepted_request(p)
        # Spend the one answer: from here on no rejection is signed.
        spend = (await forged_nonces(p, accepted))[:1]
        await publish(p.nc, spend)
        await eventually(lambda: decided(p, "policy.nonce_unknown") == 1, timeout=10)
        assert count(p, "contrast_rejections_unanswered_total", reason="policy.nonce_unknown") == 0

        idle = await handle(p, [])
        assert idle.total == 0, idle.by_name

        for case, (build, code) in CHEAP.items():
            payloads = await build(p, accepted)
            before = decided(p, code)
            ops = await handle(p, payloads)
            assert decided(p, code) - before == BATCH, case
            assert ops.total == 0, (case, ops.by_name)

        # An exact replay of the captured request never even reaches the verifier: the stream drops it.
        ack = await p.nc.jetstream().publish(
            subjects.attest_requested(subjects.DEFAULT_SOURCE),
            encode(accepted),
            headers={"Nats-Msg-Id": accepted.request_id},
        )
        assert ack.duplicate

        # Controls: the count sees the verifier's public-key work.
        before = decided(p, "evidence.bad_signature")
        forged = await handle(p, await forged_evidence(p, accepted))
        assert decided(p, "evidence.bad_signature") - before == BATCH
        assert forged.by_name["ECPublicKey.verify"] >= BATCH, forged.by_name
        real = await handle(p, await genuine(p, accepted))
        assert real.total >= 2 * BATCH, real.by_name  # at least a report check and a verdict signature each


async def test_an_answered_cheap_rejection_costs_its_signature_only(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator) as p:
        evil = await EvilBus.connect(p.url)
        try:
            payloads = await forged_nonces(p, await accepted_request(p))
            waiters = [await evil.result_waiter(rid) for rid, _ in payloads]
            ops = await handle(p, payloads)
            assert ops.by_name == {"ECPrivateKey.sign": BATCH}
            for waiter in waiters:
                assert rejection_code(await waiter) == "policy.nonce_unknown"
        finally:
            await evil.close()
