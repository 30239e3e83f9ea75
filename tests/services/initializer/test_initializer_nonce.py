"""A nonce request lost on the way (a flood filled a verifier's queue) is asked again after ``nonce_timeout``,
not after the publish timeout: under a flood a pod then waits about a second for it, not five."""

from __future__ import annotations

import secrets

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from contrast import subjects
from contrast.initializer.client import AttestationFailed, Initializer, InitializerConfig
from contrast.platform.emulated import EmulatedSnp, EmulatedSnpPlatform
from contrast.wire.v1 import NonceReply, encode
from tests.services.pipeline import INITIALIZER_PINS


@pytest.mark.parametrize("nonce_timeout", [0.5, 10.0], ids=["nonce timeout", "control: publish timeout"])
async def test_a_lost_nonce_request_is_asked_again_soon(
    nc: Client, snp_emulator: EmulatedSnpPlatform, nonce_timeout: float
) -> None:
    source = f"nonce-{secrets.token_hex(4)}"
    asked: list[Msg] = []

    async def verifier(msg: Msg) -> None:  # loses the first request, answers the others
        asked.append(msg)
        if len(asked) > 1:
            await nc.publish(msg.reply, encode(NonceReply(nonce=secrets.token_bytes(32))))

    await nc.subscribe(subjects.attest_nonce(source), cb=verifier)
    await nc.flush()
    config = InitializerConfig(
        pins=INITIALIZER_PINS,
        deadline=3.0,
        request_timeout=10.0,
        nonce_timeout=nonce_timeout,
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


def test_the_nonce_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        InitializerConfig(pins=INITIALIZER_PINS, nonce_timeout=0)
