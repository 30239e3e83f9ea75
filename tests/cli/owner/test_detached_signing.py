"""Detached signing (``contrast sign --prepare`` / ``--der-signature``), offline as an HSM owner does it: an
imported DER signature is wrapped only if it signs exactly the request's message as a workload owner; and no
refusal hint names a flag that its command lacks."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.cli.common import COMMAND_HINTS, HINTS, hint_for
from contrast.cli.main import build_parser
from contrast.crypto.ownerkeys import (
    TRANSITION_SIGNATURE_LABEL,
    generate_workload_owner_key,
    transition_signing_message,
)
from tests.cli.owner.owner_cli import POLICY_FILES, Cli, write_manifest
from tests.tooling import require_tool

OFFLINE = "nats://127.0.0.1:9"  # nothing here needs NATS


def _sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    return key.sign(message, ec.ECDSA(hashes.SHA384()))


def test_an_imported_signature_must_sign_the_request_as_a_workload_owner(
    workspace: Path, emulator_dir: Path, keys: dict[str, Any]
) -> None:
    cli = Cli(workspace, OFFLINE)
    manifest = write_manifest(workspace, emulator_dir, keys)
    previous = bytes(range(32))
    rc, out, err = cli("sign", "--prepare", "-m", "manifest.json", "--previous", previous.hex())
    assert rc == 0, err
    request = json.loads((workspace / "transition-request.json").read_text())
    message = bytes.fromhex(request["Message"])
    # What the signer signs, byte for byte: the label, the new manifest's SHA-256, the previous transition.
    manifest_hash = hashlib.sha256(manifest.read_bytes()).digest()
    assert message == TRANSITION_SIGNATURE_LABEL + manifest_hash + previous
    assert message == transition_signing_message(manifest_hash, previous)

    owner = serialization.load_pem_private_key((workspace / "workload-owner.pem").read_bytes(), None)
    assert isinstance(owner, ec.EllipticCurvePrivateKey)
    for name, der in [
        ("another-request", _sign(owner, transition_signing_message(manifest_hash, bytes(32)))),
        ("another-key", _sign(generate_workload_owner_key(), message)),
        ("not-der", b"\x30\x06" + bytes(6)),
    ]:
        (workspace / f"{name}.der").write_bytes(der)
        rc, out, _ = cli(
            "sign", "--der-signature", f"{name}.der", "--request", "transition-request.json", "-o", "s.json"
        )
        assert (rc, out["code"]) == (1, "auth.bad_signature"), name
        assert not (workspace / "s.json").exists()
    # The external signer of docs/protocol.md §6.1: `openssl dgst -sha384 -sign` over the Message bytes.
    # Without -w the signature is checked against the manifest's WorkloadOwnerPubKeys.
    (workspace / "message.bin").write_bytes(message)
    openssl = require_tool("openssl")
    subprocess.run(
        [openssl, "dgst", "-sha384", "-sign", "workload-owner.pem", "-out", "good.der", "message.bin"],
        cwd=workspace,
        check=True,
        capture_output=True,
    )
    rc, out, err = cli("sign", "--der-signature", "good.der", "--request", "transition-request.json")
    assert rc == 0, err
    assert out["signer"] == keys["WorkloadOwnerPubKeys"][0]
    written = json.loads((workspace / "transition-signature.json").read_text())
    assert written["Message"] == request["Message"]
    assert written["Signature"] == (workspace / "good.der").read_bytes().hex()

    # An owner whose key is in an HSM holds only its public key: -w takes that too; another key's is refused.
    for name, key, code in [
        ("owner.pub", owner, 0),
        ("other.pub", generate_workload_owner_key(), 1),
    ]:
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (workspace / name).write_bytes(pem)
        rc, out, err = cli(
            "sign",
            "--der-signature",
            "good.der",
            "--request",
            "transition-request.json",
            "-w",
            name,
            "-o",
            f"{name}.json",
        )
        assert rc == code, (name, out, err)
        assert (workspace / f"{name}.json").exists() == (code == 0), name
        assert code == 0 or out["code"] == "auth.bad_signature"
    rc, out, err = cli(
        "sign", "--der-signature", "good.der", "--request", "transition-request.json", "-w", "gone.pem"
    )
    assert (rc, out["code"]) == (1, "request.invalid_owner_key"), err
    assert "gone.pem" in out["message"]
    assert "Traceback" not in err

    # A request whose Message names another transition than its hashes: the signer would sign that one.
    forged = dict(request, Message=transition_signing_message(manifest_hash, bytes(32)).hex())
    (workspace / "forged-request.json").write_text(json.dumps(forged))
    rc, out, _ = cli(
        "sign", "--der-signature", "good.der", "--request", "forged-request.json", "-o", "f.json"
    )
    assert (rc, out["code"]) == (2, "usage")
    assert "Message is not the signing message" in out["message"]
    assert not (workspace / "f.json").exists()
    (workspace / "forged-signature.json").write_text(json.dumps(dict(written, Message=forged["Message"])))
    rc, out, _ = cli("set", "-m", "manifest.json", "--signature", "forged-signature.json", *POLICY_FILES)
    assert (rc, out["code"]) == (2, "usage")
    assert "Message is not the signing message" in out["message"]


@pytest.mark.parametrize("command", ["set", "verify", "recover", "sign"])
def test_no_hint_names_a_flag_its_command_lacks(command: str) -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[command]  # type: ignore[index]
    options = {o for action in parser._actions for o in action.option_strings}
    for code in set(HINTS) | {c for _, c in COMMAND_HINTS}:
        # A flag named with another command ("`contrast set --accept-new-root`") is that command's.
        own = re.sub(r"`contrast [^`]*`", "", hint_for(command, code))
        for flag in re.findall(r"--[a-z][a-z-]*", own):
            assert flag in options, (command, code, flag)
