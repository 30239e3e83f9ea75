"""docs/threat-model.md names only modules and tests that exist, so the map cannot silently rot."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "threat-model.md").read_text()


def test_every_named_test_exists() -> None:
    defined = {
        m.group(1)
        for f in (ROOT / "tests").rglob("test_*.py")
        for m in re.finditer(r"^(?:async )?def (test_\w+)", f.read_text(), re.MULTILINE)
    }
    named = set(re.findall(r"::(test_\w+)", DOC))
    assert named
    assert named - defined == set()


def test_every_named_test_file_exists() -> None:
    files = {p.name for p in (ROOT / "tests").rglob("test_*.py")}
    named = set(re.findall(r"(test_\w+\.py)", DOC))
    assert named
    assert named - files == set()


def test_every_named_module_exists() -> None:
    named = set(re.findall(r"`(contrast(?:\.[a-z_]\w*)+)", DOC))
    assert named
    missing = {name for name in named if not _exists(name)}
    assert missing == set()


def _exists(name: str) -> bool:
    """A module, or an attribute of one (``contrast.attest.evidence.verify_peer``)."""
    try:
        if importlib.util.find_spec(name) is not None:
            return True
    except ModuleNotFoundError:
        pass
    parent, _, attr = name.rpartition(".")
    try:
        return hasattr(importlib.import_module(parent), attr)
    except ModuleNotFoundError:
        return False


def test_every_named_deploy_file_exists() -> None:
    named = set(re.findall(r"`(deploy/[\w./-]+)`", DOC))
    assert all((ROOT / n).exists() for n in named), named
