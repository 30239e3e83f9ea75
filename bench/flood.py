"""Denial of service: an attacker process floods the Coordinator while legitimate pods keep attesting.

The Coordinator (NATS with per-role users, one manifest replica, two verifiers, one CA, as processes) serves
emulated pods of namespace ``tenant-a`` that start attesting at ``--rate`` per second. The attacker is a
compromised workload of namespace ``mallory``: its own process, with that namespace's NATS user, so it can
publish only on its own source's subjects. Phase by phase (each ``--phase`` seconds) it sends, at
``--attack-rate`` messages per second (at least 10x the legitimate rate):

- ``garbage``: random 1 KiB payloads on its ATTEST subject;
- ``oversize``: 300 KiB payloads (above the stream's 256 KiB bound);
- ``forged-nonce``: well-formed requests (captured public evidence) with random nonces;
- ``expired-nonce``: the same with nonces it asked for long enough ago;
- ``forged-evidence``: a fresh, valid nonce with evidence whose signature is broken;
- ``replay``: captured legitimate requests again, as they were and under new request ids;
- ``nonces``: nonce requests (to its stream ``NONCE_mallory``, naming its own inbox) as fast as it can;
- ``attest-flood``: 1 KiB of garbage on its attestation subject (stream ``ATTEST_mallory``) as fast as it can;

and finally all of them at once. It prints, per phase: the legitimate pods' success rate and p50/p99 (and
without a flood, in the baseline phase), what the attacker sent, what the Coordinator rejected and where
(verifier, or the NATS server: per-source bounds, deduplication, size; for nonce requests, what the server
refused against what it stored and the verifiers then dropped over the source's ration), the CPU spent per
rejected request by the verifiers and by NATS, and the ATTEST and nonce backlogs over time. Goals: 100 %
legitimate success, legitimate p99 at most 3x the no-flood p99, and garbage, bad nonces and replays rejected
before any public-key operation (tests/services/verifier/test_cheap_rejections.py counts them; here their
CPU shows it).

Usage: ``python bench/flood.py [--rate 5] [--attack-rate 200] [--phase 15] [--classes a,b] [--nats 1|3]``.
The machine is shared: attacker, pods and Coordinator compete for its cores, so the attacker's own CPU is
printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import secrets
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats

from contrast import subjects
from contrast.cli.localrun.metrics import Scrape, parse
from contrast.initializer.client import ask_nonce
from contrast.runtime import configure_logging
from contrast.runtime.connection import NatsCredentials, client_options
from contrast.testing.chaos import Load, percentile
from contrast.testing.cluster import CoordinatorCluster, Layout, cpu_seconds
from contrast.wire.v1 import AttestRequest, NonceRequest, decoder, encode

LEGIT = "tenant-a"
ATTACKER = "mallory"
CLASSES = (
    "garbage",
    "oversize",
    "forged-nonce",
    "expired-nonce",
    "forged-evidence",
    "replay",
    "nonces",
    "attest-flood",
)
FULL_SPEED = ("nonces", "attest-flood")  # sent as fast as the attacker's connection takes them
EXPIRED_AFTER = 11.0  # seconds: past the default 10 s nonce lifetime


# ---- the attacker (its own process) ------------------------------------------------------------------------


@dataclass
class Attacker:
    """Runs in the attacker process: one connection as ``mallory``, a stock of captured requests (public
    data: they travel on the bus) and of nonces it asked for earlier."""

    nc: Any
    captured: list[tuple[float, AttestRequest]] = field(default_factory=list)  # (when captured, request)
    old_nonces: list[tuple[float, bytes]] = field(default_factory=list)
    sent: int = 0
    nonces_sent: int = 0
    attest_flood_sent: int = 0
    nonce_request: bytes = b""  # names one of its inboxes, which nobody reads: nobody waits for the answers

    def __post_init__(self) -> None:
        self.nonce_request = encode(NonceRequest(reply=self.nc.new_inbox()))

    def evidence(self) -> AttestRequest:
        return self.captured[-1][1]

    def take(self, captures: Any) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.captured.append((time.monotonic(), decoder(AttestRequest).decode(captures.get_nowait())))
        del self.captured[:-100]

    async def publish(self, data: bytes, msg_id: str) -> None:
        await self.nc.publish(subjects.attest_requested(ATTACKER), data, headers={"Nats-Msg-Id": msg_id})
        self.sent += 1

    async def nonce(self) -> bytes | None:
        try:
            return await ask_nonce(self.nc, ATTACKER, timeout=1)
        except Exception:  # rationed: most of them are dropped
            return None

    def request(self, nonce: bytes, *, forge: bool = False) -> AttestRequest:
        base = self.evidence()
        ev = base.evidence
        if forge:
            report = bytearray(ev.report)
            report[0x2A0] ^= 0x01  # inside the signature
            ev = msgspec.structs.replace(ev, report=bytes(report))
        return msgspec.structs.replace(base, request_id=secrets.token_urlsafe(24), nonce=nonce, evidence=ev)

    async def one(self, kind: str) -> None:
        if kind == "garbage":
            await self.publish(secrets.token_bytes(1024), secrets.token_urlsafe(24))
        elif kind == "oversize":
            await self.publish(secrets.token_bytes(300 * 1024), secrets.token_urlsafe(24))
        elif kind == "forged-nonce":
            req = self.request(secrets.token_bytes(32))
            await self.publish(encode(req), req.request_id)
        elif kind == "expired-nonce":
            old = [n for t, n in self.old_nonces if time.monotonic() - t > EXPIRED_AFTER]
            req = self.request(secrets.choice(old) if old else secrets.token_bytes(32))
            await self.publish(encode(req), req.request_id)
        elif kind == "forged-evidence":
            nonce = await self.nonce()
            if nonce is not None:
                req = self.request(nonce, forge=True)
                await self.publish(encode(req), req.request_id)
        elif kind == "replay":
            # Requests captured at least a second ago: answered by then (a replay that overtakes its original
            # in flight needs to see the bus live, which only its operator can), nonces still unexpired.
            recent = [r for t, r in self.captured if 1.0 < time.monotonic() - t < 9.0] or [self.evidence()]
            original = secrets.choice(recent)
            if secrets.randbelow(2):
                await self.publish(encode(original), original.request_id)  # as it was: deduplicated
            else:
                replay = msgspec.structs.replace(original, request_id=secrets.token_urlsafe(24))
                await self.publish(encode(replay), replay.request_id)
        elif kind == "nonces":
            for _ in range(200):  # as fast as the connection takes them, nobody waits for an answer
                await self.nc.publish(subjects.attest_nonce(ATTACKER), self.nonce_request)
                self.sent += 1
                self.nonces_sent += 1
            await self.nc.flush()
        elif kind == "attest-flood":
            garbage = secrets.token_bytes(1024)
            for _ in range(200):  # as fast as the connection takes them, no msg id, no wait for the PubAck
                await self.nc.publish(subjects.attest_requested(ATTACKER), garbage)
                self.sent += 1
                self.attest_flood_sent += 1
            await self.nc.flush()

    async def flood(self, kind: str, rate: float, seconds: float) -> None:
        end = time.monotonic() + seconds
        start, i = time.monotonic(), 0
        workers = 32 if kind == "forged-evidence" else 1  # nonce round trips: several at once
        while time.monotonic() < end:
            if kind in FULL_SPEED:
                await self.one(kind)
                await asyncio.sleep(0)
                continue
            due = start + i / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            await asyncio.gather(*(self.one(kind) for _ in range(workers)))
            i += workers


async def _attack(urls: list[str], password: str, commands: Any, captures: Any, results: Any) -> None:
    async def quiet(_: Exception) -> None:
        pass

    nc = await nats.connect(
        urls, max_reconnect_attempts=-1, error_cb=quiet, **client_options(NatsCredentials(ATTACKER, password))
    )
    a = Attacker(nc)
    for _ in range(20):  # nonces to use once they have expired
        if (n := await a.nonce()) is not None:
            a.old_nonces.append((time.monotonic(), n))
    results.put("ready")
    while True:
        command = await asyncio.to_thread(commands.get)
        if command is None:
            break
        kinds, rate, seconds = command
        a.take(captures)
        a.sent = a.nonces_sent = a.attest_flood_sent = 0
        cpu0 = time.process_time()

        async def refresh() -> None:
            while True:  # fresh captures keep the replays' nonces unexpired
                a.take(captures)
                await asyncio.sleep(0.2)

        refresher = asyncio.create_task(refresh())
        await asyncio.gather(*(a.flood(k, rate, seconds) for k in kinds))
        refresher.cancel()
        sent = {"sent": a.sent, "nonces_sent": a.nonces_sent, "attest_flood_sent": a.attest_flood_sent}
        results.put({**sent, "cpu_s": time.process_time() - cpu0})
    await nc.close()


def attacker_main(urls: list[str], password: str, commands: Any, captures: Any, results: Any) -> None:
    configure_logging("bench", "attacker", level="CRITICAL")
    asyncio.run(_attack(urls, password, commands, captures, results))


# ---- measurements ------------------------------------------------------------------------------------------


def scrape(port: int, label: str) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return parse(label, r.read().decode())


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, float]
    verifier: dict[str, float]  # summed over the verifier replicas

    @classmethod
    async def take(cls, cluster: CoordinatorCluster) -> Snapshot:
        return await asyncio.to_thread(cls._take, cluster)

    @classmethod
    def _take(cls, cluster: CoordinatorCluster) -> Snapshot:
        cpu = {"verifiers": 0.0, "ca": 0.0, "nats": 0.0}
        for r in cluster.replicas.values():
            if r.kind in ("verifier", "ca") and r.running():
                cpu["verifiers" if r.kind == "verifier" else "ca"] += cpu_seconds(r.process.pid)
        for n in cluster.nodes:
            cpu["nats"] += cpu_seconds(n.pid)
        scrapes = [scrape(r.metrics_port, r.name) for r in cluster.of("verifier")]
        v: dict[str, float] = {}
        for key, name, labels in (
            ("garbage", "contrast_deadletters_total", {"reason": "request.decode"}),
            ("attest-flood", "contrast_deadletters_total", {"reason": "request.decode"}),
            ("forged-nonce", "contrast_attestation_failures_total", {"reason": "policy.nonce_unknown"}),
            ("expired-nonce", "contrast_attestation_failures_total", {"reason": "policy.nonce_expired"}),
            ("forged-evidence", "contrast_attestation_failures_total", {"reason": "evidence.bad_signature"}),
            ("replay", "contrast_attestation_failures_total", {"reason": "policy.nonce_reused"}),
            ("nonces", "contrast_requests_total", {"endpoint": "nonce", "code": "request.rate_limited"}),
            ("nonces-answered", "contrast_requests_total", {"endpoint": "nonce", "code": "ok"}),
            ("unanswered", "contrast_rejections_unanswered_total", {}),
        ):
            v[key] = sum(s.total(name, **labels) for s in scrapes)
        return cls(time.monotonic(), cpu, v)


@dataclass
class Phase:
    name: str
    legit_requested: int
    legit_completed: int
    p50_ms: float
    p99_ms: float
    sent: int
    attacker_cpu_s: float
    rejected_by_verifiers: float
    cpu_ms: dict[str, float]  # extra CPU over the baseline per rejected request (or per sent, at the server)
    backlog: list[int]
    nonce_backlog: list[int]
    unanswered: float
    nonces_sent: int  # by the attacker's "nonces" class
    nonce_stored: int  # nonce requests the server stored in the nonce streams (both sources')
    nonces_answered: float


async def backlog(monitor: Any, samples: dict[str, list[int]], stop: asyncio.Event) -> None:
    js = monitor.jetstream()
    while not stop.is_set():
        for key, consumers in (
            ("ATTEST", tuple(subjects.verifier_consumer(s) for s in (LEGIT, ATTACKER))),
            ("NONCE", tuple(subjects.nonce_consumer(s) for s in (LEGIT, ATTACKER))),
        ):
            with contextlib.suppress(Exception):
                waiting = 0
                for consumer in consumers:
                    info = await js.consumer_info(consumer.stream.name, consumer.durable, timeout=1)
                    waiting += int(info.num_pending + info.num_ack_pending)
                samples[key].append(waiting)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def nonces_stored(monitor: Any) -> int:
    """How many nonce requests the server has ever stored (the nonce streams' last sequences)."""
    js = monitor.jetstream()
    stored = 0
    for source in (LEGIT, ATTACKER):
        stored += int((await js.stream_info(subjects.nonce_stream(source).name)).state.last_seq)
    return stored


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="contrast-flood-"))
    layout = Layout(nats=args.nats, manifests=1, verifiers=2, cas=1, sources=(LEGIT, ATTACKER))
    ctx = multiprocessing.get_context("spawn")
    commands, captures, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    try:
        async with (
            CoordinatorCluster(work, work / "emulator", layout) as cluster,
            contextlib.AsyncExitStack() as stack,
        ):
            attacker = ctx.Process(
                target=attacker_main,
                args=(cluster.urls(1), cluster.passwords[ATTACKER], commands, captures, results),
                daemon=True,
            )
            attacker.start()
            stack.callback(attacker.terminate)
            legit_nc = await cluster.connect(LEGIT)
            init = cluster.initializer(legit_nc, LEGIT, deadline=args.deadline)
            publish = init._publish

            async def capture(data: bytes, rid: str) -> None:
                captures.put(data)  # what a bus attacker sees: the request is public
                await publish(data, rid)

            init._publish = capture  # type: ignore[method-assign]
            monitor = await cluster.connect("monitor")
            await init.attest()  # one capture before anything else
            assert await asyncio.to_thread(results.get, True, 60) == "ready"
            print(
                f"Coordinator: {args.nats} NATS node(s), per-role users, 2 verifiers, 1 CA; legitimate load "
                f"{args.rate}/s ({LEGIT}); attacker ({ATTACKER}) at {args.attack_rate}/s per class, nonces "
                f"as fast as it can; {args.phase:.0f} s phases; cores {os.cpu_count()}, load average "
                f"{os.getloadavg()[0]:.1f}",
                flush=True,
            )
            phases: list[Phase] = []
            base_rate: dict[str, float] = {}
            classes = args.classes or CLASSES
            for name, kinds in (
                [("baseline (no flood)", ())] + [(k, (k,)) for k in classes] + [("all at once", classes)]
            ):
                load = Load([init], args.rate)
                runner = asyncio.create_task(load.run())
                samples: dict[str, list[int]] = {"ATTEST": [], "NONCE": []}
                stop = asyncio.Event()
                sampler = asyncio.create_task(backlog(monitor, samples, stop))
                before = await Snapshot.take(cluster)
                stored_before = await nonces_stored(monitor)
                if kinds:
                    commands.put((kinds, args.attack_rate, args.phase))
                    attack = await asyncio.to_thread(results.get, True, args.phase + 120)
                else:
                    await asyncio.sleep(args.phase)
                    attack = {"sent": 0, "nonces_sent": 0, "cpu_s": 0.0}
                load.stop()
                await runner
                after = await Snapshot.take(cluster)
                stored_after = await nonces_stored(monitor)
                await load.finish()
                stop.set()
                await sampler
                elapsed = after.at - before.at
                cpu = {k: after.cpu[k] - before.cpu[k] for k in after.cpu}
                if not kinds:
                    base_rate = {k: v / elapsed for k, v in cpu.items()}
                # garbage and attest-flood are both counted as request.decode dead letters: once
                counted = [k for k in kinds if not (k == "attest-flood" and "garbage" in kinds)]
                rejected = sum(after.verifier.get(k, 0.0) - before.verifier.get(k, 0.0) for k in counted)
                extra = {k: max(0.0, cpu[k] - base_rate.get(k, 0.0) * elapsed) for k in cpu}
                # Refused by the server (oversize; nonce requests past the source's share): per message sent.
                by_server = kinds in (("oversize",), ("nonces",), ("attest-flood",))
                per = max(1.0, float(attack["sent"]) if by_server else rejected)
                lat = [p.latency for p in load.pods if p.outcome == "completed"]
                phase = Phase(
                    name=name,
                    legit_requested=len(load.pods),
                    legit_completed=len(lat),
                    p50_ms=1000 * percentile(lat, 0.5),
                    p99_ms=1000 * percentile(lat, 0.99),
                    sent=int(attack["sent"]),
                    attacker_cpu_s=float(attack["cpu_s"]),
                    rejected_by_verifiers=rejected,
                    cpu_ms={k: 1000 * v / per for k, v in extra.items()} if kinds else {},
                    backlog=samples["ATTEST"],
                    nonce_backlog=samples["NONCE"],
                    unanswered=after.verifier["unanswered"] - before.verifier["unanswered"],
                    nonces_sent=int(attack["nonces_sent"]),
                    nonce_stored=stored_after - stored_before,
                    nonces_answered=after.verifier["nonces-answered"] - before.verifier["nonces-answered"],
                )
                phases.append(phase)
                print(report(phase), flush=True)
            commands.put(None)
            await asyncio.to_thread(attacker.join, 30)
        return summarize(phases)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(p: Phase) -> str:
    ok = 100.0 * p.legit_completed / max(1, p.legit_requested)
    line = (
        f"{p.name:<20} legit {p.legit_completed}/{p.legit_requested} ({ok:.0f} %) p50 {p.p50_ms:6.0f} ms "
        f"p99 {p.p99_ms:6.0f} ms"
    )
    if p.sent:
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in p.cpu_ms.items())
        line += (
            f" | sent {p.sent} ({p.sent / max(1e-9, p.attacker_cpu_s):.0f}/CPU-s), rejected by verifiers "
            f"{p.rejected_by_verifiers:.0f}, unanswered {p.unanswered:.0f} | CPU ms per rejected: {cpu}"
        )
    # Both sources' nonce requests: those the server stored in their streams, of which the verifiers answered
    # some and dropped others over their source's ration; an attacker's others were refused by the server.
    line += f"\n{'':20} nonce requests stored {p.nonce_stored}, answered {p.nonces_answered:.0f}"
    if p.nonces_sent:
        line += (
            f"; refused by the server >= {max(0, p.nonces_sent - p.nonce_stored)} of {p.nonces_sent} flooded"
        )
    line += f"\n{'':20} ATTEST backlog (1 s samples): {p.backlog}"
    line += f"\n{'':20} nonce backlog (1 s samples, both sources): {p.nonce_backlog}"
    return line


def summarize(phases: list[Phase]) -> int:
    base = phases[0]
    flooded = phases[1:]
    success = sum(p.legit_completed for p in flooded) / max(1, sum(p.legit_requested for p in flooded))
    worst = max(p.p99_ms for p in flooded)
    ok = success == 1.0 and worst <= 3 * base.p99_ms
    print(
        f"legitimate success under flood {100 * success:.1f} %; p99 without flood {base.p99_ms:.0f} ms, "
        f"worst under flood {worst:.0f} ms ({worst / max(1e-9, base.p99_ms):.1f}x); goals (100 %, <= 3x): "
        f"{'met' if ok else 'MISSED'}"
    )
    print(json.dumps([p.__dict__ for p in phases]))
    return 0 if ok else 1


def main() -> None:
    configure_logging("bench", "flood", level="ERROR")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=5.0, help="legitimate pods starting per second")
    p.add_argument("--attack-rate", type=float, default=200.0, help="attack messages per second and class")
    p.add_argument("--phase", type=float, default=15.0, help="seconds per phase")
    p.add_argument("--deadline", type=float, default=60.0, help="each legitimate pod's deadline")
    p.add_argument(
        "--classes",
        type=lambda s: tuple(k for k in s.split(",") if k in CLASSES) or CLASSES,
        default=None,
        help=f"comma-separated subset of {','.join(CLASSES)}",
    )
    p.add_argument("--nats", type=int, default=1, choices=(1, 3), help="NATS nodes (3: a cluster, R3)")
    raise SystemExit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
