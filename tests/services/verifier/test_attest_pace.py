"""A source's attestation requests are pulled at the verifier's pace for that source
(``CONTRAST_ATTEST_PULL_RATE``): a source flooding its stream ``ATTEST_<source>`` with garbage takes no more
of a replica's work than that pace, the rest waits in its own bounded stream, and another source's requests
are pulled from their own stream at their own pace and verified meanwhile. The control, a pace that does
not bind, is the flood that would take the replica's whole work: every garbage request is pulled."""

from __future__ import annotations

import pytest

from contrast import subjects
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.runtime.admission import Rate
from contrast.runtime.natsserver import NatsServer
from tests.services.evil_bus import eventually
from tests.services.pipeline import H_DB, Pipeline, pipeline, wait_ready

FLOODER = "mallory"
PACE = 5
SENT = 3 * PACE


def dead_letters(p: Pipeline) -> float:
    labels = {"consumer": subjects.verifier_consumer(FLOODER).durable, "reason": "request.decode"}
    value = p.running["verifier-1"].runtime.metrics.registry.get_sample_value(
        "contrast_deadletters_total", labels
    )
    return float(value or 0.0)


@pytest.mark.parametrize("paced", [True, False], ids=["paced", "control: a pace that does not bind"])
async def test_a_flooding_source_is_pulled_at_its_pace_and_another_is_verified(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform, paced: bool
) -> None:
    async with pipeline(private_nats.url, snp_emulator, verifiers=0) as p:
        # No refill after the burst: what is pulled is exactly the pace's budget.
        pace = Rate(per_second=0, burst=PACE if paced else 1000)
        await p.start("verifier", "verifier-1", attest_pull_rate=pace)
        await wait_ready(p.nc, "verifier")
        js = p.nc.jetstream()
        for i in range(SENT):
            await js.publish(
                subjects.attest_requested(FLOODER), b"\x00garbage", headers={"Nats-Msg-Id": f"garbage-{i}"}
            )
        expected = PACE if paced else SENT
        await eventually(lambda: dead_letters(p) == expected, timeout=20)
        # Another source (the default one, the pipeline's pods) is pulled from its own stream meanwhile.
        creds = await p.initializer(H_DB).attest()
        assert creds.bundle.leaf is not None
        consumer = subjects.verifier_consumer(FLOODER)
        info = await js.consumer_info(consumer.stream.name, consumer.durable)
        assert info.delivered.consumer_seq == expected
        assert info.num_pending == SENT - expected  # waiting in the flooder's own stream
        assert dead_letters(p) == expected
