"""Every private object identifier Contrast puts into certificates, in one place.

The arc is a UUID OID (ITU-T X.667, ``2.25.<uuid as integer>``): globally unique without a registered
enterprise number, and owned by nobody else. Sub-arc 1 holds workload claims on mesh leaves, sub-arc 2 the
Coordinator service-certificate fields. All these extensions are non-critical, so generic TLS stacks that
do not know them still accept the certificates; Contrast's own checks read them.
"""

from __future__ import annotations

from typing import Final

from cryptography.x509.oid import ObjectIdentifier

ARC: Final = "2.25.309677036667665856362917949730287604482"

# Mesh leaves (issued by the mesh CA to attested workloads).
POLICY_HASH: Final = ObjectIdentifier(
    f"{ARC}.1.1"
)  # OCTET STRING, 32 bytes: SNP HOST_DATA / TDX MR_CONFIG_ID
TEE: Final = ObjectIdentifier(f"{ARC}.1.2")  # UTF8String: "snp" | "tdx"
WORKLOAD_SECRET_ID: Final = ObjectIdentifier(f"{ARC}.1.3")  # UTF8String, only where the manifest sets one

# Coordinator service certificates (issued by the root CA to joined replicas).
SERVICE_ROLE: Final = ObjectIdentifier(f"{ARC}.2.1")  # UTF8String: "manifest" | "verifier" | "ca"
# OCTET STRING, 32 bytes: the joiner's policy hash from its verified join evidence (never from its request),
# so that a service certificate stops counting once a manifest update removes that Coordinator policy.
SERVICE_POLICY_HASH: Final = ObjectIdentifier(f"{ARC}.2.2")
