"""Detached workload-owner signatures for ``contrast sign`` / ``contrast set --signature`` (HSM-friendly).

``transition-request.json`` (``contrast sign --prepare``) names what to sign; any ECDSA P-384 signer (an HSM)
signs ``Message`` with SHA-384 and returns a DER signature. ``transition-signature.json`` holds the result::

    {"ManifestHash": "<hex>", "PreviousTransition": "<hex>", "Message": "<hex>", "Signature": "<hex DER>"}

``Message`` must be the one :func:`transition_signing_message` computes from the two hashes: a file whose
``Message`` says something else is refused, since a signer signs what ``Message`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from contrast.cli.common import read_file
from contrast.cli.exitcodes import UsageError
from contrast.crypto.ownerkeys import transition_signing_message

REQUEST_FILE = "transition-request.json"
SIGNATURE_FILE = "transition-signature.json"
ALGORITHM = "ECDSA-P384-SHA384"


class _Doc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="pascal"):
    manifest_hash: str
    previous_transition: str
    message: str
    algorithm: str = ALGORITHM
    signature: str = ""


@dataclass(frozen=True)
class TransitionSignature:
    manifest_hash: bytes
    previous_transition: bytes
    signature: bytes  # empty in a request


def _hex32(value: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise UsageError(f"{what} is not hex") from e
    if len(raw) != 32:
        raise UsageError(f"{what} must be 32 bytes")
    return raw


def encode(sig: TransitionSignature) -> bytes:
    doc = _Doc(
        manifest_hash=sig.manifest_hash.hex(),
        previous_transition=sig.previous_transition.hex(),
        message=transition_signing_message(sig.manifest_hash, sig.previous_transition).hex(),
        signature=sig.signature.hex(),
    )
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def decode(data: bytes, what: str) -> TransitionSignature:
    try:
        doc = msgspec.json.decode(data, type=_Doc)
        signature = bytes.fromhex(doc.signature)
    except (msgspec.DecodeError, ValueError) as e:
        raise UsageError(f"{what} is not a transition signature file: {e}") from e
    if doc.algorithm != ALGORITHM:
        raise UsageError(f"{what}: unsupported algorithm {doc.algorithm!r}")
    sig = TransitionSignature(
        manifest_hash=_hex32(doc.manifest_hash, f"{what}: ManifestHash"),
        previous_transition=_hex32(doc.previous_transition, f"{what}: PreviousTransition"),
        signature=signature,
    )
    # An external signer signs the Message it reads: one that says another thing than the two hashes would
    # have it sign another transition than the one this file names.
    if doc.message.lower() != transition_signing_message(sig.manifest_hash, sig.previous_transition).hex():
        raise UsageError(
            f"{what}: Message is not the signing message of its ManifestHash and PreviousTransition"
        )
    return sig


def load_signature(path: str) -> TransitionSignature:
    sig = decode(read_file(path, "signature file", 64 * 1024), path)
    if not sig.signature:
        raise UsageError(f"{path} holds no signature (a --prepare request?)")
    return sig
