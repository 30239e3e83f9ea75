"""``contrast set -m manifest.json [policy files]``: set (or update) the Coordinator's manifest.

1. Local checks, before anything is sent: the manifest is validated (every problem with its JSON path), every
   policy it names must be among the given files (matched by SHA-256), and every given file must be one of
   them (a stray file is an error, never silently left out); a ``--signature`` must sign this manifest.
2. The CLI waits for a ready Coordinator and reads its history (attested, checked against *this* manifest's
   reference values).

   - A history: this is an update. If the active manifest already is this one byte for byte, nothing is sent
     and nothing changes (exit 0, ``"changed": false``): a repeated ``set`` makes no new generation. Otherwise
     the update needs a workload-owner signature over (new manifest hash ‖ current transition): made here with
     ``--workload-owner-key`` (default ``workload-owner.pem`` in the workspace, if present) or taken from a
     detached ``--signature`` file written by ``contrast sign``, which must name the current transition
     (``state.stale`` otherwise: the history moved on since it was signed). ``--atomic`` makes the
     Coordinator refuse the set if its history moves past that transition before the set arrives
     (``state.stale``); without it the Coordinator says ``auth.not_authorized`` (the signature fits no
     longer), and the CLI reads the attested history again to say ``state.stale`` if that is why.
   - No history: this is the first set (trust on first use). It creates a new seed and root CA, so it is
     refused (``verify.history_lost``) while the workspace knows of a history that the Coordinator lost: the
     trusted state of ``contrast verify`` (``--state``) records one, or a seed-shares file lies in the
     workspace. ``--accept-new-root`` starts the new deployment anyway. Then the answering replica's attested
     status (:func:`contrast.coordinator.user_protocol.verify_attested_status`) must satisfy this manifest
     and say it is uninitialized: the manifest is sent only to a Coordinator that this CLI accepts.

3. The reply is attested: its evidence must satisfy this manifest and bind our nonce, the new transition,
   both CA certificates and the result. Once the manifest was sent, a refused reply, or none, is reported
   with what may have changed (the Coordinator may have stored the manifest), and the set is not repeated.
   So is an error reply to a first set: it is not attested, and it may hide a first set that was stored
   with seed shares the owner never got.
4. ``coordinator-root-ca.pem`` and ``mesh-ca.pem`` are written to the workspace and, on the first set, the
   seed shares: to ``seed-shares.json``, or if that exists, to ``seed-shares-<root CA SHA-256 prefix>.json``.
   An existing seed-shares file is never overwritten.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client

from contrast import subjects
from contrast.cli.attested_history import CheckedHistory, fetch_history, load_cert, load_manifest, pem
from contrast.cli.common import (
    MESH_CA_FILE,
    ROOT_CA_FILE,
    SEED_SHARES_FILE,
    MaybeApplied,
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
    write_new_file,
)
from contrast.cli.exitcodes import EXIT_OK, UsageError
from contrast.cli.signature import TransitionSignature, load_signature
from contrast.cli.trusted_state import VerifyError, check_history_kept
from contrast.cli.trusted_state_file import load_state
from contrast.cli.verify import STATE_FILE, VERIFY_DIR, state_path
from contrast.collateral.provider import CollateralProvider
from contrast.coordinator.manifest_format import ManifestDocument, check_policies_supplied
from contrast.coordinator.user_protocol import verify_attested_reply, verify_attested_status
from contrast.crypto.ownerkeys import WORKLOAD_OWNER_KEY_FILE, load_workload_owner_key, sign_transition
from contrast.crypto.seedshare import decode_seed_shares
from contrast.errors import AuthError, ContrastError, InternalError, StateError
from contrast.evidence.result import Claims
from contrast.evidence.verifier import EvidenceVerifier
from contrast.wire.v1 import (
    AttestedReply,
    AttestedStatus,
    SetManifestRequest,
    SetManifestResult,
    StatusRequest,
    decoder,
)

SEED_SHARES_PATTERN = "seed-shares*.json"
NO_ANSWER = (
    "the manifest was sent, but no answer came: the Coordinator may have stored it as a new generation; run "
    "`contrast verify` before you set it again"
)
# An error reply is not attested: after a first set it may hide one that was stored, whose seed shares were in
# the answer the owner did not get (an update's refusal hides nothing the owner did not sign and can repeat).
FIRST_SET_REFUSED = (
    "the refusal is not attested: the Coordinator may have stored the manifest as generation 1 all the same, "
    "with seed shares that did not reach you; run `contrast verify`: if it shows this manifest, this "
    "deployment's seed shares are lost"
)
REFUSED_ANSWER = (
    "the Coordinator answered that it stored the manifest, but the answer is refused: it may have stored it "
    "as a new generation; do not rely on that Coordinator"
)


def policy_documents(paths: list[str], manifest: ManifestDocument, what: str) -> dict[str, bytes]:
    """The policy files by SHA-256: exactly the manifest's policies, none missing and none extra."""
    documents: dict[str, bytes] = {}
    stray: list[str] = []
    for p in paths:
        doc = read_file(p, "policy file")
        h = hashlib.sha256(doc).hexdigest()
        if h not in manifest.manifest.Policies:
            stray.append(f"{p} (sha256 {h[:16]}…)")
        documents[h] = doc
    if stray:
        raise UsageError(f"not a policy of {what}: {', '.join(stray)}; pass only its policy files")
    check_policies_supplied(manifest.manifest, documents)
    return documents


def seed_share_files(workspace: Path) -> list[Path]:
    return sorted(p for p in workspace.glob(SEED_SHARES_PATTERN) if p.is_file())


async def check_first_use(args: argparse.Namespace, workspace: Path) -> list[str]:
    """A first set starts a new deployment: refused while the workspace knows of a lost one, unless
    ``--accept-new-root``. Returns notes on what the new deployment leaves behind."""
    path = state_path(args)
    recorded = await load_state(path)
    shares = seed_share_files(workspace)
    if not args.accept_new_root:
        check_history_kept(recorded, path=path)
        if shares:
            raise VerifyError(
                "history_lost",
                f"the Coordinator has no manifest history, but {shares[0]} holds the seed share of an "
                "earlier first set: that deployment's store was wiped or replaced, or this workspace belongs "
                "to another deployment",
            )
    notes = [f"{p.name} (an earlier deployment's seed share) is kept as it was" for p in shares]
    if recorded is not None:
        notes.append(
            f"the trusted state {path} records another root CA: once this set succeeded, record the new one "
            "with `contrast verify --accept-new-root`"
        )
    return notes


async def attest_uninitialized(
    args: argparse.Namespace,
    nc: Client,
    doc: ManifestDocument,
    verifier: EvidenceVerifier,
    collateral: CollateralProvider,
) -> Claims:
    """Before a first set: the answering replica's attested status, judged by the local manifest."""
    sent, reply = await patient_request(
        args,
        nc,
        subjects.USER_STATUS,
        lambda: StatusRequest(nonce=secrets.token_bytes(32)),
        AttestedStatus,
    )
    evidence = await with_collateral(collateral, reply.evidence, doc.manifest)
    reply = msgspec.structs.replace(reply, evidence=evidence)
    claims, status = verify_attested_status(reply, sent.nonce, doc.manifest, verifier=verifier, now=now())
    if status.state != "uninitialized":
        raise StateError(
            "stale",
            f"replica {status.replica} is {status.state} (generation {status.generation}), although the "
            "Coordinator had no history a moment ago: another set came first; run `contrast set` again",
        )
    return claims


def update_signature(
    args: argparse.Namespace,
    current: CheckedHistory,
    doc: ManifestDocument,
    detached: TransitionSignature | None,
    key_path: Path,
    use_key: bool,
) -> bytes:
    """The workload-owner signature over (this manifest ‖ the current transition), or b"" if there is none."""
    previous = current.reply.transition_hash
    if detached is not None:
        if detached.previous_transition != previous:
            raise StateError(
                "stale",
                f"{args.signature} signs an update of transition "
                f"{detached.previous_transition.hex()[:16]}…, but the Coordinator's history moved on to "
                f"generation {current.export.generation} ({previous.hex()[:16]}…): sign the update again; "
                "nothing was sent",
            )
        return detached.signature
    if use_key:
        return sign_transition(load_workload_owner_key(key_path), doc.hash, previous)
    return b""  # the Coordinator answers auth.signature_required (or auth.immutable)


async def refusal_of_signed_update(
    args: argparse.Namespace,
    nc: Client,
    doc: ManifestDocument,
    verifier: EvidenceVerifier,
    collateral: CollateralProvider,
    signed_on: CheckedHistory,
    refusal: ContrastError,
) -> ContrastError:
    """What an ``auth.not_authorized`` answer to a signed update means. The signature names the transition
    it builds on; if the attested history moved past that one while the set was on its way (a set of someone
    else's came first), the signature was stale, not unauthorized: ``state.stale`` says so."""
    now_at = await fetch_history(args, nc, doc, verifier, collateral)
    if now_at.reply.transition_hash == signed_on.reply.transition_hash:
        return refusal
    return StateError(
        "stale",
        f"the signature builds on generation {signed_on.export.generation}, but the Coordinator's history "
        f"moved on to generation {now_at.export.generation} ({now_at.reply.transition_hash.hex()[:16]}…) "
        "while the request was on its way: run `contrast verify`, then sign again",
    )


def write_seed_shares(workspace: Path, data: bytes, root_ca_der: bytes) -> Path:
    """The new deployment's seed shares under a name that no file has yet: never over an existing share."""
    prefix = hashlib.sha256(root_ca_der).hexdigest()[:16]
    names = [SEED_SHARES_FILE, f"seed-shares-{prefix}.json"]
    names += [f"seed-shares-{prefix}-{i}.json" for i in range(2, 10)]
    for name in names:
        if write_new_file(workspace / name, data, mode=0o600):
            return workspace / name
    raise UsageError(f"{workspace} holds seed-shares files of every name tried; move them away")


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
        documents = policy_documents(args.policies, doc, args.manifest)
        detached = load_signature(args.signature) if args.signature else None
        if detached is not None and detached.manifest_hash != doc.hash:
            raise UsageError(f"{args.signature} signs another manifest than {args.manifest}")
        checker = verifier or EvidenceVerifier()
        collateral = provider or collateral_provider(args)
        notes: list[str] = []
        nc = await connect(args)
        try:
            progress(args, "contacting the Coordinator …")
            current: CheckedHistory | None = None
            try:
                current = await fetch_history(args, nc, doc, checker, collateral)
            except StateError as e:
                if e.code != "state.uninitialized":
                    raise
            if current is None:
                notes = await check_first_use(args, workspace)
                if detached is not None:
                    raise StateError(
                        "stale",
                        f"{args.signature} signs an update, but the Coordinator has no history: a first set "
                        "needs no signature",
                    )
                await attest_uninitialized(args, nc, doc, checker, collateral)
                progress(
                    args,
                    "the Coordinator is attested and has no manifest yet: this set is trust on first use",
                )
                previous = signature = b""
            elif current.active.raw == doc.raw:
                return unchanged(args, workspace, current)
            else:
                progress(args, f"the Coordinator is attested at generation {current.export.generation}")
                previous = current.reply.transition_hash
                signature = update_signature(args, current, doc, detached, key_path, use_key)
            request_factory = lambda: SetManifestRequest(  # noqa: E731 - a fresh nonce per attempt
                nonce=secrets.token_bytes(32),
                manifest=doc.raw,
                policies=list(documents.values()),
                signature=signature,
                expected_previous=previous if args.atomic else b"",
            )
            try:
                sent, reply = await patient_request(
                    args, nc, subjects.USER_MANIFEST_SET, request_factory, AttestedReply, unanswered=NO_ANSWER
                )
            except ContrastError as e:
                if current is None:
                    raise MaybeApplied(e, FIRST_SET_REFUSED) from e
                if e.code != "auth.not_authorized":
                    raise
                raise await refusal_of_signed_update(args, nc, doc, checker, collateral, current, e) from e
        finally:
            await nc.close()
        try:
            evidence = await with_collateral(collateral, reply.evidence, doc.manifest)
            reply = msgspec.structs.replace(reply, evidence=evidence)
            claims, result = check_reply(reply, sent, doc, checker)
        except ContrastError as e:
            raise MaybeApplied(e, REFUSED_ANSWER) from e
        root, mesh = load_cert(reply.root_ca, "root CA"), load_cert(reply.mesh_ca, "mesh CA")
        write_file(workspace / ROOT_CA_FILE, pem(root))
        write_file(workspace / MESH_CA_FILE, pem(mesh))
        wrote = [ROOT_CA_FILE, MESH_CA_FILE]
        report: dict[str, Any] = {}
        if result.seed_shares:
            shares_path = write_seed_shares(workspace, result.seed_shares, reply.root_ca)
            wrote.append(shares_path.name)
            report["seed_shares_file"] = shares_path.name
            if shares_path.name != SEED_SHARES_FILE:
                notes.append(f"recover this deployment with --seed-shares {shares_path}")
        emit(
            args,
            {
                "ok": True,
                "changed": True,
                "generation": result.generation,
                "manifest_hash": result.manifest_hash.hex(),
                "transition_hash": result.transition_hash.hex(),
                "coordinator_policy_hash": claims.policy_hash.hex(),
                "files": wrote,
                "notes": notes,
                **report,
            },
            f"manifest set: generation {result.generation}, transition {result.transition_hash.hex()}\n"
            f"wrote {', '.join(wrote)} to {workspace}" + "".join(f"\nnote: {n}" for n in notes),
        )
        return EXIT_OK

    return run(args, "set", body)


def check_reply(
    reply: AttestedReply, sent: SetManifestRequest, doc: ManifestDocument, verifier: EvidenceVerifier
) -> tuple[Claims, SetManifestResult]:
    """The attested answer to our set: this manifest committed, and seed shares for its owners only."""
    claims = verify_attested_reply(reply, sent.nonce, doc.manifest, verifier=verifier, now=now())
    try:
        result = decoder(SetManifestResult).decode(reply.payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:  # attested, but malformed
        raise InternalError("bad_reply", "the attested set result does not decode") from e
    if result.manifest_hash != doc.hash or result.transition_hash != reply.transition_hash:
        raise AuthError("bad_reply", "the Coordinator committed something other than this manifest")
    if result.seed_shares:
        shares = decode_seed_shares(result.seed_shares)
        if sorted(s.public_key for s in shares.seed_shares) != sorted(doc.manifest.SeedshareOwnerPubKeys):
            raise AuthError("bad_reply", "the seed shares do not match SeedshareOwnerPubKeys")
    return claims, result


def unchanged(args: argparse.Namespace, workspace: Path, current: CheckedHistory) -> int:
    """The active manifest already is the one to set: no new generation; the attested CA files are written."""
    write_file(workspace / ROOT_CA_FILE, pem(current.root_ca))
    write_file(workspace / MESH_CA_FILE, pem(current.mesh_ca))
    generation = current.export.generation
    emit(
        args,
        {
            "ok": True,
            "changed": False,
            "generation": generation,
            "manifest_hash": current.active.hash.hex(),
            "transition_hash": current.reply.transition_hash.hex(),
            "coordinator_policy_hash": current.claims.policy_hash.hex(),
            "files": [ROOT_CA_FILE, MESH_CA_FILE],
            "notes": [],
        },
        f"unchanged: the active manifest already is {args.manifest} (generation {generation}); nothing was "
        f"sent and no generation was added\nwrote {ROOT_CA_FILE}, {MESH_CA_FILE} to {workspace}",
    )
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "set",
        help="set or update the Coordinator's manifest",
        description="Set the manifest (the first set is trust on first use; updates need a workload-owner "
        "signature; the manifest that is already active changes nothing) and write coordinator-root-ca.pem, "
        "mesh-ca.pem and, on the first set, the seed shares (never over an existing file).",
    )
    p.add_argument("-m", "--manifest", default="manifest.json", help="the manifest (default: %(default)s)")
    p.add_argument(
        "policies", nargs="*", help="policy documents: exactly one for each policy hash in the manifest"
    )
    p.add_argument(
        "-w", "--workload-owner-key", help="workload-owner key (default: workload-owner.pem if present)"
    )
    p.add_argument("--signature", help="a detached transition signature from `contrast sign`")
    p.add_argument(
        "--atomic",
        action="store_true",
        help="fail if the Coordinator's history moved past the signed transition",
    )
    p.add_argument(
        "--state",
        metavar="PATH",
        help=f"the trusted state of `contrast verify` (default: WORKSPACE/{VERIFY_DIR}/{STATE_FILE}): a "
        "first set is refused while it records a history",
    )
    p.add_argument(
        "--accept-new-root",
        action="store_true",
        help="when the Coordinator has no history, start a new deployment (a new seed and root CA) even "
        "though the trusted state records a history or the workspace holds a seed-shares file (it is kept; "
        "the new shares get a new name)",
    )
    add_common(p)
    p.set_defaults(func=set_manifest)
