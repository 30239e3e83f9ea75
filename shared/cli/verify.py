"""``contrast verify -m manifest.json``: attest the Coordinator, check its whole history, remember it.

1. The Coordinator's reply must carry fresh evidence that satisfies the *local* manifest: its reference values
   (which pin the vendor root, or the emulator's root fingerprint), a HOST_DATA / MR_CONFIG_ID that is a
   ``coordinator`` policy of the local manifest, and REPORT_DATA binding our nonce, the latest transition,
   both CA certificates and the reply (a replayed reply fails).
2. The history is checked without trusting the store: the signed ``latest`` pointer and every transition
   back to the first manifest, each re-hashed.
3. The history must extend the one this workspace verified last (the *trusted state*,
   ``verify/trusted-state.json`` or ``--state``; :mod:`contrast.cli.trusted_state`): the same root CA
   (``verify.root_changed`` unless ``--accept-new-root``), the same hashes at every recorded generation
   (``verify.history_forked``) and no lower generation (``verify.rollback``). This catches a store restored
   to a consistent earlier snapshot after every replica restarted, which no replica can tell from the past.
   A Coordinator without any history while the state records one lost it (``verify.history_lost``).
   No file is first use (reported as such); an unreadable or corrupt file is an error, never first use.
4. With ``--approved DIR``, every manifest of the history must be byte for byte a file of DIR, the local
   manifest, or one the trusted state records (``verify.unapproved_history`` names the generation): an
   operator who won the first ``set`` with its own manifest cannot hide it behind a later update.
5. The active manifest must equal the local file byte for byte (``verify.manifest_mismatch``).

Only when every step passed does :func:`record_verified`, the one writer of ``verify/``, write anything: under
the trusted state's lock it re-reads the state and re-checks the history against it (a concurrent run may have
recorded a newer head), writes ``coordinator-root-ca.pem``, ``mesh-ca.pem``, ``manifest.<i>.json`` (``0`` is
the first), ``policies/<sha256>`` and ``latest-transition`` (the signed pointer as served), and then the
trusted state (a temporary file, fsynced and renamed into place). A rejection of any kind leaves ``verify/``
and the state as they were. Exit 0 only if every step passed; 1 otherwise (the reason code is printed, in
text too); 2 for unusable input; 3 if no ready Coordinator answered.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contrast.cli.attested_history import CheckedHistory, fetch_history, load_manifest, pem
from contrast.cli.common import add_common, connect, emit, now, read_file, run, write_file
from contrast.cli.exitcodes import EXIT_OK, EXIT_REJECTED, UsageError
from contrast.cli.trusted_state import (
    Assessment,
    Continuity,
    TrustedState,
    assess,
    check_history_kept,
    observed_state,
)
from contrast.cli.trusted_state_file import load_state, locked, save_state
from contrast.collateral.provider import CollateralProvider
from contrast.errors import StateError
from contrast.evidence.verifier import EvidenceVerifier

VERIFY_DIR = "verify"
STATE_FILE = "trusted-state.json"
MAX_APPROVED_FILES = 10_000


def state_path(args: argparse.Namespace) -> Path:
    """The trusted state file: ``--state``, else ``WORKSPACE/verify/trusted-state.json`` (also recover's)."""
    return Path(args.state) if args.state else Path(args.workspace) / VERIFY_DIR / STATE_FILE


def load_approved(directory: str) -> dict[str, str]:
    """SHA-256 (hex) → file name of every regular, non-hidden file in ``directory`` (not recursive)."""
    d = Path(directory)
    if not d.is_dir():
        raise UsageError(f"--approved {d} is not a directory")
    try:
        files = sorted(p for p in d.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError as e:
        raise UsageError(f"cannot list --approved {d}: {e.strerror}") from e
    if len(files) > MAX_APPROVED_FILES:
        raise UsageError(f"--approved {d} holds more than {MAX_APPROVED_FILES} files")
    return {hashlib.sha256(read_file(p, "approved manifest")).hexdigest(): p.name for p in files}


def served_state(checked: CheckedHistory) -> TrustedState:
    return observed_state(
        root_ca_der=checked.reply.root_ca,  # the DER bytes that the Coordinator's evidence binds
        transitions=[e.transition_hash for e in checked.entries],
        manifests=[hashlib.sha256(e.manifest.raw).digest() for e in checked.entries],
        verified_at=now(),
    )


def write_outputs(out: Path, checked: CheckedHistory) -> None:
    write_file(out / "coordinator-root-ca.pem", pem(checked.root_ca))
    write_file(out / "mesh-ca.pem", pem(checked.mesh_ca))
    for i, entry in enumerate(checked.entries):
        write_file(out / f"manifest.{i}.json", entry.manifest.raw)
    for h, policy in sorted(checked.policies.items()):
        write_file(out / "policies" / h, policy)
    write_file(out / "latest-transition", checked.export.latest_pointer)


async def record_verified(
    out: Path,
    path: Path,
    checked: CheckedHistory,
    served: TrustedState,
    judge: Callable[[TrustedState | None], Assessment],
    *,
    timeout: float,
) -> tuple[TrustedState | None, Assessment]:
    """The one writer of ``verify/`` and the trusted state, called only once every check has passed.

    Under the state's lock, the state is read again and ``judge`` (the checks against it) runs again: another
    run may have recorded a newer history meanwhile, and a refusal now still writes nothing. Then the outputs
    and the state are written. Returns the state judged against and its assessment.
    """
    async with locked(path, timeout):
        recorded = await load_state(path)
        assessment = judge(recorded)
        await asyncio.to_thread(write_outputs, out, checked)
        await save_state(path, served)
    return recorded, assessment


def describe_state(
    path: Path, recorded: TrustedState | None, served: TrustedState, assessment: Assessment
) -> tuple[dict[str, Any], str]:
    c = assessment.continuity
    info: dict[str, Any] = {
        "path": str(path),
        "status": c.value,
        "recorded_generation": recorded.generation if recorded is not None else None,
    }
    if c is Continuity.FIRST_USE:
        text = (
            f"trusted state: FIRST USE, no {path} yet: this history is trusted on first use (and recorded if "
            "the active manifest matches); later runs refuse a rollback from it"
        )
    elif c is Continuity.NEW_ROOT_ACCEPTED:
        assert recorded is not None
        info["previous_root_ca_sha256"] = recorded.root_ca_sha256
        text = (
            f"WARNING: NEW ROOT CA ACCEPTED (--accept-new-root): root {served.root_ca_sha256} "
            f"replaces {recorded.root_ca_sha256}, whose history reached generation {recorded.generation}; "
            "its record is replaced once this verification succeeds"
        )
    elif c is Continuity.UNCHANGED:
        text = f"trusted state: the head is the one verified before (generation {served.generation})"
    else:
        assert recorded is not None
        text = (
            f"trusted state: the history extends the one verified before (generation {recorded.generation} → "
            f"{served.generation})"
        )
    return info, text


def verify(
    args: argparse.Namespace,
    *,
    verifier: EvidenceVerifier | None = None,
    provider: CollateralProvider | None = None,
) -> int:
    """The command; ``verifier`` and ``provider`` default to the pinned roots and the CLI's provider."""

    async def body() -> int:
        doc = load_manifest(args.manifest)
        approved: dict[str, str] | None = None
        if args.approved is not None:
            approved = await asyncio.to_thread(load_approved, args.approved)
            approved.setdefault(doc.hash.hex(), str(args.manifest))  # the manifest passed with -m is approved
        out = Path(args.workspace) / VERIFY_DIR
        path = state_path(args)
        # Read before the network round trip: a corrupt state fails before anything is fetched.
        recorded = await load_state(path)
        nc = await connect(args)
        try:
            checked = await fetch_history(args, nc, doc, verifier or EvidenceVerifier(), provider)
        except StateError as e:
            if e.code == "state.uninitialized":
                check_history_kept(recorded, path=path)
            raise
        finally:
            await nc.close()
        served = served_state(checked)
        approved_hashes = set(approved) if approved is not None else None

        def judge(state: TrustedState | None) -> Assessment:
            return assess(state, served, accept_new_root=args.accept_new_root, approved=approved_hashes)

        assessment = judge(recorded)
        matches = checked.active.raw == doc.raw
        if matches:
            recorded, assessment = await record_verified(
                out, path, checked, served, judge, timeout=args.timeout
            )
        state_info, state_text = describe_state(path, recorded, served, assessment)
        warnings: list[str] = []
        if assessment.continuity is Continuity.NEW_ROOT_ACCEPTED:
            warnings.append(state_text)
            state_text = "trusted state: a new root CA was accepted (--accept-new-root)"
        if assessment.unreviewed:
            gens = ", ".join(str(g) for g in assessment.unreviewed)
            review = f"review {out}/manifest.<generation - 1>.json, or " if matches else ""
            warnings.append(
                f"WARNING: generation(s) {gens} of this history were not compared with approved manifests "
                f"({review}pass --approved DIR)"
            )
        for warning in warnings:  # once, on stderr; the report on stdout does not repeat them
            print(f"contrast verify: {warning}", file=sys.stderr, flush=True)
        state_info["written"] = matches
        result: dict[str, Any] = {
            "ok": matches,
            "generation": checked.export.generation,
            "transition_hash": checked.reply.transition_hash.hex(),
            "coordinator_policy_hash": checked.claims.policy_hash.hex(),
            "manifests": len(checked.entries),
            "active_manifest_hash": checked.active.hash.hex(),
            "local_manifest_hash": doc.hash.hex(),
            "root_ca_sha256": served.root_ca_sha256,
            "directory": str(out),
            "written": matches,
            "trusted_state": state_info,
            "unreviewed_generations": list(assessment.unreviewed),
        }
        if approved is not None:
            result["approved"] = [approved.get(h, "recorded") for h in served.manifests]
        mismatch = (
            f"the active manifest {checked.active.hash.hex()[:16]}… differs from {args.manifest} "
            f"({doc.hash.hex()[:16]}…)"
        )
        if not matches:
            result["code"] = "verify.manifest_mismatch"
            result["message"] = mismatch
        text = (
            f"the Coordinator is attested (policy {checked.claims.policy_hash.hex()[:16]}…) at generation "
            f"{checked.export.generation}; {len(checked.entries)} manifest(s) in a verified history\n"
            f"{state_text}\n"
            + (
                f"every manifest of the history is approved (--approved {args.approved})\n"
                if approved is not None
                else ""
            )
            + (
                f"the active manifest equals the local manifest; wrote {out} and recorded {path}"
                if matches
                else f"REJECTED: verify.manifest_mismatch: {mismatch}; nothing was written ({out} and the "
                "trusted state are as they were)"
            )
        )
        emit(args, result, text)
        return EXIT_OK if matches else EXIT_REJECTED

    return run(args, "verify", body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="attest the Coordinator and verify its manifest history",
        description="Attest the Coordinator against the local manifest, check its whole history against the "
        "trusted state (the history this workspace verified last: it must be extended, never rolled back, "
        "forked or replaced by another root CA) and write verify/. Exit 0 only if the active manifest equals "
        "the local one byte for byte; only then is the trusted state updated.",
    )
    p.add_argument("-m", "--manifest", default="manifest.json", help="the manifest (default: %(default)s)")
    p.add_argument(
        "--state",
        metavar="PATH",
        help=f"the trusted state file (default: WORKSPACE/{VERIFY_DIR}/{STATE_FILE}); no file is first use, "
        "a corrupt one is an error",
    )
    p.add_argument(
        "--approved",
        metavar="DIR",
        help="refuse the history (verify.unapproved_history) unless every manifest in it is byte for byte a "
        "file in DIR, the -m manifest, or one the trusted state records",
    )
    p.add_argument(
        "--accept-new-root",
        action="store_true",
        help="accept a Coordinator root CA other than the recorded one (a new deployment or a wiped store) "
        "and start a new trusted state; without it that is refused (verify.root_changed)",
    )
    add_common(p)
    p.set_defaults(func=verify)
