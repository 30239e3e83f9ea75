"""The generated runtime policy against a malicious host, on kata-agent's Rego engine and on OPA.

For the rich pod (every pinned feature) and for every confidential workload of deploy/examples and
deploy/kubernetes as ``contrast generate`` writes them: the legitimate requests of the pod's life are
allowed, and every attack is denied, per request type kata-agent asks about. On the rich pod, every field
of every request is changed in turn and the change is denied unless the policy leaves the field to the host
on purpose (``policy_suite.unpinned``). The two bypasses found in review are named regression tests. OPA
evaluates every case in one batch and must give the same answer as regorus for each.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contrast.generate import annotations as ann
from contrast.generate import jsonpatch
from contrast.generate import policy as pol
from contrast.generate.generator import pod_settings
from contrast.generate.rules import RULES
from contrast.generate.workloads import as_workload
from tests.generate.kata_requests import hex_id
from tests.generate.policy_engines import Case, Regorus, allowed, opa_evaluate
from tests.generate.policy_review import (
    block_device_cases,
    create_sandbox_twice_cases,
    device_bindings,
    loopback_cases,
    masked_path_cases,
    mount_order_cases,
    review_cases,
    sandbox_id_reuse_cases,
    setuid_copy_cases,
)
from tests.generate.policy_suite import (
    APP_EXEC,
    KATA_AGENT_REQUESTS,
    LIFECYCLE,
    Subject,
    all_cases,
    all_subjects,
    bypass_cases,
    container_cases,
    container_names,
    copy_file_cases,
    create_sandbox_cases,
    exec_cases,
    field_cases,
    mesh_cases,
    meshed,
    mount,
    network_cases,
    remove_cases,
    request_type_cases,
    rich_subject,
    rich_workload,
    sandbox_container_cases,
)
from tests.tooling import require_tool

SUBJECTS = {s.key: s for s in all_subjects()}
KEYS = list(SUBJECTS)
RICH = ("rich_local", "rich_block")
ENGINE = Regorus()
RESULTS: dict[str, Any] = {}  # case id -> regorus answer, shared with the OPA comparison


def evaluate(case: Case) -> Any:
    if case.id not in RESULTS:
        RESULTS[case.id] = ENGINE.evaluate(SUBJECTS[case.policy].text, case)
    return RESULTS[case.id]


def check(cases: list[Case]) -> None:
    """Every case gives its expected answer, and no built-in fails on the way (a hostile input included)."""
    assert cases
    assert len({c.id for c in cases}) == len(cases), "case ids must be unique"
    wrong = []
    for c in cases:
        result = evaluate(c)
        if (isinstance(result, dict) and "error" in result) or allowed(result) != c.expect:
            wrong.append(f"{c.id}: expected {'allow' if c.expect else 'deny'}, got {str(result)[:120]}")
    assert not wrong, f"{len(wrong)} of {len(cases)} cases:\n" + "\n".join(wrong[:40])


@pytest.mark.parametrize("key", KEYS)
def test_create_sandbox_request(key: str) -> None:
    """Host name, DNS, guest-memory /dev/shm only (no shared host file system), no modules or hooks."""
    check(create_sandbox_cases(SUBJECTS[key]))


@pytest.mark.parametrize("key", KEYS)
def test_sandbox_container(key: str) -> None:
    """The pause container: guest pause bundle, identity, mounts; once, and before any container."""
    check(sandbox_container_cases(SUBJECTS[key]))


@pytest.mark.parametrize("key", KEYS)
def test_create_container_request(key: str) -> None:
    """Each container exactly as generate pinned it; env, argv, user, caps, mounts, storages attacked."""
    check(container_cases(SUBJECTS[key]))


MESHED = [k for k, s in SUBJECTS.items() if meshed(s)]


def test_the_examples_have_meshed_pods() -> None:
    assert {"emojishop_api", "emojishop_web"} <= set(MESHED)


@pytest.mark.parametrize("key", MESHED)
def test_mesh_sidecar_cannot_be_weakened_or_bypassed(key: str) -> None:
    """The injected sidecar (root, NET_ADMIN, restartPolicy Always) is pinned like any container: the host
    cannot start it with another mesh configuration, as the opener, or without its privilege, and cannot give
    an application container NET_ADMIN or the sidecar's command. The legitimate sidecar is allowed
    (``test_create_container_request``)."""
    cases = mesh_cases(SUBJECTS[key])
    assert len(cases) >= 10
    check(cases)


@pytest.mark.parametrize("key", RICH)
def test_every_field_is_pinned(key: str) -> None:
    """Every leaf, list and map of every request changed in turn: denied unless deliberately unpinned."""
    cases = field_cases(SUBJECTS[key])
    assert len(cases) > (1000 if key == "rich_local" else 200)
    check(cases)


@pytest.mark.parametrize("key", KEYS)
def test_bypass_path_hijack_is_denied(key: str) -> None:
    """Review bypass 1: PATH=/dev/termination-log backed by a host directory holding the host's python.

    PATH is pinned; argv[0] must be absolute; the termination log must be this container's own copied
    file, and CopyFile may create that name only as a regular file, with nothing below it.
    """
    check(bypass_cases(SUBJECTS[key], "path"))


@pytest.mark.parametrize("key", KEYS)
def test_bypass_root_filesystem_is_denied(key: str) -> None:
    """Review bypass 2: the pinned image name on the annotation, another root file system or a hook."""
    check(bypass_cases(SUBJECTS[key], "rootfs"))


def test_bypasses_are_legitimate_requests_but_for_the_attack() -> None:
    """Each bypass request differs from an allowed request: the denial is the attack's, not the shape's."""
    s = SUBJECTS["rich_local"]
    legit = {c.input["container_id"]: c for c in container_cases(s) if c.expect and "OCI" in c.input}
    for case in bypass_cases(s, "path") + bypass_cases(s, "rootfs"):
        if case.rule != "CreateContainerRequest":
            continue
        base = legit[s.pod.cid(case.id.split("/")[2])]
        assert allowed(evaluate(Case(case.id + " (legit)", s.key, case.rule, base.input, True, case.state)))
        assert case.input != base.input


@pytest.mark.parametrize("key", KEYS)
def test_exec_process_request(key: str) -> None:
    """Only the exact commands of the exec-commands annotation, in their container, with its process."""
    check(exec_cases(SUBJECTS[key]))


def test_exec_is_denied_without_the_annotation() -> None:
    w = rich_workload()
    del w["spec"]["template"]["metadata"]["annotations"][ann.EXEC_COMMANDS]
    s = _rebuilt(w)
    pod = s.pod
    assert [c["exec"] for c in s.data["containers"]] == [[], [], []]
    case = Case(
        "no annotation/exec",
        s.key,
        "ExecProcessRequest",
        pod.exec_process("app", APP_EXEC),
        False,
        pod.state_with("app"),
    )
    assert not allowed(Regorus().evaluate(s.text, case))


@pytest.mark.parametrize("key", KEYS)
def test_copy_file_request(key: str) -> None:
    """Only the files and volume directories Kubernetes gives the pod, by type; no traversal."""
    check(copy_file_cases(SUBJECTS[key]))


@pytest.mark.parametrize("key", KEYS)
def test_remove_container_request(key: str) -> None:
    check(remove_cases(SUBJECTS[key]))


@pytest.mark.parametrize("key", KEYS)
def test_network_requests_are_constrained_as_kata_does(key: str) -> None:
    check(network_cases(SUBJECTS[key]))


@pytest.mark.parametrize("key", KEYS)
def test_every_request_type_kata_agent_asks_about(key: str) -> None:
    """Lifecycle requests are allowed; every other type is denied by default (SetPolicy, ReadStream, ...)."""
    check(request_type_cases(SUBJECTS[key]))


def test_every_request_type_has_a_default_deny() -> None:
    text = SUBJECTS["rich_local"].text
    for rule in KATA_AGENT_REQUESTS:
        assert f"default {rule} := false\n" in text, rule
    assert set(LIFECYCLE) < set(KATA_AGENT_REQUESTS)


def test_every_rule_has_a_body() -> None:
    """kata-agent's regorus (0.9, built without OPA extras) refuses a rule head alone, such as ``f("")``;
    the engines here accept it, so a policy with one would pass the suite and fail to load in the guest.
    """
    heads = [
        line
        for line in RULES.splitlines()
        if line[:1].isalpha()
        and not line.startswith(("default ", "package ", "import "))
        and " if {" not in line
        and ":=" not in line
    ]
    assert heads == []


def test_read_stream_is_a_setting() -> None:
    """Container output is redacted unless the pod's allow-logs annotation says "true"."""
    request = {"container_id": hex_id("c"), "exec_id": "e", "len": 4096}
    w = rich_workload()
    s = _rebuilt(w)
    assert not allowed(
        Regorus().evaluate(s.text, Case("logs/default", s.key, "ReadStreamRequest", request, False))
    )
    w["spec"]["template"]["metadata"]["annotations"][ann.ALLOW_LOGS] = "true"
    s = _rebuilt(w)
    assert allowed(
        Regorus().evaluate(s.text, Case("logs/allowed", s.key, "ReadStreamRequest", request, True))
    )


def pod_life(s: Subject) -> tuple[dict[str, Any], Callable[[str, dict[str, Any]], bool]]:
    """The policy state as kata-agent keeps it, and a step that sends one request and applies its ops."""
    engine = Regorus()
    doc: dict[str, Any] = {"pstate": {}}

    def step(rule: str, request: dict[str, Any]) -> bool:
        result = engine.evaluate(s.text, Case(rule, s.key, rule, request, True, copy.deepcopy(doc["pstate"])))
        if allowed(result) and isinstance(result, dict):
            doc.update(jsonpatch.apply(doc, result["ops"]))
        return allowed(result)

    return doc, step


def test_policy_state_follows_the_pod_life() -> None:
    """The agent applies each answer's ops to data.pstate: exec works only while its container exists."""
    s = SUBJECTS["rich_local"]
    pod = s.pod
    doc, step = pod_life(s)
    exec_app = pod.exec_process("app", APP_EXEC)
    assert step("CreateSandboxRequest", pod.create_sandbox())
    assert not step("CreateSandboxRequest", pod.create_sandbox()), "a second sandbox request"
    assert not step("CreateContainerRequest", pod.container("app")), "a container before its sandbox"
    assert step("CreateContainerRequest", pod.sandbox_container())
    sandbox = {"id": pod.sandbox_id, "name": pod.name, "netns": ""}
    assert doc["pstate"] == {"create_sandbox": True, "sandbox": sandbox}
    assert not step("CreateContainerRequest", pod.sandbox_container()), "a second sandbox"
    assert not step("ExecProcessRequest", exec_app), "exec before the container exists"
    for name in container_names(s):
        assert step("CreateContainerRequest", pod.container(name))
    assert not step("CreateContainerRequest", pod.container("app")), "the same container id twice"
    assert step("ExecProcessRequest", exec_app)
    assert step("RemoveContainerRequest", {"container_id": pod.cid("app")})
    assert pod.cid("app") not in doc["pstate"]
    assert not step("ExecProcessRequest", exec_app), "exec after the container is gone"
    assert step("CreateContainerRequest", pod.container("app")), "a restart after removal"


def test_block_devices_are_bound_to_their_volume_through_the_pod_life() -> None:
    """Each block emptyDir's device is recorded with its volume's name when first mounted, and kept."""
    s = SUBJECTS["rich_block"]
    pod = s.pod
    doc, step = pod_life(s)
    assert step("CreateSandboxRequest", pod.create_sandbox())
    assert step("CreateContainerRequest", pod.sandbox_container())
    for name in container_names(s):
        assert step("CreateContainerRequest", pod.container(name))
    bindings = device_bindings(s, "app")
    assert sorted(bindings.values()) == ["cache", "keys"]
    assert {k: v for k, v in doc["pstate"].items() if k.startswith("device-")} == bindings
    assert step("RemoveContainerRequest", {"container_id": pod.cid("app")})
    assert step("CreateContainerRequest", pod.container("app")), "a restart mounts the same devices"
    swapped = pod.container("app")
    cache, keys = (mount(swapped, d) for d in ("/var/cache/app", "/etc/app/keys"))
    cache["source"], keys["source"] = keys["source"], cache["source"]
    assert step("RemoveContainerRequest", {"container_id": pod.cid("app")})
    assert not step("CreateContainerRequest", swapped), "the devices of two volumes swapped on a restart"


# ---- Findings of the adversarial review: each attack was allowed before its fix.


@pytest.mark.parametrize("key", KEYS)
def test_loopback_by_another_spelling_is_denied(key: str) -> None:
    """UpdateInterface by a hardware address, routes and neighbours by addresses kata-agent parses alike."""
    check(loopback_cases(SUBJECTS[key]))


@pytest.mark.parametrize("key", KEYS)
def test_mounts_keep_a_parent_before_its_children(key: str) -> None:
    """A host directory listed after a guest volume below it would hide it (/etc/app over its keys)."""
    check(mount_order_cases(SUBJECTS[key]))


@pytest.mark.parametrize("key", KEYS)
def test_masked_paths_stay_in_the_kernel_file_systems(key: str) -> None:
    """Extra masked and read-only paths only in /proc and /sys, never through a process's root link."""
    check(masked_path_cases(SUBJECTS[key]))


def test_a_block_device_serves_one_volume() -> None:
    """One device never backs two emptyDirs, within a request or across the pod's containers."""
    check(block_device_cases(SUBJECTS["rich_block"]))


@pytest.mark.parametrize("key", KEYS)
def test_the_sandbox_is_created_once(key: str) -> None:
    """A second CreateSandboxRequest would empty /run/kata-containers under the running containers."""
    check(create_sandbox_twice_cases(SUBJECTS[key]))


@pytest.mark.parametrize("key", KEYS)
def test_no_container_takes_the_sandbox_id(key: str) -> None:
    check(sandbox_id_reuse_cases(SUBJECTS[key]))


@pytest.mark.parametrize("key", KEYS)
def test_copied_files_are_never_set_user_id(key: str) -> None:
    """The host's mode bits stay on copied files: no set-user-ID or set-group-ID programs from the host."""
    check(setuid_copy_cases(SUBJECTS[key]))


def _rebuilt(workload: dict[str, Any]) -> Subject:
    w = as_workload(workload)
    assert w is not None
    base = rich_subject("local")
    policy = pol.build(
        w.pod_spec, namespace=w.namespace, ref=w.ref, settings=pod_settings(w), images=base.pod.images.get
    )
    return Subject(key="rebuilt", ref=w.ref, policy=policy, pod=base.pod)


def test_opa_agrees_with_regorus_on_every_case(tmp_path: Path) -> None:
    """The same cases on OPA, in one `opa eval`: the same answer (ops included) as regorus, every time."""
    opa = require_tool("opa")
    cases = [c for s in SUBJECTS.values() for c in all_cases(s) + review_cases(s)]
    results = opa_evaluate(opa, {k: s.text for k, s in SUBJECTS.items()}, cases, tmp_path)
    missing = [c.id for c in cases if c.id not in results]
    assert not missing, missing[:20]
    disagree = [c.id for c in cases if results[c.id] != evaluate(c)]
    assert not disagree, f"{len(disagree)} cases: {disagree[:20]}"
    wrong = [c.id for c in cases if allowed(results[c.id]) != c.expect]
    assert not wrong, wrong[:20]
