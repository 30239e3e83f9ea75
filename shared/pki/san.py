"""Subject alternative names from manifest strings, by form: IP address, URI, or DNS name.

A manifest ``SANs`` entry is an IP address if it parses as one, a URI if it has the form
``scheme://authority...`` (or ``urn:``/``spiffe:`` style ``scheme:rest`` with a known scheme), and otherwise a
DNS name that must be valid LDH (an optional leading ``*.`` wildcard label is allowed). The lone ``*`` is
kept as the DNS name ``*``: ``contrast generate`` emits it (Contrast's convention for "any service name";
Go's TLS matches it against any single-label host name). Anything else is refused; the manifest validator
reports it, and issuance never sees it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

from cryptography import x509

MAX_SAN_LENGTH: Final = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_OPAQUE_URI_SCHEMES: Final = frozenset({"urn", "spiffe"})


def parse_san(value: str) -> x509.GeneralName:
    """The certificate GeneralName for one manifest SAN string; ``ValueError`` with a reason if invalid."""
    if not value or len(value) > MAX_SAN_LENGTH:
        raise ValueError(f"SAN must be 1..{MAX_SAN_LENGTH} characters")
    if value != value.strip() or any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise ValueError("SAN must be printable ASCII without spaces")
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if ":" in value:
        return x509.UniformResourceIdentifier(_check_uri(value))
    return x509.DNSName(_check_dns(value))


def _check_uri(value: str) -> str:
    scheme, _, rest = value.partition(":")
    if not _SCHEME.match(scheme):
        raise ValueError("URI SAN has an invalid scheme")
    if rest.startswith("//"):
        parts = urlsplit(value)
        if not parts.netloc:
            raise ValueError("URI SAN needs an authority after '//'")
        return value
    if scheme in _OPAQUE_URI_SCHEMES and rest:
        return value
    raise ValueError("SAN with ':' must be an IP address or a URI of the form scheme://authority")


def _check_dns(value: str) -> str:
    if value == "*":
        return value
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            raise ValueError("a wildcard DNS SAN needs at least two labels after '*.'")
    if not labels or not all(_LABEL.match(label) for label in labels):
        raise ValueError("DNS SAN must be lower-case letters, digits and '-' in dot-separated labels")
    if labels[-1].isdigit():
        raise ValueError("DNS SAN must not end in an all-numeric label")
    return name


def parse_sans(values: list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    """All SANs, in order, without duplicates."""
    names = [parse_san(v) for v in values]
    if len(set(names)) != len(names):
        raise ValueError("duplicate SAN")
    return names
