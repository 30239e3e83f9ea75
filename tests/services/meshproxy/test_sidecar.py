"""The sidecar end to end in one process: plain-TCP applications, two sidecars, real TLS 1.3 between them.

Every refusal is checked where it matters: the application behind the ingress never sees the connection,
the egress client gets nothing back, and the handshake-failure counter names the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from contrast.cli.localrun.mtls import (
    TlsFiles,
    call,
    client_context,
    server_context,
    serving,
    write_unattested,
)
from contrast.meshproxy.proxy import Forward
from contrast.meshproxy.service import Redirect, SidecarConfig, serve
from contrast.runtime.metrics import Metrics
from contrast.testing.mesh import Generation, now
from tests.services.meshproxy.mesh_helpers import (
    IO_TIMEOUT,
    App,
    counter,
    egress_sidecar,
    ingress_sidecar,
    mesh,
    plain_call,
    until,
    wait_for_generation,
)

FAILURES = "contrast_mesh_handshake_failures_total"
CONNECTIONS = "contrast_mesh_connections_total"


def files(tls: Path) -> TlsFiles:
    return TlsFiles(tls / "certChain.pem", tls / "key.pem", tls / "mesh-ca.pem")


async def tls_call(
    port: int, client: TlsFiles | None, anchor: Path, *, maximum: ssl.TLSVersion | None = None
) -> tuple[bool, str]:
    ctx = client_context(client, anchor)
    if maximum is not None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = maximum
    return await asyncio.to_thread(call, ctx, port, "api")


# ---- through two sidecars --------------------------------------------------------------------------------


async def test_web_to_api_through_two_sidecars(generation: Generation, app: App, tmp_path: Path) -> None:
    api = generation.write_pod(tmp_path / "api", ["api", "*"])
    web = generation.write_pod(tmp_path / "web", ["web", "*"])
    m_api, m_web = Metrics(), Metrics()
    async with (
        ingress_sidecar(api, app.port, metrics=m_api) as (_, ingress),
        egress_sidecar(web, "api:8443", ("127.0.0.1", ingress), metrics=m_web) as (_, local),
    ):
        assert await asyncio.to_thread(plain_call, local, b"hello\n") == b"app:hello\n"
        # A half-close crosses both sidecars: the app answers only after the end of the request.
        assert await asyncio.to_thread(plain_call, local, b"to the end", half_close=True) == b"app:to the end"
        big = b"x" * 3_000_000 + b"\n"
        assert await asyncio.to_thread(plain_call, local, big) == b"app:" + big
    seen = app.wait_for(3)
    assert [s.data for s in seen] == [b"hello\n", b"to the end", big]
    assert all(s.ended == "eof" for s in seen)
    assert counter(m_api, CONNECTIONS, direction="ingress", rule="port-8443", outcome="ok") == 3
    assert counter(m_web, CONNECTIONS, direction="egress", rule="remote", outcome="ok") == 3
    assert counter(m_api, "contrast_mesh_bytes_total", direction="ingress", flow="from_peer") == len(
        b"hello\n" + b"to the end" + big
    )


# ---- ingress refusals --------------------------------------------------------------------------------------


@pytest.fixture
def api_tls(generation: Generation, tmp_path: Path) -> Path:
    return generation.write_pod(tmp_path / "api", ["api", "*"])


async def test_mtls_client_is_accepted(
    generation: Generation, app: App, api_tls: Path, tmp_path: Path
) -> None:
    """The positive control for the refusals below: a mesh client gets through to the app."""
    web = generation.write_pod(tmp_path / "web", ["web", "*"])
    async with ingress_sidecar(api_tls, app.port) as (_, port):
        ok, reply = await tls_call(port, files(web), api_tls / "mesh-ca.pem")
    assert ok, reply
    assert reply == "app:GET /emojis"
    assert [s.data for s in app.wait_for(1)] == [b"GET /emojis\n"]


async def test_plaintext_is_refused(app: App, api_tls: Path) -> None:
    metrics = Metrics()
    async with ingress_sidecar(api_tls, app.port, metrics=metrics) as (_, port):
        answer = await asyncio.to_thread(plain_call, port, b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
    assert b"app:" not in answer
    assert app.seen == []
    assert counter(metrics, FAILURES, direction="ingress", reason="not_tls") == 1
    assert counter(metrics, CONNECTIONS, direction="ingress", rule="port-8443", outcome="refused") == 1


def _no_certificate(gen: Generation, foreign: Generation, tmp: Path) -> TlsFiles | None:
    return None


def _foreign_ca(gen: Generation, foreign: Generation, tmp: Path) -> TlsFiles | None:
    """Another Coordinator's mesh certificate, with the same names."""
    return files(foreign.write_pod(tmp / "other", ["web", "*"]))


def _self_signed(gen: Generation, foreign: Generation, tmp: Path) -> TlsFiles | None:
    return write_unattested(tmp / "unattested", "web", other_ca=False)


def _expired(gen: Generation, foreign: Generation, tmp: Path) -> TlsFiles | None:
    issued = now() - dt.timedelta(days=3)
    return files(gen.write_pod(tmp / "expired", ["web", "*"], issued=issued, validity=dt.timedelta(days=1)))


def _mesh_client(gen: Generation, foreign: Generation, tmp: Path) -> TlsFiles | None:
    return files(gen.write_pod(tmp / "web", ["web", "*"]))


@pytest.mark.parametrize(
    ("client", "maximum", "reason"),
    [
        (_no_certificate, None, "no_client_certificate"),
        (_foreign_ca, None, "untrusted"),
        (_self_signed, None, "untrusted"),
        (_expired, None, "expired"),
        (_mesh_client, ssl.TLSVersion.TLSv1_2, "protocol_version"),  # a valid certificate, but TLS 1.2
    ],
    ids=["no-certificate", "foreign-ca", "self-signed", "expired", "tls12"],
)
async def test_ingress_refuses(
    client: Callable[[Generation, Generation, Path], TlsFiles | None],
    maximum: ssl.TLSVersion | None,
    reason: str,
    generation: Generation,
    foreign: Generation,
    app: App,
    api_tls: Path,
    tmp_path: Path,
) -> None:
    metrics = Metrics()
    credentials = client(generation, foreign, tmp_path)
    async with ingress_sidecar(api_tls, app.port, metrics=metrics) as (_, port):
        ok, reply = await tls_call(port, credentials, api_tls / "mesh-ca.pem", maximum=maximum)
    assert not ok, reply
    assert app.seen == []
    assert counter(metrics, FAILURES, direction="ingress", reason=reason) == 1


async def test_truncated_stream_reaches_the_app_as_a_reset(
    generation: Generation, app: App, api_tls: Path, tmp_path: Path
) -> None:
    """A TLS stream cut without close_notify must not look like a complete request to the application."""
    web = generation.write_pod(tmp_path / "web", ["web", "*"])
    ctx = client_context(files(web), api_tls / "mesh-ca.pem")

    def truncate(port: int) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        tls = ctx.wrap_socket(raw, server_hostname="api")
        tls.sendall(b"partial request")
        socket.socket(fileno=tls.detach()).close()  # TCP ends, but TLS never said close_notify

    async with ingress_sidecar(api_tls, app.port) as (_, port):
        await asyncio.to_thread(truncate, port)
        seen = await asyncio.to_thread(app.wait_for, 1)
    assert seen[0].ended == "reset"


# ---- exceptions from mutual TLS (Contrast's <name>#<port>#<disableTLS>) -----------------------------------


async def test_tls_port_accepts_clients_without_certificate_but_verifies_presented_ones(
    foreign: Generation, app: App, api_tls: Path, tmp_path: Path
) -> None:
    other = foreign.write_pod(tmp_path / "other", ["web", "*"])
    metrics = Metrics()
    async with ingress_sidecar(api_tls, app.port, ingress="web#8443#false", metrics=metrics) as (_, port):
        ok, reply = await tls_call(port, None, api_tls / "mesh-ca.pem")
        assert ok, reply
        assert reply == "app:GET /emojis"
        ok, reply = await tls_call(port, files(other), api_tls / "mesh-ca.pem")
        assert not ok, reply
        plain = await asyncio.to_thread(plain_call, port, b"hello\n")
        assert b"app:" not in plain
    assert [s.data for s in app.wait_for(1)] == [b"GET /emojis\n"]
    assert counter(metrics, FAILURES, direction="ingress", reason="untrusted") == 1


async def test_exception_port_passes_plaintext_and_other_ports_do_not(app: App, api_tls: Path) -> None:
    config = SidecarConfig(
        mesh=mesh("metrics#9102#true"),
        tls_dir=api_tls,
        redirect=Redirect.NONE,
        forwards=(
            Forward(9102, ("127.0.0.1", 0), ("127.0.0.1", app.port)),
            Forward(8443, ("127.0.0.1", 0), ("127.0.0.1", app.port)),
        ),
    )
    async with serve(config, Metrics()) as running:
        passthrough, mtls = running.ingress["port-9102"][1], running.ingress["port-8443"][1]
        assert await asyncio.to_thread(plain_call, passthrough, b"metrics\n") == b"app:metrics\n"
        assert b"app:" not in await asyncio.to_thread(plain_call, mtls, b"metrics\n")
    assert [s.data for s in app.wait_for(1)] == [b"metrics\n"]


# ---- egress refusals ---------------------------------------------------------------------------------------


@pytest.fixture
def web_tls(generation: Generation, tmp_path: Path) -> Path:
    return generation.write_pod(tmp_path / "web", ["web", "*"])


async def _egress_answer(
    web: Path, server: TlsFiles, *, remote: str = "api:8443", verify_san: str | None = None
) -> tuple[bytes, Metrics]:
    metrics = Metrics()
    with serving("api", server_context(server)) as srv:
        async with egress_sidecar(
            web, remote, ("127.0.0.1", srv.port), verify_san=verify_san, metrics=metrics
        ) as (
            _,
            local,
        ):
            answer = await asyncio.to_thread(plain_call, local, b"GET /emojis\n")
    return answer, metrics


async def test_egress_reaches_a_mesh_server(generation: Generation, web_tls: Path, tmp_path: Path) -> None:
    api = generation.write_pod(tmp_path / "api", ["api", "*"])
    answer, metrics = await _egress_answer(web_tls, files(api))
    assert answer == b"hello web from api\n"  # the server saw our mesh client certificate
    # This server (Python's ssl without unwrap) ends without close_notify: the answer is delivered, and the
    # end is passed on as a reset rather than a clean end of stream.
    assert counter(metrics, CONNECTIONS, direction="egress", rule="remote", outcome="aborted") == 1


async def test_egress_refuses_a_foreign_ca_server(foreign: Generation, web_tls: Path, tmp_path: Path) -> None:
    other = foreign.write_pod(tmp_path / "other", ["api", "*"])
    # The impostor trusts our mesh CA for clients: the refusal is ours, of its certificate.
    impostor = TlsFiles(other / "certChain.pem", other / "key.pem", web_tls / "mesh-ca.pem")
    answer, metrics = await _egress_answer(web_tls, impostor)
    assert answer == b""
    assert counter(metrics, FAILURES, direction="egress", reason="untrusted") == 1


async def test_egress_refuses_a_certificate_without_the_remote_host(
    generation: Generation, web_tls: Path, tmp_path: Path
) -> None:
    """A genuine mesh certificate of another workload (SANs db, *) answering for api: refused by default."""
    db = generation.write_pod(tmp_path / "db", ["db", "*"])
    answer, metrics = await _egress_answer(web_tls, files(db))
    assert answer == b""
    assert counter(metrics, FAILURES, direction="egress", reason="san_mismatch") == 1
    # Contrast's behaviour, on request: any certificate of the mesh CA is accepted.
    answer, metrics = await _egress_answer(web_tls, files(db), verify_san="false")
    assert answer == b"hello web from api\n"


async def test_egress_refuses_an_expired_server(
    generation: Generation, web_tls: Path, tmp_path: Path
) -> None:
    expired = generation.write_pod(
        tmp_path / "api", ["api", "*"], issued=now() - dt.timedelta(days=3), validity=dt.timedelta(days=1)
    )
    answer, metrics = await _egress_answer(web_tls, files(expired))
    assert answer == b""
    assert counter(metrics, FAILURES, direction="egress", reason="expired") == 1


# ---- certificates: rotation, reload, waiting for them ------------------------------------------------------


async def test_rotation_after_a_manifest_update(generation: Generation, app: App, tmp_path: Path) -> None:
    """A manifest update rotates the mesh CA: a restarted client pod is accepted once the server pod has
    restarted too, and a pod that still holds the old generation's certificate is refused from then on."""
    updated = generation.rotated()
    api = generation.write_pod(tmp_path / "api", ["api", "*"])
    web = generation.write_pod(tmp_path / "web", ["web", "*"])
    stale = generation.write_pod(tmp_path / "stale", ["web", "*"])
    metrics = Metrics()
    async with (
        ingress_sidecar(api, app.port, metrics=metrics, reload_interval=0.05) as (api_sidecar, ingress),
        egress_sidecar(web, "api:8443", ("127.0.0.1", ingress), reload_interval=0.05) as (web_sidecar, local),
    ):
        assert await asyncio.to_thread(plain_call, local, b"before\n") == b"app:before\n"

        # The web pod restarts after the update (its initializer writes the new generation); api has not yet.
        updated.write_pod(tmp_path / "web", ["web", "*"])
        await wait_for_generation(web_sidecar, updated)
        assert await asyncio.to_thread(plain_call, local, b"too early\n") == b""

        # The api pod restarts: its files are rewritten the same way, and the sidecar reloads them.
        updated.write_pod(tmp_path / "api", ["api", "*"])
        await wait_for_generation(api_sidecar, updated)
        assert await asyncio.to_thread(plain_call, local, b"after\n") == b"app:after\n"
        ok, reply = await tls_call(ingress, files(stale), stale / "mesh-ca.pem")
        assert not ok, reply
    assert [s.data for s in app.wait_for(2)] == [b"before\n", b"after\n"]


async def test_a_half_written_generation_is_not_loaded(
    generation: Generation, app: App, tmp_path: Path
) -> None:
    """The new mesh CA is on disk but the certificate is still the old one: keep the old contexts."""
    api = generation.write_pod(tmp_path / "api", ["api", "*"])
    web = generation.write_pod(tmp_path / "web", ["web", "*"])
    updated = generation.rotated()
    metrics = Metrics()
    async with ingress_sidecar(api, app.port, metrics=metrics, reload_interval=0.05) as (running, port):
        before = running.store.current
        (api / "mesh-ca.pem").write_bytes(
            (updated.write_pod(tmp_path / "new", ["api"]) / "mesh-ca.pem").read_bytes()
        )
        await until(lambda: counter(metrics, "contrast_mesh_certificate_reloads_total", outcome="failed") > 0)
        assert running.store.current is before
        ok, reply = await tls_call(port, files(web), web / "mesh-ca.pem")
        assert ok, reply


async def test_not_ready_until_the_certificates_exist(
    generation: Generation, app: App, tmp_path: Path
) -> None:
    tls = tmp_path / "pod" / "tls-config"
    metrics = Metrics()
    config = SidecarConfig(
        mesh=mesh(""),
        tls_dir=tls,
        redirect=Redirect.NONE,
        forwards=(Forward(8443, ("127.0.0.1", 0), ("127.0.0.1", app.port)),),
        reload_interval=0.05,
    )
    started = asyncio.Event()
    stop = asyncio.Event()

    async def run() -> None:
        async with serve(config, metrics):
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    try:
        await until(
            lambda: counter(metrics, "contrast_mesh_certificate_reloads_total", outcome="failed") >= 2
        )
        assert not started.is_set()
        assert counter(metrics, "contrast_ready") == 0
        generation.write_pod(tmp_path / "pod", ["api", "*"])
        async with asyncio.timeout(IO_TIMEOUT):
            await started.wait()
        assert counter(metrics, "contrast_ready") == 1
        assert counter(metrics, "contrast_mesh_certificate_expiry_timestamp_seconds") > now().timestamp()
    finally:
        stop.set()
        await task
    assert counter(metrics, "contrast_ready") == 0
