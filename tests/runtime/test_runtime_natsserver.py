"""The embedded nats-server launcher: binary lookup order, start/stop, a 3-node cluster, and testcontainers
only where a Docker engine answers."""

from __future__ import annotations

import asyncio
import os
import stat
import sysconfig
from pathlib import Path

import nats
import pytest

from contrast.runtime import natsserver
from contrast.runtime.natsserver import NatsServerNotFound, embedded_nats, find_nats_server, nats_cluster


def _fake_binary(path: Path) -> str:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_lookup_prefers_venv_scripts_then_env_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts, env_dir, path_dir = tmp_path / "scripts", tmp_path / "env", tmp_path / "path"
    for d in (scripts, env_dir, path_dir):
        d.mkdir()
    in_scripts = _fake_binary(scripts / "nats-server")
    in_env = _fake_binary(env_dir / "nats-server")
    in_path = _fake_binary(path_dir / "nats-server")
    monkeypatch.setattr(natsserver.sysconfig, "get_path", lambda name: str(scripts))
    monkeypatch.setenv("NATS_SERVER_BIN", in_env)
    monkeypatch.setenv("PATH", str(path_dir))
    assert find_nats_server() == in_scripts
    os.remove(in_scripts)
    assert find_nats_server() == in_env
    monkeypatch.delenv("NATS_SERVER_BIN")
    assert find_nats_server() == in_path
    os.remove(in_path)
    with pytest.raises(NatsServerNotFound):
        find_nats_server()


def test_the_wheel_binary_is_found_without_an_activated_venv() -> None:
    assert find_nats_server() == str(Path(sysconfig.get_path("scripts")) / "nats-server")


async def test_embedded_server_starts_with_jetstream_and_stops_cleanly() -> None:
    with embedded_nats() as server:
        store = server.store_dir
        nc = await nats.connect(server.url)
        info = await nc.jetstream().account_info()
        assert info.limits is not None
        await nc.drain()
        pid = server.pid
    assert not server.running()
    assert not store.exists()
    assert server.process.returncode is not None  # stopped and reaped (waited for)
    assert pid == server.process.pid


async def test_three_node_cluster_replicates_and_survives_a_node_kill() -> None:
    with nats_cluster(3) as servers:
        nc = await nats.connect([s.url for s in servers], max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="r3test", replicas=3, history=1)
        for _ in range(100):  # the bucket's stream answers writes once its replicas elected a leader
            info = await js.stream_info("KV_r3test")
            if info.cluster is not None and info.cluster.leader:
                break
            await asyncio.sleep(0.1)
        await kv.put("k", b"v1")
        servers[0].kill()
        # R3 keeps serving with 2 of 3 nodes (a new leader may need a moment, for the write and for the read)
        value = None
        for _ in range(50):
            try:
                await kv.put("k", b"v2")
                value = (await kv.get("k")).value
                break
            except Exception:
                await asyncio.sleep(0.2)
        assert value == b"v2"
        await nc.close()


def test_testcontainers_nats_only_with_a_docker_engine() -> None:
    docker = pytest.importorskip("docker")
    try:
        docker.from_env().ping()
    except Exception as e:
        pytest.skip(
            f"no Docker engine reachable: {type(e).__name__}; tests use the nats-server binary instead"
        )
    from testcontainers.community.nats import NatsContainer  # pragma: no cover (needs Docker)

    with NatsContainer() as container:  # pragma: no cover
        assert container.nats_uri().startswith("nats://")


def test_free_ports_are_distinct_and_outside_the_ephemeral_range() -> None:
    # Outgoing connections draw local ports from the ephemeral range; a port handed out from there can be
    # taken by the next client connection before the server that was meant to have it binds it.
    floor = natsserver._ephemeral_floor()
    ports = [natsserver.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    if floor > natsserver._FREE_PORT_RANGE[0] + 1000:
        assert all(natsserver._FREE_PORT_RANGE[0] <= p < floor for p in ports)
