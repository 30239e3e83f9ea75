"""Workload attestation over NATS (docs/protocol.md §2-3): the messages a pod's attestation is made of.

Pure protocol logic shared by the verifier, CA and initializer services (none of it does I/O but the
single-use mark of a nonce, through the :class:`~contrast.kv.KeyValue` it is given):

- :mod:`.nonce`: stateless nonce tokens and their single-use mark in KV ``nonces``;
- :mod:`.verdict`: signing a :class:`~contrast.wire.v1.Verdict` with a verifier's service key, and checking
  it against the root CA and role ``verifier``;
- :mod:`.bundle`: the sealed result bundle: the CA's issuance and the initializer's checks.
"""
