"""A test-only attacker on the bus: it reads every message, replays captured ones and injects its own."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import nats
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.client import Client
from nats.aio.msg import Msg

from contrast import subjects
from contrast.coordinator.statement import spki
from contrast.crypto.hpke import HpkePrivateKey
from contrast.evidence.binding import Label, report_data
from contrast.initializer.client import ask_nonce
from contrast.platform.base import Platform
from contrast.wire.v1 import (
    AttestRequest,
    AttestResult,
    DeadLetter,
    Verdict,
    decoder,
    encode,
)


@dataclass
class Captured:
    subject: str
    data: bytes
    headers: dict[str, str]
    reply: str = ""


@dataclass
class EvilBus:
    nc: Client
    captured: list[Captured] = field(default_factory=list)

    @classmethod
    async def connect(cls, url: str) -> EvilBus:
        bus = cls(await nats.connect(url))

        async def record(msg: Msg) -> None:
            bus.captured.append(
                Captured(msg.subject, bytes(msg.data), dict(msg.headers or {}), msg.reply or "")
            )

        await bus.nc.subscribe(">", cb=record)
        await bus.nc.flush()
        return bus

    async def close(self) -> None:
        await self.nc.close()

    def all_bytes(self) -> bytes:
        parts = []
        for c in self.captured:
            parts.append(c.subject.encode())
            parts.append(c.data)
            parts.extend(f"{k}:{v}".encode() for k, v in c.headers.items())
        return b"\n".join(parts)

    def redeliveries(self, stream: str, consumer: str) -> int:
        """JetStream deliveries to ``consumer`` that were not the first (seen in the ack subjects)."""
        count = 0
        for c in self.captured:
            t = c.reply.split(".")
            if len(t) < 9 or t[:2] != ["$JS", "ACK"]:
                continue
            off = 2 if len(t) == 9 else 4  # v1: $JS.ACK.<stream>...; v2 adds domain and account hash
            if t[off] == stream and t[off + 1] == consumer and int(t[off + 2]) > 1:
                count += 1
        return count

    def on(self, subject: str) -> list[Captured]:
        return [c for c in self.captured if c.subject == subject]

    async def publish_request(self, req: AttestRequest, *, msg_id: str | None = None) -> None:
        await self.nc.jetstream().publish(
            subjects.attest_requested(subjects.DEFAULT_SOURCE),
            encode(req),
            headers={"Nats-Msg-Id": msg_id or req.request_id},
        )

    async def result_waiter(self, request_id: str, timeout: float = 10.0) -> asyncio.Task[AttestResult]:
        """Subscribe to ``request_id``'s result subject now and return a task for its first answer (not
        authenticated: the test inspects it). The subscription is flushed before this returns, so a request
        published afterwards cannot be answered before we listen."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def got(msg: Msg) -> None:
            if not fut.done():
                fut.set_result(bytes(msg.data))

        sub = await self.nc.subscribe(subjects.attest_result(request_id), cb=got)
        await self.nc.flush()

        async def first() -> AttestResult:
            try:
                return decoder(AttestResult).decode(await asyncio.wait_for(fut, timeout))
            finally:
                await sub.unsubscribe()

        return asyncio.create_task(first())

    async def dead_letters(self) -> list[DeadLetter]:
        return [decoder(DeadLetter).decode(c.data) for c in self.on(subjects.EVENT_DEADLETTER)]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (it reads state that NATS callbacks fill in)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def rejection_code(result: AttestResult) -> str:
    """The reason code of a rejection as stored (read, not authenticated: the test inspects it)."""
    assert result.outcome == "rejected"
    return decoder(Verdict).decode(result.envelope.payload).reason


def new_request_id() -> str:
    return secrets.token_urlsafe(24)


async def build_request(
    nc: Client,
    platform: Platform,
    *,
    nonce: bytes | None = None,
    bind_tls: bytes | None = None,
    bind_hpke: bytes | None = None,
) -> tuple[AttestRequest, ec.EllipticCurvePrivateKey, HpkePrivateKey]:
    """An attestation request as an initializer builds it; ``bind_*`` make the evidence bind other keys."""
    tls = ec.generate_private_key(ec.SECP256R1())
    hpke = HpkePrivateKey.generate()
    if nonce is None:
        nonce = await ask_nonce(nc, subjects.DEFAULT_SOURCE, timeout=5)
    tls_spki, hpke_pub = spki(tls.public_key()), hpke.public_bytes()
    evidence = await platform.evidence(
        report_data(Label.MESH_CERT, nonce, bind_tls or tls_spki, bind_hpke or hpke_pub)
    )
    req = AttestRequest(
        request_id=new_request_id(),
        nonce=nonce,
        evidence=evidence,
        tls_public_key=tls_spki,
        hpke_public_key=hpke_pub,
    )
    return req, tls, hpke
