"""Evaluate generated Kata agent policies on two Rego engines: regorus (kata-agent's) and OPA.

A case is one request of one type against one policy, with the policy state (``data.pstate``) kata-agent
would hold at that point. regorus runs each case in-process; OPA runs every case of a batch in one
``opa eval`` over a harness module, so the second engine adds one process start, not one per case.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hobofan_regorus as regorus

from contrast.generate import policy as pol


@dataclass(frozen=True)
class Case:
    id: str
    policy: str  # key of the policy text in the batch
    rule: str  # request type, e.g. CreateContainerRequest
    input: dict[str, Any]
    expect: bool  # allowed?
    state: dict[str, Any] = field(default_factory=dict)


def rego_of(p: pol.Policy) -> str:
    text = tomllib.loads(p.initdata.decode())["data"][pol.POLICY_KEY]
    assert isinstance(text, str)
    return text


def normalized(value: Any) -> Any:
    """regorus hands numbers back as floats and sets as Python sets; make both engines' answers comparable."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(v) for v in value]
    if isinstance(value, set):
        return sorted(normalized(v) for v in value)
    return value


def allowed(result: Any) -> bool:
    """kata-agent's reading of a rule's value: true, or an object whose "allowed" is true."""
    return result is True or (isinstance(result, dict) and result.get("allowed") is True)


class Regorus:
    """One engine per policy text, reused across cases; the state is replaced for every case."""

    def __init__(self) -> None:
        self._engines: dict[str, Any] = {}

    def evaluate(self, text: str, case: Case) -> Any:
        engine = self._engines.get(text)
        if engine is None:
            engine = self._engines[text] = regorus.Engine()
            engine.add_policy("policy.rego", text)
        # JSON, not Python objects: the binding turns Python booleans into numbers.
        engine.clear_data()
        engine.add_data_json(json.dumps({"pstate": case.state}))
        engine.set_input_json(json.dumps(case.input))
        try:
            return normalized(engine.eval_rule(f"data.agent_policy.{case.rule}"))
        except RuntimeError as exc:  # a strict built-in error: kata-agent would see an undefined result
            return {"error": str(exc).splitlines()[0]}


HARNESS = """package harness

import future.keywords.if
import future.keywords.in

results[id] := r if {
	some id, c in data.cases
	r := data.policies[c.policy][c.rule] with input as c.input with data.pstate as c.state
}
"""


def opa_evaluate(opa: str, policies: dict[str, str], cases: list[Case], workdir: Path) -> dict[str, Any]:
    """Every case in one ``opa eval``; a case whose rule is undefined is missing from the answer."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [opa, "eval", "--format", "json", "--data", str(workdir / "harness.rego")]
    (workdir / "harness.rego").write_text(HARNESS)
    for key, text in policies.items():
        path = workdir / f"{key}.rego"
        assert text.startswith("package agent_policy\n")
        path.write_text(text.replace("package agent_policy\n", f"package policies.{key}\n", 1))
        args += ["--data", str(path)]
    body = {
        "cases": {
            c.id: {"input": c.input, "policy": c.policy, "rule": c.rule, "state": c.state} for c in cases
        }
    }
    (workdir / "cases.json").write_text(json.dumps(body))
    args += ["--data", str(workdir / "cases.json"), "data.harness.results"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    answer = json.loads(out.stdout)
    return {k: normalized(v) for k, v in answer["result"][0]["expressions"][0]["value"].items()}
