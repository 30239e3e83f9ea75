"""The leaf template makes exactly the certificates CertificateBuilder made; its SAN cache never goes stale.

The oracle below is the issuance code the template replaced, kept verbatim: ``x509.CertificateBuilder`` with
the same profile. For random inputs (every SAN form, with and without a WorkloadSecretID, validity on both
sides of the 2050 UTCTime/GeneralizedTime switch, capped at the issuer's expiry) the TBS bytes must be
identical; with a deterministic signature the whole certificate is.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contrast.errors import AuthError, InternalError
from contrast.pki import der, leaf, mesh, oids
from contrast.pki.chain import verify_leaf
from contrast.pki.mesh import BACKDATE, LEAF_VALIDITY, MeshAuthority, new_mesh_authority
from contrast.pki.root import name
from contrast.pki.san import parse_sans

DER = serialization.Encoding.DER
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # the conftest mesh authority's birth
LONG_BIRTH = dt.datetime(1990, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
LEAF_KEYS = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(8)]


def reference_builder(
    authority: MeshAuthority,
    public_key: ec.EllipticCurvePublicKey,
    *,
    serial: int,
    sans: list[str],
    policy_hash: bytes,
    tee: str,
    workload_secret_id: str,
    now: dt.datetime,
    validity: dt.timedelta = LEAF_VALIDITY,
) -> x509.CertificateBuilder:
    """The CertificateBuilder issuance that LeafTemplate replaced (kept as the specification)."""
    names = parse_sans(sans)
    assert names
    not_before = now - BACKDATE
    not_after = min(
        now + validity, authority.mesh_ca.not_valid_after_utc, authority.intermediate.not_valid_after_utc
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(policy_hash.hex()))
        .issuer_name(authority.mesh_ca.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False
        )
        .add_extension(x509.UnrecognizedExtension(oids.POLICY_HASH, der.octet_string(policy_hash)), False)
        .add_extension(x509.UnrecognizedExtension(oids.TEE, der.utf8_string(tee)), critical=False)
    )
    if workload_secret_id:
        ext = x509.UnrecognizedExtension(oids.WORKLOAD_SECRET_ID, der.utf8_string(workload_secret_id))
        builder = builder.add_extension(ext, critical=False)
    return builder


@pytest.fixture(scope="module")
def long_mesh(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate) -> MeshAuthority:
    """A generation valid 1990 .. 2090: leaves on both sides of 2050, and some capped at its expiry."""
    return new_mesh_authority(root_key, root_cert, now=LONG_BIRTH, validity=dt.timedelta(days=36525))


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_dns = st.lists(_label, min_size=1, max_size=4).map(".".join).filter(lambda s: not s.split(".")[-1].isdigit())
_wildcard = (
    st.lists(_label, min_size=2, max_size=3)
    .map(lambda ls: "*." + ".".join(ls))
    .filter(lambda s: not s.split(".")[-1].isdigit())
)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_uri = st.one_of(
    st.tuples(st.sampled_from(["https", "spiffe", "grpc+tls"]), _dns, _label).map(
        lambda t: f"{t[0]}://{t[1]}/{t[2]}"
    ),
    _label.map(lambda s: f"urn:contrast:{s}"),
)
_san = st.one_of(_dns, _wildcard, _ipv4, _ipv6, _uri, st.just("*"))
# Distinct as GeneralNames (two spellings of one IPv6 address are one SAN, and parse_sans refuses that).
_sans = st.lists(_san, min_size=1, max_size=5, unique_by=lambda s: str(parse_sans([s])[0]))
_wsid = st.one_of(st.just(""), st.text(min_size=1, max_size=40))
_now = st.datetimes(
    min_value=dt.datetime(1990, 3, 5), max_value=dt.datetime(2089, 12, 1), timezones=st.just(dt.UTC)
)
_validity = st.one_of(
    st.just(LEAF_VALIDITY), st.timedeltas(dt.timedelta(seconds=1), dt.timedelta(days=20000))
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sans=_sans,
    wsid=_wsid,
    tee=st.sampled_from(["snp", "tdx"]),
    policy_hash=st.binary(min_size=32, max_size=32),
    now=_now,
    validity=_validity,
    key_index=st.integers(0, len(LEAF_KEYS) - 1),
    serial=st.one_of(st.integers(1, (1 << 127) - 1), st.integers(1, 255), st.integers(1, (1 << 159) - 1)),
)
@example(  # the notBefore in 2049 (UTCTime), the notAfter in 2050 (GeneralizedTime)
    sans=["a.svc"],
    wsid="",
    tee="snp",
    policy_hash=bytes(32),
    now=dt.datetime(2049, 12, 31, 23, 30, tzinfo=dt.UTC),
    validity=LEAF_VALIDITY,
    key_index=0,
    serial=1,
)
@example(  # notBefore exactly at the switch; a non-ASCII secret id
    sans=["*"],
    wsid="geheim-ü",
    tee="tdx",
    policy_hash=b"\xff" * 32,
    now=dt.datetime(2050, 1, 1, 1, tzinfo=dt.UTC),
    validity=LEAF_VALIDITY,
    key_index=1,
    serial=(1 << 127) - 1,
)
@example(  # capped at the issuer's expiry (2090)
    sans=["10.0.0.1", "::1"],
    wsid="x",
    tee="snp",
    policy_hash=bytes(32),
    now=dt.datetime(2089, 11, 30, tzinfo=dt.UTC),
    validity=LEAF_VALIDITY,
    key_index=2,
    serial=1 << 126,
)
def test_template_tbs_is_byte_identical_to_certificate_builder(
    long_mesh: MeshAuthority,
    monkeypatch: pytest.MonkeyPatch,
    sans: list[str],
    wsid: str,
    tee: mesh.Tee,
    policy_hash: bytes,
    now: dt.datetime,
    validity: dt.timedelta,
    key_index: int,
    serial: int,
) -> None:
    public_key = LEAF_KEYS[key_index]
    monkeypatch.setattr(mesh, "random_serial", lambda: serial)
    ours = long_mesh.issue_leaf(
        public_key,
        sans=sans,
        policy_hash=policy_hash,
        tee=tee,
        workload_secret_id=wsid,
        now=now,
        validity=validity,
    )
    reference = reference_builder(
        long_mesh,
        public_key,
        serial=serial,
        sans=sans,
        policy_hash=policy_hash,
        tee=tee,
        workload_secret_id=wsid,
        now=now,
        validity=validity,
    ).sign(long_mesh.key, hashes.SHA384(), ecdsa_deterministic=True)
    assert ours.tbs_certificate_bytes == reference.tbs_certificate_bytes
    # The outer structure too: the same TBS and signature assemble to the builder's exact DER.
    assert leaf.assemble(reference.tbs_certificate_bytes, reference.signature) == reference.public_bytes(DER)
    # And our (randomised) signature is a valid P-384 signature by the mesh key over those bytes.
    long_mesh.key.public_key().verify(ours.signature, ours.tbs_certificate_bytes, ec.ECDSA(hashes.SHA384()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sans=_sans, wsid=_wsid, tee=st.sampled_from(["snp", "tdx"]))
def test_template_leaves_pass_x509_verification(
    mesh: MeshAuthority, root_cert: x509.Certificate, sans: list[str], wsid: str, tee: mesh.Tee
) -> None:
    key = LEAF_KEYS[0]
    cert = mesh.issue_leaf(
        key, sans=sans, policy_hash=b"\x05" * 32, tee=tee, workload_secret_id=wsid, now=NOW
    )
    assert verify_leaf(cert, anchor=mesh.mesh_ca, now=NOW)[-1] == mesh.mesh_ca
    chain = verify_leaf(cert, anchor=root_cert, intermediates=[mesh.intermediate], now=NOW)
    assert chain == [cert, mesh.intermediate, root_cert]
    # As a TLS server certificate for its first SAN too (name constraints and SAN matching by the library).
    first = parse_sans([sans[0]])[0]
    if isinstance(first, (x509.DNSName, x509.IPAddress)) and first.value != "*":
        subject: x509.verification.Subject = (
            x509.IPAddress(first.value) if isinstance(first, x509.IPAddress) else first
        )
        if isinstance(first, x509.DNSName) and first.value.startswith("*."):
            subject = x509.DNSName("x" + first.value[1:])
        server = (
            verification.PolicyBuilder()
            .store(verification.Store([mesh.mesh_ca]))
            .time(NOW)
            .build_server_verifier(subject)
        )
        server.verify(cert, [])


@given(
    arcs=st.lists(st.integers(0, 2**70), min_size=1, max_size=8),
    first=st.integers(0, 2),
    second=st.integers(0, 39),
)
def test_oid_encoding_matches_cryptography(arcs: list[int], first: int, second: int) -> None:
    oid = x509.ObjectIdentifier(".".join(map(str, [first, second, *arcs])))
    attr = x509.Name([x509.NameAttribute(oid, "x")]).public_bytes()
    ours = der.encode(0x30, der.encode(0x31, der.encode(0x30, leaf.encode_oid(oid) + der.utf8_string("x"))))
    assert ours == attr


def test_issue_leaf_refusals(mesh: MeshAuthority) -> None:
    key = LEAF_KEYS[0]
    ok: dict[str, object] = {"sans": ["a.svc"], "policy_hash": b"\x01" * 32, "tee": "snp", "now": NOW}
    bad_cases: list[tuple[object, dict[str, object]]] = [
        (ec.generate_private_key(ec.SECP384R1()).public_key(), {}),
        (key, {"sans": []}),
        (key, {"sans": ["Bad Name"]}),
        (key, {"sans": ["a.svc", "a.svc"]}),
        (key, {"policy_hash": b"\x01" * 31}),
        (key, {"tee": "sgx"}),
        (key, {"now": NOW.replace(tzinfo=None)}),
        # The issuer expired more than the backdating before: validity would end before it starts.
        (key, {"now": mesh.mesh_ca.not_valid_after_utc + BACKDATE + dt.timedelta(seconds=1)}),
    ]
    for public_key, change in bad_cases:
        with pytest.raises((ValueError, TypeError)):
            mesh.issue_leaf(public_key, **{**ok, **change})  # type: ignore[arg-type]
    # Nothing invalid was cached: a refused SAN list is refused again.
    with pytest.raises(ValueError):
        mesh.issue_leaf(key, **{**ok, "sans": ["Bad Name"]})  # type: ignore[arg-type]


def _sans_of(cert: x509.Certificate) -> list[str]:
    return [str(g.value) for g in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]


def test_san_cache_is_keyed_by_the_exact_entry(mesh: MeshAuthority) -> None:
    key = LEAF_KEYS[1]
    sans = ["db.default.svc", "10.0.0.7"]
    first = mesh.issue_leaf(key, sans=sans, policy_hash=b"\x01" * 32, tee="snp", now=NOW)
    sans.append("spiffe://mesh/db")  # the caller's list changes afterwards: the cached entry must not
    second = mesh.issue_leaf(key, sans=sans, policy_hash=b"\x01" * 32, tee="snp", now=NOW)
    assert _sans_of(first) == ["db.default.svc", "10.0.0.7"]
    assert _sans_of(second) == ["db.default.svc", "10.0.0.7", "spiffe://mesh/db"]
    reordered = mesh.issue_leaf(key, sans=list(reversed(sans)), policy_hash=b"\x01" * 32, tee="snp", now=NOW)
    assert _sans_of(reordered) == ["spiffe://mesh/db", "10.0.0.7", "db.default.svc"]
    assert isinstance(
        reordered.extensions.get_extension_for_class(x509.SubjectAlternativeName).value[1], x509.IPAddress
    )
    assert ipaddress.ip_address("10.0.0.7") in reordered.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.IPAddress)


def test_san_cache_is_bounded(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate) -> None:
    authority = new_mesh_authority(root_key, root_cert, now=NOW)
    template = authority._leaves
    last = leaf.SAN_CACHE_SIZE + 49
    for i in range(last + 1):
        template.san_extension([f"svc-{i}.default.svc"])
    with mock.patch.object(leaf, "parse_sans", wraps=leaf.parse_sans) as parse:
        template.san_extension([f"svc-{last}.default.svc"])  # recent: served from the cache
        assert parse.call_count == 0
        template.san_extension(["svc-0.default.svc"])  # the oldest was evicted: recomputed, not lost
        assert parse.call_count == 1
    cert = authority.issue_leaf(
        LEAF_KEYS[2], sans=["svc-0.default.svc"], policy_hash=bytes(32), tee="tdx", now=NOW
    )
    assert _sans_of(cert) == ["svc-0.default.svc"]


def test_a_new_generation_never_uses_the_old_template(
    root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate
) -> None:
    old = new_mesh_authority(root_key, root_cert, now=NOW)
    new = new_mesh_authority(root_key, root_cert, now=NOW)
    sans = ["web.default.svc"]
    old_leaf = old.issue_leaf(LEAF_KEYS[3], sans=sans, policy_hash=bytes(32), tee="snp", now=NOW)
    new_leaf = new.issue_leaf(LEAF_KEYS[3], sans=sans, policy_hash=bytes(32), tee="snp", now=NOW)
    assert old._leaves is not new._leaves

    def aki(c: x509.Certificate) -> bytes | None:
        return c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier

    def ski(c: x509.Certificate) -> bytes:
        return c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier

    assert aki(new_leaf) == ski(new.mesh_ca) != ski(old.mesh_ca) == aki(old_leaf)
    verify_leaf(new_leaf, anchor=new.mesh_ca, now=NOW)
    with pytest.raises(AuthError) as e:  # the old generation's anchor does not accept a new leaf
        verify_leaf(new_leaf, anchor=old.mesh_ca, now=NOW)
    assert e.value.code == "auth.bad_certificate"
    # A generation rebuilt from DER (a joined CA replica) issues the same TBS as the original authority.
    rebuilt = MeshAuthority.from_der(new.key_der(), new.intermediate_der, new.mesh_ca_der, root=root_cert)
    serial = secrets.randbits(127) | 1
    tbs_a, tbs_b = (
        m._leaves.tbs(
            LEAF_KEYS[3],
            serial=serial,
            not_before=NOW,
            not_after=NOW,
            sans=sans,
            policy_hash=bytes(32),
            tee="snp",
            workload_secret_id="",
        )
        for m in (new, rebuilt)
    )
    assert tbs_a == tbs_b


def test_cached_der_forms_match_the_certificates(mesh: MeshAuthority) -> None:
    assert mesh.intermediate_der == mesh.intermediate.public_bytes(DER)
    assert mesh.mesh_ca_der == mesh.mesh_ca.public_bytes(DER)
    assert "key" not in repr(mesh._leaves).lower()


def test_first_leaf_of_a_generation_is_read_back(
    root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = new_mesh_authority(root_key, root_cert, now=NOW)
    assert not good._leaves.checked
    good.issue_leaf(LEAF_KEYS[4], sans=["a.svc"], policy_hash=bytes(32), tee="snp", now=NOW)
    assert good._leaves.checked
    # A template that encodes the wrong claim (here: the TEE extensions swapped) is caught on its first leaf,
    # and keeps failing: it never becomes "checked".
    swapped = {"snp": leaf._TEE_EXTENSIONS["tdx"], "tdx": leaf._TEE_EXTENSIONS["snp"]}
    monkeypatch.setattr(leaf, "_TEE_EXTENSIONS", swapped)
    broken = new_mesh_authority(root_key, root_cert, now=NOW)
    for _ in range(2):
        with pytest.raises(InternalError) as e:
            broken.issue_leaf(LEAF_KEYS[4], sans=["a.svc"], policy_hash=bytes(32), tee="snp", now=NOW)
        assert e.value.code == "internal.leaf_template"
    assert not broken._leaves.checked


def test_issue_leaf_der_is_the_signed_certificate(mesh: MeshAuthority, root_cert: x509.Certificate) -> None:
    raw = mesh.issue_leaf_der(LEAF_KEYS[5], sans=["b.svc"], policy_hash=b"\x02" * 32, tee="tdx", now=NOW)
    cert = x509.load_der_x509_certificate(raw)
    assert cert.public_bytes(DER) == raw
    assert verify_leaf(cert, anchor=root_cert, intermediates=[mesh.intermediate], now=NOW)[0] == cert
    assert cert.public_key() == LEAF_KEYS[5]
