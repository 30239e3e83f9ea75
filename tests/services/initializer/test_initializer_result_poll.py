"""An answer stored but not delivered on its subject is read from KV ``results`` soon, not after 2 s.

In a cluster the server republishes a stored answer on the node that stored it, which learns of the pod's
subscription to the result subject asynchronously (behind whatever a flood put on the route): a republish
before that is dropped there. The pod then reads the stored answer after ``first_poll`` (0.5 s), and every
``poll_interval`` after that. Here the pod's subscription never sees the republish at all: what it gets, it
gets from the bucket."""

from __future__ import annotations

import time
from typing import Any

import pytest
from nats.aio.client import Client

from contrast import subjects
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.initializer.client import Initializer, InitializerConfig
from contrast.runtime.natsserver import NatsServer
from tests.services.pipeline import H_DB, INITIALIZER_PINS, pipeline

POLL_INTERVAL = 3.0


class DeafToResults:
    """The pod's connection, but its subscriptions to result subjects never receive anything."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nc, name)

    async def subscribe(self, subject: str, **kw: Any) -> Any:
        if subject.startswith(subjects.ATTEST_RESULT):
            subject = f"nowhere.{subject.rsplit('.', 1)[-1]}"
        return await self._nc.subscribe(subject, **kw)


@pytest.mark.parametrize(
    "first_poll", [0.5, POLL_INTERVAL], ids=["read soon", "control: after poll_interval"]
)
async def test_a_stored_answer_that_never_arrives_is_read_from_the_bucket(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform, first_poll: float
) -> None:
    async with pipeline(private_nats.url, snp_emulator) as p:
        await p.initializer(H_DB).attest()  # warm: replicas ready, chains cached
        config = InitializerConfig(
            pins=INITIALIZER_PINS, deadline=20.0, first_poll=first_poll, poll_interval=POLL_INTERVAL
        )
        pod = Initializer(nc=DeafToResults(p.nc), platform=p.platform(H_DB), config=config)  # type: ignore[arg-type]
        started = time.monotonic()
        creds = await pod.attest()
        elapsed = time.monotonic() - started
        assert creds.bundle.leaf is not None
        assert creds.attempts == 1
        if first_poll < POLL_INTERVAL:
            assert elapsed < POLL_INTERVAL
        else:
            assert elapsed >= POLL_INTERVAL
