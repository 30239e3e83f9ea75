"""Join bundles: each role gets exactly its keys, sealed to the joiner and bound to the join context."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.coordinator.rolekeys import RoleKeys, keys_for_role, open_role_keys, seal_role_keys
from contrast.crypto.hpke import HpkePrivateKey, Protocol
from contrast.crypto.kdf import SeedEngine
from contrast.errors import AuthError
from contrast.pki.chain import verify_leaf
from contrast.pki.mesh import new_mesh_authority
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole, issue_service_cert

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
ENGINE = SeedEngine(b"\x03" * 64, b"\x04" * 32)
ROOT = root_certificate(ENGINE.root_ca_key())
MESH = new_mesh_authority(ENGINE.root_ca_key(), ROOT, now=NOW)
HEAD = b"\x11" * 32


def _bundle(role: ServiceRole) -> RoleKeys:
    svc = issue_service_cert(
        ENGINE.root_ca_key(),
        ROOT,
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        role=role,
        replica_id="r-1",
        policy_hash=b"\x22" * 32,
        now=NOW,
    )
    return keys_for_role(role, engine=ENGINE, mesh=MESH, generation=3, head_transition=HEAD, service_cert=svc)


@pytest.mark.parametrize("role", list(ServiceRole))
def test_round_trip_per_role(role: ServiceRole) -> None:
    joiner = HpkePrivateKey.generate()
    sealed = seal_role_keys(_bundle(role), joiner.public_bytes(), b"join-nonce")
    got = open_role_keys(joiner, role, b"join-nonce", sealed)
    assert got.check() is role
    assert got.generation == 3
    assert got.head_transition == HEAD
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert got.history_verify_key().public_bytes(
        *raw
    ) == ENGINE.history_signing_key().public_key().public_bytes(*raw)
    # No secret of the deployment is visible in the sealed bytes.
    for secret in (ENGINE.seed, ENGINE.pod_state_secret(), ENGINE.nonce_mac_key(), MESH.key_der()):
        assert secret not in sealed


def test_only_the_ca_gets_signing_keys() -> None:
    ca = _bundle(ServiceRole.CA)
    assert ca.root_key_object().public_key() == ENGINE.root_ca_key().public_key()
    leaf = ca.mesh_authority().issue_leaf(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        sans=["a"],
        policy_hash=bytes(32),
        tee="snp",
        now=NOW,
    )
    verify_leaf(leaf, anchor=MESH.mesh_ca, now=NOW)
    assert ca.pod_state_secret == ENGINE.pod_state_secret()
    assert not ca.seed
    assert not ca.nonce_mac_key
    verifier = _bundle(ServiceRole.VERIFIER)
    assert [verifier.root_key, verifier.mesh_key, verifier.pod_state_secret, verifier.seed] == [b""] * 4
    with pytest.raises(AuthError):
        verifier.mesh_authority()
    with pytest.raises(AuthError):
        verifier.root_key_object()
    manifest = _bundle(ServiceRole.MANIFEST)
    assert SeedEngine(manifest.seed, manifest.salt).matches(ENGINE.seed, ENGINE.salt)


def test_over_sharing_bundle_is_refused() -> None:
    over = msgspec.structs.replace(_bundle(ServiceRole.VERIFIER), seed=ENGINE.seed)
    with pytest.raises(AuthError) as e:
        over.check()
    assert e.value.code == "auth.bad_role_keys"
    under = msgspec.structs.replace(_bundle(ServiceRole.CA), pod_state_secret=b"")
    with pytest.raises(AuthError):
        under.check()


def test_wrong_role_context_or_key() -> None:
    joiner = HpkePrivateKey.generate()
    sealed = seal_role_keys(_bundle(ServiceRole.CA), joiner.public_key(), b"n1")
    with pytest.raises(AuthError) as e:
        open_role_keys(joiner, ServiceRole.VERIFIER, b"n1", sealed)  # same HPKE protocol, other role
    assert e.value.code == "auth.bad_role_keys"
    with pytest.raises(AuthError) as e:
        open_role_keys(joiner, ServiceRole.CA, b"n2", sealed)
    assert e.value.code == "auth.hpke_open_failed"
    with pytest.raises(AuthError):
        open_role_keys(HpkePrivateKey.generate(), ServiceRole.CA, b"n1", sealed)
    with pytest.raises(AuthError):
        open_role_keys(joiner, ServiceRole.MANIFEST, b"n1", sealed)  # other HPKE protocol
    garbage = joiner.public_key().seal(Protocol.COORDINATOR_JOIN, b"n", b"\x01\x02")
    with pytest.raises(AuthError) as e:
        open_role_keys(joiner, ServiceRole.CA, b"n", garbage)
    assert e.value.code == "auth.bad_role_keys"


def test_ca_bundle_with_foreign_intermediate_is_refused() -> None:
    other = SeedEngine(b"\x08" * 64, b"\x04" * 32)
    foreign = new_mesh_authority(other.root_ca_key(), root_certificate(other.root_ca_key()), now=NOW)
    ca = _bundle(ServiceRole.CA)
    bad = msgspec.structs.replace(
        ca,
        mesh_key=foreign.key_der(),
        intermediate=foreign.intermediate.public_bytes(serialization.Encoding.DER),
        mesh_ca=foreign.mesh_ca.public_bytes(serialization.Encoding.DER),
    )
    with pytest.raises(AuthError) as e:
        bad.mesh_authority()
    assert e.value.code == "auth.bad_role_keys"
