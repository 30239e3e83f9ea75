"""Image configs for the policy: from a registry (OCI distribution API) or an OCI layout, every digest
checked, recorded in images.lock.json so that an offline run gives the same policy.

Registries are loopback HTTP servers and layouts are directories that the tests make themselves.
"""

from __future__ import annotations

import json
import shutil
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from contrast.cli.main import main as cli_main
from contrast.crypto.ownerkeys import (
    SEEDSHARE_OWNER_KEY_FILE,
    WORKLOAD_OWNER_KEY_FILE,
)
from contrast.errors import RequestError
from contrast.generate import annotations as ann
from contrast.generate import registry
from contrast.generate.generator import Options, run
from contrast.generate.imageconfig import (
    LOCK_FILE,
    ImageConfig,
    ImageConfigs,
    load_lock,
    parse_config,
    render_lock,
)
from contrast.generate.policy import decode_annotation
from tests.generate.generate_builders import coordinator as coordinator_deployment
from tests.generate.generate_builders import deployment
from tests.generate.oci_fixtures import Image, Registry, loopback_registry, write_layout

CONFIG = {
    "Entrypoint": ["/usr/bin/app"],
    "Cmd": ["--serve"],
    "Env": ["PATH=/opt/app/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
    "User": "1000:1000",
    "WorkingDir": "/srv",
    "Volumes": {"/data": {}},
}
EXPECTED = ImageConfig(
    entrypoint=("/usr/bin/app",),
    cmd=("--serve",),
    env=("PATH=/opt/app/bin:/usr/bin:/bin", "LANG=C.UTF-8"),
    user="1000:1000",
    working_dir="/srv",
    volumes=("/data",),
)


@pytest.fixture
def image() -> Image:
    return Image(config=CONFIG)


def test_registry_resolves_index_manifest_and_config_behind_a_token(image: Image) -> None:
    reg = Registry(images={"shop/app": image}, token="t0k3n")
    with loopback_registry(reg):
        found = registry.from_registry(f"{reg.host}/shop/app@{image.index}")
    assert found is not None
    assert found.config == EXPECTED  # the amd64 config, not the arm64 one
    assert (found.manifest_digest, found.config_digest) == (image.index, image.config_digest)
    assert set(found.documents) == {image.index, image.manifest, image.config_digest}
    assert any(r.startswith("/token?") for r in reg.requests)


def test_a_registry_that_serves_other_bytes_is_an_error_not_a_miss(image: Image) -> None:
    for tampered in (image.index, image.manifest, image.config_digest):
        reg = Registry(images={"shop/app": image}, tamper={tampered})
        with loopback_registry(reg), pytest.raises(RequestError) as e:
            registry.from_registry(f"{reg.host}/shop/app@{image.index}")
        assert e.value.code == "request.image_digest_mismatch"


def test_unreachable_or_missing_is_a_miss(image: Image) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert registry.from_registry(f"127.0.0.1:{closed}/shop/app@{image.index}", timeout=2) is None
    with loopback_registry(Registry()) as reg:
        assert registry.from_registry(f"{reg.host}/shop/app@{image.index}") is None


def test_tags_resolve_once_and_are_recorded(image: Image) -> None:
    reg = Registry(images={"shop/app": image}, tags={("shop/app", "v1"): image.index})
    with loopback_registry(reg):
        found = registry.from_registry(f"{reg.host}/shop/app:v1")
    assert found is not None
    assert found.manifest_digest == image.index


def test_oci_layout_by_digest_and_by_tag(tmp_path: Path, image: Image) -> None:
    layout = registry.OciLayout(write_layout(tmp_path / "layout", image, tag="v1"))
    by_digest = layout(f"example.com/shop/app@{image.index}")
    assert by_digest is not None
    assert by_digest.config == EXPECTED
    by_tag = layout("example.com/shop/app:v1")
    assert by_tag is not None
    assert by_tag.config_digest == image.config_digest
    assert layout("example.com/shop/app@sha256:" + "0" * 64) is None
    (tmp_path / "layout" / "blobs" / "sha256" / image.config_digest.split(":")[1]).write_bytes(b"{}")
    with pytest.raises(RequestError) as e:
        layout(f"example.com/shop/app@{image.index}")
    assert e.value.code == "request.image_digest_mismatch"
    with pytest.raises(RequestError):
        registry.OciLayout(tmp_path)  # not a layout


def test_lock_roundtrips_and_refuses_edits(tmp_path: Path, image: Image) -> None:
    layout = registry.OciLayout(write_layout(tmp_path / "layout", image))
    ref = f"example.com/shop/app@{image.index}"
    resolved = layout(ref)
    assert resolved is not None
    path = tmp_path / LOCK_FILE
    path.write_bytes(render_lock([resolved]))
    assert load_lock(path)[ref].config == EXPECTED
    body = json.loads(path.read_text())
    edits = [
        lambda b: b["images"][ref]["used"]["Env"].append("LD_PRELOAD=/x.so"),  # fields that no document says
        lambda b: b["images"][ref]["documents"].__setitem__(
            image.config_digest, b["images"][ref]["documents"][image.config_digest].replace("/srv", "/tmp")
        ),
        lambda b: b["images"][ref].update(config="sha256:" + "1" * 64),
        lambda b: b["images"][ref]["documents"].pop(image.manifest),
    ]
    for edit in edits:
        changed = json.loads(json.dumps(body))
        edit(changed)
        path.write_text(json.dumps(changed))
        with pytest.raises(RequestError) as e:
            load_lock(path)
        assert e.value.code in ("request.image_lock_invalid", "request.image_digest_mismatch")
    path.write_text("not json")
    with pytest.raises(RequestError):
        load_lock(path)
    assert load_lock(tmp_path / "absent.json") == {}


def test_lookup_order_is_lock_then_sources(image: Image) -> None:
    calls: list[str] = []

    def source(ref: str) -> Any:
        calls.append(ref)
        return None

    configs = ImageConfigs({}, [source, source])
    assert configs.config("example.com/x@" + image.index) is None
    assert len(calls) == 2
    assert configs.misses


@pytest.mark.parametrize(
    "config",
    [
        {"config": {"Env": ["=x"]}},
        {"config": {"Env": "PATH=/bin"}},
        {"config": {"User": 5}},
        {"config": []},
        [],
    ],
)
def test_malformed_configs_are_refused(config: Any) -> None:
    with pytest.raises(RequestError):
        parse_config(json.dumps(config).encode())


# ---- generate end to end


def workspace_with(tmp_path: Path, owner_keys: Path, image_ref: str) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in (WORKLOAD_OWNER_KEY_FILE, SEEDSHARE_OWNER_KEY_FILE):
        shutil.copy2(owner_keys / name, ws / name)
    coordinator = coordinator_deployment("manifest")
    app = deployment("app")
    c = app["spec"]["template"]["spec"]["containers"][0]
    c.update(image=image_ref)
    for key in ("command", "args", "workingDir", "env"):
        c.pop(key)  # everything from the image config
    f = ws / "app.yaml"
    f.write_text(yaml.safe_dump_all([coordinator, app]))
    return ws, f


def policy_of(f: Path) -> dict[str, Any]:
    for doc in yaml.safe_load_all(f.read_text()):
        if doc["metadata"]["name"] == "app":
            meta = doc["spec"]["template"]["metadata"]["annotations"]
            rego = tomllib.loads(decode_annotation(meta[ann.KATA_INITDATA]).decode())["data"]["policy.rego"]
            return {"hash": meta[ann.POLICY_HASH], "rego": rego}
    raise AssertionError("no app")


def test_generate_pins_the_registry_config_and_reproduces_it_offline(
    tmp_path: Path, owner_keys: Path, image: Image
) -> None:
    reg = Registry(images={"shop/app": image})
    with loopback_registry(reg):
        ref = f"{reg.host}/shop/app@{image.index}"
        ws, f = workspace_with(tmp_path, owner_keys, ref)
        run([f], platform="Metal-QEMU-SNP", workspace=ws, emulator_dir=ws / "emu", options=Options())
    first = policy_of(f)
    assert '"/usr/bin/app",\n        "--serve"' in first["rego"]  # argv from the image config
    assert '"PATH": "/opt/app/bin:/usr/bin:/bin"' in first["rego"]
    lock = load_lock(ws / LOCK_FILE)
    assert set(lock) == {ref}
    assert lock[ref].config == EXPECTED

    # The registry is gone: the lock alone gives the same policy, byte for byte.
    f.write_text(f.read_text())
    report = run(
        [f], platform="Metal-QEMU-SNP", workspace=ws, emulator_dir=ws / "emu", options=Options(offline=True)
    )
    assert policy_of(f) == first
    assert ws / LOCK_FILE not in report.written

    # Without the lock and without network, generate refuses and says why.
    (ws / LOCK_FILE).unlink()
    with pytest.raises(RequestError) as e:
        run(
            [f],
            platform="Metal-QEMU-SNP",
            workspace=ws,
            emulator_dir=ws / "emu",
            options=Options(offline=True),
        )
    assert e.value.code == "request.image_config_missing"
    assert "set command, an env PATH and workingDir" in e.value.message


def test_generate_cli_with_an_oci_layout(
    tmp_path: Path, owner_keys: Path, image: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = f"example.invalid/shop/app@{image.index}"
    ws, f = workspace_with(tmp_path, owner_keys, ref)
    layout = write_layout(tmp_path / "layout", image)
    argv = ["generate", str(f), "--reference-values", "Metal-QEMU-SNP", "--workspace", str(ws), "--offline"]
    assert cli_main([*argv, "--emulator-dir", str(ws / "emu")]) == 1
    assert "image_config_missing" in capsys.readouterr().err
    assert cli_main([*argv, "--emulator-dir", str(ws / "emu"), "--image-layout", str(layout)]) == 0
    assert load_lock(ws / LOCK_FILE)[ref].config_digest == image.config_digest
    assert "/srv" in policy_of(f)["rego"]
