"""Process lifecycle: SIGTERM under load answers every accepted request and exits 0; ``contrast run`` stops
everything on Ctrl-C; ``python -m``-style mains have --help."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from nats.aio.client import Client

from contrast.runtime import request
from tests.runtime.procs import HERE, spawn, wait_ready
from tests.runtime.rt_services import ECHO, Echo, EchoReply


async def test_sigterm_during_load_answers_every_accepted_request(nats_url: str, nc: Client) -> None:
    proc = spawn("echo", nats_url, "term-1", "--max-concurrency", "32")
    try:
        await wait_ready(nc, "echo", "term-1", proc)
        # 100 requests of 0.5 s over 32 slots: some run, the rest wait in the replica's queue when TERM comes.
        calls = [
            asyncio.create_task(request(nc, ECHO, Echo(text=str(i), delay=0.5), EchoReply, timeout=15))
            for i in range(100)
        ]
        await nc.flush()
        await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        replies = await asyncio.gather(*calls)
        assert sorted(int(r.text) for r in replies) == list(range(100))
        assert {r.replica for r in replies} == {"term-1"}
        code = await asyncio.to_thread(proc.wait, 15)
        assert code == 0
        assert proc.stderr is not None
        events = [
            json.loads(line) for line in proc.stderr.read().decode().splitlines() if line.startswith("{")
        ]
        stopped = [e for e in events if e["event"] == "service_stopped"]
        assert stopped
        assert stopped[0]["drained"] is True
        assert all(e["service"] == "echo" and e["replica"] == "term-1" for e in events if "service" in e)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_service_main_has_help() -> None:
    out = subprocess.run(
        [sys.executable, str(HERE / "rt_services.py"), "echo", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    for flag in (
        "--nats",
        "--replica",
        "--metrics-port",
        "--max-concurrency",
        "--shutdown-timeout",
        "CONTRAST_NATS_URL",
    ):
        assert flag in out.stdout


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_contrast_run_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    # A runner whose table holds the test echo service (2 replicas), launched like `make run`.
    (tmp_path / "rt_echo.py").write_text(
        "import sys\nfrom rt_services import ECHO_SERVICE\nfrom contrast.runtime import main\n"
        "if __name__ == '__main__':\n    sys.exit(main(ECHO_SERVICE))\n"
    )
    code = (
        "import sys\n"
        "import contrast.cli.run as r\n"
        "r.SERVICES = (r.RunnableService('echo', replicas=2, module_name='rt_echo'),\n"
        "              r.RunnableService('nothere'))\n"
        "from contrast.cli.main import main\n"
        "sys.exit(main(['run']))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{tmp_path}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "ready; press Ctrl-C" in line or not line:
            break
    text = "".join(lines)
    pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
    assert re.search(r"NATS\s+nats://127\.0\.0\.1:\d+", text), text
    assert "nothere" in text
    assert "not built yet" in text
    assert len(pids) == 3, text  # nats-server + 2 echo replicas
    assert all(_alive(p) for p in pids), text
    assert text.count("metrics http://127.0.0.1:") == 2
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "NATS stopped" in rest
    assert not [p for p in pids if _alive(p)]
