"""Nonce requests through the bounded work queue ``NONCE``, against a real server and an in-process verifier.

A stored request has no reply subject: it names its inbox, and the verifier answers only on an inbox of the
source its subject names. Each misaddressed request below (another source's inbox, a role's inbox, a stream
subject the verifier may publish to, a deeper subject under the source's own inbox) would be answered there
if the check were missing: the control, the same request naming the source's own inbox, is. Wildcards and
oversized names do not even decode. Then the bounds: the verifier pulls no more than its pace, a source
gets no more nonces than its ration (the rest is dropped, counted), and a source flooding the queue at full
speed is refused by the server on its own subject while another source's requests are still answered.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from contrast import subjects
from contrast.errors import StateError
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.initializer.client import ask_nonce
from contrast.runtime.admission import Rate
from contrast.runtime.connection import client_options, is_inbox_of
from contrast.runtime.natsserver import NatsServer
from contrast.wire.v1 import NonceReply, NonceRequest, decoder, encode
from tests.services.evil_bus import eventually
from tests.services.pipeline import Pipeline, pipeline, wait_ready

SOURCE = "tenant-a"
OTHER = "tenant-b"
NONCE_DURABLE = subjects.nonce_consumer(SOURCE).durable
NONCE_STREAM = subjects.nonce_stream(SOURCE).name


def count(p: Pipeline, metric: str, replica: str = "verifier-1", **labels: str) -> float:
    value = p.running[replica].runtime.metrics.registry.get_sample_value(metric, labels)
    return float(value or 0.0)


def outcome(p: Pipeline, code: str) -> float:
    return count(p, "contrast_requests_total", endpoint="nonce", code=code)


def terminated(p: Pipeline) -> float:
    return count(p, "contrast_stream_deliveries_total", consumer=NONCE_DURABLE, outcome="term")


async def client(url: str, identity: str) -> Client:
    """A connection whose inboxes are ``_INBOX.<identity>.*``, as the server's users give them."""
    return await nats.connect(url, **client_options(None, identity=identity))


def test_an_inbox_of_a_source_is_its_prefix_and_one_token() -> None:
    assert is_inbox_of("_INBOX.tenant-a.AbC123_-", "tenant-a")
    for subject in (
        "_INBOX.tenant-b.x",  # another source's
        "_INBOX.tenant-a",  # the prefix alone
        "_INBOX.tenant-a.",
        "_INBOX.tenant-a.x.y",  # deeper: not an inbox nats-py makes, and a wildcard permission would allow it
        "_INBOX.tenant-a.*",
        "_INBOX.tenant-a.>",
        "_INBOX.tenant-ab.x",  # a source whose name starts with ours
        "_INBOX.tenant-a.x y",
        "contrast.v1.attest.verified",
        "_INBOX.tenant-a." + "x" * 65,
    ):
        assert not is_inbox_of(subject, "tenant-a"), subject
    assert not is_inbox_of("_INBOX.a.b.x", "a.b")  # not an identity: nothing is its inbox


async def test_a_nonce_is_answered_only_on_an_inbox_of_its_own_source(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator, cas=0) as p:
        # One connection listens everywhere an answer could be misdirected and asks the control request:
        # what the verifier publishes reaches it in order, so once the control's answer is in, any
        # misdirected answer sent before it would be too.
        listener = await client(p.url, SOURCE)
        p.stack.push_async_callback(listener.close)
        seen: list[str] = []

        async def record(msg: Msg) -> None:
            seen.append(msg.subject)

        misdirected = [
            f"_INBOX.{OTHER}.stolen",  # another source's inbox
            "_INBOX.manifest.stolen",  # a role's inbox
            subjects.ATTEST_VERIFIED,  # a stream subject the verifier itself publishes to
            f"_INBOX.{SOURCE}.deeper.stolen",  # below the source's own inbox
        ]
        for subject in (*misdirected, f"_INBOX.{OTHER}.>", "_INBOX.manifest.>"):
            await listener.subscribe(subject, cb=record)
        await listener.flush()
        undecodable = [
            b"\xc1garbage",
            *(  # wildcards and an oversized name: refused by the wire type
                msgspec.msgpack.encode({"reply": reply})
                for reply in (f"_INBOX.{SOURCE}.*", f"_INBOX.{SOURCE}.>", f"_INBOX.{SOURCE}." + "x" * 194)
            ),
        ]
        for data in undecodable:
            await p.nc.publish(subjects.attest_nonce(SOURCE), data)
        for reply in misdirected:
            await p.nc.publish(subjects.attest_nonce(SOURCE), encode(NonceRequest(reply=reply)))
        await p.nc.flush()
        await eventually(lambda: terminated(p) == len(undecodable) + len(misdirected), timeout=20)
        assert outcome(p, "request.reply_subject") == len(misdirected)
        # Control: the same request naming the source's own inbox is answered there.
        nonce = await ask_nonce(listener, SOURCE, timeout=10)
        assert len(nonce) == 32
        assert outcome(p, "ok") == 1
        assert seen == []
        # The verifier is still serving after all that.
        assert len(await ask_nonce(listener, SOURCE, timeout=10)) == 32


async def test_a_verifier_pulls_no_more_than_its_pace(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator, verifiers=0, cas=0) as p:
        pace = 5
        await p.start("verifier", "verifier-1", nonce_pull_rate=Rate(per_second=0, burst=pace))
        await wait_ready(p.nc, "verifier")
        asker = await client(p.url, SOURCE)
        p.stack.push_async_callback(asker.close)
        answered: list[bytes] = []

        async def got(msg: Msg) -> None:
            answered.append(decoder(NonceReply).decode(msg.data).nonce)

        inbox = asker.new_inbox()
        await asker.subscribe(inbox, cb=got)
        await asker.flush()
        for _ in range(3 * pace):
            await asker.publish(subjects.attest_nonce(SOURCE), encode(NonceRequest(reply=inbox)))
        await asker.flush()
        await eventually(lambda: len(answered) == pace, timeout=20)
        # The rest waits in the server until it ages out (max_age), never pulled.
        js = p.nc.jetstream()

        async def aged_out() -> bool:
            return (await js.stream_info(NONCE_STREAM)).state.messages == 0

        async with asyncio.timeout(20):
            while not await aged_out():  # noqa: ASYNC110 - polling the server
                await asyncio.sleep(0.1)
        info = await js.consumer_info(NONCE_STREAM, NONCE_DURABLE)
        assert info.delivered.consumer_seq == pace
        assert len(answered) == pace


async def test_a_source_over_its_ration_is_dropped_and_another_is_answered(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator, verifiers=0, cas=0) as p:
        ration = 2
        await p.start("verifier", "verifier-1", nonces_per_source=Rate(per_second=0, burst=ration))
        await wait_ready(p.nc, "verifier")
        greedy, other = await client(p.url, SOURCE), await client(p.url, OTHER)
        for nc in (greedy, other):
            p.stack.push_async_callback(nc.close)
        answered: list[str] = []

        async def got(msg: Msg) -> None:
            answered.append(msg.subject)

        await greedy.subscribe(f"_INBOX.{SOURCE}.*", cb=got)
        await greedy.flush()
        for _ in range(2 * ration):
            reply = greedy.new_inbox()
            await greedy.publish(subjects.attest_nonce(SOURCE), encode(NonceRequest(reply=reply)))
        await greedy.flush()
        await eventually(lambda: outcome(p, "request.rate_limited") == ration, timeout=20)
        assert outcome(p, "ok") == ration
        assert len(await ask_nonce(other, OTHER, timeout=10)) == 32  # its own ration
        assert len(answered) == ration


async def test_a_flooding_source_is_refused_by_the_server_and_another_is_still_answered(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator, verifiers=0, cas=0) as p:
        await p.start("verifier", "verifier-1", nonce_pull_rate=Rate(per_second=200, burst=20))
        await wait_ready(p.nc, "verifier")
        flooder, tenant = await client(p.url, "mallory"), await client(p.url, SOURCE)
        for nc in (flooder, tenant):
            p.stack.push_async_callback(nc.close)
        js = p.nc.jetstream()
        flooded = subjects.nonce_stream("mallory").name
        first = (await js.stream_info(flooded)).state.last_seq
        request = encode(NonceRequest(reply=flooder.new_inbox()))
        sent = 0
        stop = asyncio.Event()

        async def flood() -> None:
            nonlocal sent
            while not stop.is_set():
                for _ in range(200):  # one write: more than the queue's share and the pace together
                    await flooder.publish(subjects.attest_nonce("mallory"), request)
                sent += 200
                await flooder.flush()

        task = asyncio.create_task(flood())
        try:
            for _ in range(5):  # each asked again after a lost request, as an initializer does
                async with asyncio.timeout(30):
                    while True:
                        with contextlib.suppress(Exception):
                            assert len(await ask_nonce(tenant, SOURCE, timeout=2)) == 32
                            break
        finally:
            stop.set()
            await task
        stored = (await js.stream_info(flooded)).state.last_seq - first
        assert sent > 0
        # The server stored at most the flooder's share plus what the verifier took meanwhile: the rest of
        # the flood was refused there, never reaching the verifier.
        assert stored < sent / 2, (stored, sent)
        assert outcome(p, "ok") >= 5


async def test_each_configured_source_has_its_stream_and_an_unknown_source_gets_no_responders(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator, verifiers=0, cas=0) as p:
        await p.start("verifier", "verifier-1", sources=subjects.parse_sources(SOURCE))
        await wait_ready(p.nc, "verifier")
        names = {s.config.name for s in await p.nc.jetstream().streams_info()}
        assert {subjects.nonce_stream(s).name for s in (subjects.DEFAULT_SOURCE, SOURCE)} <= names
        assert subjects.nonce_stream(OTHER).name not in names
        stranger = await client(p.url, OTHER)
        p.stack.push_async_callback(stranger.close)
        # A source the verifiers were not configured with: nothing stores its requests, and the initializer
        # says so at once instead of waiting out its timeout.
        with pytest.raises(StateError, match="nothing stores requests"):
            await ask_nonce(stranger, OTHER, timeout=10)
        # Control: a configured source is answered.
        assert len(await ask_nonce(stranger, SOURCE, timeout=10)) == 32
