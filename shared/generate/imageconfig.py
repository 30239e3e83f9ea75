"""Container image configs (entrypoint, cmd, env, user, workdir, volumes), verified from the image digest.

The runtime policy pins what containerd derives from an image's config: the argv when the pod spec omits
``command``, ``PATH`` and the rest of the environment, the working directory, the user and the image's
declared volumes. The config is reached from the image reference through a chain of content-addressed
documents (optional index → manifest → config blob); :func:`walk` checks every link's SHA-256, so whoever
serves the documents (a registry, an OCI image layout, the lock file) cannot change the answer for a
digest-pinned image.

The lock file (``images.lock.json`` next to the manifest) keeps the documents ``generate`` used, so a later
run without network reproduces the same policy; each entry is re-verified on load.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrast.errors import RequestError
from contrast.generate.images import digest_of, parse_reference

LOCK_FILE = "images.lock.json"
LOCK_VERSION = 1
# Confidential VMs (SEV-SNP, TDX) are x86-64: the platform whose image a multi-platform index resolves to.
PLATFORM = {"os": "linux", "architecture": "amd64"}
MAX_DOCUMENT = 4 * 1024 * 1024
_MAX_INDEX_DEPTH = 2

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
_INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageConfig:
    """The fields of an image config that containerd turns into a container's process and mounts."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "NAME=value", in the image's order
    user: str = ""
    working_dir: str = ""
    volumes: tuple[str, ...] = ()  # sorted destinations of the image's VOLUME declarations

    def as_json(self) -> dict[str, Any]:
        return {
            "Entrypoint": list(self.entrypoint),
            "Cmd": list(self.cmd),
            "Env": list(self.env),
            "User": self.user,
            "WorkingDir": self.working_dir,
            "Volumes": list(self.volumes),
        }


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError("image_config_invalid", f"image config {what} is not a list of strings")
    return tuple(value)


def parse_config(raw: bytes) -> ImageConfig:
    """The used fields of an OCI/Docker image config blob (``config.*``); absent fields are empty."""
    doc = _json_object(raw, "image config")
    cfg = doc.get("config")
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise RequestError("image_config_invalid", "image config has a non-object config")
    for key in ("User", "WorkingDir"):
        if not isinstance(cfg.get(key, ""), str | None):
            raise RequestError("image_config_invalid", f"image config {key} is not a string")
    volumes = cfg.get("Volumes") or {}
    if not isinstance(volumes, dict):
        raise RequestError("image_config_invalid", "image config Volumes is not an object")
    env = _str_list(cfg.get("Env"), "Env")
    if any("=" not in e or e.startswith("=") or "\x00" in e for e in env):
        raise RequestError("image_config_invalid", "image config Env holds an entry that is not NAME=value")
    return ImageConfig(
        entrypoint=_str_list(cfg.get("Entrypoint"), "Entrypoint"),
        cmd=_str_list(cfg.get("Cmd"), "Cmd"),
        env=env,
        user=cfg.get("User") or "",
        working_dir=cfg.get("WorkingDir") or "",
        volumes=tuple(sorted(volumes)),
    )


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_DOCUMENT:
        raise RequestError("image_config_invalid", f"{what} is larger than {MAX_DOCUMENT} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))  # UTF-8 only: the lock file keeps documents as text
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError("image_config_invalid", f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RequestError("image_config_invalid", f"{what} is not a JSON object")
    return doc


def sha256_digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _descriptor_digest(desc: Any, what: str) -> str:
    if (
        not isinstance(desc, dict)
        or not isinstance(desc.get("digest"), str)
        or not _DIGEST.match(desc["digest"])
    ):
        raise RequestError("image_config_invalid", f"{what} has no sha256 digest")
    return str(desc["digest"])


def _media_type(doc: dict[str, Any]) -> str:
    mt = doc.get("mediaType")
    if isinstance(mt, str):
        return mt
    # OCI allows mediaType to be omitted; the shape tells an index from a manifest.
    if "manifests" in doc:
        return OCI_INDEX
    return OCI_MANIFEST


def _select_platform(index: dict[str, Any], where: str) -> str:
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise RequestError("image_config_invalid", f"{where}: image index has no manifest list")
    for m in manifests:
        platform = m.get("platform") if isinstance(m, dict) else None
        if (
            isinstance(platform, dict)
            and platform.get("os") == PLATFORM["os"]
            and platform.get("architecture") == PLATFORM["architecture"]
        ):
            return _descriptor_digest(m, f"{where}: index entry")
    raise RequestError(
        "image_config_missing",
        f"{where}: the image index has no {PLATFORM['os']}/{PLATFORM['architecture']} image",
    )


@dataclass(frozen=True)
class Resolved:
    """An image's config and the documents (digest → bytes) that prove it from the image reference."""

    reference: str
    manifest_digest: str  # the digest the reference resolved to (an index or a manifest)
    config_digest: str
    config: ImageConfig
    documents: dict[str, bytes] = field(default_factory=dict)


# fetch(kind, ref): kind is "manifest" (ref: a digest or a tag) or "blob" (ref: a digest).
Fetch = Callable[[str, str], bytes]


def walk(reference: str, fetch: Fetch) -> Resolved:
    """Follow reference → (index →) manifest → config through ``fetch``, checking every digest.

    A digest-pinned reference must hash to its digest; a tag is resolved once, and what it pointed to
    is recorded, but (as with any tag) the registry chose it.
    """
    parsed = parse_reference(reference)
    pinned = parsed.digest
    documents: dict[str, bytes] = {}
    raw = fetch("manifest", pinned or parsed.tag)
    top = sha256_digest(raw)
    if pinned is not None and top != pinned:
        raise RequestError(
            "image_digest_mismatch", f"{reference}: the served manifest hashes to {top}, not {pinned}"
        )
    documents[top] = raw
    doc = _json_object(raw, f"{reference}: manifest")
    for _ in range(_MAX_INDEX_DEPTH):
        if _media_type(doc) not in _INDEX_TYPES:
            break
        digest = _select_platform(doc, reference)
        raw = fetch("manifest", digest)
        if sha256_digest(raw) != digest:
            raise RequestError(
                "image_digest_mismatch", f"{reference}: the platform manifest does not hash to {digest}"
            )
        documents[digest] = raw
        doc = _json_object(raw, f"{reference}: platform manifest")
    if _media_type(doc) not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise RequestError("image_config_invalid", f"{reference}: not an image manifest ({_media_type(doc)})")
    config_digest = _descriptor_digest(doc.get("config"), f"{reference}: manifest config")
    raw = fetch("blob", config_digest)
    if sha256_digest(raw) != config_digest:
        raise RequestError(
            "image_digest_mismatch", f"{reference}: the config blob does not hash to {config_digest}"
        )
    documents[config_digest] = raw
    return Resolved(
        reference=reference,
        manifest_digest=top,
        config_digest=config_digest,
        config=parse_config(raw),
        documents=documents,
    )


def _from_documents(documents: dict[str, bytes], top: str) -> Fetch:
    def fetch(kind: str, ref: str) -> bytes:
        key = ref if _DIGEST.match(ref) else top
        if key not in documents:
            raise RequestError("image_lock_invalid", f"the lock entry lacks document {key}")
        return documents[key]

    return fetch


# ---- The lock file


def render_lock(entries: Iterable[Resolved]) -> bytes:
    """Stable bytes: one entry per image reference, documents as their exact UTF-8 text."""
    images: dict[str, Any] = {}
    for r in sorted(entries, key=lambda r: r.reference):
        images[r.reference] = {
            "manifest": r.manifest_digest,
            "config": r.config_digest,
            "platform": f"{PLATFORM['os']}/{PLATFORM['architecture']}",
            "used": r.config.as_json(),
            "documents": {d: r.documents[d].decode("utf-8") for d in sorted(r.documents)},
        }
    body = {"version": LOCK_VERSION, "images": images}
    return (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def load_lock(path: Path) -> dict[str, Resolved]:
    """Read and re-verify a lock file; a missing file is an empty lock, a damaged one an error."""
    if not path.exists():
        return {}
    try:
        body = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise RequestError("image_lock_invalid", f"{path}: not a JSON lock file: {exc}") from exc
    if (
        not isinstance(body, dict)
        or body.get("version") != LOCK_VERSION
        or not isinstance(body.get("images"), dict)
    ):
        raise RequestError("image_lock_invalid", f"{path}: not a version {LOCK_VERSION} image lock")
    out: dict[str, Resolved] = {}
    for ref, entry in body["images"].items():
        where = f"{path}: {ref}"
        if not isinstance(entry, dict) or not isinstance(entry.get("documents"), dict):
            raise RequestError("image_lock_invalid", f"{where}: malformed entry")
        docs = entry["documents"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in docs.items()):
            raise RequestError("image_lock_invalid", f"{where}: documents must be digest → text")
        top = entry.get("manifest")
        if not isinstance(top, str):
            raise RequestError("image_lock_invalid", f"{where}: no manifest digest")
        documents = {k: v.encode("utf-8") for k, v in docs.items()}
        if digest_of(ref) is None and sha256_digest(documents.get(top, b"")) != top:
            raise RequestError("image_lock_invalid", f"{where}: the recorded manifest does not hash to {top}")
        resolved = walk(ref, _from_documents(documents, top))
        if resolved.manifest_digest != top or resolved.config_digest != entry.get("config"):
            raise RequestError("image_lock_invalid", f"{where}: recorded digests do not match the documents")
        if entry.get("used") != resolved.config.as_json():
            raise RequestError(
                "image_lock_invalid", f"{where}: the recorded fields differ from the config document"
            )
        out[ref] = resolved
    return out


# ---- Resolution: lock, then OCI layouts, then registries

Source = Callable[[str], Resolved | None]


class ImageConfigs:
    """Where ``generate`` gets image configs: the lock first, then each source in order.

    A source returns None when it does not have the image (not in the layout, registry unreachable); a
    document that fails its digest check is an error, never a fall-through to the next source.
    """

    def __init__(self, lock: dict[str, Resolved] | None = None, sources: Iterable[Source] = ()) -> None:
        self._lock = dict(lock or {})
        self._sources = list(sources)
        self.used: dict[str, Resolved] = {}
        self.misses: dict[str, str] = {}

    def config(self, reference: str) -> ImageConfig | None:
        if reference in self.used:
            return self.used[reference].config
        found = self._lock.get(reference)
        for source in self._sources:
            if found is not None:
                break
            found = source(reference)
        if found is None:
            self.misses[reference] = "not in the lock file, any --image-layout, or a reachable registry"
            return None
        self.used[reference] = found
        return found.config

    def lock_bytes(self) -> bytes:
        return render_lock(self.used.values())
