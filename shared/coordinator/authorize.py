"""Who may move the history forward: trust on first use, then the workload owners' signatures.

- **First set** (no history): accepted without a signature; it creates the seed (trust on first use).
- **Later sets**: a workload owner of the *active* manifest signs (new manifest hash ‖ current transition
  hash) with ECDSA P-384 (:func:`contrast.crypto.ownerkeys.sign_transition`). Because the signature
  names the transition it builds on, a captured ``set`` cannot be replayed once the history moved on, and
  an update prepared against an old head fails instead of silently overwriting a newer one.
- An empty ``WorkloadOwnerPubKeys`` in the active manifest makes the deployment immutable.
- ``SeedshareOwnerPubKeys`` can never change.
- ``expected_previous`` (``contrast set --atomic``): the caller's view of the head; if the head has moved,
  the set fails with ``state.stale`` before signatures are even looked at.
"""

from __future__ import annotations

from contrast.coordinator.history import Latest
from contrast.coordinator.manifest_format import ManifestDocument, check_update
from contrast.crypto.ownerkeys import verify_transition_signature
from contrast.errors import AuthError, StateError


def authorize_set(
    *,
    current: ManifestDocument | None,
    head: Latest | None,
    new: ManifestDocument,
    signature: bytes | None,
    expected_previous: bytes | None = None,
) -> None:
    """Raise unless ``new`` may become the next manifest after ``head`` (whose manifest is ``current``)."""
    if (current is None) != (head is None):
        raise ValueError("current manifest and head go together")
    if head is None or current is None:
        if expected_previous is not None:
            raise StateError("stale", "the Coordinator has no history yet, but the set expected one")
        return
    if current.hash != head.manifest_hash:
        raise ValueError("current is not the head's manifest")
    if expected_previous is not None and expected_previous != head.transition_hash:
        raise StateError("stale", "the history moved on since the set was prepared")
    check_update(current.manifest, new.manifest)
    if not current.manifest.WorkloadOwnerPubKeys:
        raise AuthError(
            "immutable", "the active manifest has no workload owners: the deployment is immutable"
        )
    if not signature:
        raise AuthError(
            "signature_required", "an update needs a workload-owner signature over the transition"
        )
    verify_transition_signature(
        current.manifest.WorkloadOwnerPubKeys, signature, new.hash, head.transition_hash
    )
