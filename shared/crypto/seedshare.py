"""Seed shares: the seed, encrypted to each seed-share owner, and the owner's proof during recovery.

On the first ``set`` the manifest service encrypts the 64-byte seed once for every ``SeedshareOwnerPubKeys``
entry with RSA-OAEP (MGF1-SHA256, SHA-256, label ``b"seedshare"``) and returns ``seed-shares.json`` once; the
seed is never stored. The salt is not secret and travels in the clear next to the shares::

    {"Salt": "<hex, 32 bytes>",
     "SeedShares": [{"PublicKey": "<hex DER SPKI>", "EncryptedSeed": "<hex RSA-OAEP ciphertext>"}, ...]}

To recover, the owner decrypts its share (:func:`decrypt_share`) and sends seed and salt HPKE-sealed to the
stale replica's attested key, together with an RSA-PSS-SHA256 signature over :func:`recovery_signing_message`,
which binds the recovered secret (by hash only), the replica's HPKE key and the replica's fresh nonce, so a
captured recovery request cannot be replayed to another replica or later.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from contrast.crypto.kdf import SALT_SIZE, SEED_SIZE
from contrast.crypto.ownerkeys import parse_seedshare_owner_pubkey, public_key_hex
from contrast.errors import AuthError, RequestError

OAEP_LABEL: Final = b"seedshare"
RECOVERY_SIGNATURE_LABEL: Final = b"contrast recovery v1\x00"
MAX_SEED_SHARES_DOCUMENT: Final = 1 << 20


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=OAEP_LABEL)


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


class SeedShare(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="pascal"):
    public_key: str  # hex DER SPKI of the owner, exactly as in the manifest
    encrypted_seed: str  # hex RSA-OAEP ciphertext


class SeedShareDocument(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="pascal"
):
    """``seed-shares.json``."""

    salt: str
    seed_shares: tuple[SeedShare, ...]

    def encode(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"

    def salt_bytes(self) -> bytes:
        return _hex_exact(self.salt, SALT_SIZE, "Salt")

    def share_for(self, owner_public_key_hex: str) -> SeedShare:
        for share in self.seed_shares:
            if share.public_key == owner_public_key_hex:
                return share
        raise RequestError("no_seed_share", "seed-shares.json has no share for this owner key")


def _hex_exact(value: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise RequestError("invalid_seed_share", f"{what}: not hex") from e
    if len(raw) != size or value != raw.hex():
        raise RequestError("invalid_seed_share", f"{what}: must be {size} bytes of lower-case hex")
    return raw


def make_seed_shares(
    seed: bytes, salt: bytes, owner_public_keys_hex: tuple[str, ...] | list[str]
) -> SeedShareDocument:
    """Encrypt ``seed`` to every seed-share owner (each key is parsed and checked first)."""
    if len(seed) != SEED_SIZE or len(salt) != SALT_SIZE:
        raise ValueError("seed is 64 bytes and salt 32 bytes")
    shares = []
    for i, owner in enumerate(owner_public_keys_hex):
        pub = parse_seedshare_owner_pubkey(owner, f"SeedshareOwnerPubKeys[{i}]")
        shares.append(SeedShare(public_key=owner, encrypted_seed=pub.encrypt(seed, _oaep()).hex()))
    return SeedShareDocument(salt=salt.hex(), seed_shares=tuple(shares))


def decode_seed_shares(data: bytes) -> SeedShareDocument:
    """Strictly decode ``seed-shares.json``."""
    if len(data) > MAX_SEED_SHARES_DOCUMENT:
        raise RequestError("too_large", "seed-shares.json is too large")
    try:
        doc = msgspec.json.decode(data, type=SeedShareDocument)
    except msgspec.DecodeError as e:
        raise RequestError("invalid_seed_share", f"seed-shares.json: {e}") from e
    doc.salt_bytes()
    return doc


def decrypt_share(owner_key: rsa.RSAPrivateKey, doc: SeedShareDocument) -> tuple[bytes, bytes]:
    """Recover (seed, salt) from ``doc`` with the seed-share owner's private key."""
    share = doc.share_for(public_key_hex(owner_key))
    try:
        ct = bytes.fromhex(share.encrypted_seed)
        seed = owner_key.decrypt(ct, _oaep())
    except ValueError as e:
        raise AuthError("seed_share_decrypt_failed", "the seed share does not decrypt with this key") from e
    if len(seed) != SEED_SIZE:
        raise AuthError("seed_share_decrypt_failed", "the decrypted seed has the wrong size")
    return seed, doc.salt_bytes()


def recovery_signing_message(
    seed: bytes, salt: bytes, recipient_hpke_public_key: bytes, nonce: bytes
) -> bytes:
    """What a seed-share owner signs: label ‖ SHA-256(seed ‖ salt) ‖ SHA-256(recipient HPKE key) ‖ nonce.

    Only a hash of the secret is signed, so the signature itself reveals nothing about the seed.
    """
    if len(seed) != SEED_SIZE or len(salt) != SALT_SIZE or len(nonce) != 32:
        raise ValueError("seed 64, salt 32 and nonce 32 bytes")
    return (
        RECOVERY_SIGNATURE_LABEL
        + hashlib.sha256(seed + salt).digest()
        + hashlib.sha256(recipient_hpke_public_key).digest()
        + nonce
    )


def sign_recovery(owner_key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """RSA-PSS-SHA256 signature over a :func:`recovery_signing_message`."""
    return owner_key.sign(message, _pss(), hashes.SHA256())


def verify_recovery_signature(
    owner_public_keys_hex: tuple[str, ...] | list[str], signature: bytes, message: bytes
) -> str:
    """Check that a seed-share owner of the stored manifest signed ``message``; return that owner's key."""
    for i, owner in enumerate(owner_public_keys_hex):
        pub = parse_seedshare_owner_pubkey(owner, f"SeedshareOwnerPubKeys[{i}]")
        try:
            pub.verify(signature, message, _pss(), hashes.SHA256())
        except InvalidSignature:
            continue
        return owner
    raise AuthError("not_seedshare_owner", "the recovery request is not signed by a seed-share owner")
