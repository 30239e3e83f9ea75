"""Owner keys: the workload owner's ECDSA P-384 key and the seed-share owner's RSA key.

The manifest names owners by the hex of their DER SubjectPublicKeyInfo (``WorkloadOwnerPubKeys``,
``SeedshareOwnerPubKeys``). The workload owner authorizes manifest updates by signing the transition
(new manifest hash ‖ expected previous transition hash) with ECDSA P-384/SHA-384. The seed-share owner
receives an RSA-OAEP share of the seed on the first set and proves ownership during recovery with RSA-PSS.

File helpers are synchronous (they touch the local disk of the CLI user); async callers wrap them in
``asyncio.to_thread``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contrast.errors import AuthError, RequestError

WORKLOAD_OWNER_KEY_FILE = "workload-owner.pem"
SEEDSHARE_OWNER_KEY_FILE = "seedshare-owner.pem"

SEEDSHARE_OWNER_RSA_BITS = 4096
# 3072-bit RSA is the smallest size with ~128-bit security; smaller seed-share owner keys are refused.
MIN_SEEDSHARE_OWNER_RSA_BITS = 3072
_RSA_PUBLIC_EXPONENT = 65537

# Domain label: an owner's transition signature can never be replayed as a signature on anything else.
TRANSITION_SIGNATURE_LABEL = b"contrast manifest transition v1\x00"

WorkloadOwnerKey = ec.EllipticCurvePrivateKey
SeedshareOwnerKey = rsa.RSAPrivateKey


def generate_workload_owner_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-384 workload-owner key."""
    return ec.generate_private_key(ec.SECP384R1())


def generate_seedshare_owner_key(bits: int = SEEDSHARE_OWNER_RSA_BITS) -> rsa.RSAPrivateKey:
    """A fresh RSA seed-share owner key (4096 bits unless asked otherwise; never below 3072)."""
    if bits < MIN_SEEDSHARE_OWNER_RSA_BITS:
        raise ValueError(f"seed-share owner keys need at least {MIN_SEEDSHARE_OWNER_RSA_BITS} bits")
    return rsa.generate_private_key(public_exponent=_RSA_PUBLIC_EXPONENT, key_size=bits)


def private_key_pem(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, password: bytes | None = None
) -> bytes:
    """PKCS#8 PEM, encrypted with ``password`` if one is given."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def save_private_key(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, path: Path, *, password: bytes | None = None
) -> None:
    """Write ``key`` to ``path`` with mode 0600; never overwrites an existing file."""
    data = private_key_pem(key, password)
    # O_EXCL: never clobber an existing key; the mode is set at creation so the key is never world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise RequestError("invalid_owner_key", f"cannot read the key file {path}: {e.strerror}") from e


def _load_private(path: Path, password: bytes | None) -> object:
    try:
        return serialization.load_pem_private_key(_read_key_file(path), password=password)
    except (ValueError, TypeError) as e:
        raise RequestError("invalid_owner_key", f"{path}: not a readable PEM private key ({e})") from e


def load_workload_owner_key(path: Path, *, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """Load a workload-owner key; it must be ECDSA P-384."""
    key = _load_private(path, password)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
        raise RequestError("invalid_owner_key", f"{path}: workload-owner key must be ECDSA P-384")
    return key


def load_workload_owner_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A workload owner's public key from a PEM public key (all an owner whose key is in an HSM has) or from
    the PEM private key; it must be ECDSA P-384."""
    try:
        key: object = serialization.load_pem_public_key(_read_key_file(path))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = _load_private(path, None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise RequestError("invalid_owner_key", f"{path}: workload-owner key must be ECDSA P-384")
    return key


def load_seedshare_owner_key(path: Path, *, password: bytes | None = None) -> rsa.RSAPrivateKey:
    """Load a seed-share owner key; it must be RSA with at least 3072 bits."""
    key = _load_private(path, password)
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_SEEDSHARE_OWNER_RSA_BITS:
        raise RequestError(
            "invalid_owner_key",
            f"{path}: seed-share owner key must be RSA ≥ {MIN_SEEDSHARE_OWNER_RSA_BITS} bits",
        )
    return key


def ensure_owner_keys(
    directory: Path, *, rsa_bits: int = SEEDSHARE_OWNER_RSA_BITS
) -> tuple[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]:
    """Load both owner keys from ``directory``, generating whichever is missing (``contrast generate``)."""
    directory.mkdir(parents=True, exist_ok=True)
    wpath, spath = directory / WORKLOAD_OWNER_KEY_FILE, directory / SEEDSHARE_OWNER_KEY_FILE
    if not wpath.exists():
        save_private_key(generate_workload_owner_key(), wpath)
    if not spath.exists():
        save_private_key(generate_seedshare_owner_key(rsa_bits), spath)
    return load_workload_owner_key(wpath), load_seedshare_owner_key(spath)


def public_key_hex(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
) -> str:
    """The manifest encoding of an owner key: lower-case hex of the DER SubjectPublicKeyInfo."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else key
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der.hex()


def _spki_from_hex(value: str, what: str) -> object:
    if not isinstance(value, str) or not value or len(value) % 2 or value != value.lower():
        raise RequestError(
            "invalid_owner_key", f"{what}: must be lower-case hex of a DER SubjectPublicKeyInfo"
        )
    try:
        der = bytes.fromhex(value)
        key = serialization.load_der_public_key(der)
    except ValueError as e:
        raise RequestError("invalid_owner_key", f"{what}: not a DER SubjectPublicKeyInfo ({e})") from e
    # Canonical encoding only: one key, one spelling, so owner lists compare by string.
    if key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != der:
        raise RequestError("invalid_owner_key", f"{what}: non-canonical DER encoding")
    return key


def parse_workload_owner_pubkey(value: str, what: str = "workload owner key") -> ec.EllipticCurvePublicKey:
    """Decode a ``WorkloadOwnerPubKeys`` entry; it must be an ECDSA P-384 key."""
    key = _spki_from_hex(value, what)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise RequestError("invalid_owner_key", f"{what}: must be an ECDSA P-384 public key")
    return key


def parse_seedshare_owner_pubkey(value: str, what: str = "seed-share owner key") -> rsa.RSAPublicKey:
    """Decode a ``SeedshareOwnerPubKeys`` entry; it must be RSA ≥ 3072 bits with exponent 65537."""
    key = _spki_from_hex(value, what)
    if not isinstance(key, rsa.RSAPublicKey):
        raise RequestError("invalid_owner_key", f"{what}: must be an RSA public key")
    if key.key_size < MIN_SEEDSHARE_OWNER_RSA_BITS or key.public_numbers().e != _RSA_PUBLIC_EXPONENT:
        raise RequestError(
            "invalid_owner_key",
            f"{what}: RSA key must have ≥ {MIN_SEEDSHARE_OWNER_RSA_BITS} bits and e=65537",
        )
    return key


def transition_signing_message(new_manifest_hash: bytes, previous_transition_hash: bytes) -> bytes:
    """What a workload owner signs to authorize a manifest update.

    ``previous_transition_hash`` is the transition the owner expects to be current; 32 zero bytes never occur
    (the first set needs no signature), so every signed message names a real predecessor.
    """
    if len(new_manifest_hash) != 32 or len(previous_transition_hash) != 32:
        raise ValueError("transition hashes are 32 bytes")
    return TRANSITION_SIGNATURE_LABEL + new_manifest_hash + previous_transition_hash


def sign_transition(
    key: ec.EllipticCurvePrivateKey, new_manifest_hash: bytes, previous_transition_hash: bytes
) -> bytes:
    """DER ECDSA P-384/SHA-384 signature over (new manifest hash ‖ expected previous transition hash)."""
    msg = transition_signing_message(new_manifest_hash, previous_transition_hash)
    return key.sign(msg, ec.ECDSA(hashes.SHA384()))


def verify_transition_signature(
    owner_keys_hex: tuple[str, ...] | list[str],
    signature: bytes,
    new_manifest_hash: bytes,
    previous_transition_hash: bytes,
) -> str:
    """Check that one of the current manifest's workload owners signed this transition; return that key's hex.

    An empty owner list means the deployment is immutable: every update is refused (``auth.immutable``).
    """
    if not owner_keys_hex:
        raise AuthError(
            "immutable", "the active manifest has no workload owners: the deployment is immutable"
        )
    msg = transition_signing_message(new_manifest_hash, previous_transition_hash)
    for entry in owner_keys_hex:
        pub = parse_workload_owner_pubkey(entry)
        try:
            pub.verify(signature, msg, ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            continue
        return entry
    raise AuthError(
        "not_authorized", "the transition is not signed by a workload owner of the active manifest"
    )
