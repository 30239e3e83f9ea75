"""``contrast recover``: a seed-share owner brings a stale Coordinator back with its seed share.

1. The share in ``seed-shares.json`` is decrypted with the seed-share owner key (RSA-OAEP, label
   ``seedshare``).
2. A stale manifest replica shows a fresh HPKE key in evidence bound with ``Label.RECOVERY`` to our nonce
   and a one-time nonce of its own; the evidence must satisfy the local manifest (reference values, a
   ``coordinator`` policy hash). Only then is anything sent to it.
3. Seed and salt go HPKE-sealed to that key, with an RSA-PSS signature over (hash of the secret, the key, the
   replica's nonce), to ``contrast.v1.user.recover.<replica>``.
4. The attested reply must show the same root CA as the seed derives (the root survives recovery); the new
   mesh CA and the root are written to the workspace.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization

from contrast import subjects
from contrast.attest.evidence import EvidenceVerifier
from contrast.cli.common import (
    EXIT_OK,
    MESH_CA_FILE,
    ROOT_CA_FILE,
    SEED_SHARES_FILE,
    add_common,
    connect,
    emit,
    now,
    patient_request,
    progress,
    read_file,
    run,
    write_file,
)
from contrast.cli.coordinator import load_cert, load_manifest, pem
from contrast.coordinator.ownerkeys import SEEDSHARE_OWNER_KEY_FILE, load_seedshare_owner_key
from contrast.crypto.kdf import SeedEngine
from contrast.crypto.seedshare import (
    decode_seed_shares,
    decrypt_share,
    recovery_signing_message,
    sign_recovery,
)
from contrast.errors import AuthError, InternalError
from contrast.manifest.protocol import (
    check_coordinator_evidence,
    recover_subject,
    recovery_report_data,
    seal_recovery_secret,
    verify_attested_reply,
)
from contrast.pki.root import root_certificate
from contrast.runtime.client import request
from contrast.wire.v1 import (
    AttestedReply,
    RecoverRequest,
    RecoverResult,
    RecoveryChallenge,
    RecoveryChallengeRequest,
    decoder,
)


def recover(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace)
    key_path = Path(args.seedshare_owner_key or workspace / SEEDSHARE_OWNER_KEY_FILE)
    shares_path = Path(args.seed_shares or workspace / SEED_SHARES_FILE)

    async def body() -> int:
        doc = load_manifest(args.manifest)
        key = load_seedshare_owner_key(key_path)
        seed, salt = decrypt_share(key, decode_seed_shares(read_file(shares_path, "seed shares")))
        verifier = EvidenceVerifier()
        nc = await connect(args)
        try:
            progress(args, "asking a stale Coordinator replica for its recovery key …")
            sent, challenge = await patient_request(
                args,
                nc,
                subjects.USER_RECOVER,
                lambda: RecoveryChallengeRequest(nonce=secrets.token_bytes(32), force=args.force),
                RecoveryChallenge,
            )
            check_coordinator_evidence(
                challenge.evidence,
                doc.manifest,
                recovery_report_data(sent.nonce, challenge.hpke_key, challenge.recovery_nonce),
                verifier=verifier,
                now=now(),
            )
            progress(args, f"replica {challenge.replica} is attested; sending the sealed seed")
            message = recovery_signing_message(seed, salt, challenge.hpke_key, challenge.recovery_nonce)
            req = RecoverRequest(
                nonce=secrets.token_bytes(32),
                recovery_nonce=challenge.recovery_nonce,
                sealed_secret=seal_recovery_secret(challenge.hpke_key, challenge.recovery_nonce, seed, salt),
                signature=sign_recovery(key, message),
                force=args.force,
            )
            reply = await request(
                nc, recover_subject(challenge.replica), req, AttestedReply, timeout=min(30.0, args.timeout)
            )
        finally:
            await nc.close()
        verify_attested_reply(reply, req.nonce, doc.manifest, verifier=verifier, now=now())
        try:
            result = decoder(RecoverResult).decode(reply.payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:  # attested, but malformed
            raise InternalError("bad_reply", "the attested recovery result does not decode") from e
        expected_root = root_certificate(SeedEngine(seed, salt).root_ca_key())
        if expected_root.public_bytes(serialization.Encoding.DER) != reply.root_ca:
            raise AuthError("bad_reply", "the recovered Coordinator shows another root CA than the seed's")
        root, mesh = load_cert(reply.root_ca, "root CA"), load_cert(reply.mesh_ca, "mesh CA")
        write_file(workspace / ROOT_CA_FILE, pem(root))
        write_file(workspace / MESH_CA_FILE, pem(mesh))
        emit(
            args,
            {
                "ok": True,
                "replica": challenge.replica,
                "generation": result.generation,
                "transition_hash": result.transition_hash.hex(),
                "files": [ROOT_CA_FILE, MESH_CA_FILE],
            },
            f"replica {challenge.replica} recovered at generation {result.generation}; "
            f"wrote {ROOT_CA_FILE}, {MESH_CA_FILE}",
        )
        return EXIT_OK

    return run(args, "recover", body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "recover",
        help="recover a stale Coordinator with a seed share",
        description="Send the seed (from your seed share) sealed to an attested, stale Coordinator replica.",
    )
    p.add_argument("-m", "--manifest", default="manifest.json", help="the manifest (default: %(default)s)")
    p.add_argument("-k", "--seedshare-owner-key", help="seed-share owner key (default: seedshare-owner.pem)")
    p.add_argument("--seed-shares", help="seed-shares.json (default: in the workspace)")
    p.add_argument("--force", action="store_true", help="recover even if a ready replica exists")
    add_common(p)
    p.set_defaults(func=recover)
