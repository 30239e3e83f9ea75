"""What a run found, and the short readable summary printed at its end."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contrast.cli.localrun.credentials import PodCertificate
from contrast.cli.localrun.host import EmulatedPod
from contrast.cli.localrun.metrics import Figures
from contrast.cli.localrun.mtls import Proof


@dataclass
class PodOutcome:
    pod: EmulatedPod
    seconds: float = 0.0
    certificate: PodCertificate | None = None


@dataclass
class Outcome:
    emulator: str = ""
    coordinator_policies: dict[str, bytes] = field(default_factory=dict)  # service role -> its policy hash
    generation: int = 0
    transition_hash: str = ""
    set_files: list[str] = field(default_factory=list)
    pods: list[PodOutcome] = field(default_factory=list)
    skipped: list[EmulatedPod] = field(default_factory=list)
    verify: dict[str, Any] = field(default_factory=dict)
    proof: Proof | None = None
    mesh: Proof | None = None
    figures: Figures | None = None


def render(
    o: Outcome,
    platform: str,
    services: list[str],
    elapsed: float,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    env = os.environ if env is None else env
    lines = [
        "",
        f"==== Contrast local run: all checks passed in {elapsed:.1f} s ({platform}, INSECURE emulated "
        "hardware) ====",
        *(
            f"{'Coordinator' if i == 0 else '':<13} {role:<9} policy {h.hex()}"
            for i, (role, h) in enumerate(o.coordinator_policies.items())
        ),
        f"              manifest generation {o.generation}, transition {o.transition_hash[:16]}…",
        f"              {', '.join(services)} (each attested on its own policy; verifier and CA joined "
        "through the manifest service as the role the manifest binds to their policy)",
        "verified      `contrast verify`: the Coordinator's evidence satisfies manifest.json; its history "
        f"({o.verify.get('manifests', '?')} manifest(s))",
        "              checks out; the active manifest is manifest.json",
        f"pods          {'name':<9} {'policy hash (HOST_DATA / MR_CONFIG_ID)':<64}  certificate",
    ]
    for po in o.pods:
        cert, c = "-", po.certificate
        if c is not None:
            secret = ", workload secret" if c.has_workload_secret else ""
            cert = f"SANs {','.join(c.sans)}, valid until {c.not_after:%Y-%m-%d}{secret}"
        lines.append(f"              {po.pod.name:<9} {po.pod.policy_hash.hex()}  {cert}")
    for p in o.skipped:
        lines.append(f"              {p.name:<9} {p.policy_hash.hex()}  (no initializer: not attested)")
    lines.append(
        f"certificates  {len(o.pods)} issued to pods, chaining to mesh-ca.pem and the root CA from "
        "`contrast verify`"
    )
    if o.proof is not None:
        lines += [f"mTLS          {e.observed:<8} {e.description}" for e in o.proof.exchanges]
    if o.mesh is not None:
        lines += [f"mesh          {e.observed:<8} {e.description} ({e.detail})" for e in o.mesh.exchanges]
    f = o.figures
    if f is not None:
        per = ", ".join(f"{k} {int(v)}" for k, v in sorted(f.attestations.items()))
        mean = f"{f.verification_mean_ms:.1f} ms" if f.verification_mean_ms is not None else "-"
        rejected = ", ".join(f"{k} {int(v)}" for k, v in sorted(f.rejections.items())) or "none"
        lines += [
            f"metrics       attestations {int(sum(f.attestations.values()))} ({per}); rejected: {rejected}",
            f"              certificates issued {int(f.certificates_issued)}; mean evidence verification "
            f"{mean}; nonce replays {int(f.nonce_replays)}",
        ]
    otel = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    lines.append(
        f"traces        {'exported to ' + otel if otel else 'off (set OTEL_EXPORTER_OTLP_ENDPOINT)'}"
    )
    return lines
