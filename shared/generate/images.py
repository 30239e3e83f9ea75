"""Container image references, and the rule that a confidential workload runs only digest-pinned images.

A tag is a mutable pointer that the registry (the image provider, or anyone who controls it) can move. Only a
content digest makes "the policy allows image X" mean one specific file system.
"""

from __future__ import annotations

import hashlib
import re

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


def normalize(image: str) -> str:
    """The fully qualified reference the container runtime reports for ``image`` (Docker Hub defaults).

    ``nginx@sha256:…`` becomes ``docker.io/library/nginx@sha256:…`` and ``org/app@…`` becomes
    ``docker.io/org/app@…``: the runtime resolves short names that way, and the policy compares strings.
    """
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return image  # already names a registry
    if not sep:
        return f"docker.io/library/{image}"
    return f"docker.io/{image}"


def placeholder_digest(label: str) -> str:
    """A deterministic, obviously synthetic digest: SHA-256 of a label, not of any real image manifest."""
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


# The initializer image is the service image built from deploy/Dockerfile. Until a registry hosts a build of
# it, generate pins this placeholder; replace it with
# `--initializer-image <ref>@sha256:<digest of your build>`.
INITIALIZER_IMAGE = "ghcr.io/contrast-nats/contrast@" + placeholder_digest(
    "contrast-nats placeholder: service image built from deploy/Dockerfile"
)
