"""``contrast run``: the whole Contrast flow on one machine, with emulated hardware (INSECURE, development).

Steps (each one fails the run with a message that names it):

1. load or create the emulator in ``<workdir>/emulator``, start NATS and make the owner keys, in parallel;
2. copy the example app into ``<workdir>/deployment`` and run ``generate`` there for the emulated platform;
   the emulated host derives each pod's policy hash from its initdata annotation;
3. start the manifest service, N verifier replicas and the CA as processes launched with the Coordinator's
   policy hash (verifier and CA join through the manifest service once a manifest exists);
4. ``contrast set`` as the data owner (trust on first use: writes ``seed-shares.json`` to the workdir). If
   NATS kept the history of an earlier run, the new manifest replica is stale: ``contrast recover`` with
   the seed share first, then ``set`` is an update signed with the workload-owner key;
5. one emulated pod per workload (booting while verifier and CA join): the initializer attests it and
   writes ``<workdir>/pods/<pod>/contrast/``;
6. ``contrast verify`` as the data owner; every pod's credentials must chain to the CAs it attested;
7. mutual TLS between two pods using only their files, and refusal of three unattested parties;
8. a summary with figures from the services' metrics; then a live status line until Ctrl-C (or, headless,
   exit 0 if every step passed and 1 otherwise).

Ctrl-C at any point stops every process this run started (pods, CLI calls, services, then NATS).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import nats
import nats.errors
from cryptography import x509
from nats.aio.client import Client

from contrast import subjects
from contrast.cli.common import SEED_SHARES_FILE
from contrast.coordinator.history import LATEST_KEY
from contrast.coordinator.ownerkeys import ensure_owner_keys
from contrast.errors import ContrastError
from contrast.generate import generator
from contrast.generate.platforms import EMULATED_SNP, EMULATED_TDX
from contrast.localrun import credentials, host, mtls, summary
from contrast.localrun.metrics import Figures, scrape_all
from contrast.localrun.procs import Child, RunnableService, spawn, start_service, stop_children, wait_until
from contrast.localrun.summary import Outcome, PodOutcome
from contrast.platform.emulated import load_snp_emulator, load_tdx_emulator
from contrast.runtime.natsserver import NatsServer, NatsServerNotFound, start_nats

T = TypeVar("T")

PLATFORMS: dict[str, str] = {EMULATED_SNP: "emulated-snp", EMULATED_TDX: "emulated-tdx"}
COORDINATOR_SERVICES = frozenset({"manifest", "verifier", "ca"})
READY_TIMEOUT = 60.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Subdirectories of the workdir that each run recreates; everything else there (emulator, owner keys,
# manifest.json) is kept, so a second run is fast and uses the same owner identity.
RUN_DIRS = ("deployment", "pods", "verify", "logs", "unattested")
WORKDIR_MARKER = ".contrast-run"  # marks a workdir as ours, so that RUN_DIRS may be deleted in it


@dataclass(frozen=True)
class RunOptions:
    workdir: Path
    examples: Path
    platform: str = EMULATED_SNP
    verifiers: int = 2
    nats_url: str | None = None
    store_dir: Path | None = None
    headless: bool = False
    pod_deadline: float = 45.0
    status_interval: float = 1.0


async def _awaited(aw: Awaitable[None]) -> None:
    await aw


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM arrived."""


class StepFailed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


class LocalRun:
    def __init__(
        self, opts: RunOptions, services: Sequence[RunnableService], out: TextIO = sys.stdout
    ) -> None:
        self.opts = opts
        self.services = services
        self.out = out
        self.stop = asyncio.Event()
        self.children: list[Child] = []  # long-running services, in start order
        self.transient: set[Child] = set()  # pods and CLI calls in flight
        self.nats: NatsServer | None = None
        self.nats_url = ""
        self.nc: Client | None = None
        self.started = time.monotonic()
        self.outcome = Outcome()
        self.policies: dict[str, Any] = {}  # manifest.json's Policies, by policy hash hex
        self.workdir = opts.workdir.resolve()

    # ---- plumbing ---------------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, name: str, text: str) -> None:
        self.say(f"[{time.monotonic() - self.started:5.1f}s] {name:<11} {text}")

    async def guard(self, aw: Awaitable[T], timeout: float | None = None) -> T:
        """Await ``aw`` unless a stop is requested (:class:`Interrupted`) or a service dies
        (:class:`StepFailed`) first; ``TimeoutError`` after ``timeout``."""
        task = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self.stop.wait())
        died = asyncio.ensure_future(self._a_service_died())
        try:
            done, _ = await asyncio.wait(
                {task, stopper, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
            died.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if self.stop.is_set():
            raise Interrupted
        if died in done:
            dead = died.result()
            raise StepFailed(
                "services", f"{dead.label} exited with {dead.process.returncode}: {dead.log_tail(800)}"
            )
        raise TimeoutError

    async def _a_service_died(self) -> Child:
        while True:
            for c in self.children:
                if not c.running():
                    return c
            await asyncio.sleep(0.2)

    async def together(self, *aws: Awaitable[None]) -> None:
        """Run steps concurrently; the first failure cancels the others and is raised as itself."""
        try:
            async with asyncio.TaskGroup() as tg:
                for aw in aws:
                    tg.create_task(_awaited(aw))
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None

    def built_services(self) -> list[RunnableService]:
        out = []
        for s in self.services:
            if s.built():
                out.append(s)
            else:
                self.say(f"{s.name:<11} not built yet (no {s.module}.__main__); skipped")
        return out

    # ---- entry ------------------------------------------------------------------------------------------

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            services = self.built_services()
            if {s.name for s in services} >= COORDINATOR_SERVICES:
                return await self.scenario(services)
            self.say(
                "contrast run: the table has no Coordinator (manifest, verifier, ca); starting services only"
            )
            return await self.services_only(services)
        except Interrupted:
            self.say("contrast run: interrupted")
            return EXIT_INTERRUPTED
        except StepFailed as e:
            self.say(f"contrast run: FAILED at {e}")
            self.say(f"contrast run: service and pod logs are in {self.workdir / 'logs'}")
            return EXIT_FAILED
        except NatsServerNotFound as e:
            self.say(f"contrast run: {e}")
            return EXIT_USAGE
        finally:
            await self.shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def shutdown(self) -> None:
        for child in list(self.transient):
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await child.process.wait()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        if self.children:
            self.say("contrast run: stopping services")
            await stop_children(self.children)
        if self.nats is not None:
            await asyncio.to_thread(self.nats.cleanup)
            self.say("contrast run: NATS stopped")

    async def start_nats(self) -> None:
        if self.opts.nats_url:
            self.nats_url = self.opts.nats_url
            self.say(f"NATS        {self.nats_url} (external)")
            return
        if self.opts.store_dir is not None:
            self.opts.store_dir.mkdir(parents=True, exist_ok=True)
        server = await asyncio.to_thread(start_nats, store_dir=self.opts.store_dir)
        self.nats = server
        self.nats_url = server.url
        self.say(
            f"NATS        {server.url}  (JetStream store {server.store_dir}, "
            f"monitoring http://127.0.0.1:{server.monitor_port}, pid {server.pid})"
        )

    async def start(
        self, service: RunnableService, replicas: int, env: dict[str, str], logs: Path | None
    ) -> None:
        for replica in range(1, replicas + 1):
            child = await start_service(service, replica, self.nats_url, extra_env=env, log_dir=logs)
            self.children.append(child)
            self.say(
                f"{child.label:<11} pid {child.pid}, metrics http://127.0.0.1:{child.metrics_port}/metrics"
                + (f", log {child.log_path}" if child.log_path else "")
            )

    # ---- services only (a custom table without the Coordinator) ------------------------------------------

    async def services_only(self, services: list[RunnableService]) -> int:
        await self.start_nats()
        for s in services:
            await self.start(s, s.replicas, {}, None)
        for c in await self.guard(wait_until(self.children, "ready", READY_TIMEOUT)):
            self.say(f"contrast run: {c.label} is not ready (yet)")
        self.say("contrast run: ready; press Ctrl-C to stop")
        return await self.watch(status=False)

    async def watch(self, *, status: bool) -> int:
        """Stay up until Ctrl-C (exit 0) or until a service or NATS dies (exit 1)."""
        tty = self.out.isatty()
        last_line = 0.0
        while not self.stop.is_set():
            failed = [c for c in self.children if not c.running()]
            if failed:
                for c in failed:
                    self.say(f"\ncontrast run: {c.label} exited with {c.process.returncode}; stopping")
                    if c.log_path:
                        self.say(c.log_tail())
                return EXIT_FAILED
            if self.nats is not None and not self.nats.running():
                self.say("\ncontrast run: nats-server exited; stopping")
                return EXIT_FAILED
            if status:
                line = await self.status_line()
                if tty:
                    print(f"\r{line}\033[K", end="", file=self.out, flush=True)
                elif time.monotonic() - last_line > 30:
                    self.say(line)
                    last_line = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.opts.status_interval)
        if status and tty:
            self.say()
        return EXIT_OK

    async def status_line(self) -> str:
        figures = Figures.of(await scrape_all(self.children))
        depth = "?"
        if self.nc is not None:
            try:
                info = await self.nc.jetstream().consumer_info(
                    subjects.VERIFIER_CONSUMER.stream.name, subjects.VERIFIER_CONSUMER.durable, timeout=0.5
                )
                depth = str(info.num_pending + info.num_ack_pending)
            except Exception:  # NATS busy or restarting: show "?" rather than stall the line
                depth = "?"
        ready = sum(figures.ready.values())
        rejected = int(sum(figures.rejections.values()))
        return (
            f"{dt.datetime.now().strftime('%H:%M:%S')}  ready {ready}/{len(figures.ready)}  "
            f"verifier queue {depth}  attestations {int(sum(figures.attestations.values()))}  "
            f"rejected {rejected}  certificates {int(figures.certificates_issued)}  "
            f"generation {int(figures.manifest_generation)}  (Ctrl-C stops)"
        )

    # ---- the scenario -----------------------------------------------------------------------------------

    async def scenario(self, services: list[RunnableService]) -> int:
        opts = self.opts
        if opts.platform not in PLATFORMS:
            self.say(f"contrast run: --platform must be one of {', '.join(PLATFORMS)}")
            return EXIT_USAGE
        if not (opts.examples / "coordinator.yaml").is_file():
            self.say(
                f"contrast run: no example deployment at {opts.examples} (expected coordinator.yaml there)"
            )
            return EXIT_USAGE
        self.say(
            f"contrast run: local deployment on {opts.platform} -- INSECURE: the hardware is emulated; "
            f"workdir {self.workdir}"
        )
        marker = self.workdir / WORKDIR_MARKER
        if self.workdir.is_dir() and any(self.workdir.iterdir()) and not marker.exists():
            # Each run deletes its subdirectories (RUN_DIRS) first; never do that in somebody's directory.
            self.say(
                f"contrast run: {self.workdir} is not empty and was not made by `contrast run` "
                f"(no {WORKDIR_MARKER}); choose another --workdir"
            )
            return EXIT_USAGE
        self.workdir.mkdir(parents=True, exist_ok=True)
        marker.touch()
        for d in RUN_DIRS:
            shutil.rmtree(self.workdir / d, ignore_errors=True)

        await self.prepare()
        await self.connect()
        pods = await self.generate()
        coordinator = self.outcome.coordinator_policy_hash
        env = {
            "CONTRAST_PLATFORM": PLATFORMS[opts.platform],
            "CONTRAST_EMULATOR_DIR": str(self.workdir / "emulator"),
            "CONTRAST_EMULATED_POLICY_HASH": coordinator.hex(),
        }
        for s in services:
            if s.name in COORDINATOR_SERVICES:
                await self.start(s, opts.verifiers if s.name == "verifier" else s.replicas, env, self.logs)
        if await self.history_exists():
            # NATS kept the state of an earlier run (--nats, --store-dir): the new manifest replica starts
            # stale and, as in a real restart, the seed-share owner brings it back before anything else.
            await self.recover()
        await self.set_manifest()
        # The pods boot (interpreter start) while verifier and CA join; their initializers retry until then.
        await self.together(self.await_coordinator(), self.run_pods(pods, env))
        await self.verify()
        await self.check_credentials()
        await self.prove_mtls()
        self.outcome.figures = Figures.of(await scrape_all(self.children))
        elapsed = time.monotonic() - self.started
        for line in summary.render(
            self.outcome, self.opts.platform, [c.label for c in self.children], elapsed
        ):
            self.say(line)
        self.say(f"files         {self.workdir}: manifest.json, seed-shares.json, verify/, pods/, logs/")
        if opts.headless:
            return EXIT_OK
        self.say("contrast run: up; press Ctrl-C to stop")
        return await self.watch(status=True)

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    async def prepare(self) -> None:
        kind = "snp" if self.opts.platform == EMULATED_SNP else "tdx"
        emu_dir = self.workdir / "emulator"
        existed = (emu_dir / ("snp" if kind == "snp" else "tdx.json")).exists()

        def emulator() -> None:
            (load_snp_emulator if kind == "snp" else load_tdx_emulator)(emu_dir)

        # Key generation (emulator RSA-4096, owner keys) overlaps the NATS start. Every task runs to its end
        # even if another fails, so a started nats-server is always known (and stopped) afterwards.
        results = await asyncio.gather(
            self.start_nats(),
            asyncio.to_thread(emulator),
            asyncio.to_thread(ensure_owner_keys, self.workdir),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, NatsServerNotFound):
                raise r
            if isinstance(r, BaseException):
                raise StepFailed("prepare", f"{type(r).__name__}: {r}")
        self.outcome.emulator = f"{'loaded' if existed else 'created'} {emu_dir}"
        self.step("emulator", f"{self.opts.platform} emulator {self.outcome.emulator}")
        if self.stop.is_set():
            raise Interrupted

    async def connect(self) -> None:
        """The runner's own client (status line: queue depth); also fails fast on an unreachable --nats."""
        try:
            self.nc = await self.guard(
                nats.connect(self.nats_url, name="contrast-run", connect_timeout=5, allow_reconnect=True),
                timeout=20,
            )
        except (TimeoutError, OSError, nats.errors.Error) as e:
            raise StepFailed("nats", f"cannot reach NATS at {self.nats_url}: {type(e).__name__}") from e

    async def generate(self) -> list[host.EmulatedPod]:
        deployment = self.workdir / "deployment"
        await asyncio.to_thread(shutil.copytree, self.opts.examples, deployment)
        notes: list[str] = []
        try:
            report = await self.guard(
                asyncio.to_thread(
                    generator.run,
                    [deployment],
                    platform=self.opts.platform,
                    workspace=self.workdir,
                    emulator_dir=self.workdir / "emulator",
                    # The emulated deployment runs no images: their configs are not needed from registries.
                    options=generator.Options(offline=True),
                    warn=notes.append,
                )
            )
            pods = await asyncio.to_thread(host.discover_pods, [deployment])
        except ContrastError as e:
            raise StepFailed("generate", f"{e.code}: {e.message}") from e
        policies = report.manifest.get("Policies", {})
        self.step(
            "generate", f"{len(pods)} confidential workloads in {deployment}; wrote {report.manifest_path}"
        )
        for note in notes:
            self.say(f"{'':19}note: {note}")
        coordinators = {p.policy_hash for p in pods if p.is_coordinator}
        if len(coordinators) != 1:
            raise StepFailed("generate", f"expected one Coordinator policy hash, found {len(coordinators)}")
        for p in pods:
            entry = policies.get(p.policy_hash.hex())
            if entry is None:
                raise StepFailed("generate", f"{p.ref}: launch policy hash is not in manifest.json")
        self.outcome.coordinator_policy_hash = coordinators.pop()
        workloads = [p for p in pods if not p.is_coordinator and p.initializer]
        self.outcome.skipped = [p for p in pods if not p.is_coordinator and not p.initializer]
        self.policies = policies
        return workloads

    async def cli(self, label: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run ``contrast <args> --json`` as the data owner would; returns its JSON answer."""
        argv = [sys.executable, "-m", "contrast.cli.main", *args, "--json"]
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{label}.log"
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        child = Child(label, process, None, log)
        self.transient.add(child)
        try:
            stdout, _ = await self.guard(process.communicate(), timeout)
        except TimeoutError:
            raise StepFailed(label, f"no answer within {timeout:g} s; see {log}") from None
        finally:
            if process.returncode is not None:
                self.transient.discard(child)
        try:
            answer: dict[str, Any] = json.loads(stdout)
        except ValueError:
            raise StepFailed(
                label, f"exit {process.returncode}, no JSON answer: {stdout[:300]!r}; {child.log_tail(600)}"
            ) from None
        if process.returncode != 0 or answer.get("ok") is not True:
            reason = answer.get("code", "?")
            raise StepFailed(label, f"exit {process.returncode}: {reason}: {answer.get('message', '')}")
        return answer

    async def history_exists(self) -> bool:
        """A hint from the (untrusted) store only: it picks recover-then-update over a first set; the CLIs
        do the authenticated checks either way."""
        if self.nc is None:
            return False
        try:
            kv = await self.nc.jetstream().key_value(subjects.HISTORY.bucket)
            await kv.get(LATEST_KEY)
        except Exception:  # no bucket or no key: a fresh deployment
            return False
        return True

    async def recover(self) -> None:
        if not (self.workdir / SEED_SHARES_FILE).exists():
            raise StepFailed(
                "recover",
                f"NATS holds a Coordinator history but {self.workdir} has no {SEED_SHARES_FILE} to recover "
                "it with; use a fresh NATS (no --nats/--store-dir) or the workdir of that deployment",
            )
        answer = await self.cli(
            "recover",
            "recover",
            "-m",
            str(self.workdir / generator.MANIFEST_FILE),
            "--workspace",
            str(self.workdir),
            "--nats",
            self.nats_url,
            "--timeout",
            "45",
        )
        self.step(
            "recover",
            f"replica {answer.get('replica', '?')} recovered generation {answer.get('generation', '?')} "
            "with the seed share of the first set",
        )

    async def set_manifest(self) -> None:
        manifest = self.workdir / generator.MANIFEST_FILE
        policy_files = sorted(str(p) for p in (self.workdir / generator.POLICIES_DIR).glob("*.toml"))
        # No wait for the manifest service: `set` retries until a replica answers, and starting the CLI now
        # overlaps its interpreter start with the service's.
        answer = await self.cli(
            "set",
            "set",
            "-m",
            str(manifest),
            *policy_files,
            "--workspace",
            str(self.workdir),
            "--nats",
            self.nats_url,
            "--timeout",
            "45",
        )
        if answer.get("coordinator_policy_hash") != self.outcome.coordinator_policy_hash.hex():
            raise StepFailed("set", "the attested Coordinator runs another policy than the deployment's")
        self.outcome.generation = int(answer["generation"])
        self.outcome.transition_hash = str(answer["transition_hash"])
        self.outcome.set_files = [str(f) for f in answer.get("files", [])]
        self.step(
            "set",
            f"manifest set, generation {self.outcome.generation} "
            + ("(trust on first use); " if self.outcome.generation == 1 else "(update, owner-signed); ")
            + f"wrote {', '.join(self.outcome.set_files)}",
        )

    async def await_coordinator(self) -> None:
        members = [c for c in self.children if c.label.split("-")[0] in ("verifier", "ca")]
        late = await self.guard(wait_until(members, "ready", READY_TIMEOUT))
        if late:
            raise StepFailed(
                "join", f"{', '.join(c.label for c in late)} not ready: " + late[0].log_tail(800)
            )
        self.step("join", f"{', '.join(c.label for c in members)} joined the Coordinator and are ready")

    async def run_pods(self, pods: list[host.EmulatedPod], env: dict[str, str]) -> None:
        coordinator = self.outcome.coordinator_policy_hash.hex()

        async def one(pod: host.EmulatedPod) -> PodOutcome:
            began = time.monotonic()
            argv = [
                sys.executable,
                "-m",
                "contrast.initializer",
                "--nats",
                self.nats_url,
                "--root",
                str(self.workdir / "pods" / pod.name / "contrast"),
                "--coordinator-policy-hashes",
                coordinator,
                "--deadline",
                str(self.opts.pod_deadline),
                "--replica",
                f"pod-{pod.name}",
            ]
            # The emulated host launches the pod with its own policy hash, as Kata does from the initdata.
            pod_env = {**os.environ, **env, "CONTRAST_EMULATED_POLICY_HASH": pod.policy_hash.hex()}
            child = await spawn(
                f"pod-{pod.name}", argv, env=pod_env, log_path=self.logs / f"pod-{pod.name}.log"
            )
            self.transient.add(child)
            self.step(
                "pods", f"{pod.name:<8} launched with policy {pod.policy_hash.hex()[:16]}…, pid {child.pid}"
            )
            code = await child.process.wait()
            self.transient.discard(child)
            if code != 0:
                raise StepFailed(
                    "pods", f"{pod.name}: the initializer exited with {code}: {child.log_tail(800)}"
                )
            return PodOutcome(pod, seconds=time.monotonic() - began)

        self.outcome.pods = list(await self.guard(asyncio.gather(*(one(p) for p in pods))))
        for o in self.outcome.pods:
            self.step(
                "pods",
                f"{o.pod.name:<8} attested (initializer ran {o.seconds:.1f} s): pods/{o.pod.name}/contrast/",
            )

    async def verify(self) -> None:
        answer = await self.cli(
            "verify",
            "verify",
            "-m",
            str(self.workdir / generator.MANIFEST_FILE),
            "--workspace",
            str(self.workdir),
            "--nats",
            self.nats_url,
        )
        if answer.get("coordinator_policy_hash") != self.outcome.coordinator_policy_hash.hex():
            raise StepFailed("verify", "the attested Coordinator runs another policy than the deployment's")
        self.outcome.verify = answer
        self.step(
            "verify",
            f"the Coordinator is attested; generation {answer['generation']}, "
            f"{answer['manifests']} manifest(s) in a verified history; active manifest = manifest.json",
        )

    async def check_credentials(self) -> None:
        verified = self.workdir / "verify"
        try:
            mesh = x509.load_pem_x509_certificate((verified / "mesh-ca.pem").read_bytes())
            root = x509.load_pem_x509_certificate((verified / "coordinator-root-ca.pem").read_bytes())
        except (OSError, ValueError) as e:
            raise StepFailed("verify", f"cannot read the verified CAs: {e}") from e
        now = dt.datetime.now(dt.UTC)
        for o in self.outcome.pods:
            entry = self.policies[o.pod.policy_hash.hex()]
            try:
                o.certificate = await asyncio.to_thread(
                    credentials.check_pod,
                    self.workdir / "pods" / o.pod.name / "contrast",
                    policy_hash=o.pod.policy_hash,
                    sans=list(entry["SANs"]),
                    workload_secret_id=str(entry["WorkloadSecretID"]),
                    mesh_ca=mesh,
                    root_ca=root,
                    now=now,
                )
            except credentials.CredentialsRejected as e:
                raise StepFailed("credentials", f"{o.pod.name}: {e}") from e
        self.step(
            "credentials", f"{len(self.outcome.pods)} pods hold certificates that chain to the verified CAs"
        )

    async def prove_mtls(self) -> None:
        names = [o.pod.name for o in self.outcome.pods]
        if len(names) < 2:
            raise StepFailed("mtls", "need two attested pods to prove mutual TLS")
        server, client = ("api", "web") if {"api", "web"} <= set(names) else (names[0], names[1])
        pods = self.workdir / "pods"
        proof = await self.guard(
            asyncio.to_thread(
                mtls.prove,
                server,
                pods / server / "contrast",
                client,
                pods / client / "contrast",
                self.workdir / "unattested",
            )
        )
        self.outcome.proof = proof
        for e in proof.exchanges:
            mark = "ok  " if e.as_expected else "FAIL"
            self.step("mtls", f"{mark} {e.description}: {e.observed} ({e.detail})")
        if not proof.passed:
            raise StepFailed("mtls", "an exchange did not go as it must")
