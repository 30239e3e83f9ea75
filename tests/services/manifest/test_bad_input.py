"""Malformed, oversized and hostile requests get typed errors; the replica keeps serving."""

from __future__ import annotations

import secrets
from pathlib import Path

import nats
import pytest

from contrast import subjects
from contrast.errors import ContrastError
from contrast.runtime import request
from contrast.runtime.endpoint import ERROR_CODE_HEADER
from contrast.wire.v1 import AttestedReply, ErrorReply, GetManifestRequest, SetManifestRequest, decoder
from tests.services.manifest.mfs_helpers import POLICIES, encode, manifest_obj, replica

GARBAGE = [b"", b"\xc1", b"\x80", b"\x81\xa5nonce\xc4\x01x", secrets.token_bytes(64)]
SUBJECTS = [
    subjects.USER_MANIFEST_SET,
    subjects.USER_MANIFEST_GET,
    subjects.USER_RECOVER,
    subjects.USER_STATUS,
    subjects.COORDINATOR_JOIN,
    subjects.COORDINATOR_JOIN_NONCE,
    f"{subjects.USER_RECOVER}.m1",
]


async def test_garbage_and_oversize(private_nats, emulator_dir: Path) -> None:
    async with replica(private_nats.url, emulator_dir, "m1"):
        nc = await nats.connect(private_nats.url)
        try:
            for subject in SUBJECTS:
                for data in GARBAGE:
                    if subject == subjects.COORDINATOR_JOIN_NONCE and data == b"\x80":
                        continue  # an empty map is a valid JoinNonceRequest
                    reply = await nc.request(subject, data, timeout=5)
                    code = (reply.headers or {}).get(ERROR_CODE_HEADER, "")
                    assert code.startswith(("request.", "state.")), (subject, data, code)
                    decoder(ErrorReply).decode(reply.data)
            reply = await nc.request(subjects.USER_MANIFEST_GET, b"\x00" * 1024, timeout=5)
            assert (reply.headers or {}).get(ERROR_CODE_HEADER) == "request.too_large"
            # A manifest that is not JSON at all, and one with a duplicate key: refused with a path.
            for raw in (b"\xff\xfe", b'{"Policies": {}, "Policies": {}}'):
                req = SetManifestRequest(nonce=secrets.token_bytes(32), manifest=raw, policies=[])
                with pytest.raises(ContrastError) as e:
                    await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply)
                assert e.value.code == "request.invalid_manifest"
            # Still serving.
            req = SetManifestRequest(
                nonce=secrets.token_bytes(32),
                manifest=encode(manifest_obj(emulator_dir)),
                policies=list(POLICIES.values()),
            )
            await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=20)
            await request(
                nc,
                subjects.USER_MANIFEST_GET,
                GetManifestRequest(nonce=secrets.token_bytes(32)),
                AttestedReply,
            )
        finally:
            await nc.close()
