"""The owners' commands as traces in a real Jaeger: ``set``, ``verify`` and ``recover`` run as a user runs
them, the manifest replica as its own process, all exporting through ``OTEL_EXPORTER_OTLP_ENDPOINT``; each
command is one trace whose requests the manifest service's spans continue, refusals included."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from contrast import subjects
from contrast.runtime.natsserver import NatsServer
from tests.cli.owner.owner_cli import POLICY_FILES, Cli, write_manifest
from tests.services.manifest.mfs_helpers import start_replica_process
from tests.traces import child_of, command_trace, has_error, one, root, started_jaeger


async def test_set_verify_and_recover_are_traced_into_the_manifest_service(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with started_jaeger(tmp_path / "jaeger") as j:
        # The CLI and the replica process inherit the environment.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", j.otlp_endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        proc = start_replica_process(emulator_dir, private_nats.url, "m1", tmp_path)
        try:
            write_manifest(workspace, emulator_dir, keys)
            rc, _, err = await asyncio.to_thread(cli, "set", "-m", "manifest.json", *POLICY_FILES)
            assert rc == 0, err
            rc, _, err = await asyncio.to_thread(cli, "verify", "-m", "manifest.json")
            assert rc == 0, err
            rc, out, _ = await asyncio.to_thread(cli, "recover", "-m", "manifest.json")
            assert (rc, out["code"]) == (1, "state.not_stale")  # a ready Coordinator needs no recovery
        finally:
            proc.terminate()  # a graceful stop flushes the replica's spans

        for name, subject in (
            ("contrast set", subjects.USER_MANIFEST_SET),
            ("contrast verify", subjects.USER_MANIFEST_GET),
            ("contrast recover", subjects.USER_RECOVER),
        ):
            spans = command_trace(j, name, min_spans=3)
            top = root(spans)
            assert top.service == "contrast-cli"
            ask = one(spans, name=subject, kind="client")
            answer = one(spans, name=subject, kind="server")
            assert child_of(ask, top)
            assert child_of(answer, ask)
            assert (answer.service, answer.replica) == ("contrast-manifest", "m1")
            refused = name == "contrast recover"
            assert has_error(answer) is refused
            assert has_error(top) is refused  # the command's exit code 1 is on its root span
            if refused:
                assert answer.tags["contrast.error.code"] == "state.not_stale"
