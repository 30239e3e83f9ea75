"""Mesh leaves from a per-generation DER template: the bytes ``x509.CertificateBuilder`` makes, for less CPU.

Issuing a leaf through ``CertificateBuilder`` costs about as much again as its P-384 signature: every call
rebuilds and re-validates a dozen Python extension objects, recomputes the AuthorityKeyIdentifier from the
mesh key and re-parses the manifest's SAN strings. Almost all of that depends only on the generation's mesh
authority (issuer name, AKI, the fixed extensions) or on the manifest entry (the SAN extension). A
:class:`LeafTemplate` encodes those parts once and assembles each ``TBSCertificate`` by concatenation:

====================  ===========================================================================
part                  source
====================  ===========================================================================
version, algorithm    constants (v3; ecdsa-with-SHA384)
issuer                ``mesh_ca.subject``, encoded once per generation by ``cryptography``
BC, KU, EKU, AKI      encoded once per generation by ``cryptography``'s own extension encoders
SAN                   :func:`contrast.pki.san.parse_sans` + ``cryptography``'s encoder, cached per
                      exact tuple of manifest strings (a changed entry is a different key)
serial, validity      per leaf (random serial; UTCTime before 2050, GeneralizedTime after)
subject, SPKI, SKI    per leaf (``CN=<policy hash hex>``; the key's own DER; SHA-1 of its point)
claims                per leaf (policy hash, TEE, WorkloadSecretID when set)
====================  ===========================================================================

``tests/pki/test_leaf_template.py`` proves that the TBS bytes equal ``CertificateBuilder``'s for random
inputs (every SAN form, with and without a WorkloadSecretID, validity across the 2050 switch and capped at
the issuer's expiry), and that the signed leaves pass ``cryptography.x509.verification``. A template
belongs to one mesh authority; a new generation has a new authority and so a new template and cache.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from contrast.cache import BoundedCache
from contrast.pki import der, oids
from contrast.pki.root import name
from contrast.pki.san import parse_sans

SAN_CACHE_SIZE: Final = 512

_TAG_INTEGER: Final = 0x02
_TAG_BIT_STRING: Final = 0x03
_TAG_OID: Final = 0x06
_TAG_UTC_TIME: Final = 0x17
_TAG_GENERALIZED_TIME: Final = 0x18
_TAG_SEQUENCE: Final = 0x30
_TAG_EXTENSIONS: Final = 0xA3  # [3] EXPLICIT, constructed
_VERSION_V3: Final = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
_ECDSA_WITH_SHA384: Final = bytes.fromhex("300a06082a8648ce3d040303")  # AlgorithmIdentifier, no parameters
_CRITICAL: Final = bytes.fromhex("0101ff")  # BOOLEAN TRUE (FALSE is the DEFAULT and never encoded in DER)
# SubjectPublicKeyInfo header of an uncompressed P-256 point: id-ecPublicKey, prime256v1, BIT STRING(66).
_P256_SPKI_PREFIX: Final = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
_P256_POINT_SIZE: Final = 65
_EARLIEST: Final = dt.datetime(1950, 1, 1, tzinfo=dt.UTC)
_GENERALIZED_FROM: Final = dt.datetime(2050, 1, 1, tzinfo=dt.UTC)  # RFC 5280 §4.1.2.5
_LATEST: Final = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
_MAX_SERIAL: Final = 1 << 159  # RFC 5280: at most 20 octets, positive


def _seq(body: bytes) -> bytes:
    return der.encode(_TAG_SEQUENCE, body)


def encode_oid(oid: x509.ObjectIdentifier) -> bytes:
    """DER of an OBJECT IDENTIFIER (X.690 §8.19)."""
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError("invalid object identifier")
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return der.encode(_TAG_OID, bytes(body))


def encode_positive_integer(n: int) -> bytes:
    """DER of a positive INTEGER: minimal big-endian, a leading zero octet where the top bit is set."""
    if n <= 0:
        raise ValueError("serial numbers are positive")
    return der.encode(_TAG_INTEGER, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def encode_time(t: dt.datetime) -> bytes:
    """RFC 5280 §4.1.2.5 Time of an aware datetime, to the second (sub-second parts are dropped)."""
    if t.tzinfo is None:
        raise ValueError("certificate times must be timezone-aware")
    t = t.astimezone(dt.UTC)
    if not _EARLIEST <= t <= _LATEST:
        raise ValueError("certificate times lie in 1950..9999")
    if t < _GENERALIZED_FROM:
        return der.encode(_TAG_UTC_TIME, t.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return der.encode(_TAG_GENERALIZED_TIME, t.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


def encode_extension(oid: x509.ObjectIdentifier | bytes, value: bytes, *, critical: bool) -> bytes:
    """DER of one ``Extension`` with an already encoded ``extnValue`` (``oid`` as an object or its DER)."""
    oid_der = oid if isinstance(oid, bytes) else encode_oid(oid)
    return _seq(oid_der + (_CRITICAL if critical else b"") + der.octet_string(value))


def p256_spki_and_point(public_key: ec.EllipticCurvePublicKey) -> tuple[bytes, bytes]:
    """The key's SubjectPublicKeyInfo DER and its uncompressed point (the SKI input, RFC 5280 §4.2.1.2)."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if len(spki) != len(_P256_SPKI_PREFIX) + _P256_POINT_SIZE or not spki.startswith(_P256_SPKI_PREFIX):
        raise ValueError("leaf keys are P-256 (uncompressed SubjectPublicKeyInfo)")
    return spki, spki[len(_P256_SPKI_PREFIX) :]


_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_EKU: Final = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
_BASIC_CONSTRAINTS: Final = x509.BasicConstraints(ca=False, path_length=None)
_OID_WORKLOAD_SECRET_ID: Final = encode_oid(oids.WORKLOAD_SECRET_ID)
_POLICY_HASH_SIZE: Final = 32
_SKI_SIZE: Final = 20  # SHA-1


def _fixed_length_prefix(encode: Callable[[bytes], bytes], size: int) -> bytes:
    """Everything an encoder puts before a ``size``-byte value that it places last: encoded once."""
    full = encode(b"\x00" * size)
    if not full.endswith(b"\x00" * size):
        raise RuntimeError("the value must come last")
    return full[:-size]


# A leaf's subject, SKI and policy-hash claim have fixed-length values: their headers are constants.
_SUBJECT_PREFIX: Final = _fixed_length_prefix(
    lambda v: name(v.decode()).public_bytes(), 2 * _POLICY_HASH_SIZE
)
_SKI_PREFIX: Final = _fixed_length_prefix(
    lambda v: encode_extension(ExtensionOID.SUBJECT_KEY_IDENTIFIER, der.octet_string(v), critical=False),
    _SKI_SIZE,
)
_POLICY_HASH_PREFIX: Final = _fixed_length_prefix(
    lambda v: encode_extension(oids.POLICY_HASH, der.octet_string(v), critical=False), _POLICY_HASH_SIZE
)
_TEE_EXTENSIONS: Final = {
    tee: encode_extension(oids.TEE, der.utf8_string(tee), critical=False) for tee in ("snp", "tdx")
}


class LeafTemplate:
    """The generation-constant parts of a mesh leaf, encoded once, and a bounded cache of SAN extensions.

    Holds the mesh CA's private key (to sign): never log it. Not thread-safe; the CA uses it from its one
    event loop.
    """

    __slots__ = (
        "_algorithm_and_issuer",
        "_fixed_extensions",
        "_key",
        "_sans",
        "_signature_algorithm",
        "_tail_extensions",
        "checked",
    )

    def __init__(self, key: ec.EllipticCurvePrivateKey, issuer: x509.Name) -> None:
        if not isinstance(key.curve, ec.SECP384R1):
            raise ValueError("the mesh key is P-384")
        self._key = key
        self._signature_algorithm = ec.ECDSA(hashes.SHA384())
        self._algorithm_and_issuer = _ECDSA_WITH_SHA384 + issuer.public_bytes()
        self._fixed_extensions = (
            encode_extension(ExtensionOID.BASIC_CONSTRAINTS, _BASIC_CONSTRAINTS.public_bytes(), critical=True)
            + encode_extension(ExtensionOID.KEY_USAGE, _KEY_USAGE.public_bytes(), critical=True)
            + encode_extension(ExtensionOID.EXTENDED_KEY_USAGE, _EKU.public_bytes(), critical=False)
        )
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
        self._tail_extensions = encode_extension(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER, aki.public_bytes(), critical=False
        )
        self._sans: BoundedCache[tuple[str, ...], bytes] = BoundedCache(SAN_CACHE_SIZE)
        # Whether a leaf from this template has been read back and checked (see MeshAuthority.issue_leaf).
        self.checked = False

    def __repr__(self) -> str:
        return f"LeafTemplate(sans_cached={len(self._sans)})"

    def san_extension(self, sans: list[str] | tuple[str, ...]) -> bytes:
        """The encoded SAN ``Extension`` for these manifest strings (validated; ``ValueError`` if invalid).

        Keyed by the exact strings in order, so it is a pure function of its key: an edited manifest entry
        is a different key and never meets a stale value. Invalid inputs are never cached.
        """
        key = tuple(sans)

        def encode() -> bytes:
            names = parse_sans(key)
            if not names:
                raise ValueError("a leaf needs at least one SAN")
            return encode_extension(
                ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
                x509.SubjectAlternativeName(names).public_bytes(),
                critical=False,
            )

        return self._sans.get_or_compute(key, encode)

    def tbs(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        serial: int,
        not_before: dt.datetime,
        not_after: dt.datetime,
        sans: list[str] | tuple[str, ...],
        policy_hash: bytes,
        tee: str,
        workload_secret_id: str,
    ) -> bytes:
        """The DER ``TBSCertificate`` of a leaf."""
        if not 0 < serial < _MAX_SERIAL:
            raise ValueError("the serial number must be positive and at most 159 bits")
        if not_after < not_before:
            raise ValueError("the leaf's validity ends before it starts")
        if len(policy_hash) != _POLICY_HASH_SIZE:
            raise ValueError("policy hash is 32 bytes")
        tee_extension = _TEE_EXTENSIONS.get(tee)
        if tee_extension is None:
            raise ValueError("tee must be 'snp' or 'tdx'")
        spki, point = p256_spki_and_point(public_key)
        extensions = (
            self._fixed_extensions
            + self.san_extension(sans)
            # RFC 5280 §4.2.1.2 method 1, as cryptography computes it: an identifier, not a security hash.
            + _SKI_PREFIX
            + hashlib.sha1(point, usedforsecurity=False).digest()
            + self._tail_extensions
            + _POLICY_HASH_PREFIX
            + policy_hash
            + tee_extension
        )
        if workload_secret_id:
            extensions += encode_extension(
                _OID_WORKLOAD_SECRET_ID, der.utf8_string(workload_secret_id), critical=False
            )
        return _seq(
            _VERSION_V3
            + encode_positive_integer(serial)
            + self._algorithm_and_issuer
            + _seq(encode_time(not_before) + encode_time(not_after))
            + _SUBJECT_PREFIX
            + policy_hash.hex().encode("ascii")
            + spki
            + der.encode(_TAG_EXTENSIONS, _seq(extensions))
        )

    def sign(self, tbs: bytes) -> bytes:
        """The DER certificate: a :meth:`tbs` result signed with the mesh key (ECDSA P-384, SHA-384)."""
        return assemble(tbs, self._key.sign(tbs, self._signature_algorithm))


def assemble(tbs: bytes, signature: bytes) -> bytes:
    """DER ``Certificate``: the TBS, ecdsa-with-SHA384, and the DER ECDSA signature as a BIT STRING."""
    return _seq(tbs + _ECDSA_WITH_SHA384 + der.encode(_TAG_BIT_STRING, b"\x00" + signature))
