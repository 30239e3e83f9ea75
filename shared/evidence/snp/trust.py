"""Pinned AMD roots of trust: the ARK of each product line, by SHA-256 of its DER.

Only these fingerprints make an AMD chain trusted; certificate bytes supplied with evidence (or bundled here
for convenience) are checked against them, never trusted for having been supplied. The bundled KDS
``cert_chain`` PEMs (ASK/ASVK + ARK) in ``trust/`` let the CLI and verifier complete a chain when evidence
carries only the VCEK; they are loaded through the same checks.
"""

from __future__ import annotations

import functools
from importlib import resources
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contrast.evidence.snp.kds import Product

ARK_SHA256: MappingProxyType[Product, bytes] = MappingProxyType(
    {
        "Milan": bytes.fromhex("69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"),
        "Genoa": bytes.fromhex("4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"),
        "Turin": bytes.fromhex("1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"),
    }
)
PRODUCT_BY_ARK_SHA256: MappingProxyType[bytes, Product] = MappingProxyType(
    {v: k for k, v in ARK_SHA256.items()}
)

_BUNDLES: dict[tuple[Product, str], str] = {
    ("Milan", "VCEK"): "amd_milan_ask_ark.pem",
    ("Milan", "VLEK"): "amd_milan_asvk_ark.pem",
    ("Genoa", "VCEK"): "amd_genoa_ask_ark.pem",
    ("Genoa", "VLEK"): "amd_genoa_asvk_ark.pem",
    ("Turin", "VCEK"): "amd_turin_ask_ark.pem",
    ("Turin", "VLEK"): "amd_turin_asvk_ark.pem",
}


def bundled_chain_pem(product: Product, key: str = "VCEK") -> bytes:
    """The AMD KDS cert_chain bundle (intermediate + ARK, PEM) shipped with the package. Untrusted bytes."""
    name = _BUNDLES[(product, key)]
    return resources.files("contrast.evidence.snp").joinpath("trust", name).read_bytes()


def all_bundled_pems() -> list[bytes]:
    return [bundled_chain_pem(p, k) for (p, k) in _BUNDLES]


@functools.cache
def all_bundled_der() -> tuple[bytes, ...]:
    """Every bundled ASK/ASVK/ARK as DER (deduplicated), for evidence that carries only a VCEK."""
    out: dict[bytes, None] = {}
    for pem in all_bundled_pems():
        for cert in x509.load_pem_x509_certificates(pem):
            out[cert.public_bytes(serialization.Encoding.DER)] = None
    return tuple(out)
