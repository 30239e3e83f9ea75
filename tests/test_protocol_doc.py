"""docs/protocol.md names, at every step, a function or class that exists: the map cannot silently rot."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "protocol.md").read_text()


def _resolves(name: str) -> bool:
    """A module, or an attribute path inside one (``contrast.ca.service._Ca.handle``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_named_function_exists() -> None:
    named = set(re.findall(r"`(contrast\.(?!v1\b)[a-z_]\w*(?:\.\w+)*)`", DOC))
    assert len(named) > 20
    assert {n for n in named if not _resolves(n)} == set()


def test_each_step_of_the_attestation_flow_names_its_function() -> None:
    section = DOC[DOC.index("## 3. Workload attestation") : DOC.index("### 3.1")]
    steps = re.split(r"\n(?=\d\. )", section)[1:]
    assert len(steps) == 5
    assert all(re.search(r"`contrast\.(?!v1\b)\w+\.", step) for step in steps)
