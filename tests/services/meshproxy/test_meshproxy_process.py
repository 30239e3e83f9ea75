"""``python -m contrast.meshproxy`` as a process: configured by environment (as ``generate`` configures it),
not ready until the initializer's files exist, metrics (valid for promtool) and health on the admin port, JSON
logs, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from contrast.cli.localrun.procs import http_get, spawn, wait_until
from contrast.runtime.natsserver import free_port
from contrast.testing.mesh import Generation
from tests.services.meshproxy.mesh_helpers import IO_TIMEOUT, App, plain_call, until
from tests.services.test_ops_metrics import promtool_check


async def test_sidecar_process(generation: Generation, app: App, tmp_path: Path) -> None:
    admin, listen = free_port(), free_port()
    env = {
        **os.environ,
        "CONTRAST_INGRESS_PROXY_CONFIG": "",
        "CONTRAST_ADMIN_PORT": str(admin),
        "CONTRAST_METRICS_ADDR": "127.0.0.1",
        "CONTRAST_MESH_TLS_DIR": str(tmp_path / "pod" / "tls-config"),
        "CONTRAST_MESH_REDIRECT": "none",
        "CONTRAST_MESH_FORWARD": f"8443@127.0.0.1:{listen}->127.0.0.1:{app.port}",
        "CONTRAST_MESH_RELOAD_INTERVAL": "0.1",
        "CONTRAST_REPLICA": "api-sidecar",
    }
    log = tmp_path / "sidecar.log"
    child = await spawn(
        "sidecar", [sys.executable, "-m", "contrast.meshproxy"], env=env, log_path=log, metrics_port=admin
    )
    try:
        assert await wait_until([child], "live", IO_TIMEOUT) == []
        ready = await http_get(admin, "/readyz")
        assert ready is not None
        assert ready[0] == 503  # no certificates yet: the pod stays closed
        generation.write_pod(tmp_path / "pod", ["api", "*"])
        assert await wait_until([child], "ready", IO_TIMEOUT) == []
        answer = await asyncio.to_thread(plain_call, listen, b"hello\n")
        assert b"app:" not in answer  # plaintext is refused
        await until(lambda: b'"outcome": "refused"' in log.read_bytes())
        metrics = await http_get(admin, "/metrics")
        assert metrics is not None
        text = metrics[1].decode()
        assert 'contrast_mesh_handshake_failures_total{direction="ingress",reason="not_tls"} 1.0' in text
        assert "contrast_mesh_certificate_expiry_timestamp_seconds" in text
        assert "contrast_ready 1.0" in text
        assert 'contrast_service_info{replica="api-sidecar",service="meshproxy",version="0.1.0"} 1.0' in text
        checked = promtool_check(text)  # as Prometheus reads it, like every service's /metrics
        assert checked.returncode == 0, checked.stdout + checked.stderr
        child.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(IO_TIMEOUT):
            assert await child.process.wait() == 0
    finally:
        if child.running():
            child.process.kill()
            await child.process.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert (
        events.index("certificates_unavailable")
        < events.index("sidecar_ready")
        < events.index("sidecar_stopped")
    )
    refused = next(line for line in lines if line["event"] == "mesh_connection")
    assert refused["service"] == "meshproxy"
    assert refused["replica"] == "api-sidecar"
    assert refused["reason"] == "not_tls"
    assert app.seen == []


async def test_configuration_errors_exit_2(tmp_path: Path) -> None:
    for name, value in [
        ("CONTRAST_EGRESS_PROXY_CONFIG", "api#10.0.0.1:80#api:80"),  # listen address outside 127.0.0.0/8
        ("CONTRAST_INGRESS_PROXY_CONFIG", "web#80#maybe"),
        ("CONTRAST_MESH_FORWARD", "8443@127.0.0.1:1->127.0.0.1:2"),  # forwards need --redirect none
    ]:
        child = await spawn(
            "sidecar",
            [sys.executable, "-m", "contrast.meshproxy"],
            env={**os.environ, name: value},
            log_path=tmp_path / f"{name}.log",
        )
        async with asyncio.timeout(IO_TIMEOUT):
            assert await child.process.wait() == 2, child.log_tail()
