"""``contrast sign -m manifest.json``: a detached workload-owner signature for a manifest update.

The signature covers (new manifest hash ‖ the transition it builds on). That transition is read from the
Coordinator (attested, checked against the manifest) unless ``--previous HEX`` names it, which lets an owner
sign offline. ``--prepare`` writes ``transition-request.json`` (what to sign, for an HSM) instead of signing;
``--der-signature FILE --request transition-request.json`` turns an HSM's DER signature into
``transition-signature.json``, which ``contrast set --signature`` sends, but only once the signature verifies
over the request's message under a workload-owner key: that of ``-w`` (a PEM public key will do), or else one
of the ``WorkloadOwnerPubKeys`` of the ``-m`` manifest (``auth.bad_signature`` otherwise, and nothing is
written). The Coordinator accepts the keys of the *active* manifest: for an update that changes the owners,
pass that manifest with ``-m``, or the signer's key with ``-w``.
What exactly an external signer signs: docs/protocol.md, §6.1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contrast.cli.attested_history import fetch_history, load_manifest
from contrast.cli.common import add_common, connect, emit, read_file, run, write_file
from contrast.cli.exitcodes import EXIT_OK, UsageError
from contrast.cli.signature import REQUEST_FILE, SIGNATURE_FILE, TransitionSignature, decode, encode
from contrast.crypto.ownerkeys import (
    WORKLOAD_OWNER_KEY_FILE,
    load_workload_owner_key,
    load_workload_owner_public_key,
    public_key_hex,
    sign_transition,
    verify_transition_signature,
)
from contrast.errors import AuthError
from contrast.evidence.verifier import EvidenceVerifier


def _previous_from_hex(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise UsageError("--previous is not hex") from e
    if len(raw) != 32:
        raise UsageError("--previous must be a 32-byte transition hash")
    return raw


def sign(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace)
    key_path = Path(args.workload_owner_key or workspace / WORKLOAD_OWNER_KEY_FILE)

    async def body() -> int:
        if args.der_signature:
            return _import_der(args, workspace)
        doc = load_manifest(args.manifest)
        if args.previous:
            previous = _previous_from_hex(args.previous)
        else:
            nc = await connect(args)
            try:
                previous = (await fetch_history(args, nc, doc, EvidenceVerifier())).reply.transition_hash
            finally:
                await nc.close()
        out = (
            Path(args.output)
            if args.output
            else workspace / (REQUEST_FILE if args.prepare else SIGNATURE_FILE)
        )
        signature = (
            b"" if args.prepare else sign_transition(load_workload_owner_key(key_path), doc.hash, previous)
        )
        write_file(out, encode(TransitionSignature(doc.hash, previous, signature)))
        emit(
            args,
            {
                "ok": True,
                "file": str(out),
                "manifest_hash": doc.hash.hex(),
                "previous_transition": previous.hex(),
            },
            f"wrote {out} (manifest {doc.hash.hex()[:16]}… on transition {previous.hex()[:16]}…)",
        )
        return EXIT_OK

    return run(args, "sign", body)


def _owner_keys(args: argparse.Namespace) -> tuple[list[str], str]:
    """The workload-owner public keys a DER signature must verify under, and where they come from."""
    if args.workload_owner_key:
        key = load_workload_owner_public_key(Path(args.workload_owner_key))
        return [public_key_hex(key)], f"the key of {args.workload_owner_key}"
    try:
        doc = load_manifest(args.manifest)
    except UsageError as e:
        raise UsageError(
            f"cannot check the DER signature: {e}; pass the manifest whose workload owners sign (-m) or the "
            "owner's key (-w)"
        ) from e
    return list(doc.manifest.WorkloadOwnerPubKeys), f"the WorkloadOwnerPubKeys of {args.manifest}"


def _import_der(args: argparse.Namespace, workspace: Path) -> int:
    """Wrap an external signer's DER signature, but only one that signs this request as a workload owner."""
    if not args.request:
        raise UsageError("--der-signature needs --request transition-request.json")
    req = decode(read_file(args.request, "request file", 64 * 1024), args.request)
    der = read_file(args.der_signature, "DER signature", 1024)
    owners, source = _owner_keys(args)
    try:
        signer = verify_transition_signature(owners, der, req.manifest_hash, req.previous_transition)
    except AuthError as e:
        raise AuthError(
            "bad_signature",
            f"{args.der_signature} does not verify over the Message of {args.request} under {source}: it "
            "signs another request, or another key made it; nothing was written",
        ) from e
    out = Path(args.output) if args.output else workspace / SIGNATURE_FILE
    write_file(out, encode(TransitionSignature(req.manifest_hash, req.previous_transition, der)))
    emit(
        args,
        {"ok": True, "file": str(out), "signer": signer},
        f"the signature verifies under workload-owner key {signer[-16:]}; wrote {out}",
    )
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sign",
        help="sign a manifest update as a workload owner (detached, HSM-friendly)",
        description="Write a detached workload-owner signature over (manifest hash ‖ previous transition).",
    )
    p.add_argument(
        "-m", "--manifest", default="manifest.json", help="the new manifest (default: %(default)s)"
    )
    p.add_argument(
        "-w",
        "--workload-owner-key",
        help="workload-owner key (default: workload-owner.pem); with --der-signature, the key the signature "
        "must verify under, as a PEM public key (an HSM owner's) or private key (default: any "
        "WorkloadOwnerPubKeys entry of the -m manifest)",
    )
    p.add_argument(
        "--previous", help="the transition to build on (hex); default: read it from the Coordinator"
    )
    p.add_argument("--prepare", action="store_true", help=f"write {REQUEST_FILE} for an external signer")
    p.add_argument("--der-signature", help=f"import an external DER signature made over a {REQUEST_FILE}")
    p.add_argument("--request", help=f"the {REQUEST_FILE} the DER signature belongs to")
    p.add_argument("-o", "--output", help="output file")
    add_common(p)
    p.set_defaults(func=sign)
