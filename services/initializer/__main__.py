"""``python -m contrast.initializer``: attest this pod and write its credentials (an init container).

Configuration (flags, each defaulting to an environment variable):

- ``--nats`` / ``CONTRAST_NATS_URL``; ``CONTRAST_NATS_USER`` / ``CONTRAST_NATS_PASSWORD``: the NATS user of
  the pod's namespace, whose name is the pod's source (without them the server's default initializer user);
- ``--coordinator-policy-hashes`` / ``CONTRAST_COORDINATOR_POLICY_HASHES`` (required): the Coordinator policy
  hashes per role (``ca:<hash>,verifier:<hash>``) whose signed answers are believed: a bundle only from a
  ``ca`` policy, a rejection only from a ``verifier`` policy;
- ``--coordinator-root`` / ``CONTRAST_COORDINATOR_ROOT_CA_SHA256`` (optional): SHA-256 of the Coordinator's
  root CA; a bundle under another root is refused (``policy.coordinator_root_mismatch``);
- ``CONTRAST_PEER_TDX_TCB_STATUSES`` (optional): TDX TCB statuses besides ``UpToDate`` accepted for the
  Coordinator. ``contrast generate`` writes all three into the pod's measured policy
  (:mod:`contrast.coordinator.pins`);
- ``--root`` / ``CONTRAST_INITIALIZER_ROOT`` (default ``/contrast``): where the files go;
- ``--deadline`` / ``CONTRAST_INITIALIZER_DEADLINE`` (seconds, default 300): retry until then;
- the platform from ``CONTRAST_PLATFORM`` (:func:`contrast.platform.select.platform_from_env`).

Exit codes: 0 credentials written; 1 no certificate before the deadline (the reason is printed);
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from nats.aio.client import Client

from contrast import subjects
from contrast.collateral.provider import AttachingPlatform, CollateralProvider
from contrast.collateral.source import ReadOnly, Store
from contrast.coordinator.pins import POLICY_HASHES_ENV, ROOT_ENV, TDX_STATUSES_ENV, CoordinatorPins
from contrast.initializer.client import AttestationFailed, Initializer, InitializerConfig
from contrast.initializer.files import DEFAULT_ROOT, write_credentials
from contrast.platform.select import PlatformConfigError, platform_from_env
from contrast.runtime import configure_logging, get_logger
from contrast.runtime.connection import NatsCredentials, connect
from contrast.runtime.kv import NatsKeyValue
from contrast.runtime.tracing import build_tracer_provider, use_tracer

_log = get_logger("contrast.initializer")


def _parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m contrast.initializer", description=__doc__.split("\n")[0])
    p.add_argument("--nats", default=env.get("CONTRAST_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--coordinator-policy-hashes", default=env.get(POLICY_HASHES_ENV, ""))
    p.add_argument("--coordinator-root", default=env.get(ROOT_ENV, ""))
    p.add_argument("--root", default=env.get("CONTRAST_INITIALIZER_ROOT", str(DEFAULT_ROOT)))
    p.add_argument("--deadline", type=float, default=float(env.get("CONTRAST_INITIALIZER_DEADLINE", "300")))
    p.add_argument("--replica", default=env.get("CONTRAST_REPLICA", "initializer"))
    return p


async def run(args: argparse.Namespace) -> int:
    try:
        pins = CoordinatorPins.parse(
            args.coordinator_policy_hashes, args.coordinator_root, os.environ.get(TDX_STATUSES_ENV, "")
        )
        config = InitializerConfig(pins=pins, deadline=args.deadline)
        credentials = NatsCredentials.from_env()
        platform = await platform_from_env()
    except (ValueError, PlatformConfigError) as e:
        print(f"initializer: configuration error: {e}", file=sys.stderr)
        return 2
    urls = [u.strip() for u in str(args.nats).split(",") if u.strip()]
    source = credentials.user if credentials is not None else subjects.DEFAULT_SOURCE
    try:
        async with asyncio.timeout(args.deadline):
            nc = await connect(
                urls, name=f"initializer/{args.replica}", credentials=credentials, identity=source
            )
    except (TimeoutError, OSError) as e:
        print(f"initializer: cannot reach NATS: {type(e).__name__}", file=sys.stderr)
        return 1
    try:
        collateral = CollateralProvider.build(await _collateral_cache(nc))
        attaching = AttachingPlatform(platform, collateral)
        creds = await Initializer(
            nc=nc, platform=attaching, config=config, collateral=collateral, source=source
        ).attest()
        paths = await asyncio.to_thread(write_credentials, Path(args.root), creds.tls_key, creds.bundle)
    except AttestationFailed as e:
        print(f"initializer: {e}", file=sys.stderr)
        _log.error("attestation_failed", code=e.last.code, attempts=e.attempts)
        return 1
    finally:
        await nc.close()
    _log.info("credentials_written", files=[str(p) for p in paths], attempts=creds.attempts)
    return 0


async def _collateral_cache(nc: Client) -> Store | None:
    """The Coordinator's shared collateral cache (public data, re-verified on use), read-only, if it can be
    bound; what this pod fetches itself stays in its own memory."""
    try:
        return ReadOnly(NatsKeyValue(await nc.jetstream().key_value(subjects.COLLATERAL.bucket)))
    except Exception:  # no bucket yet, or no permission: this pod fetches for itself
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging("initializer", args.replica)
    # OTEL_* as for the services: the attestation's trace starts here (service contrast-initializer).
    provider = build_tracer_provider("initializer", args.replica)
    try:
        with use_tracer(provider.get_tracer("contrast.initializer")):
            return asyncio.run(run(args))
    finally:
        provider.shutdown()  # flushes the spans before the init container exits


if __name__ == "__main__":
    sys.exit(main())
