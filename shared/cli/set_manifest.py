"""``contrast set -m manifest.json [policy files]``: set (or update) the Coordinator's manifest.

1. The manifest is validated locally (every problem with its JSON path) and every policy it names must be
   among the given files (matched by SHA-256).
2. The CLI waits for a ready Coordinator and reads its history (attested, checked against *this* manifest's
   reference values). No history: this is the first set (trust on first use). Otherwise the update needs a
   workload-owner signature over (new manifest hash ‖ current transition): made here with
   ``--workload-owner-key`` (default ``workload-owner.pem`` in the workspace, if present) or taken from a
   detached ``--signature`` file written by ``contrast sign``. ``--atomic`` makes the Coordinator refuse the
   set if its history moved past the transition the signature names.
3. The reply is attested: its evidence must satisfy this manifest and bind our nonce, the new transition,
   both CA certificates and the result. Then ``coordinator-root-ca.pem``, ``mesh-ca.pem`` and, on the first
   set only, ``seed-shares.json`` are written to the workspace.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
from pathlib import Path

import msgspec

from contrast import subjects
from contrast.cli.attested_history import fetch_history, load_cert, load_manifest, pem
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
from contrast.cli.exitcodes import EXIT_OK, UsageError
from contrast.cli.signature import TransitionSignature, load_signature
from contrast.collateral.provider import CollateralProvider
from contrast.coordinator.manifest_format import check_policies_supplied
from contrast.coordinator.user_protocol import verify_attested_reply
from contrast.crypto.ownerkeys import WORKLOAD_OWNER_KEY_FILE, load_workload_owner_key, sign_transition
from contrast.crypto.seedshare import decode_seed_shares
from contrast.errors import AuthError, InternalError, StateError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.wire.v1 import AttestedReply, SetManifestRequest, SetManifestResult, decoder


def _policies(paths: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for p in paths:
        doc = read_file(p, "policy file")
        out[hashlib.sha256(doc).hexdigest()] = doc
    return out


def set_manifest(
    args: argparse.Namespace,
    *,
    verifier: EvidenceVerifier | None = None,
    provider: CollateralProvider | None = None,
) -> int:
    """The command; ``verifier`` and ``provider`` default to the pinned roots and the CLI's provider."""
    workspace = Path(args.workspace)
    key_path = Path(args.workload_owner_key or workspace / WORKLOAD_OWNER_KEY_FILE)
    use_key = bool(args.workload_owner_key) or key_path.exists()

    async def body() -> int:
        doc = load_manifest(args.manifest)
        documents = _policies(args.policies)
        # Only the manifest's own policies are sent: extra files on the command line are ignored, not sent.
        named = {h: d for h, d in documents.items() if h in doc.manifest.Policies}
        check_policies_supplied(doc.manifest, named)
        checker = verifier or EvidenceVerifier()
        collateral = provider or collateral_provider(args)
        nc = await connect(args)
        try:
            previous = b""
            signature = b""
            progress(args, "contacting the Coordinator …")
            try:
                current = await fetch_history(args, nc, doc, checker, collateral)
                previous = current.reply.transition_hash
                progress(args, f"the Coordinator is at generation {current.export.generation}")
            except StateError as e:
                if e.code != "state.uninitialized":
                    raise
                progress(args, "the Coordinator has no manifest yet: this set is trust on first use")
            if args.signature:
                sig: TransitionSignature = load_signature(args.signature)
                if sig.manifest_hash != doc.hash:
                    raise UsageError(f"{args.signature} signs another manifest")
                signature = sig.signature
                previous = sig.previous_transition if args.atomic else previous
            elif previous and use_key:
                signature = sign_transition(load_workload_owner_key(key_path), doc.hash, previous)
            request_factory = lambda: SetManifestRequest(  # noqa: E731 - a fresh nonce per attempt
                nonce=secrets.token_bytes(32),
                manifest=doc.raw,
                policies=list(named.values()),
                signature=signature,
                expected_previous=previous if args.atomic else b"",
            )
            sent, reply = await patient_request(
                args, nc, subjects.USER_MANIFEST_SET, request_factory, AttestedReply
            )
        finally:
            await nc.close()
        evidence = await with_collateral(collateral, reply.evidence, doc.manifest)
        reply = msgspec.structs.replace(reply, evidence=evidence)
        claims = verify_attested_reply(reply, sent.nonce, doc.manifest, verifier=checker, now=now())
        try:
            result = decoder(SetManifestResult).decode(reply.payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:  # attested, but malformed
            raise InternalError("bad_reply", "the attested set result does not decode") from e
        if result.manifest_hash != doc.hash or result.transition_hash != reply.transition_hash:
            raise AuthError("bad_reply", "the Coordinator committed something other than this manifest")
        root, mesh = load_cert(reply.root_ca, "root CA"), load_cert(reply.mesh_ca, "mesh CA")
        write_file(workspace / ROOT_CA_FILE, pem(root))
        write_file(workspace / MESH_CA_FILE, pem(mesh))
        wrote = [ROOT_CA_FILE, MESH_CA_FILE]
        if result.seed_shares:
            shares = decode_seed_shares(result.seed_shares)
            if sorted(s.public_key for s in shares.seed_shares) != sorted(doc.manifest.SeedshareOwnerPubKeys):
                raise AuthError("bad_reply", "the seed shares do not match SeedshareOwnerPubKeys")
            write_file(workspace / SEED_SHARES_FILE, result.seed_shares, mode=0o600)
            wrote.append(SEED_SHARES_FILE)
        emit(
            args,
            {
                "ok": True,
                "generation": result.generation,
                "manifest_hash": result.manifest_hash.hex(),
                "transition_hash": result.transition_hash.hex(),
                "coordinator_policy_hash": claims.policy_hash.hex(),
                "files": wrote,
            },
            f"manifest set: generation {result.generation}, transition {result.transition_hash.hex()}\n"
            f"wrote {', '.join(wrote)} to {workspace}",
        )
        return EXIT_OK

    return run(args, "set", body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "set",
        help="set or update the Coordinator's manifest",
        description="Set the manifest (the first set is trust on first use; updates need a workload-owner "
        "signature) and write coordinator-root-ca.pem, mesh-ca.pem and, on the first set, seed-shares.json.",
    )
    p.add_argument("-m", "--manifest", default="manifest.json", help="the manifest (default: %(default)s)")
    p.add_argument("policies", nargs="*", help="policy documents, one for each policy hash in the manifest")
    p.add_argument(
        "-w", "--workload-owner-key", help="workload-owner key (default: workload-owner.pem if present)"
    )
    p.add_argument("--signature", help="a detached transition signature from `contrast sign`")
    p.add_argument(
        "--atomic",
        action="store_true",
        help="fail if the Coordinator's history moved past the signed transition",
    )
    add_common(p)
    p.set_defaults(func=set_manifest)
