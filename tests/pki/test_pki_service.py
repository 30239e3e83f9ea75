"""Service certificates: root-issued, role-bound; everything else is refused with a specific code."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.crypto.kdf import SeedEngine
from contrast.errors import AuthError
from contrast.pki import der, oids
from contrast.pki.mesh import MeshAuthority
from contrast.pki.root import root_certificate
from contrast.pki.service import (
    ServiceRole,
    issue_service_cert,
    replica_label,
    service_policy_hash,
    service_role,
    verify_service_cert,
)

DER = serialization.Encoding.DER
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
PH = bytes(range(32))


def _issue(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate, role: ServiceRole) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_service_cert(
        root_key, root_cert, key.public_key(), role=role, replica_id="verifier-0", policy_hash=PH, now=NOW
    )
    return cert.public_bytes(DER)


@pytest.mark.parametrize("role", list(ServiceRole))
def test_accepts_each_role(
    role: ServiceRole, root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate
) -> None:
    ident = verify_service_cert(_issue(root_key, root_cert, role), root_cert, role, NOW)
    assert ident.role is role
    assert ident.replica_id == "verifier-0"
    assert ident.policy_hash == PH
    assert service_role(ident.certificate) is role


def test_p384_service_key(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = issue_service_cert(
        root_key, root_cert, key.public_key(), role=ServiceRole.CA, replica_id="ca-1", policy_hash=PH, now=NOW
    )
    assert (
        verify_service_cert(cert.public_bytes(DER), root_cert, ServiceRole.CA, NOW).public_key
        == key.public_key()
    )


def test_wrong_role(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate) -> None:
    with pytest.raises(AuthError) as e:
        verify_service_cert(_issue(root_key, root_cert, ServiceRole.CA), root_cert, ServiceRole.VERIFIER, NOW)
    assert e.value.code == "auth.wrong_role"


def test_expired_and_not_yet_valid(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate) -> None:
    der = _issue(root_key, root_cert, ServiceRole.VERIFIER)
    for t in (NOW + dt.timedelta(days=31), NOW - dt.timedelta(days=1)):
        with pytest.raises(AuthError) as e:
            verify_service_cert(der, root_cert, ServiceRole.VERIFIER, t)
        assert e.value.code == "auth.bad_service_cert"


def test_other_root_same_name_is_refused(root_cert: x509.Certificate) -> None:
    # An attacker's root with the same CN (e.g. from another seed) issues a verifier certificate.
    evil = SeedEngine(b"\x66" * 64, b"\x66" * 32).root_ca_key()
    evil_root = root_certificate(evil)
    assert evil_root.subject == root_cert.subject
    with pytest.raises(AuthError) as e:
        verify_service_cert(
            _issue(evil, evil_root, ServiceRole.VERIFIER), root_cert, ServiceRole.VERIFIER, NOW
        )
    assert e.value.code == "auth.bad_service_cert"


def test_mesh_leaf_is_not_a_service_cert(mesh: MeshAuthority, root_cert: x509.Certificate) -> None:
    leaf = mesh.issue_leaf(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        sans=["a"],
        policy_hash=bytes(32),
        tee="snp",
        now=NOW,
    )
    with pytest.raises(AuthError) as e:
        verify_service_cert(leaf.public_bytes(DER), root_cert, ServiceRole.VERIFIER, NOW)
    assert e.value.code == "auth.bad_service_cert"


def test_mesh_ca_signed_cert_with_role_is_refused(mesh: MeshAuthority, root_cert: x509.Certificate) -> None:
    # A cert carrying the role extension but signed by an intermediate (not the root) must fail.
    key = ec.generate_private_key(ec.SECP256R1())
    tmpl = x509.load_der_x509_certificate(
        _issue(SeedEngine(bytes(range(64)), bytes(range(32))).root_ca_key(), root_cert, ServiceRole.VERIFIER)
    )
    b = (
        x509.CertificateBuilder()
        .subject_name(tmpl.subject)
        .issuer_name(root_cert.subject)  # lies about the issuer
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(tmpl.not_valid_before_utc)
        .not_valid_after(tmpl.not_valid_after_utc)
    )
    for ext in tmpl.extensions:
        if not isinstance(ext.value, x509.SubjectKeyIdentifier | x509.AuthorityKeyIdentifier):
            b = b.add_extension(ext.value, ext.critical)
    forged = b.sign(mesh.key, hashes.SHA384())
    with pytest.raises(AuthError) as e:
        verify_service_cert(forged.public_bytes(DER), root_cert, ServiceRole.VERIFIER, NOW)
    assert e.value.code == "auth.bad_service_cert"


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x30" * 20000])
def test_garbage(data: bytes, root_cert: x509.Certificate) -> None:
    with pytest.raises(AuthError) as e:
        verify_service_cert(data, root_cert, ServiceRole.VERIFIER, NOW)
    assert e.value.code == "auth.bad_service_cert"


def test_issue_checks_inputs(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate) -> None:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(ValueError):
        issue_service_cert(
            root_key, root_cert, pub, role=ServiceRole.CA, replica_id="Bad_ID", policy_hash=PH, now=NOW
        )
    with pytest.raises(ValueError):
        issue_service_cert(
            ec.generate_private_key(ec.SECP384R1()),
            root_cert,
            pub,
            role=ServiceRole.CA,
            replica_id="a",
            policy_hash=PH,
            now=NOW,
        )
    for bad in (b"", PH[:31], PH + b"\x00"):
        with pytest.raises(ValueError):
            issue_service_cert(
                root_key, root_cert, pub, role=ServiceRole.CA, replica_id="a", policy_hash=bad, now=NOW
            )


_ISSUER = SeedEngine(b"\x07" * 64, b"\x07" * 32).root_ca_key()
_ISSUER_CERT = root_certificate(_ISSUER)
_SUBJECT_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_replica_name_becomes_a_valid_certificate_id(name: str) -> None:
    label = replica_label(name)
    assert replica_label(label) == label
    issue_service_cert(
        _ISSUER, _ISSUER_CERT, _SUBJECT_KEY, role=ServiceRole.CA, replica_id=label, policy_hash=PH, now=NOW
    )


def test_replica_label_keeps_a_readable_name() -> None:
    assert replica_label("Manifest_1.pod") == "manifest-1-pod"
    assert replica_label("--") == "replica"
    assert len(replica_label("x" * 100)) == 63


def _reissue_without_policy_hash(
    root_key: ec.EllipticCurvePrivateKey,
    root_cert: x509.Certificate,
    cert: x509.Certificate,
    value: bytes | None,
) -> bytes:
    """``cert`` re-signed by the genuine root with the policy-hash extension dropped (``value`` None) or
    replaced by ``value``: what a service certificate from before the extension existed looks like."""
    b = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        if ext.oid != oids.SERVICE_POLICY_HASH:
            b = b.add_extension(ext.value, ext.critical)
    if value is not None:
        b = b.add_extension(x509.UnrecognizedExtension(oids.SERVICE_POLICY_HASH, value), False)
    return b.sign(root_key, hashes.SHA384()).public_bytes(DER)


@pytest.mark.parametrize(
    "value",
    [None, b"", der.octet_string(PH[:31]), der.octet_string(PH + b"\x00"), der.utf8_string("a" * 32), PH],
    ids=["missing", "empty", "short", "long", "wrong_type", "not_der"],
)
def test_certificate_without_a_valid_policy_hash_is_refused(
    value: bytes | None, root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate
) -> None:
    good = x509.load_der_x509_certificate(_issue(root_key, root_cert, ServiceRole.VERIFIER))
    bad = _reissue_without_policy_hash(root_key, root_cert, good, value)
    x509.load_der_x509_certificate(bad).verify_directly_issued_by(root_cert)  # genuinely root-signed
    with pytest.raises(AuthError) as e:
        verify_service_cert(bad, root_cert, ServiceRole.VERIFIER, NOW)
    assert e.value.code == "auth.bad_service_cert"
    # The same certificate with the genuine extension is accepted: only the policy hash made the difference.
    again = _reissue_without_policy_hash(root_key, root_cert, good, der.octet_string(PH))
    assert verify_service_cert(again, root_cert, ServiceRole.VERIFIER, NOW).policy_hash == PH


@given(st.binary(min_size=32, max_size=32))
@settings(max_examples=20, deadline=None)
def test_policy_hash_round_trips(ph: bytes) -> None:
    key = SeedEngine(b"\x05" * 64, b"\x06" * 32).root_ca_key()
    root = root_certificate(key)
    cert = issue_service_cert(
        key,
        root,
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        role=ServiceRole.VERIFIER,
        replica_id="v",
        policy_hash=ph,
        now=NOW,
    )
    assert service_policy_hash(cert) == ph
