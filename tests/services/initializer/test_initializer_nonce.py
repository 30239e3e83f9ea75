"""A nonce request lost on the way (refused by its source's full nonce stream, or dropped over the ration) is
asked again after ``nonce_timeout``, not after the publish timeout: under a flood a pod then waits about a
second for it, not five. Within one request, an answer lost on the way is replaced: the same request is sent
again on the same inbox after ``nonce_resend``. The request names the initializer's own inbox, where the
answer comes."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from contrast import subjects
from contrast.errors import StateError
from contrast.initializer.client import AttestationFailed, Initializer, InitializerConfig, ask_nonce
from contrast.platform.emulated import EmulatedSnp, EmulatedSnpPlatform
from contrast.runtime.jetstream import ensure_stream
from contrast.runtime.natsserver import NatsServer
from contrast.wire.v1 import NonceReply, NonceRequest, decoder, encode
from tests.services.pipeline import INITIALIZER_PINS


@pytest.mark.parametrize("nonce_timeout", [0.5, 10.0], ids=["nonce timeout", "control: publish timeout"])
async def test_a_lost_nonce_request_is_asked_again_soon(
    nc: Client, snp_emulator: EmulatedSnpPlatform, nonce_timeout: float
) -> None:
    source = f"nonce-{secrets.token_hex(4)}"
    asked: list[NonceRequest] = []

    async def verifier(msg: Msg) -> None:  # loses the first request, answers the others
        asked.append(decoder(NonceRequest).decode(msg.data))
        assert msg.reply == asked[-1].reply  # the server's acknowledgement goes there too
        if len(asked) > 1:
            await nc.publish(asked[-1].reply, encode(NonceReply(nonce=secrets.token_bytes(32))))

    await nc.subscribe(subjects.attest_nonce(source), cb=verifier)
    await nc.flush()
    config = InitializerConfig(
        pins=INITIALIZER_PINS,
        deadline=3.0,
        request_timeout=10.0,
        nonce_timeout=nonce_timeout,
        nonce_resend=100.0,  # this test is about the attempts; the resend within one is below
        backoff_cap=0.5,
    )
    platform = EmulatedSnp(snp_emulator, host_data=bytes(32))
    init = Initializer(nc=nc, platform=platform, config=config, source=source)
    with pytest.raises(AttestationFailed):  # nobody answers the request itself
        await init.attest()
    if nonce_timeout < 1:
        assert len(asked) >= 2  # asked again within the deadline
    else:
        assert len(asked) == 1  # still waiting for the lost one at the deadline
    assert all(a.reply.startswith("_INBOX.") for a in asked)  # the client's own inbox
    assert len({a.reply for a in asked}) == len(asked)  # a fresh inbox per request


@pytest.mark.parametrize("resend", [True, False], ids=["sent again", "control: not sent again"])
async def test_a_lost_answer_is_replaced_on_the_same_inbox(nc: Client, resend: bool) -> None:
    """In a cluster, an answer published on a node that does not know the fresh inbox yet is dropped there
    (the subscription travels to the other nodes asynchronously, behind whatever a flood put on the route).
    The request is sent again, on the same inbox, a quarter of a second later: by then the inbox is known,
    and the pod has its nonce long before its 1 s nonce timeout."""
    source = f"nonce-{secrets.token_hex(4)}"
    asked: list[NonceRequest] = []

    async def verifier(msg: Msg) -> None:  # its first answer is lost on the way; it answers the others
        asked.append(decoder(NonceRequest).decode(msg.data))
        if len(asked) > 1:
            await nc.publish(asked[-1].reply, encode(NonceReply(nonce=secrets.token_bytes(32))))

    await nc.subscribe(subjects.attest_nonce(source), cb=verifier)
    await nc.flush()
    started = time.monotonic()
    if resend:
        assert len(await ask_nonce(nc, source, timeout=1.0, resend_after=0.25)) == 32
        assert time.monotonic() - started < 0.9
        assert len(asked) == 2
        assert asked[0].reply == asked[1].reply  # the same request, on the same inbox
    else:
        with pytest.raises(StateError, match="no nonce within"):
            await ask_nonce(nc, source, timeout=1.0, resend_after=10.0)
        assert len(asked) == 1


@pytest.mark.parametrize("room", [True, False], ids=["room made", "control: the share stays full"])
async def test_a_request_refused_by_a_full_share_is_asked_again_at_once(
    private_nats: NatsServer, room: bool
) -> None:
    source = "tenant-a"
    nc = await nats.connect(private_nats.url)
    try:
        js = nc.jetstream()
        stream = replace(subjects.nonce_stream(source), max_age=600.0)  # no verifier: nothing ages out here
        await ensure_stream(js, stream)
        for _ in range(subjects.NONCE_SHARE):  # the source's share is full
            await js.publish(subjects.attest_nonce(source), b"waiting")
        seen: list[NonceRequest] = []

        async def verifier(msg: Msg) -> None:  # sees every publish, stored or refused; answers stored ones
            seen.append(decoder(NonceRequest).decode(msg.data))
            if len(seen) == 2 and room:
                await js.purge_stream(stream.name)
            elif len(seen) > 2 and room:
                await nc.publish(seen[-1].reply, encode(NonceReply(nonce=secrets.token_bytes(32))))

        await nc.subscribe(subjects.attest_nonce(source), cb=verifier)
        await nc.flush()
        if room:
            assert len(await ask_nonce(nc, source, timeout=10)) == 32
        else:
            with pytest.raises(StateError, match="refused by a full queue"):
                await ask_nonce(nc, source, timeout=1)
        assert len(seen) >= 3  # asked again after each refusal, well within the timeout
        assert {s.reply for s in seen} == {seen[0].reply}
    finally:
        await nc.close()


def test_the_nonce_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        InitializerConfig(pins=INITIALIZER_PINS, nonce_timeout=0)
