"""Moving bytes between a plaintext and a TLS connection on the event loop, with backpressure and half-close.

Sockets are non-blocking and driven by the loop's readiness callbacks (``add_reader``/``add_writer``); there
are no asyncio transports or streams in between, so a relayed chunk costs a few calls rather than a few
buffered copies. TLS runs on an ``ssl.SSLObject`` over memory BIOs rather than on an ``ssl.SSLSocket``:

- a batch of records is written with one ``send`` (OpenSSL writes one record per syscall on a socket BIO);
- half-close is exact. ``SSL_shutdown`` queues ``close_notify`` and then tries to read the peer's; on a
  socket it would read (and fail on) application data already in flight, which breaks every protocol that
  half-closes. Here ``close_notify`` is queued only while the incoming BIO is empty, so nothing is consumed,
  and the peer's remaining data is still read afterwards.

A TLS stream that ends without ``close_notify`` is a truncation, not an end: the relay aborts (the plaintext
side sees a reset) instead of passing a clean EOF on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Final, cast

# A direction's buffer starts small and doubles whenever a read fills it: request/response connections keep
# 16 KiB, bulk transfers reach 256 KiB (bench/mesh_proxy.py: 16 KiB throughout costs about a quarter of the
# throughput; 256 KiB throughout would hold half a megabyte per idle connection).
MIN_CHUNK: Final = 16 * 1024
MAX_CHUNK: Final = 256 * 1024
HANDSHAKE_CHUNK: Final = 16 * 1024
_ABORT_LINGER: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def _read_into(obj: ssl.SSLObject, view: memoryview) -> int:
    """``SSLObject.read`` into a buffer returns the count (typeshed knows only the bytes-returning form)."""
    return cast(int, obj.read(len(view), view))


class Truncated(ConnectionError):
    """The TLS peer's stream ended without close_notify."""


class Raw:
    """A non-blocking TCP socket awaited through the loop's readiness callbacks.

    Several coroutines may wait on one socket (a TLS side reads for one direction while flushing for the
    other), so waiters are kept per direction and all woken together.
    """

    __slots__ = ("_closed", "_fd", "_loop", "_readers", "_writers", "sock")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._loop = loop
        self._fd = sock.fileno()
        self._readers: list[asyncio.Future[None]] = []
        self._writers: list[asyncio.Future[None]] = []
        self._closed = False

    def _wake(self, waiters: list[asyncio.Future[None]], write: bool) -> None:
        if write:
            self._loop.remove_writer(self._fd)
        else:
            self._loop.remove_reader(self._fd)
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()

    def _wait(self, write: bool) -> asyncio.Future[None]:
        if self._closed:
            raise ConnectionAbortedError("socket closed")
        waiters = self._writers if write else self._readers
        fut: asyncio.Future[None] = self._loop.create_future()
        if not waiters:
            if write:
                self._loop.add_writer(self._fd, self._wake, waiters, True)
            else:
                self._loop.add_reader(self._fd, self._wake, waiters, False)
        waiters.append(fut)
        return fut

    async def readable(self) -> None:
        await self._wait(False)

    async def writable(self) -> None:
        await self._wait(True)

    async def recv_into(self, view: memoryview) -> int:
        while True:
            try:
                return self.sock.recv_into(view)
            except (BlockingIOError, InterruptedError):
                await self._wait(False)

    async def send_all(self, view: memoryview | bytes) -> None:
        data = memoryview(view)
        while data:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                await self._wait(True)
                continue
            data = data[sent:]

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):  # the peer is gone; the other direction will notice
            self.sock.shutdown(socket.SHUT_WR)

    def _unregister(self) -> None:
        self._closed = True
        for waiters, write in ((self._readers, False), (self._writers, True)):
            if waiters:
                (self._loop.remove_writer if write else self._loop.remove_reader)(self._fd)
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(ConnectionAbortedError("socket closed"))
                waiters.clear()

    def close(self) -> None:
        if not self._closed:
            self._unregister()
            self.sock.close()

    def abort(self) -> None:
        """Close with a reset, so that the peer cannot mistake the end for a complete stream."""
        if not self._closed:
            self._unregister()
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_LINGER)
            self.sock.close()


class Plain:
    """The plaintext side of a relay (the application's connection)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Raw) -> None:
        self.raw = raw

    async def recv_into(self, view: memoryview) -> int:
        return await self.raw.recv_into(view)

    async def send_all(self, view: memoryview) -> None:
        await self.raw.send_all(view)

    async def shutdown_write(self) -> None:
        self.raw.shutdown_write()

    def close(self) -> None:
        self.raw.close()

    def abort(self) -> None:
        self.raw.abort()


class Tls:
    """The TLS side of a relay: an ``SSLObject`` over memory BIOs on a :class:`Raw` socket."""

    __slots__ = ("_close_pending", "_eof", "_flushing", "incoming", "obj", "outgoing", "raw")

    def __init__(
        self,
        raw: Raw,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self.raw = raw
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._eof = False  # the raw socket reached EOF
        self._close_pending = False  # close_notify to queue once the incoming BIO is empty
        self._flushing: asyncio.Lock | None = None  # created when two writers first meet

    async def flush(self) -> None:
        """Send everything OpenSSL has queued, in order, even if both directions flush at once."""
        if self.outgoing.pending == 0:
            return
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:
            data = self.outgoing.read()
            if data:
                await self.raw.send_all(data)

    async def _feed(self, scratch: memoryview) -> None:
        """Move what the socket has into the incoming BIO (waiting for it if need be).

        ``scratch`` is any free buffer: the BIO keeps its own copy of the bytes.
        """
        if self._eof:
            raise Truncated("the TLS peer closed the connection without close_notify")
        n = await self.raw.recv_into(scratch)
        if n == 0:
            self._eof = True
            self.incoming.write_eof()
        else:
            self.incoming.write(scratch[:n])

    async def handshake(self) -> None:
        """Complete the handshake; on failure the alert for the peer is still sent before raising."""
        scratch = memoryview(bytearray(HANDSHAKE_CHUNK))
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                await self.flush()
                await self._feed(scratch)
                continue
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    await self.flush()  # the alert tells the peer why
                raise
            await self.flush()
            return

    async def recv_into(self, view: memoryview) -> int:
        """Read decrypted bytes into ``view``; 0 at the peer's close_notify."""
        while True:
            try:
                n = _read_into(self.obj, view)
            except ssl.SSLWantReadError:
                await self._drained()
                await self._feed(view)
                continue
            except ssl.SSLZeroReturnError:
                return 0
            except ssl.SSLEOFError:
                raise Truncated("the TLS peer closed the connection without close_notify") from None
            if n == 0:
                return 0
            total = n
            while total < len(view):  # more records already decrypted or in the BIO: take them too
                try:
                    got = _read_into(self.obj, view[total:])
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break  # the end (clean or truncated) is reported by the next call, after these bytes
                if got == 0:
                    break
                total += got
            if self.outgoing.pending:  # e.g. a KeyUpdate answer
                await self.flush()
            return total

    async def _drained(self) -> None:
        """The incoming BIO is empty now (OpenSSL asked for more): a pending close_notify can go out."""
        if self._close_pending:
            self._close_pending = False
            await self._send_close_notify()
        elif self.outgoing.pending:
            await self.flush()

    async def _send_close_notify(self) -> None:
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify queued; the peer's comes later, with any data it still sends
        except ssl.SSLError:
            pass  # the peer already closed: nothing left to tell it
        await self.flush()

    async def send_all(self, view: memoryview) -> None:
        self.obj.write(view)
        await self.flush()

    async def shutdown_write(self) -> None:
        """Half-close: ``close_notify`` now if nothing unread waits in the BIO, else once it is read."""
        if self.incoming.pending == 0:
            await self._send_close_notify()
        else:
            self._close_pending = True

    def close(self) -> None:
        self.raw.close()

    def abort(self) -> None:
        self.raw.abort()


Side = Plain | Tls


async def pump(src: Side, dst: Side, count: Callable[[int], None]) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends, then half-close ``dst``."""
    view = memoryview(bytearray(MIN_CHUNK))
    while True:
        n = await src.recv_into(view)
        if n == 0:
            await dst.shutdown_write()
            return
        await dst.send_all(view[:n])
        count(n)
        if n == len(view) and n < MAX_CHUNK:
            view = memoryview(bytearray(2 * n))


class Relay:
    """Both directions between two sides; counts bytes; ends with a close (clean) or an abort (error)."""

    __slots__ = ("a", "a_to_b", "b", "b_to_a")

    def __init__(self, a: Side, b: Side) -> None:
        self.a, self.b = a, b
        self.a_to_b = 0
        self.b_to_a = 0

    def _count_ab(self, n: int) -> None:
        self.a_to_b += n

    def _count_ba(self, n: int) -> None:
        self.b_to_a += n

    async def run(self) -> None:
        """Relay until both directions have ended. Raises the first error after aborting both sides."""
        other = asyncio.ensure_future(pump(self.b, self.a, self._count_ba))
        try:
            await pump(self.a, self.b, self._count_ab)
            await other
        except BaseException:
            other.cancel()
            self.a.abort()
            self.b.abort()
            with contextlib.suppress(BaseException):  # the first error is the one raised
                await other
            raise
        self.a.close()
        self.b.close()
