"""Endpoints against a real nats-server: typed errors for hostile input, bounded concurrency, discovery,
readiness and metrics."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.client import Client

from contrast import subjects
from contrast.errors import ContrastError
from contrast.runtime import RunningService, RuntimeConfig, request, serve
from contrast.runtime.endpoint import ERROR_CODE_HEADER
from contrast.wire.v1 import ErrorReply, ReadinessReply, ReadinessRequest, decoder, encode
from tests.runtime.rt_services import (
    ECHO,
    ECHO_SERVICE,
    FRONT,
    FRONT_SERVICE,
    WORKER_SERVICE,
    Echo,
    EchoReply,
    Job,
)


def config(url: str, replica: str, **kw: object) -> RuntimeConfig:
    return RuntimeConfig(nats_urls=(url,), replica=replica, shutdown_timeout=5.0, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def echo(nats_url: str) -> AsyncIterator[RunningService]:
    async with serve(ECHO_SERVICE, config(nats_url, "echo-1", max_concurrency=256)) as running:
        yield running


async def raw(nc: Client, subject: str, payload: bytes) -> tuple[str | None, bytes]:
    reply = await nc.request(subject, payload, timeout=3.0)
    return (reply.headers or {}).get(ERROR_CODE_HEADER), reply.data


async def assert_alive(nc: Client) -> None:
    assert await request(nc, ECHO, Echo(text="still here"), EchoReply) == EchoReply(
        text="still here", replica="echo-1"
    )


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xc1\xff garbage \x00", "request.decode"),  # not msgpack at all
        (b"", "request.decode"),
        (b"x" * 1025, "request.too_large"),  # one byte over the bound; checked before decoding
        (b"\x00" * (512 * 1024), "request.too_large"),
        (msgspec.msgpack.encode({"text": 1}), "request.decode"),  # wrong type
        (msgspec.msgpack.encode({"text": "a", "admin": True}), "request.decode"),  # unknown field
        (msgspec.msgpack.encode({}), "request.decode"),  # missing field
        (encode(Echo(text="a")) + b"\x00", "request.decode"),  # trailing bytes
        (encode(Job(job_id="j1")), "request.decode"),  # another subject's message type
        (encode(ErrorReply(code="state.x", message="m")), "request.decode"),
    ],
)
async def test_bad_input_gets_typed_error_and_service_survives(
    echo: RunningService, nc: Client, payload: bytes, code: str
) -> None:
    got, body = await raw(nc, ECHO, payload)
    assert got == code
    err = decoder(ErrorReply).decode(body)
    assert err.code == code
    await assert_alive(nc)


async def test_handler_exception_is_internal_error_without_details(echo: RunningService, nc: Client) -> None:
    with pytest.raises(ContrastError) as info:
        await request(nc, ECHO, Echo(text="boom"), EchoReply)
    assert info.value.code == "internal.error"
    assert "passwd" not in info.value.message
    assert "Traceback" not in info.value.message
    _, body = await raw(nc, ECHO, encode(Echo(text="boom")))
    err = decoder(ErrorReply).decode(body)
    assert len(err.correlation_id) == 32
    assert err.correlation_id in err.message
    await assert_alive(nc)
    stats = json.loads((await nc.request("$SRV.STATS.echo", b"", timeout=2)).data)
    endpoint = next(e for e in stats["endpoints"] if e["name"] == "echo")
    assert endpoint["num_errors"] >= 2
    assert endpoint["last_error"] == "internal.error"  # a code, never a repr


async def test_contrast_error_keeps_its_code(echo: RunningService, nc: Client) -> None:
    with pytest.raises(ContrastError) as info:
        await request(nc, ECHO, Echo(text="policy"), EchoReply)
    assert info.value.code == "policy.debug_enabled"


async def test_handler_timeout_is_typed(echo: RunningService, nc: Client) -> None:
    with pytest.raises(ContrastError) as info:
        await request(nc, ECHO, Echo(text="slow", delay=3.0), EchoReply, timeout=4.0)
    assert info.value.code == "internal.timeout"
    await assert_alive(nc)


async def test_no_responder_is_state_unavailable(nc: Client) -> None:
    with pytest.raises(ContrastError) as info:
        await request(nc, "test.v1.nobody", Echo(text="x"), EchoReply, timeout=1.0)
    assert info.value.code == "state.unavailable"


async def test_200_concurrent_requests_take_about_one_handler_time(echo: RunningService, nc: Client) -> None:
    delay = 0.3
    started = time.monotonic()
    replies = await asyncio.gather(
        *(request(nc, ECHO, Echo(text=str(i), delay=delay), EchoReply, timeout=10) for i in range(200))
    )
    elapsed = time.monotonic() - started
    assert sorted(r.text for r in replies) == sorted(str(i) for i in range(200))
    assert elapsed < delay * 4, f"200 requests took {elapsed:.2f} s; serial would be {200 * delay} s"


async def test_concurrency_is_bounded(nats_url: str, nc: Client) -> None:
    async with serve(ECHO_SERVICE, config(nats_url, "echo-b", max_concurrency=4)):
        delay = 0.2
        started = time.monotonic()
        await asyncio.gather(*(request(nc, ECHO, Echo(text="x", delay=delay), EchoReply) for i in range(12)))
        elapsed = time.monotonic() - started
        assert elapsed >= 3 * delay * 0.9, "12 requests over 4 slots need at least 3 rounds"


async def test_trace_crosses_services(echo: RunningService, nats_url: str, nc: Client) -> None:
    async with serve(FRONT_SERVICE, config(nats_url, "front-1")):
        reply = await request(nc, FRONT, Echo(text="x"), EchoReply)
        assert reply == EchoReply(text="front:x", replica="front-1")


async def test_srv_ping_finds_every_replica(nats_url: str, nc: Client) -> None:
    async with (
        serve(ECHO_SERVICE, config(nats_url, "p1")) as a,
        serve(ECHO_SERVICE, config(nats_url, "p2")) as b,
        serve(WORKER_SERVICE, config(nats_url, "w1")) as w,
    ):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.PING", b"", reply=inbox)
        seen: dict[str, dict[str, object]] = {}
        mine = {a.instance_id, b.instance_id, w.instance_id}
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not mine <= set(seen):
            try:
                msg = await sub.next_msg(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            ping = json.loads(msg.data)
            seen[ping["id"]] = ping
        await sub.unsubscribe()
        assert mine <= set(seen)
        assert {seen[i]["type"] for i in mine} == {"io.nats.micro.v1.ping_response"}
        assert {(seen[i]["name"], seen[i]["version"]) for i in mine} == {
            ("echo", "1.0.0"),
            ("worker", "1.0.0"),
        }
        info = json.loads((await nc.request(f"$SRV.INFO.echo.{a.instance_id}", b"", timeout=2)).data)
        assert {e["subject"] for e in info["endpoints"]} == {ECHO, subjects.health("echo")}
        assert info["metadata"]["replica"] == "p1"


async def test_readiness_endpoint_and_metric(nats_url: str, nc: Client) -> None:
    async with serve(ECHO_SERVICE, config(nats_url, "echo-1", metrics_port=0)) as echo:
        await check_readiness(echo, nc)


async def check_readiness(echo: RunningService, nc: Client) -> None:
    reply = await nc.request(subjects.health("echo"), encode(ReadinessRequest()), timeout=2)
    ready = decoder(ReadinessReply).decode(reply.data)
    assert ready.ready
    assert ready.service == "echo"
    assert ready.replica == "echo-1"
    assert {c.name for c in ready.checks} >= {"nats_connected", "subscribed", "workers_running"}
    assert echo.metrics_port
    url = f"http://127.0.0.1:{echo.metrics_port}/metrics"
    body = (await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())).decode()
    assert "contrast_ready 1.0" in body
    assert 'contrast_requests_total{code="ok",endpoint="ready"}' in body
    assert "contrast_verification_seconds_count 0.0" in body
    readyz = f"http://127.0.0.1:{echo.metrics_port}/readyz"
    status = await asyncio.to_thread(lambda: urllib.request.urlopen(readyz).status)
    assert status == 200


async def test_failing_ready_check_reports_not_ready(nats_url: str, nc: Client) -> None:
    from contrast.errors import StateError
    from contrast.runtime import Handlers, Runtime, Service

    async def not_loaded() -> None:
        raise StateError("roots_missing", "pinned roots not loaded")

    async def build(rt: Runtime) -> Handlers:
        return Handlers(ready_checks={"roots": not_loaded})

    svc = Service(name="notready", version="0.0.1", build=build)
    async with serve(svc, config(nats_url, "n1", metrics_port=0)) as running:
        ready = await running.readiness()
        assert not ready.ready
        roots = next(c for c in ready.checks if c.name == "roots")
        assert not roots.ok
        assert roots.detail.startswith("state.roots_missing")
        # Kubernetes probes read the same verdict over HTTP: 503 while not ready, liveness still 200.
        base = f"http://127.0.0.1:{running.metrics_port}"
        with pytest.raises(urllib.error.HTTPError) as e:
            await asyncio.to_thread(lambda: urllib.request.urlopen(f"{base}/readyz"))
        assert e.value.code == 503
        assert await asyncio.to_thread(lambda: urllib.request.urlopen(f"{base}/livez").status) == 200
