"""End-to-end workload attestation throughput over NATS, with 1, 2 and 4 verifier replicas.

Everything runs on this machine: an embedded nats-server (file-backed JetStream), N verifier processes and
the CA process(es) (``python -m contrast.verifier`` / ``contrast.ca``, emulated SEV-SNP, INSECURE fixture key
source), and ``--drivers`` driver processes of emulated initializers (each attestation: fresh TLS + HPKE keys,
nonce, emulated report, publish, wait, authenticate and open the bundle, verify the chain to both anchors).
The drivers are separate processes so that the bench's own client work neither shares an event loop with
the services nor caps the rate at one core; uvloop is used in them only if it happens to be installed.

First it prints the CPU cost of every public-key operation that one attestation needs (in all processes
together: the initializer's keys, the platform's report signature, the verifier's check and verdict
signature, the CA's checks, leaf and seal, the initializer's checks): their sum bounds the rate on this
machine's cores before any messaging, queueing or parsing is paid for. For each N it then prints:

* closed loop: attestations/s end to end (nonce request → initializer holds the opened, checked bundle),
  p50 and p99 latency, the split of verdicts across verifier replicas (from the audit events), and the CPU
  milliseconds per attestation spent by each process (drivers, nats-server, each verifier, each CA), and
  the Coordinator's own share with the rate it would give on these cores if the initializers ran elsewhere;
* open loop at 80 % of that rate: p50 and p99 latency;
* verifier stage alone: pre-built requests queued while the replicas are stopped, then drained by the
  verifiers alone (the CA still stopped), as verifications/s per replica against this run's raw ECDSA P-384
  verify rate on one core;
* overload: a burst of pre-built requests, the ATTEST queue depth sampled while it drains, and the time until
  both ATTEST and VERDICTS are empty again.

Usage: ``python bench/attest_throughput.py [--replicas 1,2,4] [--count 1200] [--concurrency 64] [--cas 1]
[--drivers 2] [--skip-stage | --stage-only] [--profile DIR] [--coordinator-cpus 0 --driver-cpus 1]``.
``--profile`` writes a CPU-time cProfile per service replica; the ``--*-cpus`` options pin the Coordinator's
processes (nats-server, verifiers, CAs) and the load generator (drivers and this process) to CPU sets, as
``taskset`` would, for the capacity model's "attestations per Coordinator core".
The machine is shared and has 2 cores: drivers, NATS, verifiers and CA all compete for them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
import nats
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.client import Client
from nats.aio.msg import Msg

from contrast import subjects
from contrast.coordinator.manifest_format import parse_manifest
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.statement import spki
from contrast.crypto.hpke import HpkePrivateKey, HpkePublicKey, Protocol
from contrast.errors import StateError
from contrast.evidence.binding import Label, report_data
from contrast.initializer.client import Initializer, InitializerConfig, ask_nonce
from contrast.pki.service import ServiceRole
from contrast.platform import emulated
from contrast.platform.emulated import EmulatedSnp
from contrast.runtime import configure_logging
from contrast.runtime.jetstream import ensure_kv
from contrast.runtime.kv import NatsKeyValue
from contrast.runtime.natsserver import start_nats
from contrast.testing.cluster import cpu_seconds
from contrast.testing.fixture import FixtureState
from contrast.wire.v1 import (
    AttestationEvent,
    AttestRequest,
    ReadinessReply,
    ReadinessRequest,
    decoder,
    encode,
)

# One policy per Coordinator service, each bound to its role in the manifest (the manifest service is not
# run here: the replicas take their keys from the INSECURE fixture).
ROLE_POLICIES = {
    role: f"package contrast.coordinator # bench {role}\n".encode() for role in ("verifier", "ca")
}
ROLE_HASHES = {role: hashlib.sha256(doc).digest() for role, doc in ROLE_POLICIES.items()}
POLICY_POD = b"package bench.pod\n"
H_POD = hashlib.sha256(POLICY_POD).digest()
# What generate writes into a pod's initializer: the verifier's and the CA's policies.
# The public-key operations that run in the Coordinator (the keys of crypto_floor's result that start so).
COORDINATOR_STAGES = ("verifier:", "CA:")
INITIALIZER_PINS = CoordinatorPins(policies={ServiceRole(r): frozenset({h}) for r, h in ROLE_HASHES.items()})


def manifest(emulator: Any) -> tuple[bytes, dict[str, bytes]]:
    rv = msgspec.to_builtins(emulator.reference_values())
    coordinator = {
        h.hex(): {"SANs": [], "Role": "coordinator", "CoordinatorRole": r} for r, h in ROLE_HASHES.items()
    }
    manifest_service = hashlib.sha256(b"package contrast.coordinator # bench manifest\n").hexdigest()
    obj = {
        "Policies": {
            **coordinator,
            manifest_service: {"SANs": [], "Role": "coordinator", "CoordinatorRole": "manifest"},
            H_POD.hex(): {"SANs": ["pod.bench.svc", "10.0.0.1"], "WorkloadSecretID": "bench", "Role": ""},
        },
        "ReferenceValues": {"snp": [rv], "tdx": []},
        "WorkloadOwnerPubKeys": [],
        "SeedshareOwnerPubKeys": [],
    }
    documents = {ROLE_HASHES[r].hex(): doc for r, doc in ROLE_POLICIES.items()}
    documents[manifest_service] = b"package contrast.coordinator # bench manifest\n"
    return json.dumps(obj).encode(), {**documents, H_POD.hex(): POLICY_POD}


def raw_p384_rate(seconds: float = 1.0) -> float:
    key = ec.generate_private_key(ec.SECP384R1())
    data = secrets.token_bytes(672)
    sig = key.sign(data, ec.ECDSA(hashes.SHA384()))
    pub = key.public_key()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            pub.verify(sig, data, ec.ECDSA(hashes.SHA384()))
        n += 50
    return n / elapsed


def crypto_floor(seconds: float = 0.3) -> dict[str, float]:
    """CPU microseconds of each public-key operation one attestation needs, wherever it runs (this process,
    one core). Their sum is a floor that no amount of messaging work can get under."""
    p256, p384 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    sha256, sha384 = ec.ECDSA(hashes.SHA256()), ec.ECDSA(hashes.SHA384())
    data = secrets.token_bytes(672)
    s256, s384 = p256.sign(data, sha256), p384.sign(data, sha384)
    hpke = HpkePrivateKey.generate()
    bundle = secrets.token_bytes(2600)  # a leaf, the intermediate, mesh CA, root and a workload secret
    sealed = hpke.public_key().seal(Protocol.WORKLOAD_BUNDLE, b"rid", bundle)

    def us(fn: Callable[[], object]) -> float:
        # The least of five rounds: on a shared machine a round that other work slowed down (caches, a
        # stolen core) overstates the operation's own cost.
        best = float("inf")
        for _ in range(5):
            n, start = 0, time.thread_time()
            while (elapsed := time.thread_time() - start) < seconds / 5:
                fn()
                n += 1
            best = min(best, 1e6 * elapsed / n)
        return best

    p256_sign = us(lambda: p256.sign(data, sha256))
    p256_verify = us(lambda: p256.public_key().verify(s256, data, sha256))
    p384_sign = us(lambda: p384.sign(data, sha384))
    p384_verify = us(lambda: p384.public_key().verify(s384, data, sha384))
    return {
        "initializer: HPKE key pair": us(HpkePrivateKey.generate),
        "initializer: P-256 TLS key": us(lambda: ec.generate_private_key(ec.SECP256R1())),
        "platform: report signature (P-384)": p384_sign,
        "verifier: report signature check (P-384)": p384_verify,
        "verifier: verdict signature (P-256)": p256_sign,
        "CA: verdict signature check (P-256)": p256_verify,
        "CA: leaf signature (P-384)": p384_sign,
        "CA: HPKE seal": us(
            lambda: HpkePublicKey(hpke.public_bytes()).seal(Protocol.WORKLOAD_BUNDLE, b"r", bundle)
        ),
        "CA: envelope signature (P-256)": p256_sign,
        "initializer: envelope signature check (P-256)": p256_verify,
        "initializer: HPKE open": us(lambda: hpke.open(Protocol.WORKLOAD_BUNDLE, b"rid", sealed)),
        "initializer: leaf signature check (P-384)": p384_verify,
    }


def pin(pid: int, cpus: frozenset[int] | None) -> None:
    """Restrict every thread of ``pid`` to ``cpus`` (threads it starts later inherit the mask)."""
    if cpus is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def cpu_set(text: str) -> frozenset[int]:
    """``"0"``, ``"0,1"`` or ``"0-1"`` as a set of CPU numbers (taskset's list syntax)."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return frozenset(cpus)


def busy_seconds(cpus: frozenset[int]) -> float:
    """CPU time the machine spent busy on ``cpus`` so far, whoever ran (Linux /proc/stat; not idle/iowait)."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu" and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            total += user + nice + system + irq + softirq + steal
    return total / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class CpuMeter:
    """CPU seconds spent by each named process between two snapshots (the driver is this process)."""

    def __init__(self, procs: dict[str, int]) -> None:
        self.procs = procs
        self.start = self._snapshot()

    def _snapshot(self) -> dict[str, float]:
        out = {}
        for name, pid in self.procs.items():
            with contextlib.suppress(OSError):
                out[name] = cpu_seconds(pid)
        return out

    def per_item_ms(self, items: int) -> dict[str, float]:
        end = self._snapshot()
        return {n: round(1000 * (end[n] - self.start[n]) / items, 2) for n in end if n in self.start}


_PROFILED = """
import cProfile, runpy, sys, time
sys.argv[0] = "{module}"
profiler = cProfile.Profile(time.process_time)
try:
    profiler.runcall(runpy.run_module, "{module}", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profiler.dump_stats("{out}")
"""


class Cluster:
    def __init__(
        self,
        url: str,
        env: dict[str, str],
        profile_dir: Path | None = None,
        cpus: frozenset[int] | None = None,
    ) -> None:
        self.url, self.env = url, env
        self.profile_dir = profile_dir
        self.cpus = cpus
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: dict[str, int] = {}

    def spawn(self, kind: str, replica: str) -> None:
        argv = ["--replica", replica, "--shutdown-timeout", "5"]
        # Replicas on the INSECURE fixture (no manifest service): the test-only entry point.
        command = [sys.executable, "-m", "contrast.testing.replica", kind, *argv]
        if self.profile_dir is not None:
            # CPU time, not wall time: on a shared 2-core machine a wall-clock profile charges a syscall
            # with whatever ran while this process was preempted. Written when the service exits (SIGTERM).
            out = self.profile_dir / f"{replica}.prof"
            command = [
                sys.executable,
                "-c",
                _PROFILED.format(module="contrast.testing.replica", out=str(out)),
                kind,
                *argv,
            ]
        # The emulated host launches each service with its own role's policy.
        env = {**self.env, "CONTRAST_EMULATED_POLICY_HASH": ROLE_HASHES[kind].hex()}
        self.procs.append(
            subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        self.names[replica] = self.procs[-1].pid
        pin(self.procs[-1].pid, self.cpus)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


async def wait_ready(nc: Client, service: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = set()
        for _ in range(8 * count):
            with contextlib.suppress(Exception):
                msg = await nc.request(subjects.health(service), encode(ReadinessRequest()), timeout=0.5)
                r = decoder(ReadinessReply).decode(msg.data)
                if r.ready:
                    ready.add(r.replica)
        if len(ready) >= count:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{service}: not {count} ready replicas")


async def closed_loop(init: Initializer, count: int, concurrency: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failures
        async with sem:
            t0 = time.perf_counter()
            try:
                await init.attest()
            except Exception:
                failures += 1
                return
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(one() for _ in range(count)))
    return latencies, failures


async def open_loop(init: Initializer, rate: float, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    tasks = []

    async def one() -> None:
        nonlocal failures
        t0 = time.perf_counter()
        try:
            await init.attest()
        except Exception:
            failures += 1
            return
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, failures


# ---- driver processes: the emulated initializers run outside the bench's coordinating process ----------


@dataclass(frozen=True)
class DriverJob:
    url: str
    emulator_dir: str
    mode: str  # "closed" (count attestations, concurrency at once) or "open" (rate/s for seconds)
    count: int = 0
    concurrency: int = 1
    rate: float = 0.0
    seconds: float = 0.0
    warmup: int = 20
    cpus: frozenset[int] | None = None  # pin this driver process to these CPUs


@dataclass(frozen=True)
class DriverResult:
    latencies: list[float]
    failures: int
    finished_at: float  # time.time()
    cpu_s: float  # this driver process's CPU during the measured part


def run_driver(job: DriverJob, ready: Any, go: Any) -> DriverResult:
    """Entry point of one driver process (uvloop if it happens to be installed; never a dependency)."""
    configure_logging("bench", "driver", level="ERROR")
    pin(os.getpid(), job.cpus)
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        return uvloop.run(_drive(job, ready, go))  # type: ignore[no-any-return,unused-ignore]
    except ImportError:
        return asyncio.run(_drive(job, ready, go))


async def _drive(job: DriverJob, ready: Any, go: Any) -> DriverResult:
    nc = await nats.connect(job.url, max_reconnect_attempts=-1)
    emulator = await asyncio.to_thread(emulated.load_snp_emulator, Path(job.emulator_dir))
    config = InitializerConfig(pins=INITIALIZER_PINS, deadline=120)
    init = Initializer(nc=nc, platform=EmulatedSnp(emulator, host_data=H_POD), config=config)
    await closed_loop(init, job.warmup, min(job.warmup, job.concurrency))  # caches, connections
    ready.put(os.getpid())
    await asyncio.to_thread(go.wait)
    cpu0 = time.process_time()
    if job.mode == "closed":
        latencies, failures = await closed_loop(init, job.count, job.concurrency)
    else:
        latencies, failures = await open_loop(init, job.rate, job.seconds)
    result = DriverResult(latencies, failures, time.time(), time.process_time() - cpu0)
    await nc.close()
    return result


async def drive(
    jobs: list[DriverJob],
    procs: dict[str, int],
    on_start: Callable[[], None] = lambda: None,
    busy: dict[str, float] | None = None,
    cpus: frozenset[int] = frozenset(),
) -> tuple[float, list[float], int, dict[str, float]]:
    """Run ``jobs`` in one process each, started together; returns (attestations/s, latencies, failures,
    CPU ms per attestation by process: the drivers summed, the coordinating bench process, the services).
    With ``busy``, also stores there the ms per attestation that ``cpus`` were busy, by any process."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(len(jobs), mp_context=ctx) as pool:
        ready, go = manager.Queue(), manager.Event()
        futures = [pool.submit(run_driver, job, ready, go) for job in jobs]
        for _ in jobs:
            await asyncio.to_thread(ready.get, True, 120)
        on_start()
        meter = CpuMeter({"bench": os.getpid(), **procs})
        busy0 = busy_seconds(cpus)
        start = time.time()
        go.set()
        results: list[DriverResult] = [await asyncio.wrap_future(f) for f in futures]
        busy1 = busy_seconds(cpus)
    latencies = [x for r in results for x in r.latencies]
    failures = sum(r.failures for r in results)
    done = len(latencies) + failures
    elapsed = max(r.finished_at for r in results) - start
    cpu = meter.per_item_ms(max(1, done))
    cpu["drivers"] = round(1000 * sum(r.cpu_s for r in results) / max(1, done), 2)
    if busy is not None:
        busy["busy_ms_per_attestation"] = 1000 * (busy1 - busy0) / max(1, done)
        busy["elapsed_ms_per_attestation"] = 1000 * elapsed / max(1, done)
    return done / elapsed, latencies, failures, cpu


async def nonce_with_retries(nc: Client) -> bytes:
    # Asked again as an initializer does: a request beyond what the source's nonce stream holds is refused.
    for _ in range(30):
        with contextlib.suppress(StateError):
            return await ask_nonce(nc, subjects.DEFAULT_SOURCE, timeout=1.0)
        await asyncio.sleep(random.uniform(0, 0.5))
    raise StateError("unavailable", "no nonce after 30 requests")


async def prebuilt_requests(nc: Client, platform: EmulatedSnp, count: int) -> list[tuple[str, bytes]]:
    out = []
    sem = asyncio.Semaphore(64)

    async def one() -> None:
        async with sem:
            tls = ec.generate_private_key(ec.SECP256R1())
            hpke = HpkePrivateKey.generate()
            nonce = await nonce_with_retries(nc)
            t, h = spki(tls.public_key()), hpke.public_bytes()
            ev = await platform.evidence(report_data(Label.MESH_CERT, nonce, t, h))
            rid = secrets.token_urlsafe(24)
            req = AttestRequest(request_id=rid, nonce=nonce, evidence=ev, tls_public_key=t, hpke_public_key=h)
            out.append((rid, encode(req)))

    await asyncio.gather(*(one() for _ in range(count)))
    return out


async def publish_all(nc: Client, reqs: list[tuple[str, bytes]]) -> None:
    js = nc.jetstream()
    sem = asyncio.Semaphore(256)

    async def one(rid: str, data: bytes) -> None:
        async with sem:
            subject = subjects.attest_requested(subjects.DEFAULT_SOURCE)
            await js.publish(subject, data, headers={"Nats-Msg-Id": rid}, timeout=30)

    await asyncio.gather(*(one(r, d) for r, d in reqs))


ATTEST = subjects.verifier_consumer(subjects.DEFAULT_SOURCE)  # every driver is the default source


async def depth(nc: Client, stream: str) -> int:
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.messages)


async def pending(nc: Client, stream: str, consumer: str) -> int:
    info = await nc.jetstream().consumer_info(stream, consumer)
    return int(info.num_pending) + int(info.num_ack_pending)


def _signal(cluster: Cluster, kind: str, sig: signal.Signals) -> None:
    for p in cluster.procs:
        if f"contrast.{kind}" in p.args:  # type: ignore[operator]
            p.send_signal(sig)


async def verifier_stage(
    nc: Client, platform: EmulatedSnp, count: int, cluster: Cluster
) -> tuple[float, float]:
    """Rate at which the verifiers alone drain pre-built requests: they are queued while every replica is
    stopped (SIGSTOP); then the verifiers resume and are timed until ATTEST is drained. The CA stays stopped
    meanwhile, so the verifiers share the cores only with nats-server (and, on a shared machine, whatever
    else runs). Returns (verifications/s, verifier CPU ms per verification): the second does not depend on
    how busy the machine is."""
    reqs = await prebuilt_requests(nc, platform, count)
    _signal(cluster, "ca", signal.SIGSTOP)
    _signal(cluster, "verifier", signal.SIGSTOP)
    try:
        await publish_all(nc, reqs)
        verifiers = {n: pid for n, pid in cluster.names.items() if n.startswith("verifier")}
        meter = CpuMeter(verifiers)
        start = time.perf_counter()
        _signal(cluster, "verifier", signal.SIGCONT)
        while await pending(nc, ATTEST.stream.name, ATTEST.durable) > 0:  # noqa: ASYNC110 - polling the server
            await asyncio.sleep(0.01)
        rate = count / (time.perf_counter() - start)
        return rate, sum(meter.per_item_ms(count).values())
    finally:
        _signal(cluster, "verifier", signal.SIGCONT)
        _signal(cluster, "ca", signal.SIGCONT)
        while await pending(nc, "VERDICTS", "ca") > 0:  # noqa: ASYNC110 - polling the server
            await asyncio.sleep(0.05)


async def overload(nc: Client, platform: EmulatedSnp, count: int) -> tuple[int, float, list[int]]:
    reqs = await prebuilt_requests(nc, platform, count)
    samples: list[int] = []
    start = time.perf_counter()
    pub = asyncio.create_task(publish_all(nc, reqs))
    while True:
        d = await depth(nc, ATTEST.stream.name)
        samples.append(d)
        if pub.done() and d == 0 and await pending(nc, "VERDICTS", "ca") == 0:
            break
        await asyncio.sleep(0.1)
    await pub
    return max(samples), time.perf_counter() - start, samples


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="contrast-bench-"))
    (work / "js").mkdir()
    server = start_nats(store_dir=work / "js")
    pin(server.pid, args.coordinator_cpus)
    pin(os.getpid(), args.driver_cpus)
    emu_dir = work / "emulator"
    emulator = await asyncio.to_thread(emulated.load_snp_emulator, emu_dir)
    raw = raw_p384_rate()
    print(f"raw ECDSA P-384 verify on one core (this run): {raw:,.0f}/s   cores: {os.cpu_count()}")
    floor = crypto_floor()
    floor_ms = sum(floor.values()) / 1000
    cores = os.cpu_count() or 1
    print(
        f"public-key work per attestation, all processes: {floor_ms:.2f} ms CPU -> at most "
        f"{cores * 1000 / floor_ms:,.0f} attestations/s on {cores} cores with zero messaging cost"
    )
    for what, cost in floor.items():
        print(f"      {cost:6.0f} us  {what}")
    coordinator_floor_ms = sum(v for k, v in floor.items() if k.startswith(COORDINATOR_STAGES)) / 1000
    print(f"Coordinator floor (the verifier's and the CA's operations): {coordinator_floor_ms:.2f} ms CPU")
    try:
        nc = await nats.connect(server.url, max_reconnect_attempts=-1)
        state = FixtureState.generate(work / "fixture")
        raw_m, policies = manifest(emulator)
        kv = NatsKeyValue(await ensure_kv(nc.jetstream(), subjects.HISTORY))
        await state.set_manifest(kv, parse_manifest(raw_m), policies, now=dt.datetime.now(dt.UTC))
        env = {
            **os.environ,
            "CONTRAST_NATS_URL": server.url,
            "CONTRAST_PLATFORM": "emulated-snp",
            "CONTRAST_EMULATOR_DIR": str(emu_dir),
            "CONTRAST_INSECURE_FIXTURE_DIR": str(work / "fixture"),
            "CONTRAST_LOG_LEVEL": "ERROR",
            # All drivers are one source: ration and pace nothing, this measures what the replicas can do.
            "CONTRAST_NONCE_RATE": "1000000",
            "CONTRAST_NONCE_PULL_RATE": "1000000",
            "CONTRAST_ATTEST_PULL_RATE": "1000000",
            # Pre-built requests for the stage and overload runs wait in the queue longer than 10 s.
            "CONTRAST_NONCE_LIFETIME_MS": "120000",
        }
        split: Counter[str] = Counter()

        async def on_event(msg: Msg) -> None:
            with contextlib.suppress(Exception):
                e = decoder(AttestationEvent).decode(msg.data)
                if e.stage == "verified":
                    split[e.replica] += 1

        await nc.subscribe(subjects.EVENT_ATTESTATION, cb=on_event)
        platform = EmulatedSnp(emulator, host_data=H_POD)
        rows = []
        for n in args.replicas:
            cluster = Cluster(server.url, env, args.profile, args.coordinator_cpus)
            for i in range(args.cas):
                cluster.spawn("ca", f"ca-{i + 1}")
            for i in range(n):
                cluster.spawn("verifier", f"verifier-{n}x-{i + 1}")
            try:
                await wait_ready(nc, "verifier", n)
                await wait_ready(nc, "ca", args.cas)
                base = DriverJob(
                    url=server.url, emulator_dir=str(emu_dir), mode="closed", cpus=args.driver_cpus
                )
                k = args.drivers
                await drive(  # warm-up of the services
                    [replace(base, count=50, concurrency=max(1, args.concurrency // k))] * k, {}
                )
                nan = float("nan")
                rate, lat, fail, cpu, shares = nan, [], 0, {}, []
                ol_rate, ol_lat, ol_fail = nan, [], 0
                if not args.stage_only:
                    closed = replace(base, count=args.count // k, concurrency=max(1, args.concurrency // k))
                    procs = {"nats-server": server.pid, **cluster.names}
                    pinned = args.coordinator_cpus or frozenset()
                    watched = pinned or frozenset(range(cores))  # the Coordinator's CPUs, else all
                    busy: dict[str, float] = {}
                    rate, lat, fail, cpu = await drive([closed] * k, procs, split.clear, busy, watched)
                    shares = sorted(split.values(), reverse=True)
                    opened = replace(base, mode="open", rate=0.8 * rate / k, seconds=args.open_seconds)
                    ol_rate, ol_lat, ol_fail, _ = await drive([opened] * k, procs)
                stage, stage_cpu, peak, drain = nan, nan, 0, nan
                if not args.skip_stage:
                    stage, stage_cpu = await verifier_stage(nc, platform, args.stage_count, cluster)
                if not (args.skip_stage or args.stage_only):
                    peak, drain, _ = await overload(nc, platform, args.burst)
                row = {
                    "replicas": n,
                    "e2e_per_s": round(rate, 1),
                    "p50_ms": round(1000 * pct(lat, 0.5), 1),
                    "p99_ms": round(1000 * pct(lat, 0.99), 1),
                    "failures": fail,
                    "split": shares,
                    "cpu_ms_per_attestation": cpu,
                    "open_loop_per_s": round(ol_rate, 1),
                    "open_p50_ms": round(1000 * pct(ol_lat, 0.5), 1),
                    "open_p99_ms": round(1000 * pct(ol_lat, 0.99), 1),
                    "open_failures": ol_fail,
                    "verifier_stage_per_s": round(stage, 1),
                    "stage_per_replica_vs_raw": round(stage / n / raw, 2),
                    # raw verify CPU / verifier CPU per verification: the stage's efficiency, load-independent
                    "stage_cpu_ms_per_verification": round(stage_cpu, 2),
                    "stage_cpu_efficiency": round((1000 / raw) / stage_cpu, 2),
                    "burst": args.burst,
                    "burst_peak_depth": peak,
                    "burst_drain_s": round(drain, 2),
                    # The machine may be shared: the 1/5/15-minute load average when this row ended.
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                }
                rows.append(row)
                print(
                    f"N={n}: e2e {rate:7.1f}/s  p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
                    f"fail {fail}  split {shares} | 80% load {ol_rate:6.1f}/s p50 {row['open_p50_ms']} ms "
                    f"p99 {row['open_p99_ms']} ms | verifier stage {stage:7.1f}/s "
                    f"({row['stage_per_replica_vs_raw']:.2f}x raw per replica; "
                    f"CPU {stage_cpu:.2f} ms/verification = {row['stage_cpu_efficiency']:.2f}x raw) | "
                    f"burst {args.burst}: "
                    f"peak ATTEST depth {peak}, drained in {drain:.1f} s | load {row['load_average']}",
                    flush=True,
                )
                print(f"      CPU ms per attestation (closed loop): {cpu}", flush=True)
                if cpu:
                    # The Coordinator's own share (NATS, verifiers, CA): what the rate would be if the
                    # initializers ran in their own CVMs, as they do in a cluster, instead of on these cores.
                    own = sum(v for k, v in cpu.items() if k not in ("drivers", "bench"))
                    ratio = own / coordinator_floor_ms
                    row["coordinator_cpu_ms_per_attestation"] = round(own, 2)
                    row["coordinator_floor_ms"] = round(coordinator_floor_ms, 2)
                    row["coordinator_floor_ratio"] = round(ratio, 2)
                    print(
                        f"      Coordinator (NATS, verifiers, CA): {own:.2f} ms CPU per attestation -> "
                        f"{cores * 1000 / own:,.0f}/s on {cores} cores without the load generator",
                        flush=True,
                    )
                    print(
                        f"      Coordinator floor {coordinator_floor_ms:.2f} ms; CPU / floor = {ratio:.2f}x "
                        f"(goal <= 2x)",
                        flush=True,
                    )
                    # The capacity model's check: the watched CPUs give our processes (with pinning the
                    # Coordinator's, else all of ours) what other processes on them (other work on a shared
                    # machine) leave over; the model predicts the rate from that and our CPU per attestation.
                    ours = own if pinned else own + cpu.get("drivers", 0.0) + cpu.get("bench", 0.0)
                    others = max(0.0, busy["busy_ms_per_attestation"] - ours)
                    predicted = (len(watched) * 1000 - others * rate) / ours
                    row["model_cpus"] = sorted(watched)
                    row["model_other_ms_per_attestation"] = round(others, 2)
                    row["model_predicted_per_s"] = round(predicted, 1)
                    what = "Coordinator" if pinned else "bench"
                    print(
                        f"      CPUs {sorted(watched)}: {ours:.2f} ms {what} + {others:.2f} ms other "
                        f"processes per attestation; alone on them {len(watched) * 1000 / ours:,.0f}/s; "
                        f"model with what the others took {predicted:,.0f}/s, measured {rate:,.0f}/s",
                        flush=True,
                    )
            finally:
                cluster.stop()
        print(
            json.dumps(
                {
                    "raw_p384_per_s": round(raw),
                    "crypto_floor_ms": round(floor_ms, 2),
                    "coordinator_floor_ms": round(coordinator_floor_ms, 2),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "rows": rows,
                }
            )
        )
        await nc.close()
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    configure_logging("bench", "driver", level="ERROR")  # the emulator warns on every report otherwise
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", default="1,2,4", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--count", type=int, default=1200)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--cas", type=int, default=1)
    p.add_argument("--open-seconds", type=float, default=5.0)
    p.add_argument("--stage-count", type=int, default=2000)
    p.add_argument("--burst", type=int, default=3000)
    p.add_argument("--drivers", type=int, default=2, help="driver processes (emulated initializers)")
    p.add_argument("--profile", type=Path, default=None, help="cProfile each service replica into DIR")
    p.add_argument(
        "--coordinator-cpus",
        type=cpu_set,
        default=None,
        help="pin nats-server, verifiers and CAs to these CPUs (e.g. 0)",
    )
    p.add_argument(
        "--driver-cpus", type=cpu_set, default=None, help="pin the load generator to these CPUs (e.g. 1)"
    )
    p.add_argument("--skip-stage", action="store_true", help="closed and open loop only")
    p.add_argument("--stage-only", action="store_true", help="the verifier stage only")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
