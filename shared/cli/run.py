"""``contrast run``: the local end-to-end runner (``make run``). INSECURE: the hardware is emulated.

With the Coordinator's services in the table it runs the scenario of :mod:`contrast.cli.localrun.scenario`:
emulator, ``generate`` on the Coordinator's layout (``--coordinator``, ``deploy/kubernetes``) and the example
app, embedded NATS (or ``--nats URL``), the manifest service, the CA and ``--verifiers N`` verifier replicas,
``set``, one attested pod per workload, ``verify``, mutual TLS between pods, a summary, then a live status
line until Ctrl-C (``--headless``: exit after the summary).

Each service runs as its own process, with the command, environment and policy hash of its pod in the
generated YAML, exactly as in a pod, in its own session: a Ctrl-C reaches only this runner, which stops pods
and services first (SIGTERM: they drain their in-flight work), then NATS. Nothing is left behind. ``OTEL_*``
variables pass through to every service.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import contrast
from contrast.cli.exitcodes import EXIT_USAGE
from contrast.cli.localrun.procs import STOP_TIMEOUT, RunnableService
from contrast.cli.localrun.scenario import LocalRun, RunOptions
from contrast.generate.platforms import EMULATED_SNP, EMULATED_TDX

__all__ = ["SERVICES", "STOP_TIMEOUT", "RunnableService", "register", "run"]

# The services of the Coordinator, in start order; a row whose module has no __main__ is reported and
# skipped. A table without manifest, verifier and ca only
# starts its services (no scenario). `contrast serve` offers every row.
SERVICES: tuple[RunnableService, ...] = (
    RunnableService("manifest"),
    RunnableService("verifier", replicas=2),
    RunnableService("ca"),
    # An init container, not a service: never started as one (0 replicas); the scenario runs it once per pod.
    RunnableService("initializer", replicas=0),
    # A pod's sidecar, not a Coordinator service: the scenario starts one per meshed pod.
    RunnableService("meshproxy", replicas=0),
)

# The example app and the Coordinator's Kubernetes layout ship in the source tree next to the package root
# (shared/ is importable as contrast).
DEPLOY = Path(contrast.__file__).resolve().parent.parent / "deploy"
DEFAULT_EXAMPLES = DEPLOY / "examples"
DEFAULT_COORDINATOR = DEPLOY / "kubernetes"


def run(args: argparse.Namespace) -> int:
    if args.verifiers < 1:
        print("contrast run: --verifiers must be at least 1")
        return EXIT_USAGE
    if args.nats_cluster < 1 or (args.nats_cluster > 1 and args.nats):
        print("contrast run: --nats-cluster needs at least 1 node and no --nats")
        return EXIT_USAGE
    opts = RunOptions(
        workdir=Path(args.workdir),
        examples=Path(args.examples),
        coordinator=Path(args.coordinator),
        platform=args.platform,
        verifiers=args.verifiers,
        nats_url=args.nats,
        store_dir=Path(args.store_dir) if args.store_dir else None,
        headless=args.headless,
        pod_deadline=args.pod_deadline,
        jaeger=args.jaeger,
        nats_cluster=args.nats_cluster,
    )
    # SERVICES is read at call time, so a test (or a fork of this runner) can swap the table.
    return asyncio.run(LocalRun(opts, SERVICES).main())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole flow locally on emulated hardware (make run)",
        description=(
            "INSECURE, for development: start NATS, the manifest service, the CA and the verifiers on "
            "emulated hardware, deploy the example app (generate, set, one attested pod per workload, "
            "verify), prove mutual TLS between pods, print a summary and stay up until Ctrl-C. "
            "OTEL_EXPORTER_OTLP_ENDPOINT exports every service's traces."
        ),
    )
    p.add_argument("--verifiers", type=int, default=2, metavar="N", help="verifier replicas (default 2)")
    p.add_argument("--nats", help="use this NATS server instead of starting an embedded one")
    p.add_argument(
        "--nats-cluster",
        type=int,
        default=1,
        metavar="N",
        help="start N embedded NATS servers as one JetStream cluster (3: streams and buckets at R3)",
    )
    p.add_argument("--workdir", default=".run", help="state and outputs of the run (default: .run)")
    p.add_argument(
        "--platform",
        choices=(EMULATED_SNP, EMULATED_TDX),
        default=EMULATED_SNP,
        help="emulated hardware (default %(default)s)",
    )
    p.add_argument(
        "--headless",
        "--once",
        action="store_true",
        help="run the scenario, print the summary and exit (0: every check passed, 1: a step failed)",
    )
    p.add_argument(
        "--examples", default=str(DEFAULT_EXAMPLES), help="the app to deploy (default: %(default)s)"
    )
    p.add_argument(
        "--coordinator",
        default=str(DEFAULT_COORDINATOR),
        help="the Coordinator's layout, one Deployment per service (default: %(default)s)",
    )
    p.add_argument(
        "--jaeger",
        action="store_true",
        help="start the Jaeger of `make tools` on loopback, export every trace to it and print its address",
    )
    p.add_argument("--store-dir", help="JetStream store directory of the embedded NATS (default: a temp dir)")
    p.add_argument(
        "--pod-deadline",
        type=float,
        default=45.0,
        help="seconds each pod's initializer may take (default 45)",
    )
    p.set_defaults(func=run)
