"""The initializer's outputs, written atomically with the modes the workload relies on.

Layout under the root (default ``/contrast``)::

    tls-config/mesh-ca.pem               0444  the mesh CA of this generation (trust anchor for peers)
    tls-config/certChain.pem             0444  leaf, then intermediate
    tls-config/coordinator-root-ca.pem   0444  the root CA (survives manifest updates)
    tls-config/key.pem                   0400  the TLS private key, PKCS#8
    secrets/workload-secret-seed         0400  hex of the 64-byte workload secret (only with a secret id)

Each file is written to a temporary file in the same directory with its final mode, fsynced and renamed
over the target, so a reader never sees a partial file or a secret with a loose mode.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.attestation.bundle import OpenedBundle

DEFAULT_ROOT: Final = Path("/contrast")
PUBLIC: Final = 0o444
PRIVATE: Final = 0o400


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_credentials(root: Path, tls_key: ec.EllipticCurvePrivateKey, bundle: OpenedBundle) -> list[Path]:
    """Write every output file; returns the paths written. Blocking: call it off the event loop."""
    pem = serialization.Encoding.PEM
    tls = root / "tls-config"
    out: list[tuple[Path, bytes, int]] = [
        (tls / "mesh-ca.pem", bundle.mesh_ca.public_bytes(pem), PUBLIC),
        (
            tls / "certChain.pem",
            bundle.leaf.public_bytes(pem) + bundle.intermediate.public_bytes(pem),
            PUBLIC,
        ),
        (tls / "coordinator-root-ca.pem", bundle.root_ca.public_bytes(pem), PUBLIC),
        (
            tls / "key.pem",
            tls_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            PRIVATE,
        ),
    ]
    if bundle.workload_secret:
        out.append(
            (root / "secrets" / "workload-secret-seed", bundle.workload_secret.hex().encode(), PRIVATE)
        )
    for path, data, mode in out:
        write_atomic(path, data, mode)
    return [p for p, _, _ in out]
