"""``contrast recover``: a seed-share owner brings a stale Coordinator back with its seed share.

1. The share in ``seed-shares.json`` is decrypted with the seed-share owner key (RSA-OAEP, label
   ``seedshare``).
2. A stale manifest replica shows a fresh HPKE key and the stored head it will adopt (the signed ``latest``
   pointer and every transition record, as it read them) in evidence bound with ``Label.RECOVERY`` to our
   nonce and a one-time nonce of its own; the evidence must satisfy the local manifest (reference values, a
   ``coordinator`` policy hash). Only then is anything sent to it.
3. Seed and salt go HPKE-sealed to that key, with the head in the HPKE context, and an RSA-PSS signature
   over (hash of the secret, the key, the replica's nonce), to ``contrast.v1.user.recover.<replica>``.
4. The attested reply must show the same root CA as the seed derives (the root survives recovery) and the
   bound head; the new mesh CA and the root are written to the workspace, unless ``--state`` names another
   trusted state than the workspace's own (its CA files stay those its own state vouches for).

Threat DK6: the operator can restore a consistent earlier snapshot of the store once every replica
restarted, and a stale replica cannot tell it from the past. Recovering it would hand the seed to a
Coordinator that then serves an old manifest. So ``recover`` reads the trusted state of ``contrast verify``
(``verify/trusted-state.json`` or ``--state``; no file is first use, which is printed as a warning; an
unreadable or corrupt file is an error) before the network, and *before anything is sealed*:

- the seed must derive the recorded root CA (``verify.root_changed``: the share is of another deployment);
- the attested head must be signed by the seed's own history key (``auth.wrong_seed``) and its transition
  records must chain to it (``store.*``);
- if a state is recorded, that history must extend it (``verify.rollback``, ``verify.history_forked``).

The seed is sealed bound to that head, and the replica adopts the stored history only if its own head,
authenticated with the seed, is the bound one (``state.recovery_head_changed`` otherwise: it stays stale).
An operator who swaps the store after the challenge was answered therefore gets a refusal, not the seed in
a replica serving the swapped history. Recover does not read the ``history`` bucket itself and needs no
access to it: the head it checks is the one the replica attests and will adopt, while a read of its own
could see another store than the replica's. The reply's head must still be the checked one (a replica that
broke this rule is named: ``verify.rollback``, ``verify.history_forked`` or ``verify.history_moved``).

A successful recover does not write the trusted state: the state records what the data owner *accepted*
(``verify``: the active manifest equals theirs, and ``--approved``), while recover only establishes that
the stored history is no older than that. The owner's next ``verify`` extends the record.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nats.aio.client import Client

from contrast import subjects
from contrast.cli.attested_history import load_cert, load_manifest, pem
from contrast.cli.common import (
    MESH_CA_FILE,
    ROOT_CA_FILE,
    SEED_SHARES_FILE,
    add_common,
    collateral_provider,
    connect,
    emit,
    now,
    patient_request,
    progress,
    read_file,
    run,
    with_collateral,
    write_file,
)
from contrast.cli.exitcodes import EXIT_OK
from contrast.cli.trusted_state import (
    Continuity,
    TrustedState,
    check_continuity,
    check_recovered_head,
    check_recovery_root,
    observed_state,
)
from contrast.cli.trusted_state_file import load_state
from contrast.cli.verify import STATE_FILE, VERIFY_DIR
from contrast.cli.verify import state_path as verify_state_path
from contrast.coordinator.manifest_format import ManifestDocument
from contrast.coordinator.recovery_head import ClaimedHead, authenticate_head, claimed_head
from contrast.coordinator.user_protocol import (
    check_coordinator_evidence,
    recover_subject,
    recovery_report_data,
    seal_recovery_secret,
    verify_attested_reply,
)
from contrast.crypto.kdf import SeedEngine
from contrast.crypto.ownerkeys import SEEDSHARE_OWNER_KEY_FILE, load_seedshare_owner_key
from contrast.crypto.seedshare import (
    decode_seed_shares,
    decrypt_share,
    recovery_signing_message,
    sign_recovery,
)
from contrast.errors import AuthError, InternalError
from contrast.evidence.verifier import EvidenceVerifier
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


@dataclass(frozen=True)
class _Share:
    """The seed-share owner's key and what its share decrypts to. Secrets: never log them."""

    key: rsa.RSAPrivateKey
    seed: bytes
    salt: bytes
    engine: SeedEngine
    root_der: bytes  # the root CA the seed derives

    def __repr__(self) -> str:
        return "_Share(...)"


def _open_share(key_path: Path, shares_path: Path) -> _Share:
    """Step 1: decrypt our share of ``seed-shares.json`` with the seed-share owner key."""
    key = load_seedshare_owner_key(key_path)
    seed, salt = decrypt_share(key, decode_seed_shares(read_file(shares_path, "seed shares")))
    engine = SeedEngine(seed, salt)
    root_der = root_certificate(engine.root_ca_key()).public_bytes(serialization.Encoding.DER)
    return _Share(key=key, seed=seed, salt=salt, engine=engine, root_der=root_der)


async def _trusted_state(state_path: Path, share: _Share) -> tuple[TrustedState | None, dict[str, Any]]:
    """The state of ``contrast verify``, read before the network: a corrupt state, or a share of another
    deployment, fails before anything is asked or sent. Returns it and the report's ``trusted_state``."""
    recorded = await load_state(state_path)
    info: dict[str, Any] = {
        "path": str(state_path),
        "recorded_generation": recorded.generation if recorded is not None else None,
        "written": False,  # recover never writes it (see the module docstring)
    }
    if recorded is None:
        info["status"] = Continuity.FIRST_USE.value
        print(
            f"contrast recover: WARNING: no trusted state at {state_path}: a rolled-back store is not "
            "detected (run `contrast verify` while the Coordinator is ready, or pass --state)",
            file=sys.stderr,
            flush=True,
        )
    else:
        check_recovery_root(recorded, share.root_der)
    return recorded, info


async def _attested_head(
    args: argparse.Namespace, nc: Client, doc: ManifestDocument, verifier: EvidenceVerifier, share: _Share
) -> tuple[RecoveryChallenge, ClaimedHead]:
    """Step 2: a stale replica's challenge, attested against the local manifest, and the head it will
    adopt, authenticated with the seed's own history key."""
    progress(args, "asking a stale Coordinator replica for its recovery key …")
    sent, challenge = await patient_request(
        args,
        nc,
        subjects.USER_RECOVER,
        lambda: RecoveryChallengeRequest(nonce=secrets.token_bytes(32), force=args.force),
        RecoveryChallenge,
    )
    expected = recovery_report_data(
        sent.nonce,
        challenge.hpke_key,
        challenge.recovery_nonce,
        challenge.head_pointer,
        challenge.head_transitions,
    )
    evidence = await with_collateral(collateral_provider(args), challenge.evidence, doc.manifest)
    check_coordinator_evidence(evidence, doc.manifest, expected, verifier=verifier, now=now())
    head = claimed_head(challenge.head_pointer, challenge.head_transitions)
    authenticate_head(head, share.engine.history_signing_key().public_key())
    return challenge, head


def _recover_request(
    challenge: RecoveryChallenge, head: ClaimedHead, share: _Share, force: bool
) -> RecoverRequest:
    """Step 3: the seed sealed to the challenge key and bound to the checked head; the owner's signature."""
    message = recovery_signing_message(share.seed, share.salt, challenge.hpke_key, challenge.recovery_nonce)
    return RecoverRequest(
        nonce=secrets.token_bytes(32),
        recovery_nonce=challenge.recovery_nonce,
        head_generation=head.generation,
        head_transition=head.transition_hash,
        sealed_secret=seal_recovery_secret(
            challenge.hpke_key,
            challenge.recovery_nonce,
            head.generation,
            head.transition_hash,
            share.seed,
            share.salt,
        ),
        signature=sign_recovery(share.key, message),
        force=force,
    )


def _recovered(
    reply: AttestedReply,
    req: RecoverRequest,
    doc: ManifestDocument,
    verifier: EvidenceVerifier,
    share: _Share,
) -> RecoverResult:
    """Step 4: the attested reply for our nonce, with the seed's root CA and the head it names."""
    verify_attested_reply(reply, req.nonce, doc.manifest, verifier=verifier, now=now())
    try:
        result = decoder(RecoverResult).decode(reply.payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:  # attested, but malformed
        raise InternalError("bad_reply", "the attested recovery result does not decode") from e
    if result.transition_hash != reply.transition_hash:
        raise AuthError("bad_reply", "the recovery result names another head than the attested reply")
    if share.root_der != reply.root_ca:
        raise AuthError("bad_reply", "the recovered Coordinator shows another root CA than the seed's")
    return result


def recover(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace)
    key_path = Path(args.seedshare_owner_key or workspace / SEEDSHARE_OWNER_KEY_FILE)
    shares_path = Path(args.seed_shares or workspace / SEED_SHARES_FILE)
    state_path = verify_state_path(args)
    # The workspace's CA files belong with its own trusted state: a recovery checked against another one
    # (--state) must not replace them with those of a Coordinator that state never vouched for.
    own_state = state_path.resolve() == (workspace / VERIFY_DIR / STATE_FILE).resolve()

    async def body() -> int:
        doc = load_manifest(args.manifest)
        share = _open_share(key_path, shares_path)
        recorded, state_info = await _trusted_state(state_path, share)
        verifier = EvidenceVerifier()
        nc = await connect(args)
        try:
            challenge, head = await _attested_head(args, nc, doc, verifier, share)
            checked = observed_state(
                root_ca_der=share.root_der,
                transitions=head.transition_hashes(),
                manifests=head.manifest_hashes(),
                verified_at=now(),
            )
            state_info["checked_generation"] = checked.generation
            if recorded is not None:  # before anything is sealed
                state_info["status"] = check_continuity(recorded, checked, accept_new_root=False).value
                progress(
                    args,
                    f"the attested history (generation {checked.generation}) extends the trusted state "
                    f"(generation {recorded.generation})",
                )
            progress(args, f"replica {challenge.replica} is attested; sending the seed sealed to its head")
            req = _recover_request(challenge, head, share, args.force)
            reply = await request(
                nc, recover_subject(challenge.replica), req, AttestedReply, timeout=min(30.0, args.timeout)
            )
        finally:
            await nc.close()
        evidence = await with_collateral(collateral_provider(args), reply.evidence, doc.manifest)
        result = _recovered(msgspec.structs.replace(reply, evidence=evidence), req, doc, verifier, share)
        check_recovered_head(
            recorded, checked, generation=result.generation, transition_hash=reply.transition_hash
        )
        root, mesh = load_cert(reply.root_ca, "root CA"), load_cert(reply.mesh_ca, "mesh CA")
        files: list[str] = []
        if own_state:
            write_file(workspace / ROOT_CA_FILE, pem(root))
            write_file(workspace / MESH_CA_FILE, pem(mesh))
            files = [ROOT_CA_FILE, MESH_CA_FILE]
            wrote = f"wrote {ROOT_CA_FILE}, {MESH_CA_FILE}"
        else:
            wrote = (
                f"wrote nothing to {workspace}: its CA files stay those of its own trusted state, and this "
                f"recovery was checked against {state_path}"
            )
        emit(
            args,
            {
                "ok": True,
                "replica": challenge.replica,
                "generation": result.generation,
                "transition_hash": result.transition_hash.hex(),
                "files": files,
                "mesh_ca_sha256": hashlib.sha256(reply.mesh_ca).hexdigest(),
                "trusted_state": state_info,
            },
            f"replica {challenge.replica} recovered at generation {result.generation}; {wrote}"
            + (
                f"; the history extends the trusted state {state_path} (not rewritten: run `contrast verify`)"
                if recorded is not None
                else f"; NOT checked against a trusted state (no {state_path})"
            ),
        )
        return EXIT_OK

    return run(args, "recover", body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "recover",
        help="recover a stale Coordinator with a seed share",
        description="Send the seed (from your seed share) sealed to an attested, stale Coordinator replica, "
        "after checking that the history it attests and will adopt extends the trusted state that "
        "`contrast verify` recorded (never rolled back, forked or of another root CA). The trusted state is "
        "not written.",
    )
    p.add_argument("-m", "--manifest", default="manifest.json", help="the manifest (default: %(default)s)")
    p.add_argument("-k", "--seedshare-owner-key", help="seed-share owner key (default: seedshare-owner.pem)")
    p.add_argument("--seed-shares", help="seed-shares.json (default: in the workspace)")
    p.add_argument("--force", action="store_true", help="recover even if a ready replica exists")
    p.add_argument(
        "--state",
        metavar="PATH",
        help=f"the trusted state of `contrast verify` (default: WORKSPACE/{VERIFY_DIR}/{STATE_FILE}); the "
        "attested history must extend it before the seed is sent; no file is first use, a corrupt one is an "
        "error; with another state than the workspace's own, no CA file is written to the workspace",
    )
    add_common(p)
    p.set_defaults(func=recover)
