"""The short chaos run: every fault of ``bench/chaos.py`` (``contrast.testing.chaos.FAULTS``), one at a time,
on a 3-node NATS cluster with per-role users and two replicas of each Coordinator service, under a light
steady load. Every pod must attest within its deadline (none lost or rejected), no request may be delivered
two different bundles, and the servers must have
refused nothing to the least-privilege users. How fast throughput comes back is a figure of the bench (a
timed assertion here would measure the shared machine's load); the long run's are in docs/performance.md."""

from __future__ import annotations

from pathlib import Path

from contrast.testing.chaos import FAULTS, Participants, run_fault
from contrast.testing.cluster import CoordinatorCluster, Layout

SOURCES = ("tenant-a", "tenant-b")
RATE = 3.0  # pods starting per second
DEADLINE = 45.0


async def test_every_fault_loses_nothing_and_conflicts_nowhere(tmp_path: Path, emulator_dir: Path) -> None:
    layout = Layout(nats=3, manifests=2, verifiers=2, cas=2, sources=SOURCES)
    async with CoordinatorCluster(tmp_path / "cluster", emulator_dir, layout) as cluster:
        who = await Participants.of(cluster, SOURCES, deadline=DEADLINE)
        for fault in FAULTS:
            window = max(8.0, fault.hold + 4.0)
            r = await run_fault(cluster, fault, who, rate=RATE, before=2.0, window=window)
            assert r.requested > 0, r
            assert (r.lost, r.rejected, r.conflicting) == (0, 0, 0), r
            assert r.completed == r.requested, r
        assert cluster.violations() == []
