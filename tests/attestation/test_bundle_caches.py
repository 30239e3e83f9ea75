"""The certificate caches of :class:`StatementCache` in :func:`open_result`: a warm cache gives exactly the
verdicts of a cold one, keys on exact bytes, and stays bounded. Every negative case runs with a cache warmed
by genuine answers under the same names."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.attestation.bundle import PURPOSE_ISSUED, Expectation, StatementCache, issue, open_result
from contrast.coordinator.manifest_format import PolicyEntry
from contrast.coordinator.statement import CoordinatorIdentity, spki
from contrast.crypto.hpke import HpkePrivateKey, HpkePublicKey, Protocol
from contrast.crypto.kdf import SeedEngine, generate_seed
from contrast.errors import AuthError
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.verifier import EvidenceVerifier
from contrast.pki import chain
from contrast.pki.mesh import MeshAuthority, new_mesh_authority
from contrast.pki.root import root_certificate
from contrast.platform.emulated import EmulatedSnp
from contrast.wire.v1 import AttestResult, IssuedResult, ResultBundle, Verdict, encode, encode_deterministic
from tests.pins import pins_for_every_role

DER = serialization.Encoding.DER
H_COORD = hashlib.sha256(b"coordinator policy (bundle cache test)").digest()
H_POD = hashlib.sha256(b"pod policy (bundle cache test)").digest()
DIGEST = hashlib.sha256(b"the request").digest()


@dataclass
class World:
    coordinator: CoordinatorIdentity
    pod: CoordinatorIdentity
    verifier: EvidenceVerifier
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    mesh: MeshAuthority
    other_mesh: MeshAuthority  # another generation: same names, another key
    now: dt.datetime


@pytest.fixture(scope="module")
def world_keys() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, MeshAuthority, MeshAuthority]:
    root_key = SeedEngine(*generate_seed()).root_ca_key()
    root = root_certificate(root_key)
    now = dt.datetime.now(dt.UTC)
    return (
        root_key,
        root,
        new_mesh_authority(root_key, root, now=now),
        new_mesh_authority(root_key, root, now=now),
    )


@pytest.fixture
async def world(
    snp_emulator: EmulatedSnpPlatform,
    world_keys: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, MeshAuthority, MeshAuthority],
) -> World:
    now = dt.datetime.now(dt.UTC)
    verifier = EvidenceVerifier()
    coordinator = await CoordinatorIdentity.create(
        EmulatedSnp(snp_emulator, host_data=H_COORD), verifier, now
    )
    pod = await CoordinatorIdentity.create(EmulatedSnp(snp_emulator, host_data=H_POD), verifier, now)
    root_key, root, mesh, other = world_keys
    return World(coordinator, pod, verifier, root_key, root, mesh, other, now)


@dataclass
class Request:
    tls: ec.EllipticCurvePrivateKey
    hpke: HpkePrivateKey
    exp: Expectation


def request(w: World) -> Request:
    tls, hpke = ec.generate_private_key(ec.SECP256R1()), HpkePrivateKey.generate()
    exp = Expectation(
        request_id=secrets.token_urlsafe(24),
        request_digest=DIGEST,
        tls_public_key=tls.public_key(),
        hpke_key=hpke,
        own=w.pod.own,
        pins=pins_for_every_role(H_COORD),
    )
    return Request(tls, hpke, exp)


def genuine(w: World, r: Request, mesh: MeshAuthority | None = None) -> AttestResult:
    verdict = Verdict(
        request_id=r.exp.request_id,
        request_digest=DIGEST,
        accepted=True,
        tee="snp",
        policy_hash=H_POD,
        tls_public_key=spki(r.tls.public_key()),
        hpke_public_key=r.hpke.public_bytes(),
        generation=1,
        transition_hash=bytes(32),
        issued_at_ms=0,
        verifier="v",
    )
    return issue(
        verdict=verdict,
        entry=PolicyEntry(SANs=["db.svc"], WorkloadSecretID="db"),
        mesh=mesh or w.mesh,
        root_cert=w.root,
        pod_state_secret=bytes(32),
        identity=w.coordinator,
        now=w.now,
    )


def assembled(
    w: World,
    r: Request,
    *,
    leaf: x509.Certificate,
    intermediate: x509.Certificate,
    mesh_ca: x509.Certificate,
    root: x509.Certificate,
) -> AttestResult:
    """An answer signed by the genuine Coordinator around a bundle of our choosing: the chain checks alone
    must catch what is wrong with it."""
    bundle = ResultBundle(
        cert_chain=[leaf.public_bytes(DER), intermediate.public_bytes(DER)],
        mesh_ca=mesh_ca.public_bytes(DER),
        root_ca=root.public_bytes(DER),
        workload_secret=bytes(64),
    )
    rid = r.exp.request_id.encode()
    sealed = HpkePublicKey(r.hpke.public_bytes()).seal(Protocol.WORKLOAD_BUNDLE, rid, encode(bundle))
    payload = IssuedResult(request_id=r.exp.request_id, request_digest=DIGEST, generation=1, sealed=sealed)
    envelope = w.coordinator.sign(PURPOSE_ISSUED, rid, encode_deterministic(payload))
    return AttestResult(request_id=r.exp.request_id, outcome="issued", envelope=envelope)


def leaf_signed_by(
    key: ec.EllipticCurvePrivateKey, like: MeshAuthority, tls: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> x509.Certificate:
    """A leaf for ``tls`` that copies ``like``'s issuer name and key identifier but is signed by ``key``."""
    template = like.issue_leaf(
        tls.public_key(), sans=["db.svc"], policy_hash=H_POD, tee="snp", workload_secret_id="db", now=now
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(template.issuer)
        .public_key(tls.public_key())
        .serial_number(template.serial_number)
        .not_valid_before(template.not_valid_before_utc)
        .not_valid_after(template.not_valid_after_utc)
    )
    for ext in template.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(key, hashes.SHA384())


def warm(w: World, cache: StatementCache, n: int = 3) -> None:
    for _ in range(n):
        r = request(w)
        opened = open_result(genuine(w, r), r.exp, w.verifier, w.now, cache)
        assert opened.workload_secret_id == "db"


def code(w: World, result: AttestResult, r: Request, cache: StatementCache | None) -> str:
    try:
        open_result(result, r.exp, w.verifier, w.now, cache)
    except AuthError as e:
        return e.code
    return "ok"


async def test_warm_cache_reuses_parsed_anchors_and_verifiers(world: World) -> None:
    w = world
    cache = StatementCache()
    warm(w, cache, 1)
    with mock.patch.object(chain, "_build", wraps=chain._build) as build:
        r = request(w)
        opened = open_result(genuine(w, r), r.exp, w.verifier, w.now, cache)
        assert build.call_count == 0  # the mesh CA's verifier was reused; the root link is cached
    assert opened.mesh_ca is cache.certificates.load(w.mesh.mesh_ca.public_bytes(DER))
    assert opened.leaf.public_key() == r.tls.public_key()


@pytest.mark.parametrize("cached", [False, True])
async def test_leaf_signed_by_another_key_under_the_same_names_is_rejected(
    world: World, cached: bool
) -> None:
    w = world
    cache = StatementCache() if cached else None
    if cache is not None:
        warm(w, cache)
    r = request(w)
    forged = leaf_signed_by(w.other_mesh.key, w.mesh, r.tls, w.now)
    assert forged.issuer == w.mesh.mesh_ca.subject
    result = assembled(
        w, r, leaf=forged, intermediate=w.mesh.intermediate, mesh_ca=w.mesh.mesh_ca, root=w.root
    )
    assert code(w, result, r, cache) == "auth.bad_certificate"
    # And by a key that no authority ever had.
    r = request(w)
    forged = leaf_signed_by(ec.generate_private_key(ec.SECP384R1()), w.mesh, r.tls, w.now)
    result = assembled(
        w, r, leaf=forged, intermediate=w.mesh.intermediate, mesh_ca=w.mesh.mesh_ca, root=w.root
    )
    assert code(w, result, r, cache) == "auth.bad_certificate"


@pytest.mark.parametrize("cached", [False, True])
async def test_mixed_authorities_are_rejected(world: World, cached: bool) -> None:
    """Same names everywhere, only the bytes differ: a warm cache lends no pair's verdict to another."""
    w = world
    cache = StatementCache() if cached else None
    if cache is not None:
        warm(w, cache)
    mine, other = w.mesh, w.other_mesh

    def case(leaf_by: MeshAuthority, inter: MeshAuthority, mesh_ca: MeshAuthority) -> str:
        r = request(w)
        leaf = leaf_by.issue_leaf(
            r.tls.public_key(),
            sans=["db.svc"],
            policy_hash=H_POD,
            tee="snp",
            workload_secret_id="db",
            now=w.now,
        )
        result = assembled(
            w, r, leaf=leaf, intermediate=inter.intermediate, mesh_ca=mesh_ca.mesh_ca, root=w.root
        )
        return code(w, result, r, cache)

    assert case(mine, mine, other) == "auth.bad_certificate"  # mesh CA of another generation
    assert case(mine, other, mine) == "auth.bad_certificate"  # intermediate of another generation
    assert case(other, mine, mine) == "auth.bad_certificate"  # leaf of another generation
    assert case(other, other, other) == "ok"  # another generation, complete: both chains verify


@pytest.mark.parametrize("cached", [False, True])
async def test_another_root_never_reuses_the_link(world: World, cached: bool) -> None:
    w = world
    cache = StatementCache() if cached else None
    if cache is not None:
        warm(w, cache)
    other_root_key = SeedEngine(*generate_seed()).root_ca_key()
    other_root = root_certificate(other_root_key)
    assert other_root.subject == w.root.subject
    r = request(w)
    leaf = w.mesh.issue_leaf(
        r.tls.public_key(), sans=["db.svc"], policy_hash=H_POD, tee="snp", workload_secret_id="db", now=w.now
    )
    result = assembled(
        w, r, leaf=leaf, intermediate=w.mesh.intermediate, mesh_ca=w.mesh.mesh_ca, root=other_root
    )
    assert code(w, result, r, cache) == "auth.bad_certificate"
    # An intermediate that the other root did sign, for the same mesh key and name, is a genuine link.
    other_mesh = new_mesh_authority(other_root_key, other_root, now=w.now)
    r = request(w)
    leaf = other_mesh.issue_leaf(
        r.tls.public_key(), sans=["db.svc"], policy_hash=H_POD, tee="snp", workload_secret_id="db", now=w.now
    )
    result = assembled(
        w, r, leaf=leaf, intermediate=other_mesh.intermediate, mesh_ca=other_mesh.mesh_ca, root=other_root
    )
    assert code(w, result, r, cache) == "ok"


async def test_link_expires_with_the_ttl_and_tables_stay_bounded(world: World) -> None:
    w = world
    cache = StatementCache(size=2)
    for _ in range(4):
        m = new_mesh_authority(w.root_key, w.root, now=w.now)
        r = request(w)
        open_result(genuine(w, r, m), r.exp, w.verifier, w.now, cache)
        assert len(cache.certificates) <= 2
        assert len(cache.anchors) <= 2
    warm(w, cache, 1)
    later = w.now + dt.timedelta(minutes=6)  # past the 5 min TTL: the root chain is verified again
    r = request(w)
    with mock.patch.object(chain, "_verify", wraps=chain._verify) as verify:
        open_result(genuine(w, r), r.exp, w.verifier, later, cache)
        assert verify.call_count == 2  # under the mesh CA, and through the intermediate to the root
