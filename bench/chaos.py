"""The distributed Coordinator under faults: a 3-node NATS cluster (R3, per-role users), two manifest
replicas, two verifiers and ``--cas`` CA replicas (2 by default, as deployed) as processes, and emulated pods
attesting at a steady rate, while one fault at a time hits it:

1. SIGKILL the JetStream meta leader (restarted after 5 s);
2. SIGKILL the leader of the first namespace's ATTEST stream (restarted after 5 s);
3. SIGSTOP the node that leads that stream for 10 s, then SIGCONT;
4. SIGKILL a verifier and a CA, each stopped for a second first so that it dies holding work, and a manifest
   replica, each restarted at once (as Kubernetes would); with two CAs, the killed one's verdicts are
   redelivered to the other.

For each fault it prints the pods that started attesting (requested), completed, rejected and lost (neither
by their deadline), the requests that were delivered two different bundles (conflicting), the time until
throughput was back at 80 % of the offered rate, and p50/p99 of the pods that started during the fault (with
the p99 before it). The goal: 0 lost, 0 conflicting, every pod attested within its deadline.

Usage: ``python bench/chaos.py [--rate 8] [--before 5] [--window 30] [--deadline 60] [--cas 2]
[--only N,...]``. The machine is shared: every process of the cluster, and the pods, compete for its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from contrast.runtime import configure_logging
from contrast.testing.chaos import FAULTS, FaultReport, Participants, run_fault
from contrast.testing.cluster import CoordinatorCluster, Layout

SOURCES = ("tenant-a", "tenant-b")


def row(r: FaultReport) -> str:
    back = "not back" if r.recovery_s is None else f"{r.recovery_s:5.1f} s"
    counts = f"{r.requested:>4} {r.completed:>4} {r.rejected:>4} {r.lost:>4} {r.conflicting:>4}"
    latency = f"{r.p50_ms:7.0f} {r.p99_ms:7.0f}   {r.baseline_p99_ms:7.0f}"
    return f"{r.fault:<42} {counts}   {back:>8}   {latency}   {r.repaired_after_s:5.1f} s"


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="contrast-chaos-"))
    layout = Layout(nats=3, manifests=2, verifiers=2, cas=args.cas, sources=SOURCES)
    began = time.monotonic()
    try:
        async with CoordinatorCluster(work, work / "emulator", layout) as cluster:
            print(
                f"cluster up in {time.monotonic() - began:.0f} s: 3 NATS nodes (R3, per-role users), "
                f"2 manifest, 2 verifier, {args.cas} CA; load {args.rate}/s over {len(SOURCES)} namespaces, "
                f"pod deadline {args.deadline:.0f} s; cores {os.cpu_count()}, load average "
                f"{os.getloadavg()[0]:.1f}",
                flush=True,
            )
            who = await Participants.of(cluster, SOURCES, deadline=args.deadline)
            counts = f"{'req':>4} {'done':>4} {'rej':>4} {'lost':>4} {'conf':>4}"
            latency = f"{'p50 ms':>7} {'p99 ms':>7}   p99 before"
            print(f"{'fault':<42} {counts}   {'recovery':>8}   {latency}   repaired")
            reports = []
            for i, fault in enumerate(FAULTS, 1):
                if args.only and i not in args.only:
                    continue
                r = await run_fault(
                    cluster, fault, who, rate=args.rate, before=args.before, window=args.window
                )
                reports.append(r)
                print(row(r), flush=True)
            violations = cluster.violations()
        ok = all(r.lost == 0 and r.conflicting == 0 and r.rejected == 0 for r in reports)
        print(f"permission violations logged by the servers: {len(violations)}")
        for line in violations:
            print(f"  {line}")
        print(f"goal (0 lost, 0 conflicting, every pod within its deadline): {'met' if ok else 'MISSED'}")
        print(
            json.dumps(
                {
                    "rate": args.rate,
                    "window_s": args.window,
                    "cas": args.cas,
                    "load_average": os.getloadavg(),
                    "faults": [asdict(r) for r in reports],
                }
            )
        )
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    configure_logging("bench", "chaos", level="ERROR")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=8.0, help="pods starting per second")
    p.add_argument("--before", type=float, default=5.0, help="seconds of steady load before the fault")
    p.add_argument("--window", type=float, default=30.0, help="seconds of load from the fault on")
    p.add_argument("--deadline", type=float, default=60.0, help="each pod's deadline, seconds")
    p.add_argument("--cas", type=int, default=2, help="CA replicas")
    p.add_argument("--only", type=lambda s: {int(x) for x in s.split(",")}, default=None)
    raise SystemExit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
