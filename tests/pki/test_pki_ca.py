"""The CA hierarchy: reproducible root, intermediate + mesh CA, leaves that verify against either anchor."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as v

from contrast.crypto.kdf import SeedEngine
from contrast.errors import AuthError
from contrast.pki import der, oids
from contrast.pki.chain import verify_leaf
from contrast.pki.mesh import MeshAuthority, leaf_claims, new_mesh_authority
from contrast.pki.root import ROOT_NOT_AFTER, root_certificate

DER = serialization.Encoding.DER
PH = bytes(range(32))
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # the time the conftest mesh authority was made


def _leaf(mesh: MeshAuthority, **kw: object) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    args: dict[str, object] = {"sans": ["db.default.svc", "10.0.0.7", "spiffe://mesh/db"], "policy_hash": PH}
    args.update(tee="snp", now=NOW)
    args.update(kw)
    return mesh.issue_leaf(key.public_key(), **args)  # type: ignore[arg-type]


def test_root_is_byte_reproducible_from_the_seed(root_cert: x509.Certificate) -> None:
    again = root_certificate(SeedEngine(bytes(range(64)), bytes(range(32))).root_ca_key())
    assert again.public_bytes(DER) == root_cert.public_bytes(DER)
    other = root_certificate(SeedEngine(bytes(64), bytes(range(32))).root_ca_key())
    assert other.public_bytes(DER) != root_cert.public_bytes(DER)


def test_root_shape(root_cert: x509.Certificate) -> None:
    assert root_cert.subject.rfc4514_string() == "CN=system:coordinator:root"
    assert root_cert.issuer == root_cert.subject
    assert root_cert.not_valid_after_utc == ROOT_NOT_AFTER
    bc = root_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert isinstance(root_cert.public_key(), ec.EllipticCurvePublicKey)
    root_cert.verify_directly_issued_by(root_cert)


def test_intermediate_and_mesh_share_subject_and_key(
    mesh: MeshAuthority, root_cert: x509.Certificate
) -> None:
    assert mesh.intermediate.subject == mesh.mesh_ca.subject
    assert mesh.intermediate.public_key() == mesh.mesh_ca.public_key() == mesh.key.public_key()
    mesh.intermediate.verify_directly_issued_by(root_cert)
    mesh.mesh_ca.verify_directly_issued_by(mesh.mesh_ca)
    with pytest.raises(ValueError):
        mesh.mesh_ca.verify_directly_issued_by(root_cert)


def test_leaf_verifies_against_mesh_ca_or_root_via_intermediate(
    mesh: MeshAuthority, root_cert: x509.Certificate
) -> None:
    leaf = _leaf(mesh)
    chain = verify_leaf(leaf, anchor=mesh.mesh_ca, now=NOW)
    assert chain[-1] == mesh.mesh_ca
    chain = verify_leaf(leaf, anchor=root_cert, intermediates=[mesh.intermediate], now=NOW)
    assert chain == [leaf, mesh.intermediate, root_cert]
    # Without the intermediate the root alone is not enough.
    with pytest.raises(AuthError) as e:
        verify_leaf(leaf, anchor=root_cert, now=NOW)
    assert e.value.code == "auth.bad_certificate"


def test_leaf_fields(mesh: MeshAuthority) -> None:
    leaf = _leaf(mesh, workload_secret_id="db-secret")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["db.default.svc"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://mesh/db"]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = mesh.mesh_ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    claims = leaf_claims(leaf)
    assert (claims.policy_hash, claims.tee, claims.workload_secret_id) == (PH, "snp", "db-secret")
    assert leaf_claims(_leaf(mesh)).workload_secret_id == ""
    assert not any(e.critical for e in leaf.extensions if isinstance(e.value, x509.UnrecognizedExtension))


def test_star_san_is_kept_and_verifies(mesh: MeshAuthority) -> None:
    leaf = _leaf(mesh, sans=["db", "*", "urn:contrast:db", "::1"])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["db", "*"]
    verify_leaf(leaf, anchor=mesh.mesh_ca, now=NOW)


def test_leaf_never_outlives_ca(mesh: MeshAuthority) -> None:
    leaf = _leaf(mesh, validity=dt.timedelta(days=100000))
    assert leaf.not_valid_after_utc == mesh.mesh_ca.not_valid_after_utc


@pytest.mark.parametrize(
    ("kw", "what"),
    [
        ({"sans": []}, "SAN"),
        ({"sans": ["bad name"]}, "SAN"),
        ({"sans": ["*.com"]}, "wildcard"),
        ({"sans": ["UPPER.case"]}, "DNS"),
        ({"sans": ["1.2.3"]}, "numeric"),
        ({"sans": ["x:y"]}, "URI"),
        ({"sans": ["http://"]}, "authority"),
        ({"sans": ["a.b", "a.b"]}, "duplicate"),
        ({"policy_hash": b"short"}, "policy"),
        ({"tee": "sgx"}, "tee"),
    ],
)
def test_leaf_input_is_checked(mesh: MeshAuthority, kw: dict[str, object], what: str) -> None:
    with pytest.raises(ValueError, match=what):
        _leaf(mesh, **kw)


def test_leaf_key_must_be_p256(mesh: MeshAuthority) -> None:
    with pytest.raises(ValueError):
        mesh.issue_leaf(
            ec.generate_private_key(ec.SECP384R1()).public_key(),
            sans=["a"],
            policy_hash=PH,
            tee="snp",
            now=NOW,
        )


def test_rotation_keeps_root_and_splits_mesh(
    mesh: MeshAuthority, root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate
) -> None:
    old_leaf = _leaf(mesh)
    newer = new_mesh_authority(root_key, root_cert, now=NOW)
    assert newer.mesh_ca.public_key() != mesh.mesh_ca.public_key()
    verify_leaf(old_leaf, anchor=root_cert, intermediates=[mesh.intermediate], now=NOW)
    with pytest.raises(AuthError):
        verify_leaf(old_leaf, anchor=newer.mesh_ca, now=NOW)
    with pytest.raises(AuthError):
        verify_leaf(old_leaf, anchor=root_cert, intermediates=[newer.intermediate], now=NOW)


def test_leaf_outside_validity_is_rejected(mesh: MeshAuthority) -> None:
    leaf = _leaf(mesh, validity=dt.timedelta(days=1))
    with pytest.raises(AuthError):
        verify_leaf(leaf, anchor=mesh.mesh_ca, now=NOW + dt.timedelta(days=2))
    with pytest.raises(AuthError):
        verify_leaf(leaf, anchor=mesh.mesh_ca, now=NOW - dt.timedelta(days=1))


def test_mesh_authority_der_round_trip(mesh: MeshAuthority) -> None:
    back = MeshAuthority.from_der(
        mesh.key_der(), mesh.intermediate.public_bytes(DER), mesh.mesh_ca.public_bytes(DER)
    )
    verify_leaf(_leaf(back), anchor=mesh.mesh_ca, now=NOW)
    with pytest.raises(ValueError):
        MeshAuthority.from_der(
            ec.generate_private_key(ec.SECP384R1()).private_bytes(
                DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            mesh.intermediate.public_bytes(DER),
            mesh.mesh_ca.public_bytes(DER),
        )
    assert "PRIVATE" not in repr(mesh)


def test_mesh_authority_from_der_checks_the_root(mesh: MeshAuthority, root_cert: x509.Certificate) -> None:
    parts = (mesh.key_der(), mesh.intermediate.public_bytes(DER), mesh.mesh_ca.public_bytes(DER))
    MeshAuthority.from_der(*parts, root=root_cert)
    other_root = root_certificate(SeedEngine(b"\x07" * 64, bytes(32)).root_ca_key())
    with pytest.raises(ValueError):
        MeshAuthority.from_der(*parts, root=other_root)


def test_mesh_needs_matching_root(root_cert: x509.Certificate) -> None:
    with pytest.raises(ValueError):
        new_mesh_authority(ec.generate_private_key(ec.SECP384R1()), root_cert, now=NOW)


def test_claim_decoding_is_strict(mesh: MeshAuthority) -> None:
    assert der.decode_octet_string(der.octet_string(PH)) == PH
    assert der.decode_utf8_string(der.utf8_string("x" * 300)) == "x" * 300
    for bad in (b"", b"\x04", b"\x04\x02a", b"\x04\x01ab", b"\x0c\x01a", b"\x04\x81\x01a", b"\x04\x80"):
        with pytest.raises(ValueError):
            der.decode_octet_string(bad)
    assert oids.POLICY_HASH.dotted_string.startswith("2.25.")


def test_leaf_is_a_valid_tls_server_certificate(mesh: MeshAuthority, root_cert: x509.Certificate) -> None:
    leaf = _leaf(mesh)
    for name in (x509.DNSName("db.default.svc"), x509.IPAddress(ipaddress.ip_address("10.0.0.7"))):
        verifier = v.PolicyBuilder().store(v.Store([root_cert])).time(NOW).build_server_verifier(name)
        assert verifier.verify(leaf, [mesh.intermediate])[-1] == root_cert
    wrong = (
        v.PolicyBuilder()
        .store(v.Store([mesh.mesh_ca]))
        .time(NOW)
        .build_server_verifier(x509.DNSName("evil.svc"))
    )
    with pytest.raises(v.VerificationError):
        wrong.verify(leaf, [])
