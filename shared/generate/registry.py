"""Where image configs come from: an OCI distribution registry (HTTP) or an OCI image layout on disk.

Both only fetch documents; :func:`contrast.generate.imageconfig.walk` checks every digest, so neither the
registry nor the layout is trusted. Registries on loopback (``localhost``, ``127.0.0.0/8``, ``[::1]``) are
spoken to over plain HTTP, every other registry over HTTPS. Anonymous pulls use the registry's bearer-token
challenge (RFC 6750), as Docker Hub and GHCR require. ``generate`` is a short-lived CLI, so the blocking
``urllib`` client is enough; every request has a timeout and every answer a size bound.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from contrast.errors import RequestError
from contrast.generate.imageconfig import MANIFEST_TYPES, MAX_DOCUMENT, Resolved, walk
from contrast.generate.images import Reference, parse_reference

TIMEOUT_SECONDS = 20.0
_API_HOST = {"docker.io": "registry-1.docker.io"}
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1 : host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def base_url(ref: Reference) -> str:
    host = _API_HOST.get(ref.registry, ref.registry)
    scheme = "http" if _is_loopback(host) else "https"
    return f"{scheme}://{host}/v2/{ref.repository}"


class _Unreachable(Exception):
    """The registry did not answer (DNS, connection, timeout): the image config is not available here."""


class RegistryClient:
    """Pull manifests and blobs of one repository anonymously."""

    def __init__(self, ref: Reference, timeout: float = TIMEOUT_SECONDS) -> None:
        self._ref = ref
        self._base = base_url(ref)
        self._timeout = timeout
        self._token: str | None = None

    def _open(self, url: str, accept: str | None) -> tuple[int, bytes, str]:
        req = urllib.request.Request(url, method="GET")  # noqa: S310 - https, or http on loopback only
        if accept:
            req.add_header("Accept", accept)
        if self._token:
            # Unredirected: blob downloads redirect to storage hosts, which must not see the token.
            req.add_unredirected_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:  # noqa: S310
                return resp.status, resp.read(MAX_DOCUMENT + 1), ""
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "") if exc.headers else ""
            return exc.code, b"", challenge
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise _Unreachable(f"{url}: {exc}") from exc

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise RequestError(
                "image_config_unavailable", f"{self._ref.name}: registry asks for {scheme or 'unknown'} auth"
            )
        fields = dict(_CHALLENGE_PARAM.findall(params))
        realm = fields.get("realm", "")
        parsed = urllib.parse.urlparse(realm)
        if parsed.scheme not in ("https", "http") or (
            parsed.scheme == "http" and not _is_loopback(parsed.netloc)
        ):
            raise RequestError(
                "image_config_unavailable", f"{self._ref.name}: unusable token realm {realm!r}"
            )
        query = {"scope": fields.get("scope") or f"repository:{self._ref.repository}:pull"}
        if "service" in fields:
            query["service"] = fields["service"]
        status, body, _ = self._open(f"{realm}?{urllib.parse.urlencode(query)}", None)
        if status != 200:
            raise RequestError(
                "image_config_unavailable", f"{self._ref.name}: token request answered {status}"
            )
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError) as exc:
            raise RequestError("image_config_unavailable", f"{self._ref.name}: bad token answer") from exc
        if not isinstance(token, str) or not token:
            raise RequestError("image_config_unavailable", f"{self._ref.name}: token answer has no token")
        self._token = token

    def get(self, kind: str, ref: str) -> bytes:
        path = "manifests" if kind == "manifest" else "blobs"
        url = f"{self._base}/{path}/{ref}"
        accept = ", ".join(MANIFEST_TYPES) if kind == "manifest" else None
        status, body, challenge = self._open(url, accept)
        if status == 401 and self._token is None:
            self._authenticate(challenge)
            status, body, challenge = self._open(url, accept)
        if status == 404:
            raise _NotFound(f"{url}: not found")
        if status != 200:
            raise RequestError("image_config_unavailable", f"{url}: registry answered {status}")
        if len(body) > MAX_DOCUMENT:
            raise RequestError("image_config_invalid", f"{url}: document larger than {MAX_DOCUMENT} bytes")
        return body


class _NotFound(Exception):
    pass


def from_registry(reference: str, timeout: float = TIMEOUT_SECONDS) -> Resolved | None:
    """The image's config from its registry, or None if the registry cannot be reached or lacks it."""
    client = RegistryClient(parse_reference(reference), timeout=timeout)
    try:
        return walk(reference, client.get)
    except (_Unreachable, _NotFound):
        return None


class OciLayout:
    """An OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/sha256/…``).

    A digest-pinned image is looked up by its digest among the blobs; a tag through the index's
    ``org.opencontainers.image.ref.name`` annotations.
    """

    def __init__(self, root: Path) -> None:
        if not (root / "oci-layout").is_file() or not (root / "index.json").is_file():
            raise RequestError(
                "image_layout_invalid", f"{root}: not an OCI image layout (no oci-layout/index.json)"
            )
        self.root = root

    def _blob(self, digest: str) -> bytes:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexpart):
            raise _NotFound(digest)
        path = self.root / "blobs" / "sha256" / hexpart
        if not path.is_file():
            raise _NotFound(digest)
        if path.stat().st_size > MAX_DOCUMENT:
            raise RequestError("image_config_invalid", f"{path}: larger than {MAX_DOCUMENT} bytes")
        return path.read_bytes()

    def _tagged(self, ref: Reference) -> bytes:
        try:
            index = json.loads((self.root / "index.json").read_bytes())
        except ValueError as exc:
            raise RequestError("image_layout_invalid", f"{self.root}/index.json is not JSON") from exc
        names = {ref.tag, f"{ref.name}:{ref.tag}"}
        for m in index.get("manifests", []) if isinstance(index, dict) else []:
            annotations = m.get("annotations") if isinstance(m, dict) else None
            if (
                isinstance(annotations, dict)
                and annotations.get("org.opencontainers.image.ref.name") in names
            ):
                return self._blob(str(m.get("digest", "")))
        raise _NotFound(ref.tag)

    def __call__(self, reference: str) -> Resolved | None:
        ref = parse_reference(reference)

        def fetch(kind: str, key: str) -> bytes:
            if kind == "manifest" and ref.digest is None and key == ref.tag:
                return self._tagged(ref)
            return self._blob(key)

        try:
            return walk(reference, fetch)
        except _NotFound:
            return None
