"""Manifest decoding and validation: every problem reported, with its JSON path; exact bytes, exact hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.coordinator.manifest_format import (
    ManifestInvalid,
    check_policies_supplied,
    check_policy_document,
    check_update,
    parse_manifest,
    validate,
)
from contrast.crypto.ownerkeys import generate_workload_owner_key, public_key_hex
from contrast.errors import RequestError
from contrast.generate import platforms
from contrast.pki.service import ServiceRole
from tests.coordinator.coord_fixtures import (
    H_CA,
    H_COORD,
    H_DB,
    H_VERIFIER,
    POLICIES,
    encode,
    manifest_obj,
    mutated,
    snp_entry,
    tdx_entry,
)


def test_valid_manifest_round_trip() -> None:
    raw = encode(manifest_obj())
    assert validate(raw) == []
    doc = parse_manifest(raw)
    assert doc.raw == raw
    assert doc.hash == hashlib.sha256(raw).digest()
    m = doc.manifest
    assert m.coordinator_policy_hashes() == {bytes.fromhex(h) for h in (H_COORD, H_VERIFIER, H_CA)}
    assert m.coordinator_policy_hashes(ServiceRole.VERIFIER) == {bytes.fromhex(H_VERIFIER)}
    assert m.coordinator_role(bytes.fromhex(H_CA)) is ServiceRole.CA
    assert m.coordinator_role(bytes.fromhex(H_COORD)) is ServiceRole.MANIFEST
    assert m.coordinator_role(bytes.fromhex(H_DB)) is None
    entry = m.policy(bytes.fromhex(H_DB))
    assert entry is not None
    assert entry.WorkloadSecretID == "db"
    assert m.policy(bytes(32)) is None
    assert m.policy(b"short") is None


def test_hash_is_over_exact_bytes() -> None:
    a = json.dumps(manifest_obj()).encode()
    b = json.dumps(manifest_obj(), indent=1).encode()
    assert parse_manifest(a).manifest == parse_manifest(b).manifest
    assert parse_manifest(a).hash != parse_manifest(b).hash


def test_snp_manifest_validates() -> None:
    assert validate(encode(manifest_obj(snp=True))) == []


def test_every_problem_is_reported_with_its_path() -> None:
    obj = manifest_obj(snp=True)
    del obj["ReferenceValues"]["snp"][0]["MinimumTCB"]["BootloaderVersion"]
    obj["ReferenceValues"]["tdx"][0]["MrTd"] = "zz"
    obj["Policies"]["AB"] = {"SANs": ["bad name"]}
    obj["Extra"] = 1
    problems = validate(encode(obj))
    assert "ReferenceValues.snp[0].MinimumTCB.BootloaderVersion: must be set" in problems
    assert any(p.startswith("ReferenceValues.tdx[0].MrTd:") for p in problems)
    assert "Policies.AB: policy hash must be 64 lower-case hex digits" in problems
    assert any(p.startswith("Policies.AB.SANs:") for p in problems)
    assert "Extra: unknown field" in problems
    with pytest.raises(ManifestInvalid) as e:
        parse_manifest(encode(obj))
    assert e.value.code == "request.invalid_manifest"
    assert set(e.value.problems) == set(problems)


@pytest.mark.parametrize(
    ("path", "value", "delete", "expected"),
    [
        (
            ["Policies", H_COORD, "CoordinatorRole"],
            None,
            True,
            f"Policies.{H_COORD}.CoordinatorRole: a coordinator policy must name its service role",
        ),
        (["Policies", H_CA, "CoordinatorRole"], "root", False, f"Policies.{H_CA}.CoordinatorRole:"),
        (
            ["Policies", H_DB, "CoordinatorRole"],
            "verifier",
            False,
            f"Policies.{H_DB}.CoordinatorRole: only a Role coordinator policy has a service role",
        ),
        (
            ["Policies", H_COORD, "CoordinatorRole"],
            "verifier",
            False,
            "Policies: at least one coordinator policy must have CoordinatorRole manifest",
        ),
        (["Policies"], {}, False, "Policies: must not be empty"),
        (
            ["Policies", H_DB, "SANs"],
            [],
            False,
            f"Policies.{H_DB}.SANs: a workload policy needs at least one SAN",
        ),
        (["Policies", H_DB, "Role"], "admin", False, f"Policies.{H_DB}.Role:"),
        (["Policies", H_DB, "WorkloadSecretID"], "has space", False, f"Policies.{H_DB}.WorkloadSecretID:"),
        (["Policies", H_DB, "SANs"], ["a", "a"], False, f"Policies.{H_DB}.SANs: duplicate SAN"),
        (["Policies", H_DB, "Extra"], 1, False, f"Policies.{H_DB}.Extra: unknown field"),
        (
            ["ReferenceValues", "tdx"],
            [],
            False,
            "ReferenceValues: must contain at least one snp or tdx entry",
        ),
        (["ReferenceValues", "sgx"], [], False, "ReferenceValues.sgx: unknown field"),
        (["ReferenceValues", "tdx", 0, "Rtmrs"], ["cc" * 48] * 3, False, "ReferenceValues.tdx[0].Rtmrs"),
        (["ReferenceValues", "tdx", 0, "MrSeam"], "bb" * 47, False, "ReferenceValues.tdx[0].MrSeam"),
        (["ReferenceValues", "tdx", 0, "MrTd"], None, True, "ReferenceValues.tdx[0].MrTd: must be set"),
        (
            ["ReferenceValues", "tdx", 0, "AllowDebugInsecure"],
            True,
            False,
            "ReferenceValues.tdx[0].AllowDebugInsecure",
        ),
        (
            ["ReferenceValues", "tdx", 0, "TdAttributes"],
            "0100000000000000",
            False,
            "ReferenceValues.tdx[0].TdAttributes",
        ),
        (["WorkloadOwnerPubKeys"], ["00"], False, "WorkloadOwnerPubKeys[0]"),
        (["WorkloadOwnerPubKeys"], None, True, "WorkloadOwnerPubKeys: must be set"),
        (
            ["SeedshareOwnerPubKeys"],
            [public_key_hex(generate_workload_owner_key())],
            False,
            "SeedshareOwnerPubKeys[0]",
        ),
        (["SeedshareOwnerPubKeys"], "x", False, "SeedshareOwnerPubKeys: must be a list"),
    ],
)
def test_rules(path: list[str | int], value: object, delete: bool, expected: str) -> None:
    problems = validate(mutated(manifest_obj(), path, value, delete=delete))
    assert any(p.startswith(expected) for p in problems), problems


def test_a_manifest_needs_a_coordinator_at_all() -> None:
    obj = manifest_obj()
    obj["Policies"] = {H_DB: obj["Policies"][H_DB]}
    assert "Policies: at least one policy must have Role coordinator" in validate(encode(obj))


def test_snp_debug_is_refused() -> None:
    gp = dict(snp_entry()["GuestPolicy"], Debug=True)
    obj = manifest_obj()
    obj["ReferenceValues"]["snp"] = [snp_entry(GuestPolicy=gp, AllowDebugInsecure=True)]
    problems = validate(encode(obj))
    assert (
        "ReferenceValues.snp[0].AllowDebugInsecure: debug guests are never allowed in a manifest" in problems
    )
    assert (
        "ReferenceValues.snp[0].GuestPolicy.Debug: debug guests are never allowed in a manifest" in problems
    )


def test_emulated_never_mixed_across_tees() -> None:
    obj = manifest_obj()
    obj["ReferenceValues"]["tdx"].append(
        tdx_entry(Platform="Emulated-TDX", EmulatorRootFingerprint="00" * 32)
    )
    assert "ReferenceValues: insecure emulated platforms must not be mixed with real platforms" in validate(
        encode(obj)
    )
    obj["ReferenceValues"]["tdx"] = [obj["ReferenceValues"]["tdx"][1]]
    assert validate(encode(obj)) == []


def test_duplicate_owner_keys() -> None:
    k = public_key_hex(generate_workload_owner_key())
    assert "WorkloadOwnerPubKeys[1]: duplicate key" in validate(encode(manifest_obj(owners=[k, k])))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"\xef\xbb\xbf{}",
        b'{"Policies": {}, "Policies": {}}',
        b'{"a": NaN}',
        b"\xff\xfe",
        b"{" * 100000,
        b" " * (1 << 20 + 1),
    ],
)
def test_strict_json(raw: bytes) -> None:
    problems = validate(raw)
    assert problems
    assert problems[0].startswith("$")


def test_duplicate_nested_key_is_refused() -> None:
    raw = encode(manifest_obj()).replace(b'"Role": "coordinator"', b'"Role": "coordinator", "Role": ""', 1)
    assert validate(raw)[0].startswith("$: not strict JSON: duplicate key")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_validate_never_crashes_on_bytes(raw: bytes) -> None:
    assert isinstance(validate(raw), list)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


_shapes = st.fixed_dictionaries(
    {},
    optional={
        "Policies": _json,
        "ReferenceValues": _json | st.fixed_dictionaries({}, optional={"snp": _json, "tdx": _json}),
        "WorkloadOwnerPubKeys": _json,
        "SeedshareOwnerPubKeys": _json,
    },
)


def _check_shape(obj: dict[str, object]) -> None:
    assert validate(json.dumps(obj).encode())  # none of these is a valid manifest


@settings(max_examples=40, deadline=None)
@given(_shapes)
def test_validate_never_crashes_on_shapes(obj: dict[str, object]) -> None:
    _check_shape(obj)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None)
@given(_shapes)
def test_validate_never_crashes_on_shapes_campaign(obj: dict[str, object]) -> None:
    _check_shape(obj)


def test_policy_documents() -> None:
    m = parse_manifest(encode(manifest_obj())).manifest
    check_policies_supplied(m, POLICIES)
    with pytest.raises(RequestError) as e:
        check_policies_supplied(m, {H_COORD: POLICIES[H_COORD]})
    assert e.value.code == "request.policy_missing"
    with pytest.raises(RequestError) as e:
        check_policies_supplied(m, {**POLICIES, "00" * 32: b"x"})
    assert e.value.code == "request.policy_not_in_manifest"
    with pytest.raises(RequestError) as e:
        check_policies_supplied(m, {**POLICIES, H_COORD: POLICIES[H_DB]})
    assert e.value.code == "request.policy_hash_mismatch"
    with pytest.raises(RequestError) as e:
        check_policy_document(H_DB, POLICIES[H_DB] + b" ")
    assert e.value.code == "request.policy_hash_mismatch"


def test_seedshare_owners_never_change() -> None:
    a = parse_manifest(encode(manifest_obj())).manifest
    check_update(a, parse_manifest(encode(manifest_obj(secret="db2"))).manifest)
    obj = manifest_obj()
    obj["SeedshareOwnerPubKeys"] = []
    with pytest.raises(RequestError) as e:
        check_update(a, parse_manifest(encode(obj)).manifest)
    assert e.value.code == "request.seedshare_owners_changed"


def _leaves(o: object, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(o, dict):
        return [p for k, v in o.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(o, list):
        return [p for i, v in enumerate(o) for p in _leaves(v, (*path, i))] or [path]
    return [path]


_VALID = manifest_obj(snp=True)
_PATHS = [p for p in _leaves(_VALID) if p]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(_PATHS), _json)
def test_mutating_any_leaf_is_reported_or_still_valid(path: tuple[str | int, ...], value: object) -> None:
    raw = mutated(_VALID, list(path), value)
    problems = validate(raw)
    if problems:
        with pytest.raises(ManifestInvalid):
            parse_manifest(raw)
    else:
        assert parse_manifest(raw).raw == raw


def test_generated_emulator_reference_values_validate(tmp_path: Path) -> None:
    # What `contrast generate --reference-values emulated-tdx` writes must pass our validation as is.
    obj = manifest_obj()
    obj["ReferenceValues"] = platforms.reference_values("emulated-tdx", emulator_dir=tmp_path)
    assert validate(encode(obj)) == []
    # ...and must not be mixed with a real platform.
    obj["ReferenceValues"]["tdx"].append(tdx_entry())
    assert "ReferenceValues: insecure emulated platforms must not be mixed with real platforms" in validate(
        encode(obj)
    )
