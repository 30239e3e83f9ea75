"""Manifests for the coordinator tests: valid ones built from real owner keys, and ways to break them."""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contrast.crypto.ownerkeys import generate_workload_owner_key, public_key_hex

POLICY_COORD = b"package coordinator\ndefault allow := true\n"  # the manifest service
POLICY_VERIFIER = b"package coordinator\n# verifier\ndefault allow := true\n"
POLICY_CA = b"package coordinator\n# ca\ndefault allow := true\n"
POLICY_DB = b"package db\ndefault allow := true\n"
H_COORD = hashlib.sha256(POLICY_COORD).hexdigest()
H_VERIFIER = hashlib.sha256(POLICY_VERIFIER).hexdigest()
H_CA = hashlib.sha256(POLICY_CA).hexdigest()
H_DB = hashlib.sha256(POLICY_DB).hexdigest()


@cache
def owner_key() -> ec.EllipticCurvePrivateKey:
    return generate_workload_owner_key()


@cache
def share_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def snp_entry(**kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "Platform": "Milan",
        "ProductName": "Milan",
        "TrustedMeasurement": "ab" * 48,
        "MinimumTCB": {"BootloaderVersion": 3, "TEEVersion": 0, "SNPVersion": 8, "MicrocodeVersion": 115},
        "GuestPolicy": {
            "ABIMinor": 0,
            "ABIMajor": 0,
            "SMT": True,
            "MigrateMA": False,
            "Debug": False,
            "SingleSocket": False,
            "CXLAllowed": False,
            "MemAES256XTS": False,
            "RAPLDis": False,
            "CipherTextHiding": False,
            "PageSwapDisable": False,
        },
        "PlatformInfo": {
            "SMTEnabled": False,
            "TSMEEnabled": False,
            "ECCEnabled": False,
            "RAPLDisabled": False,
            "CiphertextHidingDRAMEnabled": False,
            "AliasCheckComplete": False,
            "TIOEnabled": False,
        },
        "VMPL": 0,
        "AllowedChipIDs": ["*"],
        "MinimumMitigationVector": None,
    }
    e.update(kw)
    return e


def tdx_entry(**kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "Platform": "TDX",
        "MrTd": "aa" * 48,
        "MrSeam": "bb" * 48,
        "Rtmrs": ["cc" * 48] * 4,
        "Xfam": "e702060000000000",
        "AllowedPIIDs": ["*"],
        "MinTCBEvaluationDataNumber": 17,
    }
    e.update(kw)
    return e


def manifest_obj(*, snp: bool = False, owners: list[str] | None = None, secret: str = "db") -> dict[str, Any]:
    return {
        "Policies": {
            H_COORD: {
                "SANs": [],
                "WorkloadSecretID": "",
                "Role": "coordinator",
                "CoordinatorRole": "manifest",
            },
            H_VERIFIER: {"SANs": [], "Role": "coordinator", "CoordinatorRole": "verifier"},
            H_CA: {"SANs": [], "Role": "coordinator", "CoordinatorRole": "ca"},
            H_DB: {"SANs": ["db.default.svc", "10.0.0.7"], "WorkloadSecretID": secret, "Role": ""},
        },
        "ReferenceValues": {"snp": [snp_entry()] if snp else [], "tdx": [tdx_entry()]},
        "WorkloadOwnerPubKeys": [public_key_hex(owner_key())] if owners is None else owners,
        "SeedshareOwnerPubKeys": [public_key_hex(share_key())],
    }


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, indent=2).encode()


def mutated(obj: dict[str, Any], path: list[str | int], value: Any = None, *, delete: bool = False) -> bytes:
    o = copy.deepcopy(obj)
    cur: Any = o
    for p in path[:-1]:
        cur = cur[p]
    if delete:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return encode(o)


POLICIES = {H_COORD: POLICY_COORD, H_VERIFIER: POLICY_VERIFIER, H_CA: POLICY_CA, H_DB: POLICY_DB}
