"""Answers sent again while the server knows no subscriber for them (contrast.runtime.answers), on a real
nats-server: an inbox subscribed only after its answer was published still gets it, a plain publish does
not (the control), and nothing is sent again past the horizon or because of a message that is not the
server's no-responders status."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from contrast.runtime.answers import Answers


@pytest.fixture
async def requester(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@contextlib.asynccontextmanager
async def started(nc: Client, **kw: Any) -> AsyncIterator[Answers]:
    answers = Answers(nc, **kw)
    await answers.start()
    try:
        yield answers
    finally:
        await answers.stop()


def _inbox() -> str:
    return f"_INBOX.test.{secrets.token_hex(8)}"


async def _late_subscriber(nc: Client, inbox: str, after: float) -> asyncio.Queue[bytes]:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on(msg: Msg) -> None:
        got.put_nowait(bytes(msg.data))

    await asyncio.sleep(after)
    await nc.subscribe(inbox, cb=on)
    await nc.flush()
    return got


async def _received(got: asyncio.Queue[bytes], within: float) -> list[bytes]:
    out: list[bytes] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while (left := end - loop.time()) > 0:
        try:
            out.append(await asyncio.wait_for(got.get(), left))
        except TimeoutError:
            break
    return out


async def test_an_answer_published_before_its_subscriber_exists_is_sent_again_until_heard(
    nc: Client, requester: Client
) -> None:
    async with started(nc, pause=0.02, horizon=1.0) as answers:
        inbox = _inbox()
        await answers.publish(inbox, b"nonce", {})
        got = await _late_subscriber(requester, inbox, after=0.15)
        assert await _received(got, 0.5) == [b"nonce"]
        assert answers.resent >= 1


async def test_control_a_plain_publish_before_the_subscription_is_lost(nc: Client, requester: Client) -> None:
    inbox = _inbox()
    await nc.publish(inbox, b"nonce")
    await nc.flush()
    got = await _late_subscriber(requester, inbox, after=0.15)
    assert await _received(got, 0.5) == []


async def test_nothing_is_sent_again_past_the_horizon(nc: Client, requester: Client) -> None:
    async with started(nc, pause=0.02, horizon=0.2) as answers:
        inbox = _inbox()
        await answers.publish(inbox, b"stale", {})
        got = await _late_subscriber(requester, inbox, after=0.5)
        assert await _received(got, 0.3) == []
        sent = answers.resent
        await asyncio.sleep(0.1)
        assert answers.resent == sent  # given up, not still trying


async def test_a_message_that_is_not_a_no_responders_status_sends_nothing_again(
    nc: Client, requester: Client
) -> None:
    async with started(nc, pause=0.02, horizon=1.0) as answers:
        inbox = _inbox()
        got = await _late_subscriber(requester, inbox, after=0)
        await answers.publish(inbox, b"nonce", {})
        assert await _received(got, 0.3) == [b"nonce"]
        # Someone replies on the answer's reply subject (as a receiver could try): no resend follows.
        status_subject = f"{answers._prefix}.{answers._next}"
        await requester.publish(status_subject, b"", headers={"Status": "404"})
        await requester.publish(status_subject, b"503")
        await requester.flush()
        assert await _received(got, 0.3) == []
        assert answers.resent == 0


async def test_pending_answers_are_bounded(nc: Client) -> None:
    async with started(nc, pause=0.02, horizon=10.0, max_pending=8) as answers:
        for i in range(50):
            await answers.publish(f"_INBOX.test.nobody{i}", b"x", {})
        assert len(answers._pending) <= 8


async def test_bounds_are_checked(nc: Client) -> None:
    with pytest.raises(ValueError):
        Answers(nc, pause=1.0, horizon=0.5)
    with pytest.raises(ValueError):
        Answers(nc, max_pending=0)
