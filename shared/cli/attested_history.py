"""The owners' view of the Coordinator: attested reads of its history, checked against the local manifest.

:func:`fetch_history` sends ``get`` with a fresh nonce, checks the replica's evidence against the *local*
manifest (reference values, a ``coordinator`` policy hash, the binding of nonce, transition, CA certificates
and payload), then checks the served history without trusting the store: the signed ``latest`` pointer under
the served history key (which the evidence binds), and the whole chain re-hashed back to the first manifest
(:func:`contrast.coordinator.history.verify_exported_chain`).
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
from dataclasses import dataclass

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from nats.aio.client import Client

from contrast import subjects
from contrast.cli.common import collateral_provider, now, patient_request, read_file, with_collateral
from contrast.collateral.provider import CollateralProvider
from contrast.coordinator.history import HistoryEntry, LatestPointer, verify_exported_chain
from contrast.coordinator.manifest_format import ManifestDocument, parse_manifest
from contrast.coordinator.user_protocol import verify_attested_reply
from contrast.errors import AuthError, InternalError, StoreError
from contrast.evidence.result import Claims
from contrast.evidence.verifier import EvidenceVerifier
from contrast.wire.v1 import AttestedReply, GetManifestRequest, HistoryExport, decoder


@dataclass(frozen=True)
class CheckedHistory:
    reply: AttestedReply
    export: HistoryExport
    claims: Claims
    entries: list[HistoryEntry]  # oldest first
    policies: dict[str, bytes]  # hex sha256 → document
    root_ca: x509.Certificate
    mesh_ca: x509.Certificate
    intermediate: x509.Certificate

    @property
    def active(self) -> ManifestDocument:
        return self.entries[-1].manifest


def load_manifest(path: str) -> ManifestDocument:
    """The local manifest; ``request.invalid_manifest`` lists every problem with its JSON path."""
    raw = read_file(path, "manifest")
    return parse_manifest(raw)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as e:
        raise AuthError("bad_certificate", f"the Coordinator's {what} does not parse") from e


def check_ca_pair(root: x509.Certificate, intermediate: x509.Certificate, mesh: x509.Certificate) -> None:
    """The mesh CA is the self-signed twin of a root-issued intermediate (same key and subject)."""
    try:
        intermediate.verify_directly_issued_by(root)
        mesh.verify_directly_issued_by(mesh)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise AuthError("bad_certificate", "the mesh CA does not chain to the root CA") from e
    if mesh.public_key() != intermediate.public_key() or mesh.subject != intermediate.subject:
        raise AuthError("bad_certificate", "the mesh CA and the intermediate differ")


async def fetch_history(
    args: argparse.Namespace,
    nc: Client,
    manifest: ManifestDocument,
    verifier: EvidenceVerifier,
    provider: CollateralProvider | None = None,
) -> CheckedHistory:
    """Attested ``get`` and a full, store-independent check of the history it returns."""
    sent, reply = await patient_request(
        args,
        nc,
        subjects.USER_MANIFEST_GET,
        lambda: GetManifestRequest(nonce=secrets.token_bytes(32)),
        AttestedReply,
    )
    evidence = await with_collateral(provider or collateral_provider(args), reply.evidence, manifest.manifest)
    reply = msgspec.structs.replace(reply, evidence=evidence)
    claims = verify_attested_reply(reply, sent.nonce, manifest.manifest, verifier=verifier, now=now())
    try:
        export = decoder(HistoryExport).decode(reply.payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:  # attested, but malformed
        raise InternalError("bad_reply", "the attested history does not decode") from e
    key = ed25519.Ed25519PublicKey.from_public_bytes(export.history_public_key)
    pointer = LatestPointer.verify(export.latest_pointer, key)
    if pointer.transition_hash != reply.transition_hash or pointer.generation != export.generation:
        raise StoreError(
            "latest_mismatch", "the signed latest pointer is not the transition the Coordinator attests"
        )
    transitions = {hashlib.sha256(t).digest(): t for t in export.transitions}
    manifests = {hashlib.sha256(m).digest(): m for m in export.manifests}
    entries = verify_exported_chain(reply.transition_hash, transitions, manifests)
    if len(entries) != export.generation:
        raise StoreError("generation_mismatch", "the history's length does not match its generation")
    policies = {hashlib.sha256(p).hexdigest(): p for p in export.policies}
    for entry in entries:
        missing = [h for h in entry.manifest.manifest.Policies if h not in policies]
        if missing:
            raise StoreError(
                "missing_policy", f"policy {missing[0][:16]}… of generation {entry.generation} is missing"
            )
    root = load_cert(reply.root_ca, "root CA")
    mesh = load_cert(reply.mesh_ca, "mesh CA")
    intermediate = load_cert(export.intermediate, "intermediate")
    check_ca_pair(root, intermediate, mesh)
    return CheckedHistory(
        reply=reply,
        export=export,
        claims=claims,
        entries=entries,
        policies=policies,
        root_ca=root,
        mesh_ca=mesh,
        intermediate=intermediate,
    )
