"""The network as its operator controls it: a TCP proxy between one client and nats-server.

It speaks just enough of the NATS client protocol (``PUB``/``HPUB`` from the client, ``MSG``/``HMSG`` from the
server; every other line passes through) to

- hold a client's publication on a subject prefix until the test releases it (a delay the operator can
  impose at will), and
- rewrite the data of messages delivered to the client (a forgery in transit).

No TLS: the test servers speak plain TCP, as a proxy of the operator sees a connection before TLS anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Rewrite = Callable[[bytes], bytes | None]  # message data → replacement, or None to leave it


@dataclass
class NatsProxy:
    upstream_host: str
    upstream_port: int
    hold_prefix: bytes = b""  # client publications on subjects starting with this are held
    rewrite: Rewrite | None = None
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    rewritten: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        up = asyncio.create_task(self._pump(client_r, server_w, self._client_message))
        down = asyncio.create_task(self._pump(server_r, client_w, self._server_message))
        self._tasks |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (up, down):
                t.cancel()
            for w in (client_w, server_w):
                w.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_message: Callable[[list[bytes], bytes], Awaitable[bytes]],
    ) -> None:
        """Forward line by line; a message op is forwarded whole, through ``on_message``."""
        while True:
            line = await reader.readuntil(b"\r\n")
            words = line.split()
            op = words[0].upper() if words else b""
            if op in (b"PUB", b"HPUB", b"MSG", b"HMSG"):
                size = int(words[-1])
                body = await reader.readexactly(size + 2)
                line = await on_message(words, body[:-2])
            writer.write(line)
            await writer.drain()

    async def _client_message(self, words: list[bytes], body: bytes) -> bytes:
        if self.hold_prefix and words[1].startswith(self.hold_prefix):
            self.held.set()
            await self.release.wait()
        return b" ".join(words) + b"\r\n" + body + b"\r\n"

    async def _server_message(self, words: list[bytes], body: bytes) -> bytes:
        headers_size = int(words[-2]) if words[0].upper() == b"HMSG" else 0
        headers, data = body[:headers_size], body[headers_size:]
        replacement = self.rewrite(data) if self.rewrite is not None and data else None
        if replacement is not None:
            self.rewritten += 1
            data = replacement
            words = [*words[:-1], str(headers_size + len(data)).encode()]
        return b" ".join(words) + b"\r\n" + headers + data + b"\r\n"
