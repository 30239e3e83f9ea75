"""Signed verdicts: what a CA accepts, and every mutation of a verdict it refuses."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.attestation.verdict import VerdictChecker, sign_verdict
from contrast.crypto.kdf import SeedEngine, generate_seed
from contrast.errors import AuthError, ContrastError, StateError
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole, issue_service_cert
from contrast.wire.v1 import Verdict

KEY = bytes(range(32))
H_VERIFIER = b"\xc0" * 32  # the Coordinator policy the test verifier joined with
ALLOWED = frozenset({H_VERIFIER, b"\xc1" * 32})
NOW_MS = 1_800_000_000_000


class _Keys:
    def __init__(self) -> None:
        self.engine = SeedEngine(*generate_seed())
        self.root_key = self.engine.root_ca_key()
        self.root = root_certificate(self.root_key)
        self.key = ec.generate_private_key(ec.SECP256R1())

    def cert(self, role: ServiceRole, now: dt.datetime, policy_hash: bytes = H_VERIFIER) -> x509.Certificate:
        return issue_service_cert(
            self.root_key,
            self.root,
            self.key.public_key(),
            role=role,
            replica_id="v1",
            policy_hash=policy_hash,
            now=now,
        )


@pytest.fixture(scope="module")
def keys() -> _Keys:
    return _Keys()


def _verdict(rid: str, now: dt.datetime, **kw: object) -> Verdict:
    fields: dict[str, object] = {
        "request_id": rid,
        "request_digest": bytes(32),
        "accepted": True,
        "tee": "snp",
        "policy_hash": b"\x01" * 32,
        "tls_public_key": b"\x30" * 91,
        "hpke_public_key": b"\x00" * 1216,
        "generation": 3,
        "transition_hash": b"\x07" * 32,
        "issued_at_ms": int(now.timestamp() * 1000),
        "verifier": "v1",
    }
    fields.update(kw)
    return Verdict(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda v: {}, None),
        (lambda v: {"accepted": False}, "auth.not_accepted"),
        (lambda v: {"generation": 2}, "auth.stale_generation"),
        (lambda v: {"generation": 4}, "state.stale"),
        (lambda v: {"transition_hash": b"\x08" * 32}, "auth.stale_generation"),
        (lambda v: {"issued_at_ms": v.issued_at_ms - 121_000}, "auth.stale_verdict"),
        (lambda v: {"issued_at_ms": v.issued_at_ms + 60_000}, "auth.verdict_from_future"),
        # Signed for another id than the one it is delivered under: the transcript binds the id.
        (lambda v: {"request_id": "B" * 24}, "auth.bad_signature"),
    ],
    ids=["ok", "negative", "old_generation", "newer_generation", "other_head", "stale", "future", "other_id"],
)
def test_verdict_checker(keys: _Keys, mutate: object, code: str | None) -> None:
    now = dt.datetime.now(dt.UTC)
    rid = "A" * 24
    base = _verdict(rid, now)
    v = msgspec.structs.replace(base, **mutate(base))  # type: ignore[operator]
    signed = sign_verdict(v, keys.key, keys.cert(ServiceRole.VERIFIER, now))
    checker = VerdictChecker(keys.root, generation=3, transition_hash=b"\x07" * 32)
    if code is None:
        assert checker.check(signed, request_id=rid, signer_policy_hashes=ALLOWED, now=now).verdict == v
        return
    with pytest.raises((AuthError, StateError)) as e:
        checker.check(signed, request_id=rid, signer_policy_hashes=ALLOWED, now=now)
    assert e.value.code == code
    assert signed.payload  # the payload was signed as sent


def test_verdict_signature_covers_payload_and_request_id(keys: _Keys) -> None:
    now = dt.datetime.now(dt.UTC)
    rid = "A" * 24
    signed = sign_verdict(_verdict(rid, now), keys.key, keys.cert(ServiceRole.VERIFIER, now))
    checker = VerdictChecker(keys.root, generation=3, transition_hash=b"\x07" * 32)
    other = _verdict(rid, now, policy_hash=b"\x02" * 32)
    tampered = msgspec.structs.replace(
        signed, payload=msgspec.msgpack.Encoder(order="deterministic").encode(other)
    )
    for bad, rid_ in ((tampered, rid), (signed, "C" * 24)):
        with pytest.raises(ContrastError) as e:
            checker.check(bad, request_id=rid_, signer_policy_hashes=ALLOWED, now=now)
        assert e.value.code == "auth.bad_signature"
    wrong_role = sign_verdict(_verdict(rid, now), keys.key, keys.cert(ServiceRole.CA, now))
    with pytest.raises(AuthError) as e:
        checker.check(wrong_role, request_id=rid, signer_policy_hashes=ALLOWED, now=now)
    assert e.value.code == "auth.wrong_role"


def test_verdict_signer_must_run_a_policy_the_manifest_still_allows(keys: _Keys) -> None:
    now = dt.datetime.now(dt.UTC)
    rid = "A" * 24
    checker = VerdictChecker(keys.root, generation=3, transition_hash=b"\x07" * 32)
    signed = sign_verdict(_verdict(rid, now), keys.key, keys.cert(ServiceRole.VERIFIER, now))
    assert checker.check(
        signed, request_id=rid, signer_policy_hashes=ALLOWED, now=now
    ).signer.policy_hash == (H_VERIFIER)
    # An update removed the verifier's Coordinator policy: the same, still valid and cached, certificate
    # signs nothing any more; nor does anything when the manifest allows no Coordinator policy at all.
    for allowed in (ALLOWED - {H_VERIFIER}, frozenset()):
        with pytest.raises(AuthError) as e:
            checker.check(signed, request_id=rid, signer_policy_hashes=allowed, now=now)
        assert e.value.code == "auth.signer_revoked"
