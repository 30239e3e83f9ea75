"""The pod's mesh credentials as TLS contexts, loaded from the initializer's files and reloaded on change.

The initializer writes ``tls-config/{mesh-ca.pem,certChain.pem,key.pem}`` (each file atomically, one after
the other). A load reads the three files, checks that they belong together (the leaf is signed by the mesh
CA beside it; ``load_cert_chain`` checks that the key is the leaf's), builds every context from them, and
reads the files again: if anything changed meanwhile, the load is discarded and retried at the next poll.
So a context never mixes two generations, and a reload in the middle of a rewrite keeps the old contexts.

Contexts are TLS 1.3 only, without session tickets (every connection does a full handshake, so each one
is checked against the CA and validity period in use). Peer verification is OpenSSL's: chain to
``mesh-ca.pem`` (the only trust anchor), validity period, and, for egress, a SAN for the remote host.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

DEFAULT_TLS_DIR: Final = Path("/contrast/tls-config")
MESH_CA: Final = "mesh-ca.pem"
CERT_CHAIN: Final = "certChain.pem"
KEY: Final = "key.pem"
FILES: Final = (MESH_CA, CERT_CHAIN, KEY)

Stamp = tuple[tuple[int, int, int, int], ...]  # (inode, size, mtime_ns, ctime_ns) per file


class CredentialsUnavailable(Exception):
    """The files are missing, inconsistent or changing; the reason is the message."""


@dataclass(frozen=True)
class Credentials:
    """One consistent load of the pod's files, as the contexts the proxy uses."""

    stamp: Stamp
    mesh_ca_sha256: str  # fingerprint of the trust anchor (for logs)
    leaf_sans: tuple[str, ...]
    not_after: dt.datetime
    server_mtls: ssl.SSLContext  # ingress, client certificate required
    server_tls: ssl.SSLContext  # ingress, client certificate verified only if presented
    client: ssl.SSLContext  # egress, remote must name the remote host in a SAN
    client_any_san: ssl.SSLContext  # egress with the SAN check turned off (any mesh certificate)


def file_stamp(directory: Path) -> Stamp:
    """Identity of the three files; changes whenever one is replaced. Raises ``OSError`` if one is missing."""
    out = []
    for name in FILES:
        st = os.stat(directory / name)
        out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


def _base(purpose: ssl._SSLMethod, chain: Path, key: Path, anchor: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET
    ctx.load_cert_chain(chain, key)
    ctx.load_verify_locations(cadata=anchor)
    return ctx


def server_context(chain: Path, key: Path, anchor: str, *, require_client_cert: bool) -> ssl.SSLContext:
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, chain, key, anchor)
    ctx.num_tickets = 0
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(chain: Path, key: Path, anchor: str, *, check_san: bool) -> ssl.SSLContext:
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, chain, key, anchor)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = check_san
    ctx.hostname_checks_common_name = False  # SANs only
    return ctx


def _read(directory: Path) -> dict[str, bytes]:
    try:
        return {name: (directory / name).read_bytes() for name in FILES}
    except OSError as e:
        raise CredentialsUnavailable(f"cannot read {e.filename}: {e.strerror}") from e


def load(directory: Path) -> Credentials:
    """Load a consistent set of credentials from ``directory`` (blocking: call it off the event loop)."""
    try:
        before = file_stamp(directory)
    except OSError as e:
        raise CredentialsUnavailable(f"cannot read {e.filename}: {e.strerror}") from e
    data = _read(directory)
    try:
        anchor = x509.load_pem_x509_certificate(data[MESH_CA])
        leaf = x509.load_pem_x509_certificate(data[CERT_CHAIN])
    except ValueError as e:
        raise CredentialsUnavailable(f"not a PEM certificate: {e}") from e
    try:
        leaf.verify_directly_issued_by(anchor)
    except (ValueError, TypeError, InvalidSignature):
        raise CredentialsUnavailable(
            f"{CERT_CHAIN} is not issued by {MESH_CA} (files of two generations, or a rewrite in progress)"
        ) from None
    chain, key, pem = directory / CERT_CHAIN, directory / KEY, data[MESH_CA].decode("ascii", "replace")
    try:
        contexts = (
            server_context(chain, key, pem, require_client_cert=True),
            server_context(chain, key, pem, require_client_cert=False),
            client_context(chain, key, pem, check_san=True),
            client_context(chain, key, pem, check_san=False),
        )
    except (ssl.SSLError, OSError, ValueError) as e:
        raise CredentialsUnavailable(f"cannot load the key pair: {e}") from e
    if _read(directory) != data:
        raise CredentialsUnavailable("the files changed while they were loaded")
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(getattr(n, "value", n)) for n in sans)
    except x509.ExtensionNotFound:
        names = ()
    return Credentials(
        stamp=before,
        mesh_ca_sha256=hashlib.sha256(anchor.public_bytes(serialization.Encoding.DER)).hexdigest(),
        leaf_sans=names,
        not_after=leaf.not_valid_after_utc,
        server_mtls=contexts[0],
        server_tls=contexts[1],
        client=contexts[2],
        client_any_san=contexts[3],
    )
