"""What each configured source costs an idle Coordinator: every source has two streams of its own, each pulled
by every verifier replica (a long-poll pull request per stream and second, a backlog read per five seconds).

One NATS server, one manifest replica, one verifier, one CA as processes, with ``--sources`` namespaces
(and the default one). Nothing attests; it prints the verifier's and nats-server's CPU over ``--seconds``,
per second and per source, next to the same with the default source alone.

Usage: ``python bench/sources_cost.py [--sources 1,50,200] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from contrast.runtime import configure_logging
from contrast.testing.cluster import CoordinatorCluster, Layout, cpu_seconds


async def idle_cost(count: int, seconds: float) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="contrast-sources-"))
    sources = tuple(f"team-{i}" for i in range(count))
    layout = Layout(nats=1, manifests=1, verifiers=1, cas=1, sources=sources)
    try:
        async with CoordinatorCluster(work, work / "emulator", layout) as cluster:
            await asyncio.sleep(5.0)  # past the start: streams and consumers created, first pulls out
            (verifier,) = cluster.of("verifier")
            node = cluster.nodes[0]
            v0, n0, t0 = cpu_seconds(verifier.process.pid), cpu_seconds(node.pid), time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - t0
            v = (cpu_seconds(verifier.process.pid) - v0) / elapsed
            n = (cpu_seconds(node.pid) - n0) / elapsed
        return {"sources": count + 1, "verifier_cores": round(v, 4), "nats_cores": round(n, 4)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def run(args: argparse.Namespace) -> None:
    rows = []
    for count in args.sources:
        row = await idle_cost(count, args.seconds)
        rows.append(row)
        verifier, nats = 1000 * row["verifier_cores"], 1000 * row["nats_cores"]
        print(
            f"{row['sources']:>4} sources: idle verifier {verifier:6.1f} ms CPU a second, "
            f"nats-server {nats:6.1f} ms a second "
            f"(load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    base = rows[0]
    for row in rows[1:]:
        extra = row["sources"] - base["sources"]
        if extra > 0:
            v = 1000 * (row["verifier_cores"] - base["verifier_cores"]) / extra
            n = 1000 * (row["nats_cores"] - base["nats_cores"]) / extra
            print(f"per source beyond {base['sources']}: verifier {v:.2f} ms/s, nats-server {n:.2f} ms/s")
    print(json.dumps(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sources",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[0, 50, 200],
        help="namespaces besides the default source, one run each (the first is the baseline)",
    )
    p.add_argument("--seconds", type=float, default=20.0, help="idle seconds measured per run")
    configure_logging("bench", "sources", level="WARNING")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
