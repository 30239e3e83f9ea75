"""The reason-code registry (``contrast.errors.REASONS``) is complete, and docs/reason-codes.md lists it."""

from __future__ import annotations

import re
from pathlib import Path

from contrast.errors import REASONS
from contrast.evidence.result import Finding

ROOT = Path(__file__).resolve().parents[1]
_RAISED = re.compile(
    r"\b(CollateralError|EvidenceError|PolicyError|StateError|VerifyError)\(\s*\"([a-z0-9_]+)\""
)
_LITERAL = re.compile(r"\"((?:collateral|evidence|policy|state|verify)\.[a-z0-9_]+)\"")
_FINDING = re.compile(r"\b(?:add|eq)\(\s*\"([a-z0-9_]+)\"")  # a validator's policy.* findings
_FAMILY = {
    "CollateralError": "collateral",
    "EvidenceError": "evidence",
    "PolicyError": "policy",
    "StateError": "state",
    "VerifyError": "verify",
}
# The manifest service reports a replica that is not ready by its state's name (ReplicaState values).
_BY_STATE = {"state.uninitialized", "state.stale"}


def _used() -> set[str]:
    codes = set(_BY_STATE)
    for base in ("shared", "services"):
        for path in (ROOT / base).rglob("*.py"):
            if {"testing", "generate"} & set(path.parts):
                continue  # test-only code; `contrast generate` has file names such as policy.rego
            text = path.read_text()
            codes |= {f"{_FAMILY[f]}.{r}" for f, r in _RAISED.findall(text)}
            codes |= set(_LITERAL.findall(text))
            if path.name == "validate.py":
                codes |= {f"policy.{r}" for r in _FINDING.findall(text)}
    return codes


def test_every_code_in_use_is_registered_and_every_registered_code_is_used() -> None:
    used = _used()
    assert used - set(REASONS) == set(), "codes raised but not in contrast.errors.REASONS"
    assert set(REASONS) - used == set(), "codes in contrast.errors.REASONS that nothing raises"


def test_the_docs_list_exactly_the_registry() -> None:
    doc = (ROOT / "docs" / "reason-codes.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z]+\.[a-z0-9_]+)` \| (.+?) \|$", doc, re.MULTILINE))
    assert rows == dict(REASONS)


def test_registered_codes_are_well_formed() -> None:
    for code in REASONS:
        Finding(code=code, field="x")  # the wire form of a finding's code accepts it
        assert re.fullmatch(r"(collateral|evidence|policy|state|verify)\.[a-z][a-z0-9_]*", code)
