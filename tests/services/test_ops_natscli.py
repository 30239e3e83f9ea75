"""What an operator sees with the real ``nats`` CLI (natscli, pinned by ``make tools``) on a running
Coordinator: every service and endpoint in ``nats micro ls/info/stats`` with sensible statistics, and the
verifier consumer's pending count (what KEDA scales on) moving under a burst."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from contrast import subjects
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.runtime.natsserver import NatsServer
from tests.services.ops_deployment import Deployment, deployment
from tests.tooling import require_tool

ENDPOINTS = {
    "manifest": {
        "status": subjects.USER_STATUS,
        "set": subjects.USER_MANIFEST_SET,
        "get": subjects.USER_MANIFEST_GET,
        "recover-challenge": subjects.USER_RECOVER,
        "recover": f"{subjects.USER_RECOVER}.manifest-1",
        "join-nonce": subjects.COORDINATOR_JOIN_NONCE,
        "join": subjects.COORDINATOR_JOIN,
        "ready": subjects.health("manifest"),
    },
    "verifier": {"ready": subjects.health("verifier")},
    "ca": {"ready": subjects.health("ca")},
}
REPLICAS = {"manifest": {"manifest-1"}, "verifier": {"verifier-1", "verifier-2"}, "ca": {"ca-1"}}
# The default source is this deployment's only one: its nonce and attestation streams.
_NONCE, _VERIFY = subjects.source_consumers(subjects.DEFAULT_SOURCE)
WORKERS = {
    "verifier": ",".join(f"{c.stream.name}/{c.durable}" for c in (_NONCE, _VERIFY)),
    "ca": "VERDICTS/ca",
}
ATTESTATIONS = 3


async def nats(d: Deployment, *args: str) -> Any:
    """Run ``nats -s URL ARGS --json`` (off the event loop, which the in-process services share)."""
    process = await asyncio.create_subprocess_exec(
        require_tool("nats"),
        "--server",
        d.url,
        "--timeout",
        "5s",
        *args,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"nats {' '.join(args)}: {err.decode()[-500:]}"
    return json.loads(out)


async def test_nats_micro_lists_every_service_endpoint_and_sensible_stats(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with deployment(private_nats.url, snp_emulator, verifiers=2) as d:
        for _ in range(ATTESTATIONS):
            await d.initializer().attest()

        listed = await nats(d, "micro", "ls")
        by_service: dict[str, list[dict[str, Any]]] = {}
        for instance in listed:
            by_service.setdefault(instance["name"], []).append(instance)
        assert set(by_service) == set(ENDPOINTS)
        for name, instances in by_service.items():
            assert {i["metadata"]["replica"] for i in instances} == REPLICAS[name]
            for i in instances:
                assert i["version"] == "0.1.0"
                assert i["description"].startswith("Contrast ")
                assert i["metadata"].get("workers") == WORKERS.get(name)
                assert {e["name"]: e["subject"] for e in i["endpoints"]} == ENDPOINTS[name]

        totals: dict[tuple[str, str], int] = {}
        for name, instances in by_service.items():
            for i in instances:
                info = await nats(d, "micro", "info", name, i["id"])
                assert info["info"]["id"] == i["id"]
                assert {e["name"] for e in info["info"]["endpoints"]} == set(ENDPOINTS[name])
            stats = await nats(d, "micro", "stats", name)
            assert {s["id"] for s in stats} == {i["id"] for i in instances}
            for s in stats:
                for e in s["endpoints"]:
                    assert e["num_errors"] == 0, e  # nothing failed in a healthy run
                    assert e["last_error"] == ""
                    assert 0 <= e["average_processing_time"] <= e["processing_time"]
                    if e["num_requests"]:
                        # nanoseconds: more than nothing, less than a second per request here
                        assert 0 < e["average_processing_time"] < 1_000_000_000, e
                    else:
                        assert e["processing_time"] == 0
                    totals[name, e["name"]] = totals.get((name, e["name"]), 0) + e["num_requests"]
        # One nonce request per attestation, each pulled once and acked (none lost, none left).
        default = subjects.nonce_consumer(subjects.DEFAULT_SOURCE)  # the pods here have no user of their own
        nonces = await nats(d, "consumer", "info", default.stream.name, default.durable)
        assert nonces["delivered"]["consumer_seq"] == ATTESTATIONS
        assert nonces["ack_floor"]["consumer_seq"] == ATTESTATIONS
        assert totals["manifest", "set"] == 1
        assert totals["manifest", "join"] == 3  # two verifiers and the CA joined
        assert totals["manifest", "join-nonce"] == 3
        assert totals["manifest", "recover"] == 0


async def test_verifier_consumer_pending_moves_under_a_burst(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    stream, durable = _VERIFY.stream.name, _VERIFY.durable
    burst = 40
    async with deployment(private_nats.url, snp_emulator, verifiers=1) as d:
        idle = await nats(d, "consumer", "info", stream, durable)
        assert idle["config"]["filter_subject"] == subjects.attest_requested(subjects.DEFAULT_SOURCE)
        assert (idle["num_pending"], idle["num_ack_pending"]) == (0, 0)
        # No verifier pulls while the burst arrives (all replicas busy elsewhere, or scaled to zero).
        await d.stop("verifier-1")
        await d.publish_burst(burst)
        queued = await nats(d, "consumer", "info", stream, durable)
        assert queued["num_pending"] == burst
        # A replica starts (what KEDA would do) and the backlog drains back to nothing.
        await d.start("verifier", "verifier-2")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            info = await nats(d, "consumer", "info", stream, durable)
            if info["num_pending"] == 0 and info["num_ack_pending"] == 0:
                break
            assert loop.time() < deadline, f"backlog did not drain: {info['num_pending']} pending"
            await asyncio.sleep(0.2)
        assert info["delivered"]["stream_seq"] >= burst
