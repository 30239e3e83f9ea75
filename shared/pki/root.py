"""The root CA: a deterministic key from the seed and a byte-reproducible certificate.

Recovery must give back the *same* ``coordinator-root-ca.pem`` that users pinned, so every input to the root
certificate is a function of the seed-derived key:

- key: :meth:`contrast.crypto.kdf.SeedEngine.root_ca_key` (P-384);
- subject = issuer: ``CN=system:coordinator:root``;
- validity: the constants :data:`ROOT_NOT_BEFORE` … :data:`ROOT_NOT_AFTER` (RFC 5280 §4.1.2.5's "no
  well-defined expiration" date). The root has no natural lifetime: it lives as long as the seed, and
  rotating it means a new deployment;
- serial: 127 bits of SHA-256(``"contrast root serial v1"`` ‖ SubjectPublicKeyInfo);
- signature: ECDSA-SHA384 with RFC 6979 deterministic nonces, so the signature bytes repeat too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT_COMMON_NAME: Final = "system:coordinator:root"
ROOT_NOT_BEFORE: Final = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
ROOT_NOT_AFTER: Final = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
_SERIAL_LABEL: Final = b"contrast root serial v1"


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ca_extensions(
    builder: x509.CertificateBuilder, public_key: ec.EllipticCurvePublicKey, path_length: int | None
) -> x509.CertificateBuilder:
    """BasicConstraints, KeyUsage and SKI as RFC 5280 and the web PKI profile expect of a CA."""
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def root_certificate(root_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """The root CA certificate for ``root_key``: the same key always gives the same DER bytes."""
    if not isinstance(root_key.curve, ec.SECP384R1):
        raise ValueError("the root CA key is P-384")
    pub = root_key.public_key()
    serial = (int.from_bytes(hashlib.sha256(_SERIAL_LABEL + spki_der(pub)).digest()[:16], "big") >> 1) or 1
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(ROOT_COMMON_NAME))
        .issuer_name(name(ROOT_COMMON_NAME))
        .public_key(pub)
        .serial_number(serial)
        .not_valid_before(ROOT_NOT_BEFORE)
        .not_valid_after(ROOT_NOT_AFTER)
    )
    # Path length 1: root → intermediate → leaf, and root → service certificate.
    builder = ca_extensions(builder, pub, path_length=1)
    return builder.sign(root_key, hashes.SHA384(), ecdsa_deterministic=True)
