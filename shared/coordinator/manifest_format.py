"""The manifest: its JSON format, strict decoding from the exact bytes, and ``validate``.

Shape (the names Contrast users already have)::

    {
      "Policies": {
        "<64 hex policy hash>": {"SANs": [...], "WorkloadSecretID": "...", "Role": ""},
        "<64 hex policy hash>": {"SANs": [], "Role": "coordinator", "CoordinatorRole": "verifier"}
      },
      "ReferenceValues": {"snp": [...], "tdx": [...]},
      "WorkloadOwnerPubKeys": ["<hex DER SPKI, ECDSA P-384>", ...],
      "SeedshareOwnerPubKeys": ["<hex DER SPKI, RSA >= 3072>", ...]
    }

``Role`` keeps Contrast's meaning: ``"coordinator"`` marks a policy of the Coordinator itself, which joins
instead of attesting for a mesh certificate; ``""`` (or absent) is a workload. Every Coordinator entry names
exactly one service role in ``CoordinatorRole`` (``manifest``, ``verifier`` or ``ca``), and that is the only
role a replica with that policy is ever granted: a join for another role is refused, only ``manifest``
evidence receives the seed, and only a ``verifier`` policy signs verdicts. A workload entry has no
``CoordinatorRole``. At least one ``manifest`` entry is required. ``docs/manifest.md`` is the reference.

The manifest is identified by SHA-256 over the bytes exactly as received; it is stored and served as those
bytes and never re-encoded. :func:`validate` reports *every* problem it finds, each prefixed with a
JSON path (``ReferenceValues.snp[0].MinimumTCB.BootloaderVersion: must be set``); :func:`parse_manifest`
returns a :class:`ManifestDocument` only when there are none.

Decoding is stricter than JSON: UTF-8 only, no duplicate object keys (two parsers must never see two
different manifests in the same bytes), no NaN/Infinity, no unknown fields anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec
import msgspec.inspect as mi

from contrast.crypto.ownerkeys import parse_seedshare_owner_pubkey, parse_workload_owner_pubkey
from contrast.errors import RequestError
from contrast.evidence.refvalues import ReferenceValues, SnpReferenceValues, TdxReferenceValues
from contrast.pki.san import parse_sans
from contrast.pki.service import ServiceRole

MAX_MANIFEST_SIZE: Final = 1 << 20
MAX_POLICY_DOCUMENT_SIZE: Final = 1 << 20
ROLE_COORDINATOR: Final = "coordinator"
COORDINATOR_ROLES: Final = tuple(r.value for r in ServiceRole)  # manifest, verifier, ca
_TOP_LEVEL: Final = ("Policies", "ReferenceValues", "WorkloadOwnerPubKeys", "SeedshareOwnerPubKeys")
_POLICY_HASH = re.compile(r"^[0-9a-f]{64}$")
_WORKLOAD_SECRET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,252}$")


class PolicyEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    SANs: list[str]
    WorkloadSecretID: str = ""
    Role: Literal["", "coordinator"] = ""
    # The one Coordinator service a ``Role: coordinator`` policy may act as; empty for a workload.
    CoordinatorRole: Literal["", "manifest", "verifier", "ca"] = ""

    @property
    def service_role(self) -> ServiceRole | None:
        """The Coordinator role this policy is bound to; None for a workload (or an unbound entry)."""
        if self.Role != ROLE_COORDINATOR or not self.CoordinatorRole:
            return None
        return ServiceRole(self.CoordinatorRole)


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    Policies: dict[str, PolicyEntry]
    ReferenceValues: ReferenceValues
    WorkloadOwnerPubKeys: list[str]
    SeedshareOwnerPubKeys: list[str]

    def policy(self, policy_hash: bytes) -> PolicyEntry | None:
        """The entry for a policy hash read from verified evidence (HOST_DATA / MR_CONFIG_ID[0:32])."""
        return self.Policies.get(policy_hash.hex()) if len(policy_hash) == 32 else None

    def coordinator_policy_hashes(self, role: ServiceRole | None = None) -> frozenset[bytes]:
        """The Coordinator policy hashes, or only those bound to ``role``."""
        return frozenset(
            bytes.fromhex(h)
            for h, e in self.Policies.items()
            if e.Role == ROLE_COORDINATOR and (role is None or e.service_role is role)
        )

    def coordinator_role(self, policy_hash: bytes) -> ServiceRole | None:
        """The Coordinator role bound to a policy hash from verified evidence; None if it is none."""
        entry = self.policy(policy_hash)
        return None if entry is None else entry.service_role


@dataclass(frozen=True, slots=True)
class ManifestDocument:
    """A validated manifest together with the exact bytes it came from and their SHA-256."""

    raw: bytes
    manifest: Manifest

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


class ManifestInvalid(RequestError):
    """``request.invalid_manifest``; ``problems`` lists every finding as ``<json path>: <message>``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else "")
        super().__init__("invalid_manifest", shown)


# ---- strict JSON ---------------------------------------------------------------------------------------


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _strict_json(data: bytes) -> Any:
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if text.startswith("\ufeff"):
        raise ValueError("byte-order mark is not allowed")
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


# ---- structural walk: every missing/unknown field, before msgspec checks values --------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(value: Any, t: mi.Type, path: str, problems: list[str]) -> bool:
    """Report missing, unknown and wrongly-shaped fields below ``path``; True if the subtree is clean."""
    if isinstance(t, mi.StructType):
        if not isinstance(value, dict):
            problems.append(f"{path or '$'}: must be an object")
            return False
        ok = True
        known = {f.encode_name: f for f in t.fields}
        for key in value:
            if key not in known:
                problems.append(f"{_join(path, key)}: unknown field")
                ok = False
        for name, f in known.items():
            if name not in value:
                if f.required:
                    problems.append(f"{_join(path, name)}: must be set")
                    ok = False
                continue
            ok = _walk(value[name], f.type, _join(path, name), problems) and ok
        return ok
    if isinstance(t, mi.ListType):
        if not isinstance(value, list):
            problems.append(f"{path}: must be a list")
            return False
        ok = True
        for i, item in enumerate(value):
            ok = _walk(item, t.item_type, f"{path}[{i}]", problems) and ok
        return ok
    if isinstance(t, mi.DictType):
        if not isinstance(value, dict):
            problems.append(f"{path}: must be an object")
            return False
        ok = True
        for k, item in value.items():
            ok = _walk(item, t.value_type, f"{path}.{k}", problems) and ok
        return ok
    return True  # scalars: msgspec checks types and values


def _convert_errors(value: Any, typ: Any, path: str, problems: list[str]) -> Any:
    """msgspec's typed conversion, with its error rewritten to our path style (``None`` on failure)."""
    try:
        return msgspec.convert(value, typ, strict=True)
    except msgspec.ValidationError as e:
        msg = str(e)
        where = ""
        m = re.search(r" - at `\$(.*)`$", msg)
        if m:
            msg, where = msg[: m.start()], m.group(1)
        problems.append(f"{path}{where}: {msg}")
    except (ValueError, TypeError) as e:
        # The type itself cannot be compiled: fail closed and say so instead of skipping the check.
        problems.append(f"{path}: cannot be checked ({e})")
    return None


@functools.cache
def _type_info(typ: Any) -> mi.Type | None:
    try:
        return mi.type_info(typ)
    except (ValueError, TypeError):
        return None


def _walk_entry(entry: Any, typ: Any, path: str, problems: list[str]) -> bool:
    info = _type_info(typ)
    if info is None:
        return True  # _convert_errors reports the same failure, closed
    return _walk(entry, info, path, problems)


def _no_debug(rv: SnpReferenceValues | TdxReferenceValues, path: str, problems: list[str]) -> None:
    if rv.AllowDebugInsecure:
        problems.append(f"{path}.AllowDebugInsecure: debug guests are never allowed in a manifest")
    if isinstance(rv, SnpReferenceValues) and rv.GuestPolicy.Debug:
        problems.append(f"{path}.GuestPolicy.Debug: debug guests are never allowed in a manifest")
    # TDX TD_ATTRIBUTES bit 0 (DEBUG), little-endian as in the quote.
    if (
        isinstance(rv, TdxReferenceValues)
        and rv.TdAttributes is not None
        and bytes.fromhex(rv.TdAttributes)[0] & 1
    ):
        problems.append(f"{path}.TdAttributes: the DEBUG bit is set; debug guests are never allowed")


def _check_reference_values(
    value: Any, problems: list[str]
) -> tuple[list[SnpReferenceValues], list[TdxReferenceValues]]:
    """Each ``snp[i]``/``tdx[i]`` entry on its own, so one bad entry does not hide problems in the next."""
    snp: list[SnpReferenceValues] = []
    tdx: list[TdxReferenceValues] = []
    if not isinstance(value, dict):
        problems.append("ReferenceValues: must be an object")
        return snp, tdx
    problems += [f"ReferenceValues.{k}: unknown field" for k in value if k not in ("snp", "tdx")]
    before = len(problems)
    for tee, typ, out in (("snp", SnpReferenceValues, snp), ("tdx", TdxReferenceValues, tdx)):
        entries = value.get(tee, [])
        if not isinstance(entries, list):
            problems.append(f"ReferenceValues.{tee}: must be a list")
            continue
        for i, entry in enumerate(entries):
            p = f"ReferenceValues.{tee}[{i}]"
            if not _walk_entry(entry, typ, p, problems):
                continue
            rv = _convert_errors(entry, typ, p, problems)
            if rv is not None:
                _no_debug(rv, p, problems)
                out.append(rv)
    if not snp and not tdx and len(problems) == before:
        problems.append("ReferenceValues: must contain at least one snp or tdx entry")
    if len({rv.is_emulated for rv in snp} | {rv.is_emulated for rv in tdx}) > 1:
        problems.append("ReferenceValues: insecure emulated platforms must not be mixed with real platforms")
    return snp, tdx


def _check_policies(value: Any, problems: list[str]) -> dict[str, PolicyEntry]:
    out: dict[str, PolicyEntry] = {}
    if not isinstance(value, dict):
        problems.append("Policies: must be an object")
        return out
    if not value:
        problems.append("Policies: must not be empty")
    roles: set[str] = set()
    for key, entry in value.items():
        p = f"Policies.{key}"
        if not _POLICY_HASH.match(key):
            problems.append(f"{p}: policy hash must be 64 lower-case hex digits")
        if not _walk_entry(entry, PolicyEntry, p, problems):
            continue
        e = _convert_errors(entry, PolicyEntry, p, problems)
        if e is None:
            continue
        out[key] = e
        if e.Role == ROLE_COORDINATOR:
            if not e.CoordinatorRole:
                problems.append(
                    f"{p}.CoordinatorRole: a coordinator policy must name its service role "
                    f"({', '.join(COORDINATOR_ROLES)})"
                )
            roles.add(e.CoordinatorRole)
        else:
            if e.CoordinatorRole:
                problems.append(f"{p}.CoordinatorRole: only a Role coordinator policy has a service role")
            if not e.SANs:
                problems.append(f"{p}.SANs: a workload policy needs at least one SAN")
        try:
            parse_sans(e.SANs)
        except ValueError as err:
            problems.append(f"{p}.SANs: {err}")
        if e.WorkloadSecretID and not _WORKLOAD_SECRET_ID.match(e.WorkloadSecretID):
            problems.append(f"{p}.WorkloadSecretID: must be 1-253 characters of [A-Za-z0-9._:/@-]")
    if value and not roles:
        problems.append("Policies: at least one policy must have Role coordinator")
    elif value and ServiceRole.MANIFEST.value not in roles:
        problems.append("Policies: at least one coordinator policy must have CoordinatorRole manifest")
    return out


def _check_keys(value: Any, field: str, problems: list[str]) -> list[str]:
    if not isinstance(value, list):
        problems.append(f"{field}: must be a list")
        return []
    parse = parse_workload_owner_pubkey if field == "WorkloadOwnerPubKeys" else parse_seedshare_owner_pubkey
    seen: list[str] = []
    for i, item in enumerate(value):
        p = f"{field}[{i}]"
        if not isinstance(item, str):
            problems.append(f"{p}: must be a string")
            continue
        try:
            parse(item, p)
        except RequestError as e:
            problems.append(e.message)
        if item in seen:
            problems.append(f"{p}: duplicate key")
        seen.append(item)
    return seen


def validate(data: bytes) -> list[str]:
    """Every problem in ``data`` as ``<json path>: <message>``; an empty list means a valid manifest."""
    problems, _ = _validate(data)
    return problems


def _validate(data: bytes) -> tuple[list[str], Manifest | None]:
    if len(data) > MAX_MANIFEST_SIZE:
        return [f"$: manifest larger than {MAX_MANIFEST_SIZE} bytes"], None
    try:
        obj = _strict_json(data)
    except (ValueError, RecursionError) as e:
        return [f"$: not strict JSON: {e}"], None
    if not isinstance(obj, dict):
        return ["$: must be an object"], None
    problems = [f"{k}: unknown field" for k in obj if k not in _TOP_LEVEL]
    problems += [f"{k}: must be set" for k in _TOP_LEVEL if k not in obj]
    policies = _check_policies(obj["Policies"], problems) if "Policies" in obj else {}
    snp, tdx = (
        ([], [])
        if "ReferenceValues" not in obj
        else _check_reference_values(obj["ReferenceValues"], problems)
    )
    owners = (
        _check_keys(obj["WorkloadOwnerPubKeys"], "WorkloadOwnerPubKeys", problems)
        if "WorkloadOwnerPubKeys" in obj
        else []
    )
    shares = (
        _check_keys(obj["SeedshareOwnerPubKeys"], "SeedshareOwnerPubKeys", problems)
        if "SeedshareOwnerPubKeys" in obj
        else []
    )
    if problems:
        return problems, None
    # Assembled from the pieces converted above (each strictly typed), so no value is taken unchecked.
    manifest = Manifest(
        Policies=policies,
        ReferenceValues=ReferenceValues(snp=snp, tdx=tdx),
        WorkloadOwnerPubKeys=owners,
        SeedshareOwnerPubKeys=shares,
    )
    return problems, manifest


def parse_manifest(data: bytes) -> ManifestDocument:
    """Decode and validate; raises :class:`ManifestInvalid` listing every problem."""
    problems, manifest = _validate(bytes(data))
    if problems or manifest is None:
        raise ManifestInvalid(problems or ["$: invalid manifest"])
    return ManifestDocument(raw=bytes(data), manifest=manifest)


# ---- policies and updates ---------------------------------------------------------------------------------


def check_policy_document(policy_hash_hex: str, document: bytes) -> None:
    """A policy document belongs to its manifest key only if SHA-256(document) equals that key."""
    if len(document) > MAX_POLICY_DOCUMENT_SIZE:
        raise RequestError("too_large", f"policy {policy_hash_hex[:16]}…: document too large")
    if hashlib.sha256(document).hexdigest() != policy_hash_hex:
        raise RequestError(
            "policy_hash_mismatch", f"policy {policy_hash_hex[:16]}…: SHA-256 does not match its key"
        )


def check_policies_supplied(manifest: Manifest, documents: dict[str, bytes]) -> None:
    """Exactly one matching document for every policy the manifest names, and nothing else."""
    missing = sorted(set(manifest.Policies) - set(documents))
    if missing:
        raise RequestError(
            "policy_missing", f"no policy document for {', '.join(h[:16] + '…' for h in missing)}"
        )
    extra = sorted(set(documents) - set(manifest.Policies))
    if extra:
        raise RequestError(
            "policy_not_in_manifest", f"policy documents not named by the manifest: {len(extra)}"
        )
    for h, doc in documents.items():
        check_policy_document(h, doc)


def check_update(current: Manifest, new: Manifest) -> None:
    """Invariants across a manifest update that do not depend on signatures.

    The seed-share owner list can never change: the seed shares handed out at the first set must stay the
    only way to recover.
    """
    if new.SeedshareOwnerPubKeys != current.SeedshareOwnerPubKeys:
        raise RequestError(
            "seedshare_owners_changed", "SeedshareOwnerPubKeys can never change after the first set"
        )
