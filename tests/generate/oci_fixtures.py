"""Container images for the image-config tests: OCI documents, a loopback registry and OCI image layouts.

The images have configs but no layers (generate never reads layers). The registry speaks the part of the
OCI distribution API that generate uses, on 127.0.0.1, optionally behind an anonymous bearer-token
challenge as Docker Hub and GHCR answer, and records what it was asked.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _doc(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


@dataclass
class Image:
    """An image index with a linux/amd64 and a linux/arm64 manifest; only amd64 has the given config."""

    config: dict[str, Any]
    documents: dict[str, bytes] = field(default_factory=dict)
    index: str = ""
    manifest: str = ""
    config_digest: str = ""

    def __post_init__(self) -> None:
        raw_config = _doc(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": self.config,
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        )
        other_config = _doc({"architecture": "arm64", "os": "linux", "config": {"Env": ["WRONG=arm64"]}})
        manifests = []
        for arch, cfg in (("arm64", other_config), ("amd64", raw_config)):
            m = _doc(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": digest(cfg), "size": len(cfg)},
                    "layers": [],
                }
            )
            self.documents[digest(cfg)] = cfg
            self.documents[digest(m)] = m
            manifests.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest(m),
                    "size": len(m),
                    "platform": {"os": "linux", "architecture": arch},
                }
            )
            if arch == "amd64":
                self.manifest = digest(m)
        index = _doc({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
        self.index = digest(index)
        self.documents[self.index] = index
        self.config_digest = digest(raw_config)


@dataclass
class Registry:
    """What the loopback registry serves and what it saw."""

    images: dict[str, Image] = field(default_factory=dict)  # repository -> image
    tags: dict[tuple[str, str], str] = field(default_factory=dict)  # (repository, tag) -> digest
    token: str | None = None  # when set, /v2 answers 401 with a bearer challenge until given this token
    tamper: set[str] = field(default_factory=set)  # digests served with different content
    requests: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def _handler(reg: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            reg.requests.append(self.path)
            if self.path.startswith("/token"):
                self._send(200, json.dumps({"token": reg.token}).encode())
                return
            if reg.token and self.headers.get("Authorization") != f"Bearer {reg.token}":
                challenge = f'Bearer realm="http://{reg.host}/token",service="test-registry",scope="repository:x:pull"'
                self._send(401, b"", {"WWW-Authenticate": challenge})
                return
            parts = self.path.split("/")  # /v2/<repo...>/(manifests|blobs)/<ref>
            if len(parts) < 5 or parts[1] != "v2":
                self._send(404)
                return
            repo, kind, ref = "/".join(parts[2:-2]), parts[-2], parts[-1]
            image = reg.images.get(repo)
            if image is None:
                self._send(404)
                return
            ref = reg.tags.get((repo, ref), ref)
            body = image.documents.get(ref)
            if body is None or kind not in ("manifests", "blobs"):
                self._send(404)
                return
            media = json.loads(body).get("mediaType", "application/octet-stream")
            if ref in reg.tamper:
                body = body + b" "  # other bytes, the same JSON
            self._send(200, body, {"Content-Type": media, "Docker-Content-Digest": ref})

    return Handler


@contextmanager
def loopback_registry(reg: Registry) -> Iterator[Registry]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(reg))
    reg.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield reg
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_layout(root: Path, image: Image, tag: str | None = None) -> Path:
    """An OCI image layout holding ``image`` (its index as the layout's one entry, optionally tagged)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for d, raw in image.documents.items():
        (blobs / d.split(":", 1)[1]).write_bytes(raw)
    entry: dict[str, Any] = {
        "mediaType": OCI_INDEX,
        "digest": image.index,
        "size": len(image.documents[image.index]),
    }
    if tag is not None:
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return root
