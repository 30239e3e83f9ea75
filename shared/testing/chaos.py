"""Faults under steady attestation load, one at a time, and what each cost: for ``bench/chaos.py`` (long) and
the short version that runs in the test suite.

A :class:`Load` is an open loop of emulated pods (in this process) that start attesting at a fixed rate, each
with its own deadline; a :class:`ResultWatch` records every answer a pod can receive (what the server
republishes from KV ``results``, which is every answer stored there). For each
:class:`Fault` (:data:`FAULTS`), :func:`run_fault` starts the load, injects the fault after a quiet
``before``, repairs it after the fault's ``hold`` (a node or replica is restarted, a paused node resumed),
stops starting pods at the end of ``window`` and waits for every pod to finish. The :class:`FaultReport`
counts the pods started (requested), completed, rejected and **lost** (neither by its deadline), the
requests that were delivered two different bundles (**conflicting**), the time until throughput was back (a
3-second sliding rate of completions at 80 % of the offered rate) and the latency (p50, p99) of pods that
started during the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contrast import subjects
from contrast.initializer.client import AttestationFailed, Initializer
from contrast.testing.cluster import CoordinatorCluster
from contrast.wire.v1 import AttestResult, decoder

HOLD_BEFORE_KILL = 1.0  # seconds a replica killed "holding work" is stopped first, its pull request still out

RECOVERED: float = 0.8  # share of the offered rate that counts as recovered throughput
SLIDE: float = 3.0  # seconds of the sliding window the throughput is measured over


@dataclass
class Pod:
    started: float  # time.monotonic()
    ended: float = 0.0
    outcome: str = ""  # completed | rejected | lost

    @property
    def latency(self) -> float:
        return self.ended - self.started


class Load:
    """Pods that start attesting at ``rate`` per second, spread over ``sources`` (one NATS user each)."""

    def __init__(self, initializers: list[Initializer], rate: float) -> None:
        self.initializers, self.rate = initializers, rate
        self.pods: list[Pod] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    async def _one(self, init: Initializer, pod: Pod) -> None:
        try:
            await init.attest()
            pod.outcome = "completed"
        except AttestationFailed as e:
            pod.outcome = "rejected" if e.last.code.startswith(("evidence.", "policy.")) else "lost"
        except Exception:
            pod.outcome = "lost"
        pod.ended = time.monotonic()

    async def run(self) -> None:
        """Start pods until :meth:`stop`; each runs to its deadline at most."""
        start = time.monotonic()
        i = 0
        while not self._stop.is_set():
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            pod = Pod(started=time.monotonic())
            self.pods.append(pod)
            task = asyncio.create_task(self._one(self.initializers[i % len(self.initializers)], pod))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            i += 1

    def stop(self) -> None:
        self._stop.set()

    async def finish(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


@dataclass
class ResultWatch:
    """Every answer delivered for each request id on the subjects the pods listen on (each value stored in
    KV ``results``, as the server republishes it)."""

    values: dict[str, set[tuple[str, bytes]]] = field(default_factory=dict)
    _sub: Subscription | None = None

    async def start(self, nc: Client) -> None:
        async def on_result(msg: Msg) -> None:
            rid = msg.subject.rsplit(".", 1)[-1]
            outcome: str
            try:
                outcome = decoder(AttestResult).decode(msg.data).outcome
            except (msgspec.ValidationError, msgspec.DecodeError):
                outcome = "garbage"
            self.values.setdefault(rid, set()).add((outcome, bytes(msg.data)))

        self._sub = await nc.subscribe(subjects.ATTEST_RESULT_ANY, cb=on_result)
        await nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def conflicting(self) -> int:
        """Request ids delivered two different bundles."""
        return sum(1 for v in self.values.values() if len([o for o, _ in v if o == "issued"]) > 1)

    def rejected_then_issued(self) -> int:
        """Request ids that got a signed rejection and, later, a bundle (the pod believed the first)."""
        return sum(1 for v in self.values.values() if {o for o, _ in v} >= {"issued", "rejected"})


Repair = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[CoordinatorCluster, Client], Awaitable[Repair]]
    hold: float  # seconds from the fault to its repair


async def _kill_node(cluster: CoordinatorCluster, pick: Awaitable[str]) -> Repair:
    node = cluster.node(await pick)
    await asyncio.to_thread(node.kill)

    async def repair() -> None:
        await asyncio.to_thread(node.restart)

    return repair


async def kill_meta_leader(cluster: CoordinatorCluster, nc: Client) -> Repair:
    async def pick() -> str:
        return cluster.meta_leader().name

    return await _kill_node(cluster, pick())


def _attest_stream(cluster: CoordinatorCluster) -> str:
    # The first namespace's attestation requests: the load's pods start there.
    return subjects.attest_stream(cluster.layout.sources[0]).name


async def kill_stream_leader(cluster: CoordinatorCluster, nc: Client) -> Repair:
    async def pick() -> str:
        return (await cluster.stream_leader(nc, _attest_stream(cluster))).name

    return await _kill_node(cluster, pick())


async def pause_stream_leader(cluster: CoordinatorCluster, nc: Client) -> Repair:
    node = await cluster.stream_leader(nc, _attest_stream(cluster))
    node.pause()

    async def repair() -> None:
        node.resume()

    return repair


def kill_replica(
    name: str, *, holding: bool = False
) -> Callable[[CoordinatorCluster, Client], Awaitable[Repair]]:
    """SIGKILL replica ``name``; with ``holding``, stopped for a second under load first: its outstanding pull
    request keeps taking messages meanwhile, so it dies holding work that another replica must finish after
    ``ack_wait`` (a kill at a random moment may find it holding nothing)."""

    async def inject(cluster: CoordinatorCluster, nc: Client) -> Repair:
        if holding:
            cluster.replicas[name].process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(HOLD_BEFORE_KILL)
        await asyncio.to_thread(cluster.kill, name)

        async def repair() -> None:
            cluster.restart(name)
            await cluster.wait_ready([name])

        return repair

    return inject


FAULTS: tuple[Fault, ...] = (
    Fault("SIGKILL the JetStream meta leader", kill_meta_leader, hold=5.0),
    Fault("SIGKILL the ATTEST stream leader", kill_stream_leader, hold=5.0),
    Fault("SIGSTOP the ATTEST leader's node 10 s", pause_stream_leader, hold=10.0),
    Fault("SIGKILL a verifier holding work, restart it", kill_replica("verifier-1", holding=True), hold=0.0),
    Fault("SIGKILL a CA holding verdicts, restart it", kill_replica("ca-1", holding=True), hold=0.0),
    Fault("SIGKILL a manifest replica, restart it", kill_replica("manifest-1"), hold=0.0),
)


@dataclass(frozen=True)
class FaultReport:
    fault: str
    requested: int
    completed: int
    rejected: int
    lost: int
    conflicting: int
    rejected_then_issued: int
    recovery_s: float | None  # None: not back within the window
    p50_ms: float
    p99_ms: float
    baseline_p99_ms: float
    repaired_after_s: float  # from the fault until its repair had finished (a restarted replica ready)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def recovery(pods: list[Pod], fault_at: float, until: float, rate: float) -> float | None:
    """Seconds from the fault until the sliding completion rate stays at ``RECOVERED`` of ``rate`` up to
    ``until`` (0 when it never fell below); None when it is still below at the end."""
    done = sorted(p.ended for p in pods if p.outcome == "completed")
    last_low: float | None = None
    t = fault_at
    while t + SLIDE <= until:
        n = sum(1 for e in done if t <= e < t + SLIDE)
        if n / SLIDE < RECOVERED * rate:
            last_low = t
        t += 0.25
    if last_low is None:
        return 0.0
    if last_low + 0.25 + SLIDE > until:
        return None
    return last_low + 0.25 + SLIDE - fault_at


@dataclass(frozen=True)
class Participants:
    """Who takes part besides the cluster: one pod initializer per source (each on its own connection, as
    that source's user), a connection that watches the answers, and the monitor."""

    initializers: list[Initializer]
    watch: Client
    monitor: Client

    @classmethod
    async def of(
        cls, cluster: CoordinatorCluster, sources: tuple[str, ...], *, deadline: float
    ) -> Participants:
        inits = [
            cluster.initializer(await cluster.connect(s, index=i), s, deadline=deadline)
            for i, s in enumerate(sources)
        ]
        return cls(inits, await cluster.connect(sources[0]), await cluster.connect("monitor"))


async def run_fault(
    cluster: CoordinatorCluster,
    fault: Fault,
    who: Participants,
    *,
    rate: float,
    before: float,
    window: float,
) -> FaultReport:
    watch = ResultWatch()
    watch_nc, monitor_nc = who.watch, who.monitor
    await watch.start(watch_nc)
    load = Load(who.initializers, rate)
    runner = asyncio.create_task(load.run())
    await asyncio.sleep(before)
    fault_at = time.monotonic()
    repair = await fault.inject(cluster, monitor_nc)
    await asyncio.sleep(fault.hold)
    await repair()
    repaired = time.monotonic() - fault_at
    await asyncio.sleep(max(0.0, fault_at + window - time.monotonic()))
    load.stop()
    await runner
    until = time.monotonic()
    await load.finish()
    await watch_nc.flush()
    await watch.stop()
    pods = load.pods
    back = recovery(pods, fault_at, until, rate)
    during_end = fault_at + max(repaired, back if back is not None else window, 1.0)
    during = [p.latency for p in pods if fault_at <= p.started < during_end and p.outcome == "completed"]
    baseline = [p.latency for p in pods if p.started < fault_at and p.outcome == "completed"]
    return FaultReport(
        fault=fault.name,
        requested=len(pods),
        completed=sum(p.outcome == "completed" for p in pods),
        rejected=sum(p.outcome == "rejected" for p in pods),
        lost=sum(p.outcome == "lost" for p in pods),
        conflicting=watch.conflicting(),
        rejected_then_issued=watch.rejected_then_issued(),
        recovery_s=back,
        p50_ms=1000 * percentile(during, 0.5),
        p99_ms=1000 * percentile(during, 0.99),
        baseline_p99_ms=1000 * percentile(baseline, 0.99),
        repaired_after_s=repaired,
    )
