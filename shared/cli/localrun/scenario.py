"""``contrast run``: the whole Contrast flow on one machine, with emulated hardware (INSECURE, development).

Steps (each one fails the run with a message that names it):

1. load or create the emulator in ``<workdir>/emulator``, start NATS and make the owner keys, in parallel;
2. copy the Coordinator's layout (``deploy/kubernetes``: manifest service, verifier and CA, each its own
   Deployment) and the example app into ``<workdir>/deployment`` and run ``generate`` there for the emulated
   platform; the emulated host derives each pod's policy hash from its initdata annotation;
3. start the manifest service, N verifier replicas and the CA, each as its own process with the command and
   the environment its YAML gives (so with the Coordinator pins that ``generate`` wrote), launched with its
   own policy hash (:mod:`contrast.cli.localrun.host`); verifier and CA join through the manifest service
   once a manifest exists, each as the role its policy is bound to;
4. ``contrast set`` as the data owner (trust on first use: writes ``seed-shares.json`` to the workdir; the
   seed shares of an earlier run, whose store is gone, are moved to ``<workdir>/replaced/<time>/`` first,
   since ``set`` never starts a deployment over them). If NATS kept the history of an earlier run, the new
   manifest replica is stale: ``contrast recover`` with the seed share first, then ``set`` is an update
   signed with the workload-owner key (or changes nothing if the manifest is the same);
5. one emulated pod per workload (booting while verifier and CA join): its initializer, started as its
   YAML says, attests it and writes ``<workdir>/pods/<pod>/contrast/``;
6. ``contrast verify`` as the data owner; every pod's credentials must chain to the CAs it attested;
7. mutual TLS between two pods using only their files, and refusal of three unattested parties;
   then the service mesh (:mod:`.mesh`): each meshed pod's sidecar, as generate pinned it, and a call between
   plain-TCP applications through two sidecars; the serving sidecar refuses an unattested and a plaintext
   client;
8. a summary with figures from the services' metrics; then a live status line until Ctrl-C (or, headless,
   exit 0 if every step passed and 1 otherwise).

With ``--jaeger`` step 1 also starts the Jaeger of ``make tools`` on loopback (:mod:`.jaeger`); every process
exports its spans to it (services, pods' initializers, the owner's CLI calls), and after the summary the run
prints its UI address and the trace of one pod's attestation as Jaeger stored it.

Ctrl-C at any point stops every process this run started (pods, CLI calls, services, NATS, then Jaeger).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from contrast.cli.common import SEED_SHARES_FILE
from contrast.cli.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from contrast.cli.localrun import credentials, host, jaeger, mtls, summary
from contrast.cli.localrun.console import Console, status_line
from contrast.cli.localrun.mesh import LocalMesh
from contrast.cli.localrun.metrics import Figures, scrape_all
from contrast.cli.localrun.procs import RunnableService, spawn, wait_until
from contrast.cli.localrun.summary import Outcome, PodOutcome
from contrast.cli.localrun.supervisor import Interrupted, StepFailed, Supervisor
from contrast.cli.set_manifest import seed_share_files
from contrast.crypto.ownerkeys import ensure_owner_keys
from contrast.errors import ContrastError
from contrast.generate import generator
from contrast.generate.platforms import EMULATED_SNP, EMULATED_TDX
from contrast.platform.emulated import load_snp_emulator, load_tdx_emulator
from contrast.runtime.natsserver import NatsServerNotFound

PLATFORMS: dict[str, str] = {EMULATED_SNP: "emulated-snp", EMULATED_TDX: "emulated-tdx"}
ROLE_ORDER = ("manifest", "verifier", "ca")  # the start order: verifier and CA join the manifest service
COORDINATOR_SERVICES = frozenset(ROLE_ORDER)
READY_TIMEOUT = 60.0
TRACE_WAIT = 10.0  # seconds the summary waits for the pods' traces to be complete in Jaeger
# The services one attestation's trace must have spans of before the summary shows it.
ATTESTATION_SERVICES = frozenset({"contrast-initializer", "contrast-verifier", "contrast-ca"})
# Subdirectories of the workdir that each run recreates; everything else there (emulator, owner keys,
# manifest.json) is kept, so a second run is fast and uses the same owner identity.
RUN_DIRS = ("deployment", "pods", "verify", "logs", "unattested")
WORKDIR_MARKER = ".contrast-run"  # marks a workdir as ours, so that RUN_DIRS may be deleted in it


@dataclass(frozen=True)
class RunOptions:
    workdir: Path
    examples: Path
    coordinator: Path  # the Coordinator's layout: one Deployment per service (deploy/kubernetes)
    platform: str = EMULATED_SNP
    verifiers: int = 2
    nats_url: str | None = None
    store_dir: Path | None = None
    headless: bool = False
    pod_deadline: float = 45.0
    status_interval: float = 1.0
    jaeger: bool = False
    nats_cluster: int = 1  # embedded NATS nodes: 1, or a cluster (3: every stream and bucket at R3)


class LocalRun:
    """``contrast run``: the scenario when the service table has the Coordinator, otherwise only the services.
    Process supervision is :class:`Supervisor`'s, terminal output :class:`Console`'s, the steps
    :class:`Scenario`'s."""

    def __init__(
        self, opts: RunOptions, services: Sequence[RunnableService], out: TextIO = sys.stdout
    ) -> None:
        self.opts = opts
        self.services = services
        self.console = Console(out)
        self.sup = Supervisor(self.console)

    def built_services(self) -> list[RunnableService]:
        out = []
        for s in self.services:
            if s.built():
                out.append(s)
            else:
                self.console.say(f"{s.name:<11} not built yet (no {s.module}.__main__); skipped")
        return out

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.sup.stop.set)
        say = self.console.say
        workdir = self.opts.workdir.resolve()
        try:
            services = self.built_services()
            if {s.name for s in services} >= COORDINATOR_SERVICES:
                return await Scenario(self.opts, self.sup, self.console).run(services)
            say("contrast run: the table has no Coordinator (manifest, verifier, ca); starting services only")
            return await self.services_only(services)
        except Interrupted:
            say("contrast run: interrupted")
            return EXIT_INTERRUPTED
        except StepFailed as e:
            say(f"contrast run: FAILED at {e}")
            say(f"contrast run: service and pod logs are in {workdir / 'logs'}")
            return EXIT_REJECTED
        except NatsServerNotFound as e:
            say(f"contrast run: {e}")
            return EXIT_USAGE
        finally:
            await self.sup.shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def services_only(self, services: list[RunnableService]) -> int:
        """A custom table without the Coordinator: start its services and stay up."""
        await self.sup.start_nats(self.opts.nats_url, self.opts.store_dir, nodes=self.opts.nats_cluster)
        for s in services:
            await self.sup.start(s, s.replicas, {}, None)
        for c in await self.sup.guard(wait_until(self.sup.children, "ready", READY_TIMEOUT)):
            self.console.say(f"contrast run: {c.label} is not ready (yet)")
        self.console.say("contrast run: ready; press Ctrl-C to stop")
        return await self.sup.watch(None, self.opts.status_interval)


class Scenario:
    """The steps of the local deployment (see the module docstring), each failing with :class:`StepFailed`."""

    def __init__(self, opts: RunOptions, sup: Supervisor, console: Console) -> None:
        self.opts = opts
        self.sup = sup
        self.console = console
        self.outcome = Outcome()
        self.policies: dict[str, Any] = {}  # manifest.json's Policies, by policy hash hex
        self.mesh: LocalMesh | None = None
        self.workdir = opts.workdir.resolve()

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    async def owner(self, command: str, *args: str) -> dict[str, Any]:
        """``contrast <command>`` as the data owner, on the generated manifest in the workdir."""
        manifest = str(self.workdir / generator.MANIFEST_FILE)
        workspace = ["--workspace", str(self.workdir), "--nats", self.sup.nats_url]
        return await self.sup.cli(command, [command, "-m", manifest, *args, *workspace], self.logs)

    async def status_line(self) -> str:
        return status_line(Figures.of(await scrape_all(self.sup.children)), await self.sup.queue_depth())

    async def run(self, services: list[RunnableService]) -> int:
        opts = self.opts
        if opts.platform not in PLATFORMS:
            self.console.say(f"contrast run: --platform must be one of {', '.join(PLATFORMS)}")
            return EXIT_USAGE
        for what, source in (("example deployment", opts.examples), ("Coordinator layout", opts.coordinator)):
            if not source.is_dir():
                self.console.say(f"contrast run: no {what} at {source}")
                return EXIT_USAGE
        self.console.say(
            f"contrast run: local deployment on {opts.platform} -- INSECURE: the hardware is emulated; "
            f"workdir {self.workdir}"
        )
        marker = self.workdir / WORKDIR_MARKER
        if self.workdir.is_dir() and any(self.workdir.iterdir()) and not marker.exists():
            # Each run deletes its subdirectories (RUN_DIRS) first; never do that in somebody's directory.
            self.console.say(
                f"contrast run: {self.workdir} is not empty and was not made by `contrast run` "
                f"(no {WORKDIR_MARKER}); choose another --workdir"
            )
            return EXIT_USAGE
        self.workdir.mkdir(parents=True, exist_ok=True)
        marker.touch()
        for d in RUN_DIRS:
            shutil.rmtree(self.workdir / d, ignore_errors=True)

        await self.prepare()
        await self.sup.connect()
        coordinator, pods = await self.generate()
        table = {s.name: s for s in services}
        for pod in coordinator:  # manifest service first: verifier and CA join through it
            row = table[pod.coordinator_role]
            replicas = opts.verifiers if pod.coordinator_role == "verifier" else row.replicas
            launch = functools.partial(self.launch, pod, row)
            await self.sup.start_processes(pod.coordinator_role, launch, replicas, self.logs)
        if await self.sup.history_exists():
            # NATS kept the state of an earlier run (--nats, --store-dir): the new manifest replica starts
            # stale and, as in a real restart, the seed-share owner brings it back before anything else.
            await self.recover()
        else:
            self.retire_seed_shares()
        await self.set_manifest()
        # The pods boot (interpreter start) while verifier and CA join; their initializers retry until then.
        await self.sup.together(self.await_coordinator(), self.run_pods(pods))
        await self.verify()
        await self.check_credentials()
        await self.prove_mtls()
        await self.prove_mesh()
        await self.summarize()
        if self.sup.jaeger is not None:
            await self.show_trace(self.sup.jaeger)
        if opts.headless:
            return EXIT_OK
        self.console.say("contrast run: up; press Ctrl-C to stop")
        return await self.sup.watch(self.status_line, self.opts.status_interval)

    async def summarize(self) -> None:
        self.outcome.figures = Figures.of(await scrape_all(self.sup.children))
        sidecars = self.mesh.children if self.mesh is not None else []
        services_run = [c.label for c in self.sup.children if c not in sidecars]
        env = {**os.environ, **self.sup.telemetry}
        elapsed = self.console.elapsed()
        for line in summary.render(self.outcome, self.opts.platform, services_run, elapsed, env=env):
            self.console.say(line)
        self.console.say(
            f"files         {self.workdir}: manifest.json, seed-shares.json, verify/, pods/, logs/"
        )

    async def prepare(self) -> None:
        kind = "snp" if self.opts.platform == EMULATED_SNP else "tdx"
        emu_dir = self.workdir / "emulator"
        existed = (emu_dir / ("snp" if kind == "snp" else "tdx.json")).exists()

        def emulator() -> None:
            (load_snp_emulator if kind == "snp" else load_tdx_emulator)(emu_dir)

        # Key generation (emulator RSA-4096, owner keys) overlaps the NATS start. Every task runs to its end
        # even if another fails, so a started nats-server is always known (and stopped) afterwards.
        try:
            sources = await asyncio.to_thread(host.namespaces, [self.opts.examples])
        except ContrastError as e:
            raise StepFailed("prepare", f"{e.code}: {e.message}") from e
        start = self.sup.start_nats(
            self.opts.nats_url, self.opts.store_dir, nodes=self.opts.nats_cluster, sources=sources
        )
        results = await asyncio.gather(
            start,
            asyncio.to_thread(emulator),
            asyncio.to_thread(ensure_owner_keys, self.workdir),
            self.start_jaeger(),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, (NatsServerNotFound, StepFailed)):
                raise r
            if isinstance(r, BaseException):
                raise StepFailed("prepare", f"{type(r).__name__}: {r}")
        self.outcome.emulator = f"{'loaded' if existed else 'created'} {emu_dir}"
        self.console.step("emulator", f"{self.opts.platform} emulator {self.outcome.emulator}")
        if self.sup.stop.is_set():
            raise Interrupted

    async def start_jaeger(self) -> None:
        if not self.opts.jaeger:
            return
        j = await self.sup.start_jaeger(self.workdir / "jaeger")
        self.console.jaeger_started(j, ui_embedded=await asyncio.to_thread(j.ui_embedded))

    async def show_trace(self, j: jaeger.Jaeger) -> None:
        """Print one pod's attestation as Jaeger stored it (waiting briefly for the CA's span to arrive)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TRACE_WAIT
        traces: list[dict[str, Any]] = []
        while True:
            try:
                traces = await asyncio.to_thread(j.traces, "contrast-initializer")
            except (OSError, RuntimeError, ValueError):
                traces = []
            complete = [
                spans
                for spans in map(jaeger.parse_trace, traces)
                if {s.service for s in spans} >= ATTESTATION_SERVICES
            ]
            if len(complete) >= len(self.outcome.pods):
                self.console.trace(j, complete[0] if complete else [], len(traces))
                return
            if loop.time() >= deadline:
                self.console.trace(j, [], len(traces))
                return
            await asyncio.sleep(0.2)

    def host_settings(self, pod: host.EmulatedPod, node: int = 0) -> dict[str, str]:
        """What the emulated host sets for a pod: its emulated hardware, launched with the pod's policy hash,
        where NATS is (node ``node`` first; one JetStream replica per node, up to three) and the NATS user
        it connects as: its service's role for a Coordinator pod, else its namespace's initializer user."""
        user = pod.coordinator_role if pod.is_coordinator else pod.namespace
        return {
            "CONTRAST_PLATFORM": PLATFORMS[self.opts.platform],
            "CONTRAST_EMULATOR_DIR": str(self.workdir / "emulator"),
            "CONTRAST_EMULATED_POLICY_HASH": pod.policy_hash.hex(),
            "CONTRAST_JS_REPLICAS": "1",
            **self.sup.nats_env(user, node),
        }

    def launch(
        self, pod: host.EmulatedPod, row: RunnableService, node: int = 0
    ) -> tuple[list[str], dict[str, str]]:
        """A Coordinator pod's service as its YAML starts it (plus the runner table's extra arguments and
        environment, which tests use), on the emulated host, connecting to NATS node ``node`` first."""
        if pod.launch is None:
            raise StepFailed("generate", f"{pod.ref}: no service container")
        try:
            argv = [*pod.launch.command(), *row.args]
        except ContrastError as e:
            raise StepFailed("generate", f"{pod.ref}: {e.message}") from e
        base = {**os.environ, **self.sup.telemetry, **row.env}
        return argv, pod.launch.environment(base, self.host_settings(pod, node))

    async def generate(self) -> tuple[list[host.EmulatedPod], list[host.EmulatedPod]]:
        """Copy the Coordinator layout and the app, generate, and discover the pods: the Coordinator's (one
        per service role, manifest service first) and the attested workloads."""
        deployment = self.workdir / "deployment"
        await asyncio.to_thread(shutil.copytree, self.opts.coordinator, deployment / "coordinator")
        await asyncio.to_thread(shutil.copytree, self.opts.examples, deployment / "app")
        notes: list[str] = []
        try:
            report = await self.sup.guard(
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
        self.console.step(
            "generate", f"{len(pods)} confidential workloads in {deployment}; wrote {report.manifest_path}"
        )
        for note in notes:
            self.console.say(f"{'':19}note: {note}")
        for p in pods:
            entry = policies.get(p.policy_hash.hex())
            if entry is None:
                raise StepFailed("generate", f"{p.ref}: launch policy hash is not in manifest.json")
        order = {r: i for i, r in enumerate(ROLE_ORDER)}
        coordinator = sorted((p for p in pods if p.is_coordinator), key=lambda p: order[p.coordinator_role])
        if [p.coordinator_role for p in coordinator] != list(ROLE_ORDER):
            raise StepFailed(
                "generate",
                "expected one Coordinator pod per service (manifest, verifier, ca), found "
                + (", ".join(p.coordinator_role for p in coordinator) or "none"),
            )
        self.outcome.coordinator_policies = {p.coordinator_role: p.policy_hash for p in coordinator}
        workloads = [p for p in pods if not p.is_coordinator and p.initializer]
        self.outcome.skipped = [p for p in pods if not p.is_coordinator and not p.initializer]
        self.policies = policies
        return coordinator, workloads

    async def recover(self) -> None:
        if not (self.workdir / SEED_SHARES_FILE).exists():
            raise StepFailed(
                "recover",
                f"NATS holds a Coordinator history but {self.workdir} has no {SEED_SHARES_FILE} to recover "
                "it with; use a fresh NATS (no --nats/--store-dir) or the workdir of that deployment",
            )
        answer = await self.owner("recover", "--timeout", "45")
        self.console.step(
            "recover",
            f"replica {answer.get('replica', '?')} recovered generation {answer.get('generation', '?')} "
            "with the seed share of the first set",
        )

    def retire_seed_shares(self) -> None:
        """A fresh store: the seed shares of an earlier run's deployment move out of the way of the first set
        (which refuses to start a deployment while a seed-shares file is in the workspace)."""
        earlier = seed_share_files(self.workdir)
        if not earlier:
            return
        to = self.workdir / "replaced" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        to.mkdir(parents=True)
        for f in earlier:
            f.rename(to / f.name)
        self.console.say(f"{'':19}note: a fresh store; the seed shares of the earlier run moved to {to}")

    async def set_manifest(self) -> None:
        policy_files = sorted(str(p) for p in (self.workdir / generator.POLICIES_DIR).glob("*.toml"))
        # No wait for the manifest service: `set` retries until a replica answers, and starting the CLI now
        # overlaps its interpreter start with the service's.
        answer = await self.owner("set", *policy_files, "--timeout", "45")
        if answer.get("coordinator_policy_hash") != self.outcome.coordinator_policies["manifest"].hex():
            raise StepFailed(
                "set", "the attested Coordinator runs another policy than the manifest service's"
            )
        self.outcome.generation = int(answer["generation"])
        self.outcome.transition_hash = str(answer["transition_hash"])
        self.outcome.set_files = [str(f) for f in answer.get("files", [])]
        if answer.get("changed") is False:
            how = "(unchanged: the recovered Coordinator already runs this manifest); "
        elif self.outcome.generation == 1:
            how = "(trust on first use); "
        else:
            how = "(update, owner-signed); "
        self.console.step(
            "set",
            f"manifest set, generation {self.outcome.generation} {how}"
            f"wrote {', '.join(self.outcome.set_files)}",
        )

    async def await_coordinator(self) -> None:
        members = [c for c in self.sup.children if c.label.split("-")[0] in ("verifier", "ca")]
        late = await self.sup.guard(wait_until(members, "ready", READY_TIMEOUT))
        if late:
            raise StepFailed(
                "join", f"{', '.join(c.label for c in late)} not ready: " + late[0].log_tail(800)
            )
        self.console.step(
            "join", f"{', '.join(c.label for c in members)} joined the Coordinator and are ready"
        )

    async def run_pods(self, pods: list[host.EmulatedPod]) -> None:
        async def one(index: int, pod: host.EmulatedPod) -> PodOutcome:
            began = time.monotonic()
            if pod.launch is None:
                raise StepFailed("pods", f"{pod.ref}: no initializer")
            # The initializer as the pod's YAML starts it: its Coordinator pins are the generated ones.
            argv = pod.launch.command()
            # The emulated host launches the pod with its own policy hash, as Kata does from the initdata.
            pod_env = pod.launch.environment(
                {**os.environ, **self.sup.telemetry},
                self.host_settings(pod, index)  # its namespace's NATS user, its node first
                | {
                    "CONTRAST_INITIALIZER_ROOT": str(self.workdir / "pods" / pod.name / "contrast"),
                    "CONTRAST_INITIALIZER_DEADLINE": str(self.opts.pod_deadline),
                    "CONTRAST_REPLICA": f"pod-{pod.name}",
                },
            )
            child = await spawn(
                f"pod-{pod.name}", argv, env=pod_env, log_path=self.logs / f"pod-{pod.name}.log"
            )
            self.console.step(
                "pods", f"{pod.name:<8} launched with policy {pod.policy_hash.hex()[:16]}…, pid {child.pid}"
            )
            code = await self.sup.run_child(child)
            if code != 0:
                raise StepFailed(
                    "pods", f"{pod.name}: the initializer exited with {code}: {child.log_tail(800)}"
                )
            return PodOutcome(pod, seconds=time.monotonic() - began)

        self.outcome.pods = list(
            await self.sup.guard(asyncio.gather(*(one(i, p) for i, p in enumerate(pods))))
        )
        for o in self.outcome.pods:
            self.console.step(
                "pods",
                f"{o.pod.name:<8} attested (initializer ran {o.seconds:.1f} s): pods/{o.pod.name}/contrast/",
            )

    async def verify(self) -> None:
        answer = await self.owner("verify")
        if answer.get("coordinator_policy_hash") != self.outcome.coordinator_policies["manifest"].hex():
            raise StepFailed(
                "verify", "the attested Coordinator runs another policy than the manifest service's"
            )
        self.outcome.verify = answer
        self.console.step(
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
        self.console.step(
            "credentials", f"{len(self.outcome.pods)} pods hold certificates that chain to the verified CAs"
        )

    async def prove_mtls(self) -> None:
        names = [o.pod.name for o in self.outcome.pods]
        if len(names) < 2:
            raise StepFailed("mtls", "need two attested pods to prove mutual TLS")
        server, client = ("api", "web") if {"api", "web"} <= set(names) else (names[0], names[1])
        pods = self.workdir / "pods"
        proof = await self.sup.guard(
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
        self.report("mtls", proof)

    def report(self, step: str, proof: mtls.Proof) -> None:
        """One line per exchange; a failed step unless each went as it must."""
        for e in proof.exchanges:
            mark = "ok  " if e.as_expected else "FAIL"
            self.console.step(step, f"{mark} {e.description}: {e.observed} ({e.detail})")
        if not proof.passed:
            raise StepFailed(step, "an exchange did not go as it must")

    async def prove_mesh(self) -> None:
        pods = [o.pod for o in self.outcome.pods if o.pod.mesh is not None]
        if not pods:
            self.console.step("mesh", "no pod has a service-mesh sidecar")
            return
        mesh = self.mesh = LocalMesh(pods, self.workdir / "pods", self.logs, self.workdir / "unattested")
        self.sup.on_shutdown(mesh.close)
        sidecars = await mesh.start()
        self.sup.children += sidecars  # a sidecar that dies fails the run, as a service does
        late = await self.sup.guard(wait_until(sidecars, "ready", READY_TIMEOUT))
        if late:
            raise StepFailed("mesh", f"{late[0].label} not ready: {late[0].log_tail(800)}")
        self.console.step(
            "mesh",
            f"{', '.join(c.label for c in sidecars)} ready with the configuration generate pinned "
            "(no TPROXY here: the pods share this host's network, so forwards stand in for it)",
        )
        self.outcome.mesh = await self.sup.guard(mesh.prove())
        self.report("mesh", self.outcome.mesh)
