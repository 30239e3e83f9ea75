"""Seed shares: RSA-OAEP round trip, strict document format, recovery signatures bound to key and nonce."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from contrast.crypto.kdf import SeedEngine, generate_seed
from contrast.crypto.ownerkeys import public_key_hex
from contrast.crypto.seedshare import (
    decode_seed_shares,
    decrypt_share,
    make_seed_shares,
    recovery_signing_message,
    sign_recovery,
    verify_recovery_signature,
)
from contrast.errors import AuthError, RequestError
from contrast.pki.root import root_certificate

SEED, SALT = bytes(range(64)), bytes(range(32))
NONCE = b"\x07" * 32


def test_round_trip_through_json(share_owner: rsa.RSAPrivateKey, share_owner2: rsa.RSAPrivateKey) -> None:
    owners = [public_key_hex(share_owner), public_key_hex(share_owner2)]
    doc = make_seed_shares(SEED, SALT, owners)
    data = doc.encode()
    parsed = json.loads(data)
    assert set(parsed) == {"Salt", "SeedShares"}
    assert set(parsed["SeedShares"][0]) == {"PublicKey", "EncryptedSeed"}
    assert SEED.hex() not in data.decode()
    back = decode_seed_shares(data)
    assert decrypt_share(share_owner, back) == (SEED, SALT)
    assert decrypt_share(share_owner2, back) == (SEED, SALT)


def test_share_uses_oaep_sha256_with_label(share_owner: rsa.RSAPrivateKey) -> None:
    doc = make_seed_shares(SEED, SALT, [public_key_hex(share_owner)])
    ct = bytes.fromhex(doc.seed_shares[0].encrypted_seed)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"seedshare")
    assert share_owner.decrypt(ct, oaep) == SEED
    with pytest.raises(ValueError):
        share_owner.decrypt(
            ct, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        )


def test_other_owner_has_no_share(share_owner: rsa.RSAPrivateKey, share_owner2: rsa.RSAPrivateKey) -> None:
    doc = make_seed_shares(SEED, SALT, [public_key_hex(share_owner)])
    with pytest.raises(RequestError) as e:
        decrypt_share(share_owner2, doc)
    assert e.value.code == "request.no_seed_share"


def test_swapped_ciphertext_fails(share_owner: rsa.RSAPrivateKey, share_owner2: rsa.RSAPrivateKey) -> None:
    d1 = make_seed_shares(SEED, SALT, [public_key_hex(share_owner), public_key_hex(share_owner2)])
    raw = json.loads(d1.encode())
    raw["SeedShares"][0]["EncryptedSeed"] = raw["SeedShares"][1]["EncryptedSeed"]
    with pytest.raises(AuthError) as e:
        decrypt_share(share_owner, decode_seed_shares(json.dumps(raw).encode()))
    assert e.value.code == "auth.seed_share_decrypt_failed"


@pytest.mark.parametrize(
    "doc",
    [
        b"{}",
        b"not json",
        b'{"Salt": "00", "SeedShares": []}',
        b'{"Salt": "' + b"AA" * 32 + b'", "SeedShares": []}',
        b'{"Salt": "' + b"00" * 32 + b'", "SeedShares": [], "Extra": 1}',
    ],
)
def test_strict_decode(doc: bytes) -> None:
    with pytest.raises(RequestError):
        decode_seed_shares(doc)


def test_weak_owner_key_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(RequestError) as e:
        make_seed_shares(SEED, SALT, [public_key_hex(weak)])
    assert e.value.code == "request.invalid_owner_key"


def test_recovery_signature(share_owner: rsa.RSAPrivateKey, share_owner2: rsa.RSAPrivateKey) -> None:
    hpke_pk = b"\x01" * 1216
    msg = recovery_signing_message(SEED, SALT, hpke_pk, NONCE)
    assert SEED not in msg
    sig = sign_recovery(share_owner, msg)
    owners = [public_key_hex(share_owner2), public_key_hex(share_owner)]
    assert verify_recovery_signature(owners, sig, msg) == public_key_hex(share_owner)
    # Another nonce, another recipient key or another seed: the signature no longer counts.
    for other in (
        recovery_signing_message(SEED, SALT, hpke_pk, b"\x08" * 32),
        recovery_signing_message(SEED, SALT, b"\x02" * 1216, NONCE),
        recovery_signing_message(bytes(64), SALT, hpke_pk, NONCE),
    ):
        with pytest.raises(AuthError) as e:
            verify_recovery_signature(owners, sig, other)
        assert e.value.code == "auth.not_seedshare_owner"
    with pytest.raises(AuthError):
        verify_recovery_signature([public_key_hex(share_owner2)], sig, msg)


def test_recovery_restores_the_byte_identical_root(share_owner: rsa.RSAPrivateKey) -> None:
    seed, salt = generate_seed()
    before = root_certificate(SeedEngine(seed, salt).root_ca_key()).public_bytes(serialization.Encoding.DER)
    doc = decode_seed_shares(make_seed_shares(seed, salt, [public_key_hex(share_owner)]).encode())
    got_seed, got_salt = decrypt_share(share_owner, doc)
    after = root_certificate(SeedEngine(got_seed, got_salt).root_ca_key()).public_bytes(
        serialization.Encoding.DER
    )
    assert after == before
