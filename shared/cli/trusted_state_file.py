"""The trusted state on disk: strict reads, atomic durable writes, one writer at a time.

:mod:`contrast.cli.trusted_state` decides; this module only moves bytes. A missing file is the only first
use: an unreadable one raises ``verify.state_unreadable``, an oversized or undecodable one
``verify.state_corrupt``.
A write goes to a temporary file in the same directory, is fsynced, renamed over the old file and the
directory fsynced, so a crash leaves the old state or the new one, never a torn file. A lock file next to the
state (``flock``) serializes the final re-read, re-check and write of concurrent ``contrast verify`` runs, so
the slower one cannot write back an older head.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from contrast.cli.trusted_state import MAX_STATE_FILE, TrustedState, VerifyError, decode_state, encode_state

LOCK_POLL = 0.1


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(MAX_STATE_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise VerifyError("state_unreadable", f"cannot read the trusted state {path}: {e.strerror}") from e


async def load_state(path: Path) -> TrustedState | None:
    """The recorded state, or None if there is no file at ``path`` (first use)."""
    data = await asyncio.to_thread(_read, path)
    if data is None:
        return None
    try:
        return decode_state(data)
    except VerifyError as e:
        raise VerifyError("state_corrupt", f"{path}: {e.message}") from e


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


async def save_state(path: Path, state: TrustedState) -> None:
    try:
        await asyncio.to_thread(_write, path, encode_state(state))
    except OSError as e:
        raise VerifyError(
            "state_write_failed", f"verified, but cannot record the trusted state {path}: {e.strerror}"
        ) from e


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise VerifyError("state_unreadable", f"cannot lock the trusted state: {e.strerror}") from e
    return True


@contextlib.asynccontextmanager
async def locked(path: Path, timeout: float) -> AsyncIterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (waiting up to ``timeout`` seconds for another run)."""
    lock = path.with_name(path.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise VerifyError("state_unreadable", f"cannot open the lock file {lock}: {e.strerror}") from e
    try:
        deadline = time.monotonic() + timeout
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise VerifyError(
                    "state_locked", f"another `contrast verify` holds {lock} (waited {timeout:g} s)"
                )
            await asyncio.sleep(LOCK_POLL)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
