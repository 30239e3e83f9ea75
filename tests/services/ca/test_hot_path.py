"""The CA's per-verdict caches: what they may skip, and what they must never serve stale.

- VerdictChecker's service-certificate cache: keyed by the exact DER, bounded, validity re-checked on every
  use, the signature algorithm fixed by the certified key's curve;
- the CA's signer-policy set: recomputed for every new manifest object;
- issuance from the leaf template, end to end through :func:`contrast.attestation.bundle.issue`: the
  initializer's checks accept the result, and an edited manifest entry changes the very next leaf.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.attestation import verdict as verdict_mod
from contrast.attestation.bundle import Expectation, issue, open_result
from contrast.attestation.verdict import VerdictChecker, sign_verdict
from contrast.ca.service import SignerPolicies
from contrast.coordinator.manifest_format import Manifest, PolicyEntry
from contrast.coordinator.statement import CoordinatorIdentity, spki
from contrast.crypto.hpke import HpkePrivateKey
from contrast.crypto.kdf import SeedEngine, derive_workload_secret
from contrast.errors import AuthError
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.verifier import EvidenceVerifier
from contrast.pki.mesh import new_mesh_authority
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole, issue_service_cert
from contrast.platform.emulated import EmulatedSnp
from contrast.wire.v1 import SignedVerdict, Verdict
from tests.pins import pins_for_every_role

H_VERIFIER = b"\xc0" * 32
ALLOWED = frozenset({H_VERIFIER})
H_COORD = hashlib.sha256(b"coordinator policy (ca hot path test)").digest()
H_MANIFEST = hashlib.sha256(b"manifest service policy (ca hot path test)").digest()
H_POD = hashlib.sha256(b"pod policy (ca hot path test)").digest()
DER = serialization.Encoding.DER


class _Root:
    def __init__(self) -> None:
        self.engine = SeedEngine(bytes(range(64)), bytes(32))
        self.key = self.engine.root_ca_key()
        self.cert = root_certificate(self.key)

    def verifier_cert(
        self, key: ec.EllipticCurvePrivateKey, now: dt.datetime, validity: dt.timedelta = dt.timedelta(days=1)
    ) -> x509.Certificate:
        return issue_service_cert(
            self.key,
            self.cert,
            key.public_key(),
            role=ServiceRole.VERIFIER,
            replica_id="v1",
            policy_hash=H_VERIFIER,
            now=now,
            validity=validity,
        )


@pytest.fixture(scope="module")
def root() -> _Root:
    return _Root()


def _verdict(rid: str, now: dt.datetime, **kw: Any) -> Verdict:
    fields: dict[str, Any] = {
        "request_id": rid,
        "request_digest": bytes(32),
        "accepted": True,
        "tee": "snp",
        "policy_hash": H_POD,
        "tls_public_key": b"\x30" * 91,
        "hpke_public_key": b"\x00" * 1216,
        "generation": 3,
        "transition_hash": b"\x07" * 32,
        "issued_at_ms": int(now.timestamp() * 1000),
        "verifier": "v1",
    }
    fields.update(kw)
    return Verdict(**fields)


def _check(checker: VerdictChecker, signed: SignedVerdict, rid: str, now: dt.datetime) -> Verdict:
    return checker.check(signed, request_id=rid, signer_policy_hashes=ALLOWED, now=now).verdict


def test_cached_certificate_is_rechecked_for_validity(root: _Root) -> None:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = root.verifier_cert(key, now, validity=dt.timedelta(minutes=10))
    checker = VerdictChecker(root.cert, generation=3, transition_hash=b"\x07" * 32)
    with mock.patch.object(verdict_mod, "verify_service_cert", wraps=verdict_mod.verify_service_cert) as full:
        for rid in ("A" * 24, "C" * 24):
            assert _check(checker, sign_verdict(_verdict(rid, now), key, cert), rid, now)
        assert full.call_count == 1  # the second verdict's signer came from the cache
    # The same cached certificate, once it has expired (and before it was valid), is refused, not served.
    for when in (
        cert.not_valid_after_utc + dt.timedelta(seconds=1),
        cert.not_valid_before_utc - dt.timedelta(seconds=1),
    ):
        signed = sign_verdict(_verdict("B" * 24, when), key, cert)
        with pytest.raises(AuthError) as e:
            _check(checker, signed, "B" * 24, when)
        assert e.value.code == "auth.bad_service_cert"


def test_cache_is_keyed_by_the_exact_certificate_bytes(root: _Root) -> None:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = root.verifier_cert(key, now)
    checker = VerdictChecker(root.cert, generation=3, transition_hash=b"\x07" * 32)
    signed = sign_verdict(_verdict("A" * 24, now), key, cert)
    assert _check(checker, signed, "A" * 24, now)
    # One flipped bit anywhere in the certificate (here: its signature) is another key, verified afresh.
    der = bytearray(signed.service_cert)
    der[-5] ^= 0x01
    forged = msgspec.structs.replace(signed, service_cert=bytes(der))
    with pytest.raises(AuthError) as e:
        _check(checker, forged, "A" * 24, now)
    assert e.value.code == "auth.bad_service_cert"
    # A certificate for the same key from another root is never a hit either.
    other = _Root.__new__(_Root)
    other.engine = SeedEngine(bytes(64), bytes(32))
    other.key = other.engine.root_ca_key()
    other.cert = root_certificate(other.key)
    foreign = sign_verdict(_verdict("A" * 24, now), key, other.verifier_cert(key, now))
    with pytest.raises(AuthError):
        _check(checker, foreign, "A" * 24, now)


def test_cache_is_bounded(root: _Root, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict_mod, "_CERT_CACHE_SIZE", 3)
    now = dt.datetime.now(dt.UTC)
    checker = VerdictChecker(root.cert, generation=3, transition_hash=b"\x07" * 32)
    signers = []
    for i in range(5):
        key = ec.generate_private_key(ec.SECP256R1())
        signers.append((key, root.verifier_cert(key, now)))
        rid = f"{i:024d}"
        assert _check(checker, sign_verdict(_verdict(rid, now), *signers[-1]), rid, now)
    with mock.patch.object(verdict_mod, "verify_service_cert", wraps=verdict_mod.verify_service_cert) as full:
        assert _check(checker, sign_verdict(_verdict("L" * 24, now), *signers[-1]), "L" * 24, now)
        assert full.call_count == 0  # the most recent signer is cached
        assert _check(checker, sign_verdict(_verdict("F" * 24, now), *signers[0]), "F" * 24, now)
        assert full.call_count == 1  # the first was evicted: its certificate is verified again


def test_a_p384_signer_is_checked_with_sha384(root: _Root) -> None:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP384R1())
    cert = root.verifier_cert(key, now)
    checker = VerdictChecker(root.cert, generation=3, transition_hash=b"\x07" * 32)
    signed = sign_verdict(_verdict("A" * 24, now), key, cert)
    for _ in range(2):  # miss, then hit
        assert _check(checker, signed, "A" * 24, now).request_id == "A" * 24
    tampered = msgspec.structs.replace(
        signed, signature=signed.signature[:-1] + bytes([signed.signature[-1] ^ 1])
    )
    with pytest.raises(AuthError) as e:
        _check(checker, tampered, "A" * 24, now)
    assert e.value.code == "auth.bad_signature"


def _manifest(policies: dict[str, PolicyEntry]) -> Manifest:
    return msgspec.convert(
        {
            "Policies": {h: msgspec.to_builtins(e) for h, e in policies.items()},
            "ReferenceValues": {},
            "WorkloadOwnerPubKeys": [],
            "SeedshareOwnerPubKeys": [],
        },
        Manifest,
    )


def test_signer_policies_follow_the_manifest_object() -> None:
    policies = SignerPolicies()
    coord = PolicyEntry(SANs=["coordinator"], Role="coordinator", CoordinatorRole="verifier")
    manifest_service = PolicyEntry(SANs=[], Role="coordinator", CoordinatorRole="manifest")
    m1 = _manifest(
        {
            H_VERIFIER.hex(): coord,
            H_MANIFEST.hex(): manifest_service,
            H_POD.hex(): PolicyEntry(SANs=["pod.svc"]),
        }
    )
    assert policies.of(m1) == {H_VERIFIER}  # only a verifier policy signs verdicts
    assert policies.of(m1) is policies.of(m1)
    # An update that withdraws the verifier's policy: the next verdict is judged against the new set.
    m2 = _manifest({H_COORD.hex(): coord, H_POD.hex(): PolicyEntry(SANs=["pod.svc"])})
    assert policies.of(m2) == {H_COORD}
    # Even an equal-content manifest is a new object, recomputed (no identity reuse through a freed object).
    m3 = _manifest({H_VERIFIER.hex(): coord})
    assert policies.of(m3) == {H_VERIFIER}


async def test_issue_from_template_is_accepted_and_follows_entry_edits(
    root: _Root, snp_emulator: EmulatedSnpPlatform, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    verifier = EvidenceVerifier()
    coordinator = await CoordinatorIdentity.create(
        EmulatedSnp(snp_emulator, host_data=H_COORD), verifier, now
    )
    pod = await CoordinatorIdentity.create(EmulatedSnp(snp_emulator, host_data=H_POD), verifier, now)
    mesh = new_mesh_authority(root.key, root.cert, now=now)
    pod_state = root.engine.pod_state_secret()

    def attest(rid: str, entry: PolicyEntry) -> Any:
        tls = ec.generate_private_key(ec.SECP256R1())
        hpke = HpkePrivateKey.generate()
        v = _verdict(rid, now, tls_public_key=spki(tls.public_key()), hpke_public_key=hpke.public_bytes())
        result = issue(
            verdict=v,
            entry=entry,
            mesh=mesh,
            root_cert=root.cert,
            pod_state_secret=pod_state,
            identity=coordinator,
            now=now,
        )
        exp = Expectation(
            request_id=rid,
            request_digest=v.request_digest,
            tls_public_key=tls.public_key(),
            hpke_key=hpke,
            own=pod.own,
            pins=pins_for_every_role(H_COORD),
        )
        return open_result(result, exp, verifier, now)

    first = attest("A" * 24, PolicyEntry(SANs=["db.default.svc", "10.1.2.3"], WorkloadSecretID="db"))
    assert first.workload_secret == derive_workload_secret(pod_state, "db")
    assert first.workload_secret_id == "db"
    assert first.leaf.issuer == mesh.mesh_ca.subject
    # The manifest entry was edited (an update within this generation's test double): the new SANs and no
    # secret id, immediately, although the old SAN list is cached.
    second = attest("B" * 24, PolicyEntry(SANs=["db.default.svc", "db-2.default.svc"]))
    names = second.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["db.default.svc", "db-2.default.svc"]
    assert names.get_values_for_type(x509.IPAddress) == []
    assert second.workload_secret == b""
    assert second.workload_secret_id == ""
