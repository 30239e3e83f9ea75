"""What a joining Coordinator replica receives: exactly the keys its role needs, sealed to its attested key.

============  ==============================================================================
role          secrets in the bundle (public parts -- root cert, intermediate, mesh CA, history
              public key, generation, head transition, service certificate -- go to every role)
============  ==============================================================================
``ca``        root CA key, mesh key, pod-state secret
``verifier``  nonce-MAC key (stateless nonce tokens); never the seed, root or mesh key
``manifest``  seed, salt and the mesh key (a ready peer recovering a stale manifest replica); it derives
              the rest. The mesh key travels too so that every ready manifest replica of one generation
              hands the same mesh CA to joining CA replicas (docs/protocol.md §4)
============  ==============================================================================

:func:`keys_for_role` builds a bundle from the seed engine and the current mesh authority;
:func:`seal_role_keys` / :func:`open_role_keys` wrap it in HPKE (:attr:`Protocol.COORDINATOR_JOIN`, or
:attr:`Protocol.PEER_RECOVERY` for the manifest role) bound to the join request's context (its nonce).
:meth:`RoleKeys.check` refuses a bundle that carries a secret its role must not have, or lacks one it needs,
so a confused sender cannot over-share silently.
"""

from __future__ import annotations

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from contrast.crypto.hpke import HpkePrivateKey, HpkePublicKey, Protocol
from contrast.crypto.kdf import SALT_SIZE, SEED_SIZE, SeedEngine
from contrast.errors import AuthError
from contrast.pki.mesh import MeshAuthority
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole

_DER = serialization.Encoding.DER
_SECRETS: dict[ServiceRole, frozenset[str]] = {
    ServiceRole.CA: frozenset({"root_key", "mesh_key", "pod_state_secret"}),
    ServiceRole.VERIFIER: frozenset({"nonce_mac_key"}),
    ServiceRole.MANIFEST: frozenset({"seed", "salt", "mesh_key"}),
}
_ALL_SECRETS = frozenset().union(*_SECRETS.values())


class RoleKeys(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The join bundle. Secret fields are empty bytes unless the role needs them."""

    role: str
    generation: int
    head_transition: bytes  # 32 bytes: the history head the keys belong to
    history_public_key: bytes  # 32 bytes raw Ed25519: for authenticated reads of the history
    root_cert: bytes  # DER
    intermediate: bytes  # DER
    mesh_ca: bytes  # DER
    service_cert: bytes  # DER, the joining replica's own certificate
    root_key: bytes = b""  # PKCS#8 DER
    mesh_key: bytes = b""  # PKCS#8 DER
    pod_state_secret: bytes = b""
    nonce_mac_key: bytes = b""
    seed: bytes = b""
    salt: bytes = b""

    def __repr__(self) -> str:
        return f"RoleKeys(role={self.role!r}, generation={self.generation})"

    def check(self) -> ServiceRole:
        """The role, after checking that exactly its secrets are present (``auth.bad_role_keys`` if not)."""
        try:
            role = ServiceRole(self.role)
        except ValueError:
            raise AuthError("bad_role_keys", f"unknown role {self.role!r}") from None
        for name in _ALL_SECRETS:
            present = bool(getattr(self, name))
            if present != (name in _SECRETS[role]):
                what = "carries" if present else "lacks"
                raise AuthError("bad_role_keys", f"a {role.value} bundle {what} {name}")
        if len(self.head_transition) != 32 or len(self.history_public_key) != 32 or self.generation < 1:
            raise AuthError("bad_role_keys", "bundle header is malformed")
        if role is ServiceRole.MANIFEST and (len(self.seed) != SEED_SIZE or len(self.salt) != SALT_SIZE):
            raise AuthError("bad_role_keys", "seed or salt has the wrong size")
        if role is ServiceRole.CA and len(self.pod_state_secret) != 32:
            raise AuthError("bad_role_keys", "pod-state secret has the wrong size")
        if role is ServiceRole.VERIFIER and len(self.nonce_mac_key) != 32:
            raise AuthError("bad_role_keys", "nonce-MAC key has the wrong size")
        return role

    def mesh_authority(self) -> MeshAuthority:
        """The mesh CA's signing half (CA and manifest roles)."""
        if self.check() not in (ServiceRole.CA, ServiceRole.MANIFEST):
            raise AuthError("bad_role_keys", "only CA and manifest bundles carry the mesh key")
        try:
            root = x509.load_der_x509_certificate(self.root_cert)
            return MeshAuthority.from_der(self.mesh_key, self.intermediate, self.mesh_ca, root=root)
        except (ValueError, TypeError) as e:
            raise AuthError("bad_role_keys", f"the mesh authority in the bundle is inconsistent: {e}") from e

    def root_key_object(self) -> ec.EllipticCurvePrivateKey:
        """The root CA key (CA role only), checked against the root certificate."""
        if self.check() is not ServiceRole.CA:
            raise AuthError("bad_role_keys", "only a CA bundle carries the root key")
        key = serialization.load_der_private_key(self.root_key, password=None)
        cert = x509.load_der_x509_certificate(self.root_cert)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise AuthError("bad_role_keys", "root key does not match the root certificate")
        return key

    def history_verify_key(self) -> ed25519.Ed25519PublicKey:
        return ed25519.Ed25519PublicKey.from_public_bytes(self.history_public_key)


def keys_for_role(
    role: ServiceRole,
    *,
    engine: SeedEngine,
    mesh: MeshAuthority,
    generation: int,
    head_transition: bytes,
    service_cert: x509.Certificate,
) -> RoleKeys:
    """Build the bundle for ``role`` from the holder of the seed (a ready manifest replica)."""
    root_key = engine.root_ca_key()
    secrets: dict[str, bytes] = {}
    if role is ServiceRole.CA:
        secrets = {
            "root_key": root_key.private_bytes(
                _DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            "mesh_key": mesh.key_der(),
            "pod_state_secret": engine.pod_state_secret(),
        }
    elif role is ServiceRole.VERIFIER:
        secrets = {"nonce_mac_key": engine.nonce_mac_key()}
    else:
        secrets = {"seed": engine.seed, "salt": engine.salt, "mesh_key": mesh.key_der()}
    bundle = RoleKeys(
        role=role.value,
        generation=generation,
        head_transition=head_transition,
        history_public_key=engine.history_signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        root_cert=root_certificate(root_key).public_bytes(_DER),
        intermediate=mesh.intermediate.public_bytes(_DER),
        mesh_ca=mesh.mesh_ca.public_bytes(_DER),
        service_cert=service_cert.public_bytes(_DER),
        **secrets,
    )
    bundle.check()
    return bundle


def _protocol(role: ServiceRole) -> Protocol:
    return Protocol.PEER_RECOVERY if role is ServiceRole.MANIFEST else Protocol.COORDINATOR_JOIN


def seal_role_keys(bundle: RoleKeys, recipient: HpkePublicKey | bytes, context: bytes) -> bytes:
    """Encode and HPKE-seal ``bundle`` to the joining replica's attested key, bound to ``context``."""
    role = bundle.check()
    pk = recipient if isinstance(recipient, HpkePublicKey) else HpkePublicKey(recipient)
    return pk.seal(_protocol(role), context, msgspec.msgpack.encode(bundle))


def open_role_keys(key: HpkePrivateKey, role: ServiceRole, context: bytes, sealed: bytes) -> RoleKeys:
    """Open a sealed bundle for ``role``; anything but exactly that role's bundle raises ``auth.*``."""
    raw = key.open(_protocol(role), context, sealed)
    try:
        bundle = msgspec.msgpack.decode(raw, type=RoleKeys)
    except msgspec.DecodeError as e:
        raise AuthError("bad_role_keys", "the bundle does not decode") from e
    if bundle.check() is not role:
        raise AuthError("bad_role_keys", f"expected a {role.value} bundle, got {bundle.role}")
    return bundle
