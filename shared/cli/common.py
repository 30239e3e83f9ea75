"""Helpers shared by the owners' commands (``set``, ``verify``, ``recover``, ``sign``, ``keygen``).

Every command has ``--nats URL`` (env ``CONTRAST_NATS_URL``; as the NATS user ``CONTRAST_NATS_USER`` with
``CONTRAST_NATS_PASSWORD`` when set), ``--json`` (one JSON object on stdout),
``--offline`` (the Coordinator's evidence is checked with the collateral it carries; nothing is fetched from
AMD KDS or Intel PCS, which the CLI otherwise does for a part that is missing or past its validity) and the
exit codes of :mod:`contrast.cli.exitcodes`: 0 done/accepted, 1 refused or rejected (the reason code and an
explanation are printed), 2 usage or I/O error, 3 unavailable (NATS unreachable, or no ready Coordinator: the
code is printed as for a refusal). Progress goes to stderr so that ``--json`` output stays clean.

A refusal names its code, the Coordinator's message and a hint (:func:`hint_for`, which may differ by command:
a hint never names a flag that the command lacks). A refusal that comes after a request may have changed the
Coordinator (:class:`MaybeApplied`) also says what may have changed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Collection, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from opentelemetry.trace import SpanKind, Status, StatusCode

from contrast.cli.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_USAGE, UsageError
from contrast.collateral.fetch import OfflineFetcher
from contrast.collateral.provider import CollateralProvider
from contrast.coordinator.manifest_format import Manifest
from contrast.errors import ContrastError, StateError
from contrast.evidence.verifier import Evidence
from contrast.runtime.client import request
from contrast.runtime.connection import NatsCredentials, client_options
from contrast.runtime.tracing import build_tracer_provider, current_tracer, use_tracer

DEFAULT_NATS = "nats://127.0.0.1:4222"
NATS_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
MAX_INPUT_FILE = 4 << 20
ROOT_CA_FILE = "coordinator-root-ca.pem"
MESH_CA_FILE = "mesh-ca.pem"
SEED_SHARES_FILE = "seed-shares.json"

# Codes that mean "no (ready) replica right now": the CLI waits and retries until its deadline.
RETRYABLE: frozenset[str] = frozenset(
    {"state.unavailable", "state.replica_stale", "state.not_ready", "internal.timeout"}
)
# Codes that mean "no answer from a ready Coordinator": exit code 3 (EXIT_UNAVAILABLE), not a refusal.
UNAVAILABLE: frozenset[str] = frozenset({"state.unreachable", "state.unavailable", "state.recovery_needed"})

Req = TypeVar("Req", bound=msgspec.Struct)
Resp = TypeVar("Resp", bound=msgspec.Struct)

# Explanations printed under a refusal, by code: what it means for the owner and what to do. These name no
# flag that only some commands have; COMMAND_HINTS holds the ones that do, by (command, code).
HINTS: dict[str, str] = {
    "auth.signature_required": "updates need a workload-owner signature",
    "auth.not_authorized": "not signed by a workload owner of the active manifest for this transition",
    "auth.immutable": "the active manifest lists no workload owners; the deployment can never be updated",
    "state.stale": "the Coordinator's history moved on since the update was prepared; sign it again",
    "request.seedshare_owners_changed": "SeedshareOwnerPubKeys can never change after the first set",
    "request.policy_missing": "pass one policy file for every policy hash in the manifest",
    "request.invalid_manifest": "fix the manifest at the paths shown",
    "state.uninitialized": "no manifest has been set yet: run `contrast set` first",
    "state.not_stale": "recovery is only needed when the Coordinator is stale",
    "state.unreachable": "check the NATS URL (--nats, env CONTRAST_NATS_URL) and that the server runs",
    "state.unavailable": "no ready Coordinator replica answered in time: is the manifest service running?",
    "state.recovery_needed": "no Coordinator replica is ready: a seed-share owner runs `contrast recover` "
    "(a replica that is just starting recovers from a ready peer by itself: then try again)",
    "auth.wrong_seed": "this seed share belongs to another deployment (or the store was replaced)",
    "auth.not_seedshare_owner": "the key that signed is not a seed-share owner of the active manifest",
    "state.recovery_head_changed": "the store changed during recovery; nothing was adopted: run it again",
    "policy.recovery_head_mismatch": "the request names another head than the challenge; run recover again",
    "verify.rollback": "the Coordinator serves an older history than you verified: its store was rolled back",
    "verify.history_forked": "the Coordinator serves a history that differs from the one you verified",
    "verify.root_changed": "the Coordinator has another root CA than you verified: another deployment",
    "verify.history_lost": "the Coordinator lost the history you know of: its store was wiped or replaced. "
    "Restore the store and let a seed-share owner run `contrast recover`; a `contrast set` would start "
    "another deployment with a new root CA",
}
COMMAND_HINTS: dict[tuple[str, str], str] = {
    ("set", "auth.signature_required"): "updates need a workload-owner signature (--workload-owner-key, "
    "--signature)",
    ("set", "verify.history_lost"): "the Coordinator lost the history you know of: its store was wiped or "
    "replaced. Restore the store and let a seed-share owner run `contrast recover`; to start another "
    "deployment knowingly, pass --accept-new-root (no existing file is overwritten)",
    (
        "sign",
        "state.uninitialized",
    ): "the Coordinator has no manifest history, so there is no update to sign; "
    "if it had one, its store was wiped or replaced: `contrast verify` names that",
    ("sign", "auth.bad_signature"): "sign the Message of the --request file (ECDSA P-384 with SHA-384, DER) "
    "with a workload-owner key of the active manifest",
    ("recover", "state.peer_ready"): "a ready Coordinator replica exists; the stale one recovers from it "
    "(or pass --force)",
    ("recover", "verify.root_changed"): "this seed share derives another root CA than the trusted state "
    "records: use the share of the deployment you verified, or the trusted state (--state) of this share's",
    ("verify", "verify.root_changed"): "a new root CA: a fresh deployment; accept it only knowingly "
    "(--accept-new-root)",
    (
        "verify",
        "verify.unapproved_history",
    ): "an earlier manifest is not among --approved: review the history",
}


def hint_for(what: str, code: str) -> str:
    """The hint printed under a refusal of ``code`` by ``contrast <what>``."""
    return COMMAND_HINTS.get((what, code), HINTS.get(code, ""))


class MaybeApplied(Exception):
    """A refusal after the request reached the Coordinator, which may have acted on it.

    ``changed`` says what may have changed, in words the owner can act on; it is printed with the refusal.
    """

    def __init__(self, error: ContrastError, changed: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.changed = changed


def add_common(parser: argparse.ArgumentParser, *, nats_arg: bool = True) -> None:
    if nats_arg:
        parser.add_argument(
            "--nats",
            default=os.environ.get("CONTRAST_NATS_URL", DEFAULT_NATS),
            help="NATS URL of the Coordinator (env CONTRAST_NATS_URL; default %(default)s)",
        )
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="how long to wait for the Coordinator (seconds)"
        )
        parser.add_argument(
            "--offline",
            action="store_true",
            help="never fetch vendor collateral (AMD KDS, Intel PCS): check the Coordinator's evidence with "
            "the collateral it carries only",
        )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--workspace", default=".", help="directory for keys and output files (default: .)")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def collateral_provider(args: argparse.Namespace) -> CollateralProvider:
    """The CLI's collateral provider: a process-local cache, fetching over HTTPS unless ``--offline``."""
    return CollateralProvider.build(fetcher=OfflineFetcher() if getattr(args, "offline", False) else None)


async def with_collateral(provider: CollateralProvider, evidence: Evidence, manifest: Manifest) -> Evidence:
    """The Coordinator's evidence, completed with what checking it against ``manifest`` needs."""
    return await provider.complete_for(evidence, manifest.ReferenceValues, now=now())


def read_file(path: str | Path, what: str, limit: int = MAX_INPUT_FILE) -> bytes:
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise UsageError(f"cannot read {what} {p}: {e.strerror}") from e
    if len(data) > limit:
        raise UsageError(f"{what} {p} is larger than {limit} bytes")
    return data


def _temporary(path: Path, data: bytes, mode: int, *, durable: bool = False) -> Path:
    """``data`` in a new temporary file next to ``path`` (``durable``: on disk before this returns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    return tmp


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    try:
        os.replace(_temporary(path, data, mode), path)  # atomic: a reader never sees half a file
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from e


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Write ``path`` unless a file of that name exists (atomically: never half a file); False if one does."""
    try:
        tmp = _temporary(path, data, mode, durable=True)
        try:
            os.link(tmp, path)  # unlike a rename, a link never replaces an existing file
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from e
    return True


def progress(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True), flush=True)
    else:
        print(text, flush=True)


def refuse(args: argparse.Namespace, error: ContrastError, *, what: str, changed: str = "") -> int:
    """Explain a refusal (code, message, what may have changed, hint); return exit code 1 (3: unavailable)."""
    hint = hint_for(what, error.code)
    unavailable = error.code in UNAVAILABLE
    if args.json:
        out: dict[str, Any] = {"ok": False, "code": error.code, "message": error.message, "hint": hint}
        if changed:
            out["changed"] = changed
        print(json.dumps(out, indent=2), flush=True)
    else:
        verdict = "unavailable" if unavailable else "refused"
        print(f"contrast {what}: {verdict}: {error.code}: {error.message}", file=sys.stderr)
        for line in error.message.split("; ") if error.code == "request.invalid_manifest" else ():
            print(f"  {line}", file=sys.stderr)
        if changed:
            print(f"  CHANGED: {changed}", file=sys.stderr)
        if hint:
            print(f"  hint: {hint}", file=sys.stderr)
    return EXIT_UNAVAILABLE if unavailable else EXIT_REJECTED


async def _traced(what: str, body: Callable[[], Coroutine[Any, Any, int]]) -> int:
    with current_tracer().start_as_current_span(f"contrast {what}", kind=SpanKind.INTERNAL) as span:
        code = await body()
        span.set_attribute("contrast.exit_code", code)
        if code != EXIT_OK:
            span.set_status(Status(StatusCode.ERROR, f"exit code {code}"))
        return code


def run(args: argparse.Namespace, what: str, body: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run an async command body; map errors to exit codes and messages.

    The command is one trace (service ``contrast-cli``, exported as ``OTEL_*`` says): its requests to the
    Coordinator are child spans, which the manifest service's spans continue.
    """
    provider = build_tracer_provider("cli", os.environ.get("CONTRAST_REPLICA") or socket.gethostname())
    try:
        with use_tracer(provider.get_tracer("contrast.cli")):
            return asyncio.run(_traced(what, body))
    except UsageError as e:
        if args.json:
            print(json.dumps({"ok": False, "code": "usage", "message": str(e)}), flush=True)
        else:
            print(f"contrast {what}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MaybeApplied as e:
        return refuse(args, e.error, what=what, changed=e.changed)
    except ContrastError as e:
        return refuse(args, e, what=what)
    except nats.errors.Error as e:  # the connection broke mid-command (connect() reports its own failures)
        lost = StateError("unreachable", f"lost the connection to NATS at {args.nats}: {_describe(e)}")
        return refuse(args, lost, what=what)
    finally:
        provider.shutdown()  # flush the command's spans before the process exits


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, socket.gaierror):  # its errno is a resolver code (EAI_*), not one os.strerror knows
        return f"cannot resolve the host name ({e.strerror})"
    if isinstance(e, OSError) and e.errno is not None:
        return os.strerror(e.errno).lower()
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def check_nats_url(url: str) -> None:
    """A ``--nats`` value that cannot name a server is a usage error, not an unreachable server."""
    for server in url.split(","):
        try:
            parsed = urllib.parse.urlsplit(server.strip() if "://" in server else f"nats://{server.strip()}")
            parsed.port  # noqa: B018 - raises for a port out of range or not a number
        except ValueError as e:
            raise UsageError(f"--nats {url!r} is not a NATS URL: {e}") from e
        if parsed.scheme not in NATS_SCHEMES or not parsed.hostname:
            raise UsageError(f"--nats {url!r} is not a NATS URL (nats://HOST:PORT, or tls, ws, wss)")


async def connect(args: argparse.Namespace) -> Client:
    """A NATS connection, or ``state.unreachable`` naming why there is none."""
    check_nats_url(args.nats)
    errors: list[Exception] = []

    async def quiet(e: Exception) -> None:
        # nats-py's default logs every failed attempt with a traceback; the CLI reports the last one, once.
        errors.append(e)

    try:
        credentials = NatsCredentials.from_env()
    except ValueError as e:
        raise UsageError(str(e)) from e
    try:
        return await nats.connect(
            args.nats,
            connect_timeout=5,
            max_reconnect_attempts=2,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            name="contrast-cli",
            error_cb=quiet,
            **client_options(credentials),
        )
    except Exception as e:  # nats-py raises several unrelated types for "cannot connect"
        cause = errors[-1] if errors else e
        raise StateError("unreachable", f"cannot connect to NATS at {args.nats}: {_describe(cause)}") from e


def _maybe_delivered(error: ContrastError) -> bool:
    """Whether a request may have been handled although no answer came: it timed out in the handler, or
    reached a subscriber and got no reply (``contrast.runtime.client.request`` raises ``state.unavailable``
    from a NATS timeout; "no responders" means it reached nobody)."""
    if error.code == "internal.timeout":
        return True
    return error.code == "state.unavailable" and isinstance(error.__cause__, nats.errors.TimeoutError)


async def patient_request(
    args: argparse.Namespace,
    nc: Client,
    subject: str,
    make: Callable[[], Req],
    response_type: type[Resp],
    *,
    retry_on: Collection[str] = RETRYABLE,
    unanswered: str = "",
) -> tuple[Req, Resp]:
    """Send ``make()`` until a replica answers (retrying while none is ready), showing progress.

    ``make`` builds a fresh request (with a fresh nonce) for every attempt. Returns the request sent and the
    answer. Raises the last error once ``--timeout`` has passed, and any non-retryable error at once.
    ``unanswered`` is for a request that is not idempotent (``set``): what may have changed if it reached a
    replica but no answer came. Such a request is not sent again; :class:`MaybeApplied` says so.
    """
    deadline = time.monotonic() + args.timeout
    delay, announced = 0.25, ""
    while True:
        req = make()
        try:
            return req, await request(nc, subject, req, response_type, timeout=min(30.0, args.timeout))
        except ContrastError as e:
            if unanswered and _maybe_delivered(e):
                raise MaybeApplied(e, unanswered) from e
            if e.code not in retry_on:
                raise
            if time.monotonic() + delay > deadline:
                raise StateError(
                    "unavailable",
                    f"the Coordinator did not become ready within {args.timeout:g} s ({e.code})",
                ) from e
            if e.code != announced:
                progress(args, f"waiting for the Coordinator ({e.code}: {e.message})")
                announced = e.code
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 2.0)
