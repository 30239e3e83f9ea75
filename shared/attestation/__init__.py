"""Workload attestation over NATS: the protocol logic shared by the verifier, CA and initializer services.

Modules (each testable alone; none of the pure ones does I/O):

- :mod:`.nonce` -- stateless nonce tokens (docs/protocol.md §2) and the single-use mark in KV ``nonces``;
- :mod:`.verdict` -- signing a :class:`~contrast.wire.v1.Verdict` with a verifier's service key, and
  checking it against the root CA and role ``verifier``;
- :mod:`.bundle` -- the sealed result bundle: the CA's issuance and the initializer's checks;
- :mod:`.membership` -- how a Coordinator replica obtains its role keys (join, or an INSECURE test fixture);
- :mod:`.manifestview` -- the current manifest, read through the authenticated history;
- :mod:`.client` -- the initializer's client flow as a library (many emulated initializers in one process);
- :mod:`.files` -- writing the initializer's outputs atomically with their modes.
"""
