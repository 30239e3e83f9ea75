"""Traces of a whole local deployment in a real Jaeger: ``contrast run`` with ``OTEL_EXPORTER_OTLP_ENDPOINT``
pointed at the pinned Jaeger of ``make tools``, then the span trees read back through Jaeger's HTTP API.

Every process exports on its own (services, each pod's initializer, the owner's ``set`` and ``verify``); a
broken link anywhere (a publish without ``traceparent``, a request outside its command's span, a join in no
span) shows here as a span that starts a trace of its own instead of continuing one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrast import subjects
from contrast.cli.localrun.jaeger import Jaeger, TraceSpan
from contrast.runtime.tracing import ATTR_POLICY_HASH, ATTR_ROLE, ATTR_TEE, ATTR_VERDICT
from tests.tooling import require_tool
from tests.traces import (
    ATTACH_TIMEOUT,
    child_of,
    command_trace,
    every,
    has_error,
    one,
    root,
    started_jaeger,
    traces_of,
    wait_for,
)

CONTRAST = Path(sys.executable).with_name("contrast")
PODS = ("api", "db", "web")
LAUNCHED = re.compile(r"pods\s+(\w+)\s+launched with policy ([0-9a-f]{16})")


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Jaeger, dict[str, str]]]:
    """A headless run exporting to Jaeger; yields Jaeger and each pod's policy-hash prefix."""
    with started_jaeger(tmp_path_factory.mktemp("jaeger")) as j:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": j.otlp_endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        workdir = tmp_path_factory.mktemp("traced") / "run"
        proc = subprocess.run(
            [str(CONTRAST), "run", "--headless", "--verifiers", "2", "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=150 + ATTACH_TIMEOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert f"traces        exported to {j.otlp_endpoint}" in proc.stdout
        policies = dict(LAUNCHED.findall(proc.stdout))
        assert set(policies) == set(PODS), proc.stdout
        yield j, policies


def _attestations(j: Jaeger) -> dict[str, list[TraceSpan]]:
    """Each pod's attestation trace, once the CA's span of every one has arrived."""

    def complete(found: list[list[TraceSpan]]) -> bool:
        return len(found) >= len(PODS) and all(every(t, service="contrast-ca") for t in found)

    found = wait_for("the pods' attestations", lambda: traces_of(j, "contrast-initializer"), complete)
    by_pod = {root(t).replica.removeprefix("pod-"): t for t in found}
    assert set(by_pod) == set(PODS), "one trace per attestation, one attestation per pod"
    services = {f"contrast-{s}" for s in ("initializer", "verifier", "ca", "manifest", "cli")}
    assert set(j.services()) >= services
    one_trace = by_pod[PODS[0]]
    assert j.trace(one_trace[0].trace_id) == one_trace  # the same spans, fetched by trace id
    return by_pod


def test_each_attestation_is_one_trace_initializer_nonce_verify_issue_result(
    traced_run: tuple[Jaeger, dict[str, str]],
) -> None:
    j, policies = traced_run
    for pod, spans in _attestations(j).items():
        for s in spans:  # every span says which service and which replica made it
            assert s.service.startswith("contrast-"), s
            assert s.replica, s
        attest = root(spans)
        assert (attest.service, attest.replica, attest.name) == (
            "contrast-initializer",
            f"pod-{pod}",
            "attest",
        )
        expected = {ATTR_TEE: "snp", ATTR_POLICY_HASH: policies[pod]}
        assert one(spans, tags={**expected, ATTR_VERDICT: "issued"}, name="attest") is attest

        # nonce: the initializer's request, stored in NONCE with its trace context and answered by a verifier
        ask = one(spans, name=subjects.ATTEST_NONCE, kind="producer")
        nonce = one(spans, name=subjects.ATTEST_NONCE, kind="consumer")
        assert child_of(ask, attest)
        assert child_of(nonce, ask)
        assert nonce.service == "contrast-verifier"
        assert nonce.replica in ("verifier-1", "verifier-2")

        # verify: the verifier's delivery continues the trace of the initializer's publish to ATTEST
        publish = one(spans, name=subjects.ATTEST_REQUESTED, kind="producer")
        verify = one(spans, name=subjects.ATTEST_REQUESTED, kind="consumer")
        assert child_of(publish, attest)
        assert child_of(verify, publish)
        assert verify.service == "contrast-verifier"
        assert verify.replica in ("verifier-1", "verifier-2")
        assert one(spans, tags={**expected, ATTR_VERDICT: "accepted"}) is verify

        # issue: the CA's delivery continues the verifier's publish of the signed verdict
        issue = one(spans, name=subjects.ATTEST_VERIFIED, kind="consumer")
        assert child_of(issue, verify)
        assert (issue.service, issue.replica) == ("contrast-ca", "ca-1")
        assert one(spans, tags={**expected, ATTR_VERDICT: "issued"}, service="contrast-ca") is issue

        # result: the initializer's wait for, and check of, the sealed answer
        result = one(spans, name="result")
        assert child_of(result, attest)
        assert result.tags[ATTR_VERDICT] == "issued"
        assert not [s for s in spans if has_error(s)]


@pytest.mark.parametrize(
    ("command", "subject"),
    [("contrast set", subjects.USER_MANIFEST_SET), ("contrast verify", subjects.USER_MANIFEST_GET)],
)
def test_owner_commands_continue_into_the_manifest_service(
    traced_run: tuple[Jaeger, dict[str, str]], command: str, subject: str
) -> None:
    j, _ = traced_run
    spans = command_trace(j, command)
    top = root(spans)
    assert top.service == "contrast-cli"
    assert top.replica
    ask = one(spans, name=subject, kind="client")
    answer = one(spans, name=subject, kind="server")
    assert child_of(ask, top)
    assert child_of(answer, ask)
    assert (answer.service, answer.replica) == ("contrast-manifest", "manifest-1")
    assert not has_error(answer)


@pytest.mark.parametrize("replica", ["verifier-1", "verifier-2", "ca-1"])
def test_joins_continue_into_the_manifest_service(
    traced_run: tuple[Jaeger, dict[str, str]], replica: str
) -> None:
    j, _ = traced_run
    service = f"contrast-{replica.split('-')[0]}"

    spans = wait_for(f"{replica}'s join", lambda: _granted(traces_of(j, service), replica), bool)[0]
    join = root(spans)
    assert (join.service, join.replica, join.tags[ATTR_ROLE]) == (service, replica, service.split("-")[1])
    for subject in (subjects.COORDINATOR_JOIN_NONCE, subjects.COORDINATOR_JOIN):
        answers = [s for s in every(spans, name=subject, kind="server") if not has_error(s)]
        assert answers, f"no answered {subject} in {replica}'s join"
        for answer in answers:
            (ask,) = [s for s in spans if child_of(answer, s)]
            assert ask.kind == "client"
            assert child_of(ask, join)
            assert answer.service == "contrast-manifest"


def _granted(traces: list[list[TraceSpan]], replica: str) -> list[list[TraceSpan]]:
    """The traces of ``replica`` rooted in a join that succeeded."""
    return [
        t for t in traces if root(t).name == "join" and root(t).replica == replica and not has_error(root(t))
    ]


def test_run_with_jaeger_starts_it_on_loopback_and_prints_an_attestation(tmp_path: Path) -> None:
    """``contrast run --jaeger``: the built Jaeger starts, every process exports to it, the UI address and
    one pod's trace (initializer → verifier → CA) are printed, and Jaeger is stopped at the end."""
    require_tool("jaeger")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [
            str(CONTRAST),
            "run",
            "--headless",
            "--jaeger",
            "--verifiers",
            "1",
            "--workdir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=150 + ATTACH_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    started = re.search(
        r"Jaeger\s+UI (http://127\.0\.0\.1:\d+)\s+\(OTLP (http://127\.0\.0\.1:\d+), pid (\d+)", out
    )
    assert started, out
    ui, otlp, pid = started.groups()
    assert f"traces        exported to {otlp}" in out
    assert "3 attestation trace(s) in Jaeger; one of them, " + ui + "/trace/" in out
    tree = out.split("attestation trace(s) in Jaeger", 1)[1].splitlines()[1:]
    depth = {line.strip().split("  ")[0].split("/")[0]: len(line) - len(line.lstrip()) for line in tree[:8]}
    assert depth["contrast-initializer"] < depth["contrast-verifier"] < depth["contrast-ca"], tree
    assert "contrast.verdict=issued" in out.split("contrast-ca/ca-1", 1)[1].splitlines()[0]
    assert "contrast run: Jaeger stopped" in out
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
    # Its configuration binds every port to loopback.
    config = (tmp_path / "run" / "jaeger" / "jaeger.yaml").read_text()
    endpoints = re.findall(r"endpoint: (\S+)", config)
    assert len(endpoints) == 4
    assert all(e.startswith("127.0.0.1:") for e in endpoints)
