"""Seed-derived keys: determinism, independence, exact sizes, the unbiased P-384 scalar reduction."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from contrast.crypto import kdf
from contrast.crypto.kdf import P384_ORDER, SeedEngine, derive_workload_secret, hkdf_sha256, scalar_from_bytes

SEED = bytes(range(64))
SALT = bytes(range(100, 132))


def _priv_int(key: ec.EllipticCurvePrivateKey) -> int:
    return key.private_numbers().private_value


def test_order_constant_is_p384_order() -> None:
    # n-1 is the largest valid scalar; n itself must be refused by the library.
    ec.derive_private_key(P384_ORDER - 1, ec.SECP384R1())
    with pytest.raises(ValueError):
        ec.derive_private_key(P384_ORDER, ec.SECP384R1())


def test_derivations_are_deterministic_and_distinct() -> None:
    a, b = SeedEngine(SEED, SALT), SeedEngine(SEED, SALT)
    assert _priv_int(a.root_ca_key()) == _priv_int(b.root_ca_key())
    raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    assert a.history_signing_key().private_bytes(*raw) == b.history_signing_key().private_bytes(*raw)
    secrets_ = {
        a.pod_state_secret(),
        a.nonce_mac_key(),
        a.join_nonce_key(),
        a.history_signing_key().private_bytes(*raw),
    }
    assert len(secrets_) == 4
    assert all(len(s) == 32 for s in secrets_)


def test_root_key_matches_documented_derivation() -> None:
    okm = hkdf_sha256(SEED, SALT, b"contrast root ca key v1", 64)
    assert (
        _priv_int(SeedEngine(SEED, SALT).root_ca_key()) == int.from_bytes(okm, "big") % (P384_ORDER - 1) + 1
    )


def test_salt_and_seed_both_matter() -> None:
    base = _priv_int(SeedEngine(SEED, SALT).root_ca_key())
    assert _priv_int(SeedEngine(SEED, bytes(32)).root_ca_key()) != base
    assert _priv_int(SeedEngine(bytes(64), SALT).root_ca_key()) != base


def test_workload_secret_matches_documented_derivation() -> None:
    eng = SeedEngine(SEED, SALT)
    expected = hkdf_sha256(eng.pod_state_secret(), None, b"WORKLOAD SECRET ID: db", 64)
    assert eng.workload_secret("db") == expected
    assert len(expected) == 64
    assert eng.workload_secret("db") != eng.workload_secret("db2")
    with pytest.raises(ValueError):
        derive_workload_secret(eng.pod_state_secret(), "")


@pytest.mark.parametrize(
    ("seed", "salt"), [(bytes(63), SALT), (bytes(65), SALT), (SEED, bytes(31)), (SEED, b"")]
)
def test_sizes_are_exact(seed: bytes, salt: bytes) -> None:
    with pytest.raises(ValueError):
        SeedEngine(seed, salt)


def test_generate_seed_sizes_and_freshness() -> None:
    s1, t1 = kdf.generate_seed()
    s2, _ = kdf.generate_seed()
    assert (len(s1), len(t1)) == (64, 32)
    assert s1 != s2


def test_repr_hides_secrets() -> None:
    assert SEED.hex() not in repr(SeedEngine(SEED, SALT))
    assert SeedEngine(SEED, SALT).matches(SEED, SALT)
    assert not SeedEngine(SEED, SALT).matches(SEED, bytes(32))


@given(st.binary(min_size=64, max_size=64))
def test_scalar_always_in_range(okm: bytes) -> None:
    d = scalar_from_bytes(okm)
    assert 1 <= d <= P384_ORDER - 1


def test_scalar_edges_and_short_input() -> None:
    assert scalar_from_bytes(bytes(64)) == 1
    assert scalar_from_bytes(b"\xff" * 64) == (2**512 - 1) % (P384_ORDER - 1) + 1
    with pytest.raises(ValueError):
        scalar_from_bytes(bytes(48))  # 384 bits: not enough slack for an unbiased reduction
