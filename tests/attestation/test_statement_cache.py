"""The initializer's statement cache: a Coordinator statement is verified once per replica, and every later
answer still has its own signature, purpose and request binding checked."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.attestation import bundle
from contrast.attestation.bundle import PURPOSE_ISSUED, PURPOSE_REJECTED, Expectation, StatementCache
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.crypto.hpke import HpkePrivateKey
from contrast.errors import AuthError, PolicyError
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.verifier import EvidenceVerifier
from contrast.pki.service import ServiceRole
from contrast.platform.emulated import EmulatedSnp

H_COORD = hashlib.sha256(b"coordinator policy (statement cache test)").digest()
H_POD = hashlib.sha256(b"pod policy (statement cache test)").digest()


@pytest.fixture
async def setup(
    snp_emulator: EmulatedSnpPlatform,
) -> tuple[CoordinatorIdentity, EvidenceVerifier, CoordinatorIdentity, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    verifier = EvidenceVerifier()
    coordinator_platform = EmulatedSnp(snp_emulator, host_data=H_COORD)
    coordinator = await CoordinatorIdentity.create(coordinator_platform, verifier, now)
    pod = await CoordinatorIdentity.create(EmulatedSnp(snp_emulator, host_data=H_POD), verifier, now)
    return coordinator, verifier, pod, now


def expectation(pod: CoordinatorIdentity, request_id: str) -> Expectation:
    return Expectation(
        request_id=request_id,
        request_digest=b"\0" * 32,
        tls_public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        hpke_key=HpkePrivateKey.generate(),
        own=pod.own,
        pins=CoordinatorPins(policies={ServiceRole.CA: frozenset({H_COORD})}),
    )


async def test_statement_verified_once_signature_every_time(
    setup: tuple[CoordinatorIdentity, EvidenceVerifier, CoordinatorIdentity, dt.datetime],
) -> None:
    coordinator, verifier, pod, now = setup
    cache = StatementCache()
    with mock.patch.object(bundle, "open_envelope", wraps=bundle.open_envelope) as full:
        for i in range(5):
            exp = expectation(pod, f"req-{i}")
            env = coordinator.sign(PURPOSE_ISSUED, exp.request_id.encode(), b"payload %d" % i)
            assert cache.open(env, PURPOSE_ISSUED, exp, verifier, now) == b"payload %d" % i
        assert full.call_count == 1

        exp = expectation(pod, "req-x")
        good = coordinator.sign(PURPOSE_ISSUED, exp.request_id.encode(), b"genuine")
        # On the fast path: another request's signature, a changed payload, another purpose -- all refused.
        replayed = coordinator.sign(PURPOSE_ISSUED, b"req-other", b"genuine")
        with pytest.raises(AuthError) as e:
            cache.open(replayed, PURPOSE_ISSUED, exp, verifier, now)
        assert e.value.code == "auth.bad_signature"
        tampered = type(good)(
            purpose=good.purpose, payload=b"tampered", signature=good.signature, statement=good.statement
        )
        with pytest.raises(AuthError) as e:
            cache.open(tampered, PURPOSE_ISSUED, exp, verifier, now)
        assert e.value.code == "auth.bad_signature"
        with pytest.raises(AuthError) as e:
            cache.open(good, PURPOSE_REJECTED, exp, verifier, now)
        assert e.value.code == "auth.wrong_purpose"
        assert full.call_count == 1

        # Another yardstick (allowed policy hashes) is another cache entry: checked in full, and refused.
        strict = dataclasses.replace(exp, pins=CoordinatorPins(policies={ServiceRole.CA: frozenset({H_POD})}))
        with pytest.raises(PolicyError) as p:
            cache.open(good, PURPOSE_ISSUED, strict, verifier, now)
        assert p.value.code == "policy.policy_unknown"
        assert full.call_count == 2

        # After the TTL the statement is verified again.
        assert cache.open(good, PURPOSE_ISSUED, exp, verifier, now + dt.timedelta(minutes=6)) == b"genuine"
        assert full.call_count == 3


async def test_each_answer_only_from_its_role(
    setup: tuple[CoordinatorIdentity, EvidenceVerifier, CoordinatorIdentity, dt.datetime],
) -> None:
    """A bundle is believed only from a pinned CA policy, a rejection only from a pinned verifier policy: a
    verifier replica (which parses attacker-supplied evidence) cannot issue, however genuine its statement."""
    coordinator, verifier, pod, now = setup
    as_verifier = dataclasses.replace(
        expectation(pod, "req-v"),
        pins=CoordinatorPins(
            policies={ServiceRole.CA: frozenset({H_POD}), ServiceRole.VERIFIER: frozenset({H_COORD})}
        ),
    )
    cache = StatementCache()
    rejected = coordinator.sign(PURPOSE_REJECTED, b"req-v", b"no")
    assert cache.open(rejected, PURPOSE_REJECTED, as_verifier, verifier, now) == b"no"
    issued = coordinator.sign(PURPOSE_ISSUED, b"req-v", b"bundle")
    with pytest.raises(PolicyError) as e:  # the same statement, trusted for rejections, issues nothing
        cache.open(issued, PURPOSE_ISSUED, as_verifier, verifier, now)
    assert e.value.code == "policy.policy_unknown"
    as_ca = expectation(pod, "req-v")
    assert cache.open(issued, PURPOSE_ISSUED, as_ca, verifier, now) == b"bundle"
    with pytest.raises(PolicyError) as e:  # and a CA policy's rejection is not believed
        cache.open(rejected, PURPOSE_REJECTED, as_ca, verifier, now)
    assert e.value.code == "policy.no_reference_values"
