"""Every replica's ``/metrics`` as Prometheus reads it: ``promtool check metrics`` (Debian's prometheus) finds
nothing to complain about, the Prometheus text parser reads every declared family, and the figures of a
few attestations (and a few rejections) add up across the replicas."""

from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from contrast import subjects
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.runtime.metrics import Metrics
from contrast.runtime.natsserver import NatsServer
from tests.services.ops_deployment import Deployment, deployment, scrape_all
from tests.tooling import require_tool

ATTESTATIONS = 3
REJECTIONS = 2


def promtool_check(exposition: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )


def samples(exposition: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def total(scrapes: dict[str, str], name: str, **labels: str) -> float:
    return sum(
        value
        for exposition in scrapes.values()
        for got, value in samples(exposition).get(name, [])
        if all(got.get(k) == v for k, v in labels.items())
    )


async def _settled(d: Deployment) -> dict[str, str]:
    """Scrape until the verifiers have counted every request (rejections are acked asynchronously) and every
    replica's readiness gauge has caught up (the runtime refreshes it every few seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        scrapes = {r: body for r, (_, body) in (await scrape_all(d)).items()}
        counted = total(scrapes, "contrast_attestation_requests_total") >= ATTESTATIONS + REJECTIONS
        if counted and total(scrapes, "contrast_ready") == len(scrapes):
            return scrapes
        assert loop.time() < deadline, "the verifiers did not count every request, or a replica is not ready"
        await asyncio.sleep(0.2)


async def test_every_replica_exposes_valid_metrics_that_add_up(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    declared = {family.name for family in Metrics().registry.collect()}
    async with deployment(private_nats.url, snp_emulator, verifiers=2) as d:
        for _ in range(ATTESTATIONS):
            await d.initializer().attest()
        await d.publish_burst(REJECTIONS)  # genuine evidence, but nonces that no verifier issued
        await _settled(d)
        raw = await scrape_all(d)
    assert set(raw) == {"manifest-1", "verifier-1", "verifier-2", "ca-1"}
    scrapes = {replica: body for replica, (_, body) in raw.items()}
    for replica, (content_type, body) in raw.items():
        assert content_type.startswith("text/plain; version=0.0.4"), content_type
        checked = promtool_check(body)
        assert checked.returncode == 0, f"{replica}: {checked.stdout}{checked.stderr}"
        families = {f.name for f in text_string_to_metric_families(body)}
        assert declared <= families, f"{replica} lacks {declared - families}"
        service = replica.rsplit("-", 1)[0]
        ((info, one),) = samples(body)["contrast_service_info"]
        assert (info["service"], info["replica"], one) == (service, replica, 1.0)
        assert samples(body)["contrast_ready"] == [({}, 1.0)], replica

    requests = ATTESTATIONS + REJECTIONS
    assert total(scrapes, "contrast_attestation_requests_total", tee="snp") == requests
    assert total(scrapes, "contrast_attestation_failures_total", tee="snp") == REJECTIONS
    reasons = {
        labels["reason"]
        for body in scrapes.values()
        for labels, _ in samples(body).get("contrast_attestation_failures_total", [])
    }
    assert reasons
    assert all(r.startswith(("request.", "policy.", "evidence.")) for r in reasons), reasons
    assert total(scrapes, "contrast_verification_seconds_count") == ATTESTATIONS  # rejected before
    assert total(scrapes, "contrast_certificates_issued_total") == ATTESTATIONS
    assert total(scrapes, "contrast_issuance_seconds_count") == ATTESTATIONS
    assert total(scrapes, "contrast_nonce_replays_total") == 0
    assert total(scrapes, "contrast_collateral_fetch_failures_total") == 0
    assert (
        total(
            scrapes,
            "contrast_stream_deliveries_total",
            consumer=subjects.verifier_consumer(subjects.DEFAULT_SOURCE).durable,
            outcome="ack",
        )
        == requests
    )
    assert total(scrapes, "contrast_stream_deliveries_total", consumer="ca", outcome="ack") == ATTESTATIONS
    assert total(scrapes, "contrast_requests_total", endpoint="nonce", code="ok") == ATTESTATIONS
    assert total(scrapes, "contrast_requests_total", endpoint="join", code="ok") == 3
    for replica in ("verifier-1", "verifier-2", "ca-1"):
        assert samples(scrapes[replica])["contrast_manifest_generation"] == [({}, 1.0)]
        own = {c.durable for c in subjects.source_consumers(subjects.DEFAULT_SOURCE)}  # the only source here
        consumers = {"ca"} if replica == "ca-1" else own
        # the backlog gauges read the workers' own consumers
        assert {
            labels["consumer"] for labels, _ in samples(scrapes[replica])["contrast_stream_pending"]
        } == consumers


def test_promtool_flags_what_prometheus_would_misread() -> None:
    """The check above is not vacuous: a counter without ``_total`` and a metric without help fail it."""
    m = Metrics()
    m.nonce_replays.inc()
    from prometheus_client import generate_latest

    good = generate_latest(m.registry).decode()
    assert promtool_check(good).returncode == 0
    renamed = good.replace("contrast_nonce_replays_total", "contrast_nonce_replays")
    bad = promtool_check(renamed)
    assert bad.returncode != 0
    assert '"_total" suffix' in bad.stdout + bad.stderr
    assert promtool_check('contrast_x{a="1"} 1\n').returncode != 0
