"""`contrast generate` end to end on files: idempotence, pass-through, refusals, manifest, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.cli import generate as cli_generate
from contrast.coordinator import manifest_format, pins
from contrast.crypto.ownerkeys import (
    SEEDSHARE_OWNER_KEY_FILE,
    WORKLOAD_OWNER_KEY_FILE,
)
from contrast.errors import RequestError
from contrast.generate import annotations as ann
from contrast.generate import inject
from contrast.generate.generator import Options, collect_policies, process, run
from contrast.generate.platforms import EXPECTED_MISSING
from contrast.generate.policy import decode_annotation
from contrast.generate.yamldocs import Document, YamlFile
from contrast.pki.root import root_certificate
from tests.generate.generate_builders import coordinator, deployment, pod_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


@pytest.fixture
def workspace(tmp_path: Path, owner_keys: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in (WORKLOAD_OWNER_KEY_FILE, SEEDSHARE_OWNER_KEY_FILE):
        shutil.copy2(owner_keys / name, ws / name)
    write_docs(ws / "coordinator.yaml", coordinator())
    return ws


def fill_patch(tmp_path: Path) -> Path:
    """Fill every expected-missing value of the Metal-QEMU-TDX reference values."""
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/tdx/0/MrTd", "value": "ab" * 48},
        {"op": "replace", "path": "/tdx/0/MrSeam", "value": "cd" * 48},
        {"op": "replace", "path": "/tdx/0/Xfam", "value": "e702060000000000"},
        {"op": "replace", "path": "/tdx/0/TdAttributes", "value": "0000001000000000"},
        {"op": "replace", "path": "/tdx/0/MinTCBEvaluationDataNumber", "value": 17},
    ]
    ops += [{"op": "replace", "path": f"/tdx/0/Rtmrs/{i}", "value": f"{i:02x}" * 48} for i in range(4)]
    p = tmp_path / "fill.json"
    p.write_text(json.dumps(ops))
    return p


def gen(paths: list[Path], ws: Path, platform: str = "Metal-QEMU-TDX", **kw: Any) -> Any:
    """Run generate on ``paths`` plus a Coordinator (the manifest validator requires one)."""
    options = kw.pop("options", Options(offline=True))
    if kw.pop("with_coordinator", True):
        paths = [*paths, ws / "coordinator.yaml"]
    emulator_dir = kw.pop("emulator_dir", ws / "emu")
    return run(paths, platform=platform, workspace=ws, emulator_dir=emulator_dir, options=options, **kw)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_docs(path: Path, *docs: Any) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


def test_examples_twice_changes_no_byte(tmp_path: Path, workspace: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(EXAMPLES, app)
    first = gen([app], workspace)
    assert len(first.outcome.workloads) >= 4
    after_first = snapshot(tmp_path)
    second = gen([app], workspace)
    assert second.written == []
    assert snapshot(tmp_path) == after_first
    manifest = (workspace / "manifest.json").read_bytes()
    assert manifest.endswith(b"}\n")
    assert manifest == json.dumps(json.loads(manifest), indent=2, sort_keys=True).encode() + b"\n"


def test_policy_hash_annotation_is_sha256_of_initdata(tmp_path: Path, workspace: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(EXAMPLES, app)
    report = gen([app], workspace)
    seen = 0
    for f in app.rglob("*.yaml"):
        for doc in yaml.safe_load_all(f.read_text()):
            spec = (doc or {}).get("spec", {})
            template = spec.get("template") if isinstance(spec, dict) else None
            if not template or "runtimeClassName" not in template.get("spec", {}):
                continue
            a = template["metadata"]["annotations"]
            initdata = decode_annotation(a[ann.KATA_INITDATA])
            assert hashlib.sha256(initdata).hexdigest() == a[ann.POLICY_HASH]
            assert a[ann.POLICY_HASH] in report.manifest["Policies"]
            seen += 1
    assert seen == sum(1 for w in report.outcome.workloads if app in w.path.parents)


def test_non_confidential_documents_pass_through_byte_stable(tmp_path: Path, workspace: Path) -> None:
    odd = (
        "# keep me\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: plain,   namespace: x}  # odd spacing\n"
        "spec:\n  template:\n    spec:\n      runtimeClassName: kata-qemu\n"
        "      containers: [{name: a, image: 'nginx:latest'}]\n"
    )
    conf = yaml.safe_dump(deployment("conf"), sort_keys=False)
    text = odd + "---\n" + conf + "--- # a service\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
    f = tmp_path / "mixed.yaml"
    f.write_text(text)
    plain = tmp_path / "plain.yaml"
    plain.write_text(odd)
    gen([f, plain], workspace)
    out = f.read_text()
    assert out.startswith(odd + "---\n")
    assert out.endswith("--- # a service\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
    assert out != text  # the confidential one in the middle did change
    assert plain.read_text() == odd


def test_mutable_image_refused_and_nothing_written(tmp_path: Path, workspace: Path) -> None:
    d = deployment()
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.27"
    f = write_docs(tmp_path / "app.yaml", d)
    before = snapshot(tmp_path)
    with pytest.raises(RequestError) as e:
        gen([f], workspace)
    assert e.value.code == "request.image_not_pinned"
    assert snapshot(tmp_path) == before
    report = gen([f], workspace, options=Options(allow_mutable_images=True))
    assert any("MUTABLE" in w for w in report.outcome.warnings)


def test_same_policy_different_sans_refused(tmp_path: Path, workspace: Path) -> None:
    # The policy pins the pod names, so only the same workload twice can share a policy: with another
    # manifest entry (here another workload secret), the Coordinator could not tell which one attested.
    twin = deployment("one")
    twin["metadata"]["annotations"] = {ann.WORKLOAD_SECRET_ID: "other"}
    f = write_docs(tmp_path / "twins.yaml", deployment("one"), twin)
    with pytest.raises(RequestError) as e:
        gen([f], workspace)
    assert e.value.code == "request.policy_conflict"
    # Workloads of another name get another policy, whatever their pod specs.
    other = write_docs(tmp_path / "other.yaml", deployment("one"), deployment("two"))
    assert len(gen([other], workspace).manifest["Policies"]) == 3
    # Identical workloads in one policy are fine when their entries agree (same name in two files).
    g = write_docs(tmp_path / "again.yaml", deployment("one"))
    h = write_docs(tmp_path / "again2.yaml", deployment("one"))
    assert len(gen([g, h], workspace).manifest["Policies"]) == 2  # "one" and the Coordinator


def test_entries_roles_secret_ids_and_opt_out(tmp_path: Path, workspace: Path) -> None:
    coord = coordinator("verifier", name="coord2")
    skip = deployment("legacy")
    skip["spec"]["template"]["metadata"]["annotations"] = {ann.SKIP_INITIALIZER: "true"}
    named = deployment("db")
    named["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})
    named["metadata"]["annotations"] = {ann.WORKLOAD_SECRET_ID: "shared/db-key"}
    normal = deployment("web")
    normal["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "2"})
    f = write_docs(tmp_path / "app.yaml", coord, skip, named, normal)
    report = gen([f], workspace)
    by_ref = {w.ref: w for w in report.outcome.workloads}
    entries = {e["SANs"][0]: e for e in report.manifest["Policies"].values()}
    assert entries["coord2"] == {
        "SANs": ["coord2", "*"],
        "WorkloadSecretID": "apps/v1/Deployment/contrast-system/coord2",
        "Role": "coordinator",
        "CoordinatorRole": "verifier",
    }
    assert by_ref["Deployment contrast-system/coord2"].coordinator_role == "verifier"
    assert entries["db"]["WorkloadSecretID"] == "shared/db-key"
    assert entries["web"]["WorkloadSecretID"] == "apps/v1/Deployment/shop/web"
    assert not by_ref["Deployment contrast-system/coord2"].initializer
    assert not by_ref["Deployment shop/legacy"].initializer
    assert by_ref["Deployment shop/web"].initializer
    docs = list(yaml.safe_load_all(f.read_text()))
    web = docs[3]["spec"]["template"]["spec"]
    assert web["initContainers"][0]["name"] == inject.INITIALIZER_NAME
    assert {"name": "contrast-secrets", "emptyDir": {"medium": "Memory"}} in web["volumes"]
    for c in web["initContainers"] + web["containers"]:
        assert {"name": "contrast-secrets", "mountPath": "/contrast"} in c["volumeMounts"]
    assert "initContainers" not in docs[0]["spec"]["template"]["spec"]
    assert "initContainers" not in docs[1]["spec"]["template"]["spec"]


def TEMPLATE(spec: dict[str, Any]) -> dict[str, Any]:
    return {"template": {"spec": spec}}


@pytest.mark.parametrize(
    ("kind", "api", "wrap"),
    [
        ("Pod", "v1", lambda s: {"metadata": {"name": "w"}, "spec": s}),
        ("Deployment", "apps/v1", lambda s: {"metadata": {"name": "w"}, "spec": {"template": {"spec": s}}}),
        ("StatefulSet", "apps/v1", lambda s: {"metadata": {"name": "w"}, "spec": {"template": {"spec": s}}}),
        ("DaemonSet", "apps/v1", lambda s: {"metadata": {"name": "w"}, "spec": {"template": {"spec": s}}}),
        ("ReplicaSet", "apps/v1", lambda s: {"metadata": {"name": "w"}, "spec": {"template": {"spec": s}}}),
        ("Job", "batch/v1", lambda s: {"metadata": {"name": "w"}, "spec": {"template": {"spec": s}}}),
        (
            "CronJob",
            "batch/v1",
            lambda s: {
                "metadata": {"name": "w"},
                "spec": {"jobTemplate": {"spec": {"template": {"spec": s}}}},
            },
        ),
    ],
)
def test_every_workload_kind(tmp_path: Path, workspace: Path, kind: str, api: str, wrap: Any) -> None:
    obj = {"apiVersion": api, "kind": kind, **wrap(pod_spec())}
    f = write_docs(tmp_path / "w.yaml", obj)
    report = gen([f], workspace)
    (entry,) = [e for e in report.manifest["Policies"].values() if e["SANs"][0] == "w"]
    group = "core/v1" if api == "v1" else api
    assert entry["WorkloadSecretID"] == f"{group}/{kind}/default/w"
    (doc,) = yaml.safe_load_all(f.read_text())
    template = doc if kind == "Pod" else doc["spec"]["template"] if kind != "CronJob" else None
    if template is None:
        template = doc["spec"]["jobTemplate"]["spec"]["template"]
    (mine,) = [w for w in report.outcome.workloads if w.ref.endswith("/w")]
    assert template["metadata"]["annotations"][ann.POLICY_HASH] == mine.policy_hash


def test_reference_values_marked_missing_and_patched(tmp_path: Path, workspace: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(EXAMPLES, app)
    report = gen([app], workspace)
    assert report.missing_reference_values
    raw = (workspace / "manifest.json").read_bytes()
    assert EXPECTED_MISSING.encode() in raw
    problems = manifest_format.validate(raw)
    # set refuses the unfilled manifest, and says where
    assert problems
    assert all(p.startswith("ReferenceValues.tdx[0].") for p in problems)

    filled = gen([app], workspace, patch_files=[fill_patch(tmp_path)])
    assert filled.missing_reference_values == []
    doc = manifest_format.parse_manifest((workspace / "manifest.json").read_bytes())
    # The full flow's manifest checks: every named policy has its document, and each hashes to its key.
    manifest_format.check_policies_supplied(
        doc.manifest, collect_policies([app, workspace / "coordinator.yaml"])
    )
    assert doc.manifest.coordinator_policy_hashes()


def test_invalid_patch_result_is_refused(tmp_path: Path, workspace: Path) -> None:
    f = write_docs(tmp_path / "a.yaml", deployment())
    bad = fill_patch(tmp_path)
    ops = json.loads(bad.read_text())
    ops[0]["value"] = "zz"  # not hex
    bad.write_text(json.dumps(ops))
    with pytest.raises(RequestError) as e:
        gen([f], workspace, patch_files=[bad])
    assert e.value.code == "request.reference_values_invalid"


def test_owner_keys_created_and_kept(tmp_path: Path, owner_keys: Path) -> None:
    ws = tmp_path / "fresh"
    ws.mkdir()
    write_docs(ws / "coordinator.yaml", coordinator())
    # Reuse the slow RSA key but let generate create the workload-owner key itself.
    shutil.copy2(owner_keys / SEEDSHARE_OWNER_KEY_FILE, ws / SEEDSHARE_OWNER_KEY_FILE)
    f = write_docs(tmp_path / "a.yaml", deployment())
    report = gen([f], ws)
    assert (ws / WORKLOAD_OWNER_KEY_FILE).exists()
    assert len(report.manifest["WorkloadOwnerPubKeys"]) == 1
    assert len(report.manifest["SeedshareOwnerPubKeys"]) == 1
    key = (ws / WORKLOAD_OWNER_KEY_FILE).read_bytes()
    gen([f], ws)
    assert (ws / WORKLOAD_OWNER_KEY_FILE).read_bytes() == key


def test_default_sans_are_name_and_wildcard() -> None:
    f = YamlFile(path=Path("a.yaml"), documents=[Document(text="", data=deployment("web"))])
    (entry,) = process([f], Options(offline=True)).policies.values()
    assert entry["SANs"] == ["web", "*"]


def test_default_sans_pass_the_validator_and_can_be_narrowed(tmp_path: Path, workspace: Path) -> None:
    f = write_docs(tmp_path / "a.yaml", deployment())
    assert {tuple(e["SANs"]) for e in gen([f], workspace).manifest["Policies"].values()} == {
        ("web", "*"),
        ("coordinator", "*"),
    }
    narrow = gen([f], workspace, options=Options(wildcard_san=False))
    assert {tuple(e["SANs"]) for e in narrow.manifest["Policies"].values()} == {("web",), ("coordinator",)}


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="contrast")
    cli_generate.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def test_cli_exit_codes(tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write_docs(tmp_path / "a.yaml", deployment(), coordinator())
    common = ["--workspace", str(workspace), "--reference-values", "Metal-QEMU-TDX"]
    assert _cli(["generate", str(f), *common]) == 0
    out = capsys.readouterr()
    assert "EXPECTED-MISSING" in out.err
    d = deployment()
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx"
    write_docs(f, d, coordinator())
    assert _cli(["generate", str(f), *common]) == 1
    assert "request.image_not_pinned" in capsys.readouterr().err
    assert _cli(["generate", str(f), "--workspace", str(workspace), "--reference-values", "Nope"]) == 1


@pytest.mark.parametrize(("platform", "tee"), [("Emulated-SNP", "snp"), ("Emulated-TDX", "tdx")])
async def test_examples_manifest_accepts_each_emulated_pod_by_its_policy_hash(
    tmp_path: Path, workspace: Path, tmp_path_factory: pytest.TempPathFactory, platform: str, tee: str
) -> None:
    """The verification step of the full flow, on generate's output: an emulated pod launched with its policy
    hash (read from its annotation, as the emulated initializer does) is accepted, and its entry found."""
    import datetime as dt
    import os

    from contrast.evidence.verifier import EvidenceVerifier
    from contrast.platform import emulated

    app = tmp_path / "app"
    shutil.copytree(EXAMPLES, app)
    emu = tmp_path_factory.getbasetemp() / "snp-emulator"  # shared: creating RSA-4096 keys takes seconds
    emu.mkdir(exist_ok=True)
    report = gen([app], workspace, platform=platform, emulator_dir=emu)
    assert report.missing_reference_values == []
    doc = manifest_format.parse_manifest((workspace / "manifest.json").read_bytes())
    manifest_format.check_policies_supplied(
        doc.manifest, collect_policies([app, workspace / "coordinator.yaml"])
    )

    # Load the emulator once (RSA-4096 key checks take a while) and launch each pod with its policy hash.
    if tee == "snp":
        snp = emulated.load_snp_emulator(emu)

        def launch(policy_hash: bytes) -> Any:
            return emulated.EmulatedSnp(snp, host_data=policy_hash)
    else:
        tdx = emulated.load_tdx_emulator(emu)

        def launch(policy_hash: bytes) -> Any:
            return emulated.EmulatedTdx(tdx, policy_hash=policy_hash)

    verifier = EvidenceVerifier()
    now = dt.datetime.now(dt.UTC)
    for w in report.outcome.workloads:
        binding = os.urandom(64)
        pod = launch(bytes.fromhex(w.policy_hash))
        evidence = await pod.evidence(binding)
        result = verifier.verify(
            evidence, doc.manifest.ReferenceValues, expected_report_data=binding, now=now
        )
        assert result.accepted, result.findings
        entry = doc.manifest.policy(result.claims.policy_hash)
        assert entry is not None
        assert entry.Role == w.role
    # A pod launched with a policy that is not in the manifest authenticates, but has no entry to be given.
    stranger = launch(hashlib.sha256(b"not generated").digest())
    result = verifier.verify(
        await stranger.evidence(bytes(64)),
        doc.manifest.ReferenceValues,
        expected_report_data=bytes(64),
        now=now,
    )
    assert result.accepted
    assert doc.manifest.policy(result.claims.policy_hash) is None


def test_collect_policies_checks_each_document_against_its_hash(tmp_path: Path, workspace: Path) -> None:
    f = write_docs(tmp_path / "a.yaml", deployment())
    with pytest.raises(RequestError) as e:
        collect_policies([f])  # not generated yet
    assert e.value.code == "request.policy_missing"
    report = gen([f], workspace)
    (web,) = [w for w in report.outcome.workloads if w.ref.endswith("/web")]
    docs = collect_policies([f])
    assert hashlib.sha256(docs[web.policy_hash]).hexdigest() == web.policy_hash
    # An operator who swaps the initdata but keeps the hash annotation is caught before anything is sent.
    (d,) = yaml.safe_load_all(f.read_text())
    (coord,) = yaml.safe_load_all((workspace / "coordinator.yaml").read_text())
    swapped = coord["spec"]["template"]["metadata"]["annotations"][ann.KATA_INITDATA]
    d["spec"]["template"]["metadata"]["annotations"][ann.KATA_INITDATA] = swapped
    write_docs(f, d)
    with pytest.raises(RequestError) as e:
        collect_policies([f])
    assert e.value.code == "request.policy_hash_mismatch"


def test_policy_documents_written_for_contrast_set(tmp_path: Path, workspace: Path) -> None:
    f = write_docs(tmp_path / "a.yaml", deployment())
    report = gen([f], workspace, patch_files=[fill_patch(tmp_path)])
    pdir = workspace / "policies"
    files = {p.name: p.read_bytes() for p in pdir.iterdir()}
    assert set(files) == {f"{h}.toml" for h in report.manifest["Policies"]}
    assert all(hashlib.sha256(doc).hexdigest() + ".toml" == name for name, doc in files.items())
    doc = manifest_format.parse_manifest((workspace / "manifest.json").read_bytes())
    manifest_format.check_policies_supplied(doc.manifest, {n[:64]: d for n, d in files.items()})
    # Change the workload: its old policy file goes, the user's own files stay.
    (pdir / "notes.txt").write_text("mine")
    d = deployment()
    d["spec"]["template"]["spec"]["containers"][0]["args"] = ["--port", "9090"]
    write_docs(f, d)
    second = gen([f], workspace, patch_files=[fill_patch(tmp_path)])
    assert len(second.removed) == 1
    assert (pdir / "notes.txt").exists()
    assert {p.name for p in pdir.glob("*.toml")} == {f"{h}.toml" for h in second.manifest["Policies"]}


def _initializer_env(doc: dict[str, Any]) -> dict[str, str]:
    init = doc["spec"]["template"]["spec"]["initContainers"][0]
    assert init["name"] == inject.INITIALIZER_NAME
    return {e["name"]: e["value"] for e in init["env"]}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _pins(doc: dict[str, Any]) -> dict[str, str]:
    """The pin variables of a pod: its initializer's, or a Coordinator pod's service container's."""
    spec = doc["spec"]["template"]["spec"]
    init = spec.get("initContainers") or []
    env = (
        _env(init[0]) if init and init[0]["name"] == inject.INITIALIZER_NAME else _env(spec["containers"][0])
    )
    return {k: v for k, v in env.items() if k in inject.PIN_ENVS}


def test_every_pod_pins_the_coordinator_roles_it_trusts(tmp_path: Path, workspace: Path) -> None:
    """Each Coordinator service is its own pod and policy, bound to its role in the manifest. A workload's
    initializer pins the verifier (rejections) and the CA (bundles); verifier and CA pin the manifest service
    (join grants). The pins are part of each pod's measured policy (docs/protocol.md §1)."""
    path = write_docs(tmp_path / "app.yaml", deployment("web"))
    layout = write_docs(tmp_path / "coordinator.yaml", coordinator("verifier"), coordinator("ca"))
    report = gen([path, layout], workspace)
    by_role = {w.coordinator_role: w.policy_hash for w in report.outcome.workloads if w.coordinator_role}
    assert {report.manifest["Policies"][h]["CoordinatorRole"]: h for h in by_role.values()} == {
        "manifest": by_role["manifest"],
        "verifier": by_role["verifier"],
        "ca": by_role["ca"],
    }
    assert len({by_role["manifest"], by_role["verifier"], by_role["ca"]}) == 3
    (web,) = yaml.safe_load_all(path.read_text())
    assert _pins(web) == {inject.COORDINATOR_HASHES_ENV: f"verifier:{by_role['verifier']},ca:{by_role['ca']}"}
    verifier, ca = yaml.safe_load_all(layout.read_text())
    for doc in (verifier, ca):
        assert _pins(doc) == {inject.COORDINATOR_HASHES_ENV: f"manifest:{by_role['manifest']}"}
    (manifest_service,) = yaml.safe_load_all((workspace / "coordinator.yaml").read_text())
    assert _pins(manifest_service) == {}
    # A second run changes nothing: the pins are a fixed point.
    assert gen([path, layout], workspace).written == []


def test_a_coordinator_pod_runs_exactly_one_service(tmp_path: Path, workspace: Path) -> None:
    both = coordinator("verifier", name="both")
    second = dict(both["spec"]["template"]["spec"]["containers"][0], name="ca")
    second["command"] = ["/opt/contrast/bin/python", "-m", "contrast.ca"]
    both["spec"]["template"]["spec"]["containers"].append(second)
    none = coordinator("verifier", name="none")
    none["spec"]["template"]["spec"]["containers"][0]["command"] = ["/bin/app"]
    for bad in (both, none):
        f = write_docs(tmp_path / "bad.yaml", bad)
        with pytest.raises(RequestError) as e:
            gen([f], workspace)
        assert e.value.code == "request.workload_invalid"
        assert "exactly one Coordinator service" in e.value.message


def test_the_root_pin_after_the_first_set(tmp_path: Path, workspace: Path) -> None:
    """Unpinned pods are warned about; --coordinator-root pins every workload, verifier and CA (not the
    manifest service, whose own policy would change); a later run without the option keeps the pin."""
    path = write_docs(tmp_path / "app.yaml", deployment("web"))
    layout = write_docs(tmp_path / "coordinator.yaml", coordinator("verifier"), coordinator("ca"))
    first = gen([path, layout], workspace)
    assert any("not pinned to a Coordinator root CA" in w for w in first.outcome.warnings)
    root = hashlib.sha256(b"the root CA certificate").digest()
    pinned = gen([path, layout], workspace, options=Options(offline=True, coordinator_root=root))
    assert not any("not pinned" in w for w in pinned.outcome.warnings)
    (web,) = yaml.safe_load_all(path.read_text())
    verifier, ca = yaml.safe_load_all(layout.read_text())
    (manifest_service,) = yaml.safe_load_all((workspace / "coordinator.yaml").read_text())
    for doc in (web, verifier, ca):
        assert _pins(doc)[pins.ROOT_ENV] == root.hex()
    assert pins.ROOT_ENV not in _pins(manifest_service)
    # Every pinned pod has a new policy; the manifest service keeps its own.
    before = {w.ref: w.policy_hash for w in first.outcome.workloads}
    after = {w.ref: w.policy_hash for w in pinned.outcome.workloads}
    assert {r for r in before if before[r] != after[r]} == {r for r in before if "coordinator" not in r}
    # Without the option, the pin the YAML carries stays.
    assert gen([path, layout], workspace).written == []
    # Two different pins in the YAML are a conflict, not a choice.
    web["spec"]["template"]["spec"]["initContainers"][0]["env"][-1]["value"] = "ee" * 32
    write_docs(path, web)
    with pytest.raises(RequestError) as e:
        gen([path, layout], workspace)
    assert e.value.code == "request.pin_conflict"


def test_cli_pins_the_root_certificate_file(tmp_path: Path, workspace: Path) -> None:
    """`--coordinator-root` takes coordinator-root-ca.pem as `contrast set` writes it (PEM, or DER)."""
    root = root_certificate(ec.generate_private_key(ec.SECP384R1()))
    der = root.public_bytes(serialization.Encoding.DER)
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "root.der").write_bytes(der)
    f = write_docs(tmp_path / "a.yaml", deployment(), coordinator())
    common = [str(f), "--workspace", str(workspace), "--reference-values", "Metal-QEMU-TDX", "--offline"]
    for cert in ("root.pem", "root.der"):
        assert _cli(["generate", *common, "--coordinator-root", str(tmp_path / cert)]) == 0
        web = next(iter(yaml.safe_load_all(f.read_text())))
        assert _pins(web)[pins.ROOT_ENV] == hashlib.sha256(der).hexdigest()
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    for bad in ("junk.pem", "missing.pem"):
        assert _cli(["generate", *common, "--coordinator-root", str(tmp_path / bad)]) == 2


def test_a_hand_set_root_pin_on_the_manifest_service_is_kept(tmp_path: Path, workspace: Path) -> None:
    (doc,) = yaml.safe_load_all((workspace / "coordinator.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": pins.ROOT_ENV, "value": "ab" * 32}
    )
    write_docs(workspace / "coordinator.yaml", doc)
    gen([write_docs(tmp_path / "app.yaml", deployment("web"))], workspace)
    (doc,) = yaml.safe_load_all((workspace / "coordinator.yaml").read_text())
    assert _pins(doc) == {pins.ROOT_ENV: "ab" * 32}


def test_tdx_statuses_the_manifest_accepts_are_pinned_for_peers(tmp_path: Path, workspace: Path) -> None:
    patch = tmp_path / "statuses.json"
    patch.write_text(
        json.dumps([{"op": "add", "path": "/tdx/0/AcceptedTCBStatuses", "value": ["UpToDate", "OutOfDate"]}])
    )
    path = write_docs(tmp_path / "app.yaml", deployment("web"))
    gen([path], workspace, patch_files=[patch])
    (web,) = yaml.safe_load_all(path.read_text())
    (manifest_service,) = yaml.safe_load_all((workspace / "coordinator.yaml").read_text())
    assert _pins(web)[pins.TDX_STATUSES_ENV] == "OutOfDate"
    assert _pins(manifest_service) == {pins.TDX_STATUSES_ENV: "OutOfDate"}


def test_missing_coordinator_roles_are_warned_about() -> None:
    f = YamlFile(path=Path("a.yaml"), documents=[Document(text="", data=deployment("web"))])
    out = process([f], Options(offline=True))
    for role in ("verifier", "ca"):
        assert any(f"runs the {role} service" in w for w in out.warnings)
    assert _pins(f.documents[0].data)[inject.COORDINATOR_HASHES_ENV] == ""
