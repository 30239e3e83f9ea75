"""The reusable verifiers and the parsed-certificate cache of ``contrast.pki.chain``: the same verdicts as a
fresh :func:`verify_leaf` at the same instant, keyed by exact bytes, bounded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.crypto.kdf import SeedEngine
from contrast.errors import AuthError
from contrast.pki import chain
from contrast.pki.chain import AnchorVerifiers, ParsedCertificates, verify_leaf
from contrast.pki.mesh import BACKDATE, MeshAuthority, new_mesh_authority
from contrast.pki.root import root_certificate

DER = serialization.Encoding.DER
PH = bytes(range(32))
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # the conftest mesh authority's time


def _leaf(
    mesh: MeshAuthority, *, now: dt.datetime = NOW, validity: dt.timedelta | None = None
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    if validity is None:
        return mesh.issue_leaf(key, sans=["db.default.svc"], policy_hash=PH, tee="snp", now=now)
    return mesh.issue_leaf(
        key, sans=["db.default.svc"], policy_hash=PH, tee="snp", now=now, validity=validity
    )


def _verdict(f: Callable[..., object], *args: object, **kw: object) -> str:
    try:
        f(*args, **kw)
    except AuthError as e:
        return e.code
    return "ok"


@pytest.fixture(scope="module")
def other_mesh(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate) -> MeshAuthority:
    """Another generation under the same root: the same subject names, another key."""
    return new_mesh_authority(root_key, root_cert, now=NOW)


def test_same_chains_as_verify_leaf(mesh: MeshAuthority, root_cert: x509.Certificate) -> None:
    anchors = AnchorVerifiers()
    leaf = _leaf(mesh)
    assert anchors.verify(leaf, anchor=mesh.mesh_ca, now=NOW) == verify_leaf(
        leaf, anchor=mesh.mesh_ca, now=NOW
    )
    via_root = anchors.verify(leaf, anchor=root_cert, intermediates=[mesh.intermediate], now=NOW)
    assert via_root == [leaf, mesh.intermediate, root_cert]
    with pytest.raises(AuthError) as e:  # the root is no anchor for a leaf without its intermediate
        anchors.verify(leaf, anchor=root_cert, now=NOW)
    assert e.value.code == "auth.bad_certificate"


def test_one_verifier_per_anchor_within_the_window(mesh: MeshAuthority) -> None:
    anchors = AnchorVerifiers(window=dt.timedelta(seconds=1))
    leaves = [_leaf(mesh) for _ in range(3)]
    with mock.patch.object(chain, "_build", wraps=chain._build) as build:
        for i, leaf in enumerate(leaves):
            anchors.verify(leaf, anchor=mesh.mesh_ca, now=NOW + dt.timedelta(milliseconds=100 * i))
        assert build.call_count == 1
        anchors.verify(leaves[0], anchor=mesh.mesh_ca, now=NOW + dt.timedelta(seconds=1))  # window over
        assert build.call_count == 2
        anchors.verify(leaves[0], anchor=mesh.mesh_ca, now=NOW)  # the clock went back: never reuse
        assert build.call_count == 3


def test_warm_cache_still_rejects_a_leaf_signed_by_another_key_under_the_same_names(
    mesh: MeshAuthority, other_mesh: MeshAuthority, root_cert: x509.Certificate
) -> None:
    assert other_mesh.mesh_ca.subject == mesh.mesh_ca.subject  # same names, another key
    anchors = AnchorVerifiers()
    anchors.verify(_leaf(mesh), anchor=mesh.mesh_ca, now=NOW)
    anchors.verify(_leaf(mesh), anchor=root_cert, intermediates=[mesh.intermediate], now=NOW)
    assert len(anchors) == 2
    impostor = _leaf(other_mesh)
    with pytest.raises(AuthError) as e:
        anchors.verify(impostor, anchor=mesh.mesh_ca, now=NOW)
    assert e.value.code == "auth.bad_certificate"
    with pytest.raises(
        AuthError
    ) as e:  # the genuine root, but the warm intermediate is not the leaf's issuer
        anchors.verify(impostor, anchor=root_cert, intermediates=[mesh.intermediate], now=NOW)
    assert e.value.code == "auth.bad_certificate"
    # Its own anchor is another cache entry (other bytes), and accepts it.
    anchors.verify(impostor, anchor=other_mesh.mesh_ca, now=NOW)
    assert len(anchors) == 3


def test_another_root_with_the_same_name_is_its_own_entry(
    mesh: MeshAuthority, root_cert: x509.Certificate
) -> None:
    other_root = root_certificate(SeedEngine(bytes(64), bytes(range(32))).root_ca_key())
    assert other_root.subject == root_cert.subject
    anchors = AnchorVerifiers()
    leaf = _leaf(mesh)
    anchors.verify(leaf, anchor=root_cert, intermediates=[mesh.intermediate], now=NOW)
    with pytest.raises(AuthError) as e:
        anchors.verify(leaf, anchor=other_root, intermediates=[mesh.intermediate], now=NOW)
    assert e.value.code == "auth.bad_certificate"


def test_bounded(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate) -> None:
    anchors = AnchorVerifiers(size=2)
    for _ in range(4):
        m = new_mesh_authority(root_key, root_cert, now=NOW)
        anchors.verify(_leaf(m), anchor=m.mesh_ca, now=NOW)
        assert len(anchors) <= 2
    with pytest.raises(ValueError):
        AnchorVerifiers(size=0)
    with pytest.raises(ValueError):
        AnchorVerifiers(window=dt.timedelta(0))


def test_validity_is_judged_at_the_exact_instant(mesh: MeshAuthority) -> None:
    """A verifier built a moment earlier must neither accept a leaf that has expired since nor refuse one
    that has become valid since."""
    t0 = NOW
    anchors = AnchorVerifiers(window=dt.timedelta(seconds=10))
    anchors.verify(_leaf(mesh), anchor=mesh.mesh_ca, now=t0)  # warm: a verifier at t0
    expiring = _leaf(mesh, now=t0 - dt.timedelta(hours=1), validity=dt.timedelta(hours=1, seconds=1))
    assert expiring.not_valid_after_utc == t0 + dt.timedelta(seconds=1)
    with pytest.raises(AuthError) as e:
        anchors.verify(expiring, anchor=mesh.mesh_ca, now=t0 + dt.timedelta(seconds=2))
    assert e.value.code == "auth.bad_certificate"

    anchors.verify(_leaf(mesh), anchor=mesh.mesh_ca, now=t0)  # a verifier at t0 again
    fresh = _leaf(mesh, now=t0 + BACKDATE + dt.timedelta(seconds=1))
    assert fresh.not_valid_before_utc == t0 + dt.timedelta(seconds=1)
    assert anchors.verify(fresh, anchor=mesh.mesh_ca, now=t0 + dt.timedelta(seconds=2))[0] == fresh


@pytest.fixture(scope="module")
def timed_leaves(mesh: MeshAuthority) -> list[x509.Certificate]:
    """Leaves whose validity starts or ends within a few seconds of NOW."""
    out = []
    for start in (-3, -1, 0, 1, 3):
        for length in (1, 2, 4):
            issued = NOW + BACKDATE + dt.timedelta(seconds=start)  # valid from NOW + start ...
            leaf = _leaf(mesh, now=issued, validity=dt.timedelta(seconds=length) - BACKDATE)
            assert leaf.not_valid_after_utc == NOW + dt.timedelta(seconds=start + length)  # ... for length s
            out.append(leaf)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(-4, 6), st.lists(st.tuples(st.integers(0, 14), st.integers(-1500, 8000)), max_size=4))
def test_verdicts_equal_a_fresh_verifier_at_every_instant(
    mesh: MeshAuthority, timed_leaves: list[x509.Certificate], warm_at: int, checks: list[tuple[int, int]]
) -> None:
    anchors = AnchorVerifiers(window=dt.timedelta(seconds=5))
    anchors.verify(_leaf(mesh), anchor=mesh.mesh_ca, now=NOW + dt.timedelta(seconds=warm_at))
    for index, offset_ms in checks:
        leaf, at = timed_leaves[index], NOW + dt.timedelta(milliseconds=offset_ms)
        assert _verdict(anchors.verify, leaf, anchor=mesh.mesh_ca, now=at) == _verdict(
            verify_leaf, leaf, anchor=mesh.mesh_ca, now=at
        )


def test_anchor_der_must_name_the_anchor_it_keys(mesh: MeshAuthority, other_mesh: MeshAuthority) -> None:
    anchors = AnchorVerifiers()
    der = mesh.mesh_ca.public_bytes(DER)
    anchors.verify(_leaf(mesh), anchor=mesh.mesh_ca, anchor_der=der, now=NOW)
    # The same verifier is found by the bytes alone, as documented: callers pass the anchor's own DER.
    with mock.patch.object(chain, "_build", wraps=chain._build) as build:
        anchors.verify(_leaf(mesh), anchor=mesh.mesh_ca, now=NOW)
        assert build.call_count == 0
        with pytest.raises(AuthError):
            anchors.verify(_leaf(mesh), anchor=other_mesh.mesh_ca, now=NOW)
        assert build.call_count == 1


def test_parsed_certificates_by_exact_bytes(
    mesh: MeshAuthority, other_mesh: MeshAuthority, root_cert: x509.Certificate
) -> None:
    certs = ParsedCertificates(size=2)
    a = certs.load(mesh.mesh_ca.public_bytes(DER))
    assert certs.load(mesh.mesh_ca.public_bytes(DER)) is a
    b = certs.load(other_mesh.mesh_ca.public_bytes(DER))
    assert b is not a
    assert b == other_mesh.mesh_ca
    certs.load(root_cert.public_bytes(DER))
    assert len(certs) == 2
    assert certs.load(mesh.mesh_ca.public_bytes(DER)) is not a  # evicted, parsed again
    with pytest.raises(ValueError):
        certs.load(b"\x30\x03\x02\x01\x01")
    assert len(certs) == 2
    with pytest.raises(ValueError):
        ParsedCertificates(size=0)


def test_a_tampered_signature_is_rejected_after_warm_up(mesh: MeshAuthority) -> None:
    anchors = AnchorVerifiers()
    leaf = _leaf(mesh)
    anchors.verify(leaf, anchor=mesh.mesh_ca, now=NOW)
    der = bytearray(leaf.public_bytes(DER))
    der[-5] ^= 0x01  # inside the signature value
    forged = x509.load_der_x509_certificate(bytes(der))
    with pytest.raises(AuthError) as e:
        anchors.verify(forged, anchor=mesh.mesh_ca, now=NOW)
    assert e.value.code == "auth.bad_certificate"
    # A forged signature made with another key under the mesh CA's name and key identifier.
    mallory = ec.generate_private_key(ec.SECP384R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(leaf.public_key())
        .serial_number(leaf.serial_number + 1)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
    )
    for ext in leaf.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    impostor = builder.sign(mallory, hashes.SHA384())
    with pytest.raises(AuthError) as e:
        anchors.verify(impostor, anchor=mesh.mesh_ca, now=NOW)
    assert e.value.code == "auth.bad_certificate"
