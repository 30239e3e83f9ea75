"""Figures for the summary and the status line, scraped from each service's Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from contrast.cli.localrun.procs import Child, http_get

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """One replica's samples, ``(sample name, sorted labels) -> value``; ``up``: it answered."""

    label: str
    up: bool
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def total(self, name: str, **match: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``match``."""
        return sum(
            v
            for (n, labels), v in self.samples.items()
            if n == name and all((k, val) in labels for k, val in match.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for (n, labels), v in self.samples.items():
            if n == name:
                out[dict(labels).get(label, "")] += v
        return dict(out)


def parse(label: str, text: str) -> Scrape:
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return Scrape(label, True, samples)


async def scrape(child: Child) -> Scrape:
    if child.metrics_port is None or not child.running():
        return Scrape(child.label, False)
    answer = await http_get(child.metrics_port, "/metrics")
    if answer is None or answer[0] != 200:
        return Scrape(child.label, False)
    try:
        return parse(child.label, answer[1].decode())
    except ValueError:  # not Prometheus text: count it as down rather than guess
        return Scrape(child.label, False)


async def scrape_all(children: Sequence[Child]) -> list[Scrape]:
    return list(await asyncio.gather(*(scrape(c) for c in children)))


@dataclass(frozen=True)
class Figures:
    """What the summary reports, summed over replicas."""

    attestations: dict[str, float]  # verifier replica -> attestation requests it verified
    rejections: dict[str, float]  # reason code -> count
    verification_mean_ms: float | None
    certificates_issued: float
    manifest_generation: float
    nonce_replays: float
    ready: dict[str, bool]

    @classmethod
    def of(cls, scrapes: Sequence[Scrape]) -> Figures:
        verifiers = [s for s in scrapes if s.label.startswith("verifier")]
        rejections: dict[str, float] = defaultdict(float)
        for s in verifiers:
            for reason, v in s.by_label("contrast_attestation_failures_total", "reason").items():
                rejections[reason] += v
        count = sum(s.total("contrast_verification_seconds_count") for s in verifiers)
        seconds = sum(s.total("contrast_verification_seconds_sum") for s in verifiers)
        return cls(
            attestations={s.label: s.total("contrast_attestation_requests_total") for s in verifiers},
            rejections={k: v for k, v in rejections.items() if v},
            verification_mean_ms=(1000 * seconds / count) if count else None,
            certificates_issued=sum(s.total("contrast_certificates_issued_total") for s in scrapes),
            manifest_generation=max((s.total("contrast_manifest_generation") for s in scrapes), default=0),
            nonce_replays=sum(s.total("contrast_nonce_replays_total") for s in scrapes),
            ready={s.label: s.up and s.total("contrast_ready") == 1 for s in scrapes},
        )
