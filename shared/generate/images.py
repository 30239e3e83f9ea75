"""Container image references, and the rule that a confidential workload runs only digest-pinned images.

A tag is a mutable pointer that the registry (the image provider, or anyone who controls it) can move. Only a
content digest makes "the policy allows image X" mean one specific file system.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from contrast.errors import RequestError

# name[:tag]@algo:hex. Names follow the distribution spec loosely; the digest part is checked exactly.
_DIGEST = re.compile(r"@(?P<algo>sha256|sha512):(?P<hex>[0-9a-f]+)$")
_DIGEST_LEN = {"sha256": 64, "sha512": 128}


def digest_of(image: str) -> str | None:
    """The ``algo:hex`` digest of ``image``, or None if it is not pinned by a well-formed digest."""
    m = _DIGEST.search(image)
    if m is None or len(m["hex"]) != _DIGEST_LEN[m["algo"]]:
        return None
    if not image[: m.start()]:
        return None
    return f"{m['algo']}:{m['hex']}"


def is_pinned(image: str) -> bool:
    return digest_of(image) is not None


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: ``registry/repository[:tag][@digest]`` with Docker Hub's defaults."""

    registry: str  # as written (docker.io for Docker Hub)
    repository: str  # library/nginx, org/app
    tag: str  # "latest" when neither tag nor digest is given
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"


_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def parse_reference(image: str) -> Reference:
    """Split ``image`` as containerd does; a malformed reference is a ``RequestError``."""
    rest, at, _digest_part = image.partition("@")
    digest = digest_of(image) if at else None
    if at and digest is None:
        raise RequestError("image_invalid", f"{image!r}: malformed digest")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "docker.io", rest
        if "/" not in path:
            path = f"library/{path}"
    repository, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if not colon:
        repository, tag = path, ""
    if not _REPO.match(repository) or (tag and not _TAG.match(tag)):
        raise RequestError("image_invalid", f"{image!r} is not a valid image reference")
    return Reference(registry=registry, repository=repository, tag=tag or "latest", digest=digest)


def normalize(image: str) -> str:
    """The fully qualified reference the container runtime reports for ``image``.

    ``nginx@sha256:…`` becomes ``docker.io/library/nginx@sha256:…``; a tag next to a digest is dropped
    (``app:1@sha256:…`` → ``…/app@sha256:…``), as containerd's reference normalization does. The policy
    compares these strings with the image-name annotation and the guest-pull storage source.
    """
    ref = parse_reference(image)
    if ref.digest is not None:
        return f"{ref.name}@{ref.digest}"
    return f"{ref.name}:{ref.tag}"


def placeholder_digest(label: str) -> str:
    """A deterministic, obviously synthetic digest: SHA-256 of a label, not of any real image manifest."""
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


# The initializer image is the service image built from deploy/Dockerfile. Until a registry hosts a build of
# it, generate pins this placeholder; replace it with
# `--initializer-image <ref>@sha256:<digest of your build>`.
INITIALIZER_IMAGE = "ghcr.io/contrast-nats/contrast@" + placeholder_digest(
    "contrast-nats placeholder: service image built from deploy/Dockerfile"
)
