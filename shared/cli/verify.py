"""``contrast verify -m manifest.json``: attest the Coordinator and check its whole history.

The Coordinator's reply must carry fresh evidence that satisfies the *local* manifest: its reference values
(which pin the vendor root, or the emulator's root fingerprint), a HOST_DATA / MR_CONFIG_ID that is a
``coordinator`` policy of the local manifest, and REPORT_DATA binding our nonce, the latest transition, both
CA certificates and the reply (a replayed reply fails). The history is then checked without trusting the
store: the signed ``latest`` pointer and every transition back to the first manifest, each re-hashed.

``verify/`` receives ``coordinator-root-ca.pem``, ``mesh-ca.pem``, ``manifest.<i>.json`` (``0`` is the first),
``policies/<sha256>`` and ``latest-transition`` (the signed pointer as served). Exit 0 only if the active
manifest equals the local file byte for byte; 1 otherwise (the reason is printed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contrast.attest.evidence import EvidenceVerifier
from contrast.cli.common import EXIT_OK, EXIT_REJECTED, add_common, connect, emit, run, write_file
from contrast.cli.coordinator import fetch_history, load_manifest, pem

VERIFY_DIR = "verify"


def verify(args: argparse.Namespace) -> int:
    async def body() -> int:
        doc = load_manifest(args.manifest)
        verifier = EvidenceVerifier()
        nc = await connect(args)
        try:
            checked = await fetch_history(args, nc, doc, verifier)
        finally:
            await nc.close()
        out = Path(args.workspace) / VERIFY_DIR
        write_file(out / "coordinator-root-ca.pem", pem(checked.root_ca))
        write_file(out / "mesh-ca.pem", pem(checked.mesh_ca))
        for i, entry in enumerate(checked.entries):
            write_file(out / f"manifest.{i}.json", entry.manifest.raw)
        for h, policy in sorted(checked.policies.items()):
            write_file(out / "policies" / h, policy)
        write_file(out / "latest-transition", checked.export.latest_pointer)
        matches = checked.active.raw == doc.raw
        result = {
            "ok": matches,
            "generation": checked.export.generation,
            "transition_hash": checked.reply.transition_hash.hex(),
            "coordinator_policy_hash": checked.claims.policy_hash.hex(),
            "manifests": len(checked.entries),
            "active_manifest_hash": checked.active.hash.hex(),
            "local_manifest_hash": doc.hash.hex(),
            "directory": str(out),
        }
        if not matches:
            result["code"] = "verify.manifest_mismatch"
        text = (
            f"the Coordinator is attested (policy {checked.claims.policy_hash.hex()[:16]}…) at generation "
            f"{checked.export.generation}; {len(checked.entries)} manifest(s) in a verified history; "
            f"wrote {out}\n"
            + (
                "the active manifest equals the local manifest"
                if matches
                else f"REJECTED: the active manifest {checked.active.hash.hex()[:16]}… differs from "
                f"{args.manifest} ({doc.hash.hex()[:16]}…)"
            )
        )
        emit(args, result, text)
        return EXIT_OK if matches else EXIT_REJECTED

    return run(args, "verify", body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="attest the Coordinator and verify its manifest history",
        description="Attest the Coordinator against the local manifest, check its whole history and write "
        "verify/. Exit 0 only if the active manifest equals the local one byte for byte.",
    )
    p.add_argument("-m", "--manifest", default="manifest.json", help="the manifest (default: %(default)s)")
    add_common(p)
    p.set_defaults(func=verify)
