"""Scale-out and reliability with real processes: SIGKILLed replicas and a restarted NATS lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contrast import subjects
from contrast.attestation.bundle import Expectation, OpenedBundle
from contrast.errors import ContrastError
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.initializer.client import Credentials, Initializer, InitializerConfig
from contrast.runtime.natsserver import find_nats_server, free_port
from contrast.testing.fixture import FixtureState
from contrast.wire.v1 import AttestRequest, SignedVerdict, Verdict, decoder
from tests.services.evil_bus import EvilBus, eventually
from tests.services.pipeline import (
    H_DB,
    INITIALIZER_PINS,
    Pipeline,
    connect,
    gather_bounded,
    manifest_doc,
    service_env,
    set_manifest,
    spawn_service,
    wait_ready,
)

# The pods here have no NATS user of their own: their requests are the default source's.
VERIFY = subjects.verifier_consumer(subjects.DEFAULT_SOURCE)
VERIFY_NAMES = (VERIFY.stream.name, VERIFY.durable)


class Procs(dict[str, "subprocess.Popen[bytes]"]):
    env: dict[str, str]

    def spawn(self, kind: str, replica: str) -> None:
        self[replica] = spawn_service(kind, replica, self.env)


@contextlib.asynccontextmanager
async def processes(
    url: str, emulator: EmulatedSnpPlatform, emulator_dir: Path, fixture_dir: Path, layout: dict[str, int]
) -> AsyncIterator[tuple[Pipeline, dict[str, subprocess.Popen[bytes]]]]:
    procs = Procs()
    async with contextlib.AsyncExitStack() as stack:
        nc = await connect(url)
        stack.push_async_callback(nc.close)
        state = FixtureState.generate(fixture_dir)
        raw, policies = manifest_doc(emulator)
        doc = await set_manifest(nc, state, raw, policies)
        env = service_env(url, emulator_dir, fixture_dir)
        procs.env = env
        try:
            for kind, n in layout.items():
                for i in range(n):
                    procs[f"{kind}-{i + 1}"] = spawn_service(kind, f"{kind}-{i + 1}", env)
            for kind, n in layout.items():
                await wait_ready(nc, kind, n, timeout=30)
            yield Pipeline(url=url, emulator=emulator, state=state, manifest=doc, nc=nc, stack=stack), procs
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def assert_no_nonce_accepted_twice(evil: EvilBus) -> int:
    """Every accepted verdict on the bus answers a distinct nonce (each nonce backs at most one request)."""
    nonce_of = {
        r.request_id: r.nonce
        for r in (
            decoder(AttestRequest).decode(c.data)
            for c in evil.on(subjects.attest_requested(subjects.DEFAULT_SOURCE))
        )
    }
    accepted: dict[bytes, set[str]] = {}
    for c in evil.on(subjects.ATTEST_VERIFIED):
        v = decoder(Verdict).decode(decoder(SignedVerdict).decode(c.data).payload)
        if v.accepted:
            accepted.setdefault(nonce_of[v.request_id], set()).add(v.request_id)
    assert accepted
    assert all(len(ids) == 1 for ids in accepted.values())
    return len(accepted)


async def run_load(
    p: Pipeline, n: int, concurrency: int, deadline: float
) -> list[Credentials | BaseException]:
    init = p.initializer(H_DB, deadline=deadline, attempt_timeout=20.0)

    async def one(_: int) -> Credentials:
        # Each emulated pod: own keys and request; shared verifier caches (one process, many pods).
        return await init.attest()

    return await gather_bounded(n, concurrency, one)


async def test_sigkill_of_a_verifier_and_a_ca_loses_nothing(
    private_nats_url: str, snp_emulator: EmulatedSnpPlatform, emulator_dir: Path, tmp_path: Path
) -> None:
    layout = {"verifier": 1, "ca": 1}
    async with processes(private_nats_url, snp_emulator, emulator_dir, tmp_path / "fixture", layout) as (
        p,
        procs,
    ):
        evil = await EvilBus.connect(p.url)
        load = asyncio.create_task(run_load(p, 160, 40, deadline=90))
        js = p.nc.jetstream()
        # Each victim is the only replica of its kind, so unacked work on its consumer is its own: it is
        # SIGKILLed while it holds some, and a fresh replica (as Kubernetes would start) must finish it.
        for kind, consumer in (("verifier", VERIFY), ("ca", subjects.CA_CONSUMER)):
            victim = procs[f"{kind}-1"]
            for _ in range(1000):
                # Stopped first, so that what the server counts as unacked stays unacked until the kill.
                victim.send_signal(signal.SIGSTOP)
                if (await js.consumer_info(consumer.stream.name, consumer.durable)).num_ack_pending > 0:
                    break
                victim.send_signal(signal.SIGCONT)
                await asyncio.sleep(0.01)
            victim.send_signal(signal.SIGKILL)
            procs.spawn(kind, f"{kind}-2")
            await wait_ready(p.nc, kind, 1, timeout=30)
        results = await load
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        assert len({r.request_id for r in results if isinstance(r, Credentials)}) == 160
        # The acks of the last deliveries may still be on their way to our capture.
        await eventually(
            lambda: evil.redeliveries(*VERIFY_NAMES) > 0 and evil.redeliveries("VERDICTS", "ca") > 0,
            timeout=10.0,
        )
        redelivered = evil.redeliveries(*VERIFY_NAMES), evil.redeliveries("VERDICTS", "ca")
        assert_no_nonce_accepted_twice(evil)
        await evil.close()
        assert procs["verifier-1"].poll() == -signal.SIGKILL
        assert procs["ca-1"].poll() == -signal.SIGKILL
        # The killed replicas held unacked work that another replica finished.
        assert redelivered[0] > 0, redelivered
        assert redelivered[1] > 0, redelivered


@dataclass
class RecordingInitializer(Initializer):
    """An initializer that keeps the raw answer it accepted, per request id."""

    accepted: dict[str, bytes] = field(default_factory=dict)

    async def _judge(self, raw: bytes, exp: Expectation) -> OpenedBundle | ContrastError | None:
        outcome = await super()._judge(raw, exp)
        if isinstance(outcome, OpenedBundle):
            self.accepted[exp.request_id] = bytes(raw)
        return outcome


def answers(evil: EvilBus, prefix: str) -> dict[str, list[bytes]]:
    """Every message captured on ``<prefix>.<request id>``, by request id."""
    out: dict[str, list[bytes]] = {}
    for c in evil.captured:
        if c.subject.startswith(prefix + "."):
            out.setdefault(c.subject[len(prefix) + 1 :], []).append(c.data)
    return out


async def test_a_verdict_redelivered_to_the_other_ca_is_answered_once(
    private_nats_url: str, snp_emulator: EmulatedSnpPlatform, emulator_dir: Path, tmp_path: Path
) -> None:
    """Two CA replicas; one is frozen (SIGSTOP) while it holds verdicts, which the other then answers after
    ``ack_wait``. Resumed, the frozen one answers them as well: each CA signs with its own identity, so its
    answer is another bundle, and its write loses the ``create`` race. That write is on the bus (the control:
    on the bucket's own subject, where pods listened before, the request has two different answers), but
    only stored answers reach the result subject: each pod receives exactly one, and it accepted the stored
    one."""
    layout = {"verifier": 1, "ca": 2}
    async with processes(private_nats_url, snp_emulator, emulator_dir, tmp_path / "fixture", layout) as (
        p,
        procs,
    ):
        evil = await EvilBus.connect(p.url)
        js = p.nc.jetstream()
        init = RecordingInitializer(
            nc=p.nc,
            platform=p.platform(H_DB),
            config=InitializerConfig(pins=INITIALIZER_PINS, deadline=60, attempt_timeout=20),
        )
        twice: list[str] = []
        for _ in range(5):  # until the frozen CA held a verdict (a race with the other CA's pulls)
            load = asyncio.create_task(gather_bounded(24, 24, lambda _: init.attest()))
            for _ in range(1000):
                if (await js.consumer_info("VERDICTS", "ca")).num_ack_pending > 0:
                    break
                await asyncio.sleep(0.005)
            procs["ca-1"].send_signal(signal.SIGSTOP)
            try:
                results = await load  # ca-2 answers every verdict, the held ones after ack_wait
            finally:
                procs["ca-1"].send_signal(signal.SIGCONT)
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, failures[:3]

            def answered_twice() -> list[str]:
                written = answers(evil, subjects.RESULTS_KV_PREFIX)
                return [rid for rid, values in written.items() if len(set(values)) > 1]

            with contextlib.suppress(TimeoutError):  # ca-1 catches up on what it held when it was frozen
                await eventually(lambda: bool(answered_twice()), timeout=8)
            twice = answered_twice()
            if twice:
                break
        assert twice, "the frozen CA never held a verdict"
        assert evil.redeliveries("VERDICTS", "ca") > 0
        await p.nc.flush()
        await evil.nc.flush()
        delivered = answers(evil, subjects.ATTEST_RESULT)
        results_kv = await js.key_value(subjects.RESULTS.bucket)
        assert set(init.accepted) <= set(delivered)
        for rid, accepted in init.accepted.items():
            stored = (await results_kv.get(rid)).value
            assert delivered[rid] == [stored], rid  # one answer delivered per request: the stored one
            assert accepted == stored
        assert set(twice) <= set(init.accepted)
        await evil.close()


@pytest.fixture
def private_nats_url(private_nats: object) -> str:
    return private_nats.url  # type: ignore[attr-defined]


class RestartableNats:
    """A nats-server on a fixed port and store, so that it can be stopped and started again."""

    def __init__(self, store: Path) -> None:
        self.binary, self.store, self.port = find_nats_server(), store, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import socket
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                if s.recv(5) == b"INFO ":
                    return
            time.sleep(0.02)
        raise TimeoutError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


@pytest.fixture
def restartable_nats(tmp_path: Path) -> Iterator[RestartableNats]:
    server = RestartableNats(tmp_path / "js")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_nats_restart_during_load(
    restartable_nats: RestartableNats, snp_emulator: EmulatedSnpPlatform, emulator_dir: Path, tmp_path: Path
) -> None:
    layout = {"verifier": 2, "ca": 1}
    async with processes(restartable_nats.url, snp_emulator, emulator_dir, tmp_path / "fixture", layout) as (
        p,
        _,
    ):
        load = asyncio.create_task(run_load(p, 120, 32, deadline=90))
        js = p.nc.jetstream()
        for _ in range(1000):  # NATS goes down while the verifiers hold unacked work
            if (await js.consumer_info(*VERIFY_NAMES)).num_ack_pending > 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(restartable_nats.stop)
        await asyncio.sleep(1.0)  # an outage of one second
        await asyncio.to_thread(restartable_nats.start)
        results = await load
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        assert len(results) == 120
