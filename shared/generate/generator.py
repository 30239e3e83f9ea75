"""Turn Kubernetes YAML into a confidential deployment: inject, pin a policy, and describe it in the manifest.

:func:`process` is pure (documents in memory in, changed documents and manifest entries out); :func:`run` adds
the file I/O of ``contrast generate``. Nothing is written unless every workload could be processed, so a
refusal leaves the user's files as they were.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from contrast.coordinator import manifest_format
from contrast.coordinator.pins import ROOT_ENV
from contrast.crypto.ownerkeys import ensure_owner_keys, public_key_hex
from contrast.errors import RequestError
from contrast.evidence.refvalues import ReferenceValues
from contrast.generate import annotations as ann
from contrast.generate import coordinators, inject, jsonpatch, mesh, platforms, registry
from contrast.generate import policy as pol
from contrast.generate.imageconfig import LOCK_FILE, ImageConfigs, Source, load_lock
from contrast.generate.images import INITIALIZER_IMAGE, is_pinned
from contrast.generate.workloads import Workload, as_workload
from contrast.generate.yamldocs import YamlFile, dump_document, iter_yaml_paths, read_file
from contrast.pki.service import ServiceRole

MANIFEST_FILE = "manifest.json"
POLICIES_DIR = "policies"  # <workspace>/policies/<hash>.toml: the documents `contrast set` sends
_POLICY_FILE = re.compile(r"^[0-9a-f]{64}\.toml$")


@dataclass(frozen=True)
class Options:
    allow_mutable_images: bool = False
    initializer_image: str = INITIALIZER_IMAGE
    mesh_image: str = INITIALIZER_IMAGE  # the service image runs the sidecar too
    guest_default_deny: bool = False  # the guest closes pods until their mesh is ready (generate.mesh)
    nats_url: str = inject.DEFAULT_NATS_URL
    # Contrast's default SANs are [name, "*"]; "*" makes the certificate valid for any host name, leaving the
    # mesh CA (every workload of this manifest) as the identity that peers check.
    wildcard_san: bool = True
    # Where image configs come from besides the lock file: these OCI image layouts, then (unless offline)
    # the images' registries.
    image_layouts: tuple[Path, ...] = ()
    offline: bool = False
    # SHA-256 of the Coordinator's root CA (after the first `set`): pinned into every workload and every
    # verifier and CA replica. None keeps a pin the YAML already carries, or pins nothing.
    coordinator_root: bytes | None = None
    # CONTRAST_PEER_TDX_TCB_STATUSES for every pod (run() derives it from the TDX reference values).
    peer_tdx_statuses: str = ""


@dataclass(frozen=True)
class WorkloadReport:
    path: Path
    ref: str
    policy_hash: str
    role: str
    initializer: bool
    coordinator_role: str = ""  # manifest, verifier or ca for a Coordinator pod


@dataclass
class Outcome:
    files: list[YamlFile]
    workloads: list[WorkloadReport] = field(default_factory=list)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)  # policy hash -> initdata document
    warnings: list[str] = field(default_factory=list)
    images: ImageConfigs = field(default_factory=ImageConfigs)  # the image configs the policies used


def _entry(w: Workload, role: str, service: ServiceRole | None, options: Options) -> dict[str, Any]:
    secret_id = ann.read(w.obj, w.template, ann.WORKLOAD_SECRET_ID, w.ref)
    if secret_id == "":
        raise RequestError("annotation_invalid", f"{w.ref}: {ann.WORKLOAD_SECRET_ID} must not be empty")
    entry = {
        "SANs": [w.name, "*"] if options.wildcard_san else [w.name],
        "WorkloadSecretID": secret_id if secret_id is not None else w.default_secret_id(),
        "Role": role,
    }
    if service is not None:
        entry["CoordinatorRole"] = service.value
    return entry


def _strings(meta: Any, key: str) -> dict[str, str]:
    value = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def pod_settings(w: Workload) -> pol.PodSettings:
    """What the policy needs beyond the pod spec: pod names, exec commands, logs, labels."""
    names = w.pod_names()
    meta = w.template.get("metadata")
    job = w.obj.get("spec") if w.kind == "Job" else None
    if w.kind == "CronJob":
        job = ((w.obj.get("spec") or {}).get("jobTemplate") or {}).get("spec")
    indexed = isinstance(job, dict) and job.get("completionMode") == "Indexed"
    return pol.PodSettings(
        # The Job controller adds the completion index to the containers of an indexed Job.
        runtime_env={"JOB_COMPLETION_INDEX": "^(?:0|[1-9][0-9]{0,8})$"} if indexed else {},
        pod_name_regex=names.regex,
        hostname_regex=names.hostname_regex(w.pod_spec.get("hostname")),
        exec_commands=ann.exec_commands(w.obj, w.template, w.ref),
        read_stream=ann.flag(w.obj, w.template, ann.ALLOW_LOGS, w.ref),
        labels=_strings(meta, "labels"),
        annotations=_strings(meta, "annotations"),
    )


@dataclass
class _Pins:
    """The Coordinator policy hashes seen so far, by role, and what every pod pins besides them."""

    hashes: dict[ServiceRole, list[str]] = field(default_factory=dict)
    root: str | None = None
    tdx_statuses: str = ""

    def of(self, service: ServiceRole | None, kept_root: str | None = None) -> dict[str, str]:
        return coordinators.pins_for(
            service, self.hashes, root=self.root, tdx_statuses=self.tdx_statuses, kept_root=kept_root
        )


def _process_workload(
    w: Workload, path: Path, options: Options, out: Outcome, pins: _Pins, service: ServiceRole | None
) -> None:
    """``service`` is the Coordinator role of a Coordinator pod, None for a workload."""
    skip = ann.flag(w.obj, w.template, ann.SKIP_INITIALIZER, w.ref)
    role = ann.role(w.obj, w.template, w.ref)
    # The Coordinator attests itself when it joins; others get the initializer unless they opt out.
    with_initializer = not skip and role != ann.ROLE_COORDINATOR
    mesh.inject(
        w,
        image=options.mesh_image,
        with_initializer=with_initializer,
        guest_default_deny=options.guest_default_deny,
    )
    if service is not None:
        _, container = coordinators.service_container(w)
        kept = inject.container_env(container, ROOT_ENV)
        inject.set_pins(container, pins.of(service, kept_root=kept), w.ref)
    elif with_initializer:
        inject.inject(
            w.pod_spec,
            image=options.initializer_image,
            nats_url=options.nats_url,
            pins=pins.of(None),
            ref=w.ref,
        )
    policy = pol.build(
        w.pod_spec,
        namespace=w.namespace,
        ref=w.ref,
        settings=pod_settings(w),
        images=out.images.config,
        allow_mutable_images=options.allow_mutable_images,
    )
    out.warnings.extend(policy.warnings)
    digest = policy.hash_hex
    ann.set_pod_annotation(w.template, ann.POLICY_HASH, digest)
    existing = ann.get_pod_annotation(w.template, ann.KATA_INITDATA)
    keep = False
    if isinstance(existing, str):
        try:
            keep = pol.decode_annotation(existing) == policy.initdata
        except RequestError:
            keep = False
    if not keep:
        ann.set_pod_annotation(w.template, ann.KATA_INITDATA, policy.annotation)

    entry = _entry(w, role, service, options)
    previous = out.policies.get(digest)
    if previous is not None and previous != entry:
        raise RequestError(
            "policy_conflict",
            f"{w.ref}: has the same policy hash {digest} as another workload but a different manifest entry "
            f"(SANs {previous['SANs']} vs {entry['SANs']}, role {previous.get('CoordinatorRole', '')!r} vs "
            f"{entry.get('CoordinatorRole', '')!r}); the Coordinator could not tell them apart. "
            "Make the pods differ (for example by an environment variable) or give them one identity.",
        )
    out.policies[digest] = entry
    out.documents[digest] = policy.initdata
    if service is not None:
        pins.hashes.setdefault(service, []).append(digest)
    out.workloads.append(
        WorkloadReport(
            path=path,
            ref=w.ref,
            policy_hash=digest,
            role=role,
            initializer=with_initializer,
            coordinator_role=service.value if service is not None else "",
        )
    )


def _root_pin(files: list[YamlFile], options: Options) -> str | None:
    """The root pin to write: the option's, else the one the YAML already carries (never two)."""
    if options.coordinator_root is not None:
        return options.coordinator_root.hex()
    containers: list[Any] = []
    for f in files:
        for doc in f.documents:
            w = as_workload(doc.data)
            if w is None:
                continue
            if ann.role(w.obj, w.template, w.ref) == ann.ROLE_COORDINATOR:
                service, container = coordinators.service_container(w)
                if service is not ServiceRole.MANIFEST:  # its own hand-set pin is not the workloads'
                    containers.append(container)
            else:
                init = w.pod_spec.get("initContainers")
                containers += [
                    c
                    for c in (init if isinstance(init, list) else [])
                    if isinstance(c, dict) and c.get("name") == inject.INITIALIZER_NAME
                ]
    found = coordinators.existing_root_pins(containers)
    if len(found) > 1:
        raise RequestError(
            "pin_conflict",
            f"the YAML pins {len(found)} different Coordinator roots; pass --coordinator-root to choose one",
        )
    return found.pop() if found else None


# The order in which pods are processed: each pass's policy hashes go into the pins of the later ones.
_PASSES: tuple[frozenset[ServiceRole | None], ...] = (
    frozenset({ServiceRole.MANIFEST}),
    frozenset({ServiceRole.VERIFIER, ServiceRole.CA}),
    frozenset({None}),
)


def process(files: list[YamlFile], options: Options, images: ImageConfigs | None = None) -> Outcome:
    """Rewrite the confidential workloads in ``files`` (in memory) and collect their manifest entries.

    ``images`` answers image-config lookups (the default has none, as offline without a lock file).
    """
    if not is_pinned(options.initializer_image):
        raise RequestError(
            "image_not_pinned", f"initializer image {options.initializer_image!r} needs a digest"
        )
    out = Outcome(files=files, images=images if images is not None else ImageConfigs())
    # Manifest service first, then verifier and CA (which pin the manifest service's policies), then the
    # workloads (whose initializers pin the verifier's and the CA's): the pins are part of each pod's policy.
    pins = _Pins(root=_root_pin(files, options), tdx_statuses=options.peer_tdx_statuses)
    for roles in _PASSES:
        for f in files:
            for doc in f.documents:
                w = as_workload(doc.data)
                if w is None:
                    continue
                coordinator = ann.role(w.obj, w.template, w.ref) == ann.ROLE_COORDINATOR
                service = coordinators.service_container(w)[0] if coordinator else None
                if service not in roles:
                    continue
                before = copy.deepcopy(doc.data)
                _process_workload(w, f.path, options, out, pins, service)
                # Unchanged meaning keeps the original bytes: a second run rewrites nothing.
                doc.new_text = None if doc.data == before else dump_document(doc.data, doc.text)
    for ref in sorted(out.images.misses):
        out.warnings.append(
            f"no image config for {ref}: its policies assume that the image sets no environment, user or "
            "volumes beyond the pod spec, and kata-agent refuses the container if it does (run generate "
            "where the registry is reachable, or pass --image-layout)"
        )
    _warn_about_pins(out, pins)
    return out


def _warn_about_pins(out: Outcome, pins: _Pins) -> None:
    joining = any(w.coordinator_role in ("verifier", "ca") for w in out.workloads)
    initializers = any(w.initializer for w in out.workloads)
    for role, who, needed in (
        (ServiceRole.MANIFEST, "verifier and CA replicas will refuse every join", joining),
        (ServiceRole.VERIFIER, "initializers will refuse every rejection", initializers),
        (ServiceRole.CA, "initializers will refuse every certificate", initializers),
    ):
        if needed and not pins.hashes.get(role):
            out.warnings.append(
                f"no Coordinator workload runs the {role.value} service (annotation "
                f"{ann.POD_ROLE}: coordinator, command python -m contrast.{role.value}) in the input: {who} "
                f"until {inject.COORDINATOR_HASHES_ENV} names one"
            )
    if pins.root is None and (initializers or joining):
        out.warnings.append(
            "the pods are not pinned to a Coordinator root CA: they accept any Coordinator that runs these "
            "policies, including one started on a wiped store or a second one of the same release. After the "
            "first `contrast set`, run generate again with --coordinator-root coordinator-root-ca.pem, then "
            "`contrast set` the new manifest and apply the YAML"
        )


def render_manifest(manifest: dict[str, Any]) -> bytes:
    """Stable bytes: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def check_reference_values(refvals: dict[str, Any]) -> list[str]:
    """Validate ``refvals`` strictly unless values are still expected-missing; return the missing paths."""
    missing = platforms.expected_missing_paths(refvals)
    if missing:
        return missing
    try:
        msgspec.convert(refvals, ReferenceValues, strict=True)
    except (msgspec.ValidationError, ValueError) as exc:
        raise RequestError("reference_values_invalid", f"reference values are not valid: {exc}") from exc
    return []


# Type-correct stand-ins for expected-missing values, used only to validate the rest of a manifest.
_STAND_INS: dict[str, Any] = {
    "TrustedMeasurement": "00" * 48,
    "BootloaderVersion": 0,
    "TEEVersion": 0,
    "SNPVersion": 0,
    "MicrocodeVersion": 0,
    "MrTd": "00" * 48,
    "MrSeam": "00" * 48,
    "Rtmrs": "00" * 48,
    "Xfam": "00" * 8,
    "TdAttributes": "00" * 8,
    "MinTCBEvaluationDataNumber": 0,
}


def _stand_in(refvals: Any, missing: list[str]) -> Any:
    out = refvals
    for ptr in missing:
        tokens = jsonpatch.parse_pointer(ptr)
        key = tokens[-2] if tokens[-1].isdigit() else tokens[-1]
        if key not in _STAND_INS:
            raise RequestError(
                "reference_values_invalid", f"{ptr}: no stand-in for expected-missing field {key}"
            )
        out = jsonpatch.apply(out, [{"op": "replace", "path": ptr, "value": _STAND_INS[key]}])
    return out


def check_manifest(manifest: dict[str, Any], missing: list[str]) -> None:
    """Run the Coordinator's own manifest validator, so that generate never writes what ``set`` refuses.

    Expected-missing reference values are replaced by type-correct stand-ins for this check only, so that
    everything else (policies, SANs, secret IDs, keys, the other reference values) is still validated.
    """
    candidate = {**manifest, "ReferenceValues": _stand_in(manifest["ReferenceValues"], missing)}
    problems = manifest_format.validate(render_manifest(candidate))
    if problems:
        raise RequestError("manifest_invalid", "generated manifest is invalid: " + "; ".join(problems[:10]))


def collect_policies(paths: list[Path]) -> dict[str, bytes]:
    """Policy hash (hex) -> initdata document of every confidential workload in ``paths``.

    This is what ``contrast set`` sends next to the manifest. Each document is read back from the pod's
    initdata annotation and must hash to the pod's policy-hash annotation.
    """
    out: dict[str, bytes] = {}
    for path in iter_yaml_paths(paths):
        for doc in read_file(path).documents:
            w = as_workload(doc.data)
            if w is None:
                continue
            encoded = ann.get_pod_annotation(w.template, ann.KATA_INITDATA)
            digest = ann.get_pod_annotation(w.template, ann.POLICY_HASH)
            if not isinstance(encoded, str) or not isinstance(digest, str):
                raise RequestError(
                    "policy_missing", f"{path}: {w.ref} has no policy; run contrast generate first"
                )
            initdata = pol.decode_annotation(encoded)
            if pol.Policy(initdata=initdata, data={}).hash_hex != digest:
                raise RequestError(
                    "policy_hash_mismatch", f"{path}: {w.ref}: initdata does not match its hash"
                )
            out[digest] = initdata
    return out


def build_manifest(
    policies: dict[str, dict[str, Any]],
    refvals: dict[str, Any],
    workload_owner_keys: list[str],
    seedshare_owner_keys: list[str],
) -> dict[str, Any]:
    return {
        "Policies": {k: policies[k] for k in sorted(policies)},
        "ReferenceValues": refvals,
        "WorkloadOwnerPubKeys": sorted(set(workload_owner_keys)),
        "SeedshareOwnerPubKeys": sorted(set(seedshare_owner_keys)),
    }


def _existing_owner_keys(path: Path) -> tuple[list[str], list[str]]:
    if not path.exists():
        return [], []
    try:
        old = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise RequestError("manifest_invalid", f"{path}: existing manifest is not JSON: {exc}") from exc
    if not isinstance(old, dict):
        raise RequestError("manifest_invalid", f"{path}: existing manifest is not an object")

    def strs(key: str) -> list[str]:
        v = old.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise RequestError("manifest_invalid", f"{path}: {key} must be a list of strings")
        return list(v)

    return strs("WorkloadOwnerPubKeys"), strs("SeedshareOwnerPubKeys")


def write_atomic(path: Path, data: bytes) -> bool:
    """Replace ``path`` with ``data`` unless it already holds exactly that; return whether it wrote."""
    if path.exists() and path.read_bytes() == data:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; keep an existing file's mode, and make a new (public) file readable.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def write_policy_documents(directory: Path, documents: dict[str, bytes]) -> tuple[list[Path], list[Path]]:
    """Write ``<hash>.toml`` for every policy, drop stale ``<hash>.toml`` files; return (written, removed).

    Only files named by a policy hash are touched: the directory is generate's output.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = [
        directory / f"{h}.toml"
        for h in sorted(documents)
        if write_atomic(directory / f"{h}.toml", documents[h])
    ]
    removed = []
    for stale in sorted(directory.iterdir()):
        if _POLICY_FILE.match(stale.name) and stale.name[:64] not in documents:
            stale.unlink()
            removed.append(stale)
    return written, removed


@dataclass(frozen=True)
class Report:
    outcome: Outcome
    manifest_path: Path
    manifest: dict[str, Any]
    written: list[Path]
    removed: list[Path]
    missing_reference_values: list[str]


def run(
    paths: list[Path],
    *,
    platform: str,
    workspace: Path,
    manifest_path: Path | None = None,
    patch_files: list[Path] | None = None,
    emulator_dir: Path,
    options: Options,
    warn: Callable[[str], None] = lambda m: print(f"WARNING: {m}", file=sys.stderr),
) -> Report:
    """``contrast generate``: read, process, and only then write YAML files, owner keys and manifest.json."""
    files = [read_file(p) for p in iter_yaml_paths(paths)]
    mpath = manifest_path if manifest_path is not None else workspace / MANIFEST_FILE
    lock_path = mpath.parent / LOCK_FILE
    sources: list[Source] = [registry.OciLayout(p) for p in options.image_layouts]
    if not options.offline:
        sources.append(registry.from_registry)

    # The reference values first: the TDX statuses they accept go into every pod's pins.
    refvals: Any = platforms.reference_values(platform, emulator_dir=emulator_dir)
    for pf in patch_files or []:
        try:
            patch = json.loads(pf.read_bytes())
        except (ValueError, OSError) as exc:
            raise RequestError("patch_invalid", f"{pf}: not a JSON patch file: {exc}") from exc
        refvals = jsonpatch.apply(refvals, patch)
    if not isinstance(refvals, dict):
        raise RequestError("reference_values_invalid", "patched reference values are not an object")
    missing = check_reference_values(refvals)
    options = dataclasses.replace(options, peer_tdx_statuses=coordinators.peer_tdx_statuses(refvals))

    outcome = process(files, options, ImageConfigs(load_lock(lock_path), sources))
    if not outcome.workloads:
        raise RequestError(
            "no_workloads", "found no workload with a runtimeClassName starting with contrast-cc"
        )
    if platforms.canonical_name(platform) in (platforms.EMULATED_SNP, platforms.EMULATED_TDX):
        outcome.warnings.append(
            f"{platforms.canonical_name(platform)} is INSECURE: the manifest trusts a local emulator's keys "
            f"({emulator_dir}), not hardware. For development and tests only."
        )

    old_workload, old_seedshare = _existing_owner_keys(mpath)
    workload_key, seedshare_key = ensure_owner_keys(workspace)
    manifest = build_manifest(
        outcome.policies,
        refvals,
        [*old_workload, public_key_hex(workload_key)],
        [*old_seedshare, public_key_hex(seedshare_key)],
    )

    check_manifest(manifest, missing)
    for m in outcome.warnings:
        warn(m)
    written = [f.path for f in files if f.changed and write_atomic(f.path, f.render().encode("utf-8"))]
    policy_written, removed = write_policy_documents(workspace / POLICIES_DIR, outcome.documents)
    written += policy_written
    if write_atomic(mpath, render_manifest(manifest)):
        written.append(mpath)
    # The image configs behind the policies, so that a run without network reproduces them.
    if (outcome.images.used or lock_path.exists()) and write_atomic(lock_path, outcome.images.lock_bytes()):
        written.append(lock_path)
    return Report(
        outcome=outcome,
        manifest_path=mpath,
        manifest=manifest,
        written=written,
        removed=removed,
        missing_reference_values=missing,
    )
