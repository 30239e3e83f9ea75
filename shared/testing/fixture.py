"""INSECURE, tests and benchmarks only: a replica key source that holds the seed itself.

:class:`FixtureKeySource` builds exactly what a join (docs/protocol.md §4) would hand over, with
:func:`contrast.coordinator.rolekeys.keys_for_role`, for the current head of the authenticated history, so
that verifier and CA replicas run without a manifest service. Its state (seed, salt, one mesh key per head)
is a :class:`FixtureState`, in memory or in a directory (``CONTRAST_INSECURE_FIXTURE_DIR`` for replicas
started by :mod:`contrast.testing.replica`). It refuses every platform but an emulator.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization
from nats.aio.client import Client

from contrast.coordinator.history import History, Latest
from contrast.coordinator.manifest_format import ManifestDocument
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.rolekeys import keys_for_role
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.crypto.kdf import SeedEngine, generate_seed
from contrast.errors import PolicyError, StateError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.kv import KeyValue
from contrast.pki.mesh import MeshAuthority, new_mesh_authority
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole, issue_service_cert, replica_label
from contrast.platform.base import Platform
from contrast.replica.membership import Membership
from contrast.runtime.kv import NatsKeyValue

log = logging.getLogger("contrast.testing")


class _MeshRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: bytes
    intermediate: bytes
    mesh_ca: bytes


class _FixtureFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    seed: bytes
    salt: bytes
    meshes: dict[str, _MeshRecord] = {}  # transition hash hex -> that generation's mesh authority


@dataclass
class FixtureState:
    """INSECURE: the seed and one mesh key per history head, as a test or ``make run`` keeps them."""

    engine: SeedEngine
    meshes: dict[bytes, MeshAuthority] = field(default_factory=dict)
    directory: Path | None = None

    def __repr__(self) -> str:
        return f"FixtureState(heads={len(self.meshes)})"

    @classmethod
    def generate(cls, directory: Path | None = None) -> FixtureState:
        seed, salt = generate_seed()
        state = cls(engine=SeedEngine(seed, salt), directory=directory)
        state.save()
        return state

    @classmethod
    def load(cls, directory: Path) -> FixtureState:
        raw = msgspec.json.decode((directory / "fixture.json").read_bytes(), type=_FixtureFile)
        meshes = {
            bytes.fromhex(h): MeshAuthority.from_der(m.key, m.intermediate, m.mesh_ca)
            for h, m in raw.meshes.items()
        }
        return cls(engine=SeedEngine(raw.seed, raw.salt), meshes=meshes, directory=directory)

    def save(self) -> None:
        if self.directory is None:
            return
        der = serialization.Encoding.DER
        out = _FixtureFile(
            seed=self.engine.seed,
            salt=self.engine.salt,
            meshes={
                h.hex(): _MeshRecord(
                    key=m.key_der(),
                    intermediate=m.intermediate.public_bytes(der),
                    mesh_ca=m.mesh_ca.public_bytes(der),
                )
                for h, m in self.meshes.items()
            },
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "fixture.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(out))
        os.replace(tmp, self.directory / "fixture.json")

    def history(self, kv: KeyValue) -> History:
        key = self.engine.history_signing_key()
        return History(kv, key.public_key(), key)

    async def set_manifest(
        self, kv: KeyValue, manifest: ManifestDocument, policies: dict[str, bytes], *, now: dt.datetime
    ) -> Latest:
        """Commit ``manifest`` as the next generation (what the manifest service's ``set`` would do) and make
        that generation's mesh authority."""
        history = self.history(kv)
        head = await history.commit(manifest, policies, await history.read_latest())
        root_key = self.engine.root_ca_key()
        self.meshes[head.transition_hash] = new_mesh_authority(root_key, root_certificate(root_key), now=now)
        self.save()
        return head


class FixtureKeySource:
    """INSECURE (tests, local development): a join answered from a :class:`FixtureState`.

    Like a real join it grants only the role that the current manifest binds to the replica's policy hash,
    and a pinned root must be the fixture's."""

    def __init__(
        self, state: FixtureState, kv: KeyValue | None, replica: str, pins: CoordinatorPins | None = None
    ) -> None:
        self._state = state
        self._kv = kv
        self._replica = replica_label(replica)
        self._pins = pins or CoordinatorPins()
        log.warning("INSECURE: role keys come from a fixture that holds the seed, not from a join")

    async def join(
        self, nc: Client, platform: Platform, role: ServiceRole, verifier: EvidenceVerifier
    ) -> Membership:
        kv = self._kv
        if kv is None:
            kv = NatsKeyValue(await nc.jetstream().key_value("history"))
        if platform.emulator_root is None:
            # The fixture holds the seed outside any attested code: never on real hardware, whatever the env.
            raise StateError("insecure_fixture_refused", "the INSECURE fixture key source runs only emulated")
        if self._state.directory is not None:  # another process may have moved the history on
            self._state = FixtureState.load(self._state.directory)
        history = self._state.history(kv)
        head = await history.read_latest()
        if head is None:
            raise StateError("uninitialized", "the Coordinator has no manifest yet")
        manifest = (await history.read_manifest(head.manifest_hash)).manifest
        mesh = self._state.meshes.get(head.transition_hash)
        if mesh is None:
            raise StateError("join_failed", "the fixture holds no mesh authority for the current head")
        now = dt.datetime.now(dt.UTC)
        identity = await CoordinatorIdentity.create(platform, verifier, now)
        bound = manifest.coordinator_role(identity.own.policy_hash)
        if bound is not role:
            raise PolicyError(
                "wrong_coordinator_role",
                f"the fixture's manifest binds this policy to {bound}, not {role}",
            )
        engine = self._state.engine
        root_key = engine.root_ca_key()
        root = root_certificate(root_key)
        self._pins.check_root(root.public_bytes(serialization.Encoding.DER))
        cert = issue_service_cert(
            root_key,
            root,
            identity.service_key.public_key(),
            role=role,
            replica_id=self._replica,
            policy_hash=identity.own.policy_hash,  # this replica's own verified evidence
            now=now,
        )
        keys = keys_for_role(
            role,
            engine=engine,
            mesh=mesh,
            generation=head.generation,
            head_transition=head.transition_hash,
            service_cert=cert,
        )
        return Membership(identity=identity, role=role, keys=keys, service_cert=cert, root_cert=root)
