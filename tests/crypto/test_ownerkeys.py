"""Owner keys: file handling, the manifest encoding and transition signatures."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contrast.crypto import ownerkeys as ok
from contrast.errors import AuthError, RequestError

H1, H0 = b"\x11" * 32, b"\x22" * 32


def test_ensure_creates_then_loads(tmp_path: Path) -> None:
    w, s = ok.ensure_owner_keys(tmp_path, rsa_bits=3072)
    assert isinstance(w.curve, ec.SECP384R1)
    assert s.key_size == 3072
    assert ok.SEEDSHARE_OWNER_RSA_BITS == 4096
    for name in (ok.WORKLOAD_OWNER_KEY_FILE, ok.SEEDSHARE_OWNER_KEY_FILE):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    w2, s2 = ok.ensure_owner_keys(tmp_path)
    assert ok.public_key_hex(w2) == ok.public_key_hex(w)
    assert ok.public_key_hex(s2) == ok.public_key_hex(s)


def test_save_never_overwrites(tmp_path: Path) -> None:
    p = tmp_path / "k.pem"
    ok.save_private_key(ok.generate_workload_owner_key(), p)
    with pytest.raises(FileExistsError):
        ok.save_private_key(ok.generate_workload_owner_key(), p)


def test_load_rejects_wrong_key_types(tmp_path: Path) -> None:
    ok.save_private_key(ec.generate_private_key(ec.SECP256R1()), tmp_path / "p256.pem")
    with pytest.raises(RequestError):
        ok.load_workload_owner_key(tmp_path / "p256.pem")
    with pytest.raises(RequestError):
        ok.load_seedshare_owner_key(tmp_path / "p256.pem")
    (tmp_path / "junk.pem").write_bytes(b"junk")
    with pytest.raises(RequestError):
        ok.load_workload_owner_key(tmp_path / "junk.pem")


def test_encrypted_pem(tmp_path: Path) -> None:
    k = ok.generate_workload_owner_key()
    ok.save_private_key(k, tmp_path / "w.pem", password=b"pw")
    assert ok.public_key_hex(
        ok.load_workload_owner_key(tmp_path / "w.pem", password=b"pw")
    ) == ok.public_key_hex(k)
    with pytest.raises(RequestError):
        ok.load_workload_owner_key(tmp_path / "w.pem", password=b"nope")


def test_pubkey_hex_round_trip_and_strictness() -> None:
    k = ok.generate_workload_owner_key()
    h = ok.public_key_hex(k)
    assert h == h.lower()
    assert ok.parse_workload_owner_pubkey(h) == k.public_key()
    for bad in ("", "zz", h.upper(), h[:-2], h + "00"):
        with pytest.raises(RequestError):
            ok.parse_workload_owner_pubkey(bad)
    rsa_hex = ok.public_key_hex(rsa.generate_private_key(public_exponent=65537, key_size=3072))
    with pytest.raises(RequestError):
        ok.parse_workload_owner_pubkey(rsa_hex)
    with pytest.raises(RequestError):
        ok.parse_seedshare_owner_pubkey(h)
    ok.parse_seedshare_owner_pubkey(rsa_hex)


def test_transition_signatures() -> None:
    owner, other = ok.generate_workload_owner_key(), ok.generate_workload_owner_key()
    sig = ok.sign_transition(owner, H1, H0)
    owners = [ok.public_key_hex(other), ok.public_key_hex(owner)]
    assert ok.verify_transition_signature(owners, sig, H1, H0) == ok.public_key_hex(owner)
    with pytest.raises(AuthError) as e:
        ok.verify_transition_signature(owners, sig, H1, H1)  # another predecessor: no replay
    assert e.value.code == "auth.not_authorized"
    with pytest.raises(AuthError) as e:
        ok.verify_transition_signature([ok.public_key_hex(other)], sig, H1, H0)
    assert e.value.code == "auth.not_authorized"
    with pytest.raises(AuthError) as e:
        ok.verify_transition_signature([], sig, H1, H0)
    assert e.value.code == "auth.immutable"
    with pytest.raises(ValueError):
        ok.transition_signing_message(H1[:31], H0)
