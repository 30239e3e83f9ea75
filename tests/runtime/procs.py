"""Run test services as real processes (for SIGTERM/SIGKILL tests)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from nats.aio.client import Client

from contrast import subjects
from contrast.wire.v1 import ReadinessReply, ReadinessRequest, decoder, encode

HERE = Path(__file__).parent


def spawn(kind: str, nats_url: str, replica: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "rt_services.py"),
            kind,
            "--nats",
            nats_url,
            "--replica",
            replica,
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_ready(
    nc: Client, service: str, replica: str, proc: subprocess.Popen[bytes], timeout: float = 15
) -> None:
    """Poll the readiness endpoint until ``replica`` answers ready (any replica may answer; retry)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{service}/{replica} exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            reply = await nc.request(subjects.health(service), encode(ReadinessRequest()), timeout=0.5)
            ready = decoder(ReadinessReply).decode(reply.data)
            if ready.ready and ready.replica == replica:
                return
        except Exception:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{service}/{replica} not ready within {timeout} s")
