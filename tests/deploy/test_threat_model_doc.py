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
    """A module, or an attribute of one (``contrast.evidence.verifier.verify_peer``)."""
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


# A backticked reference: `tests/<dir>/<file>.py`, optionally `::test_name` and `[case]`; or, continuing the
# file named last in the same line, `::test_name[case]`; or `[case]` of the test named last.
_REF = re.compile(r"^(?P<file>tests/[\w/]+\.py)?(?:::(?P<test>test_\w+))?(?:\[(?P<case>[^\]]+)\])?$")
_DEF = r"^(?:async )?def {}\("


def _references() -> list[tuple[int, str, str | None, str | None]]:
    """(line number, file, test, case) for every test reference, resolved against its line's context."""
    refs: list[tuple[int, str, str | None, str | None]] = []
    for n, line in enumerate(DOC.splitlines(), 1):
        file: str | None = None
        test: str | None = None
        for span in re.findall(r"`([^`]+)`", line):
            m = _REF.match(span)
            if m is None or not any(m.group("file", "test", "case")):
                continue
            if m["file"]:
                file, test = m["file"], None
            assert file is not None, f"line {n}: {span!r} follows no test file"
            if m["test"]:
                test = m["test"]
            if m["case"]:
                assert test is not None, f"line {n}: case {span!r} follows no test"
            refs.append((n, file, test if (m["test"] or m["case"]) else None, m["case"]))
    return refs


def test_every_test_is_in_the_file_it_is_listed_under() -> None:
    refs = _references()
    assert len(refs) > 100
    for n, file, test, case in refs:
        path = ROOT / file
        assert path.is_file(), f"line {n}: {file} does not exist"
        text = path.read_text()
        if test is not None:
            assert re.search(_DEF.format(test), text, re.MULTILINE), f"line {n}: {file} has no {test}"
        if case is not None:
            # A parametrize id, written as a string literal in the test file.
            assert f'"{case}"' in text or f"'{case}'" in text, f"line {n}: {file} has no case {case!r}"


_ROW = re.compile(r"^\| ((?:PM|DK|CP|CR|NW|AR)\d+) \|.*\| ([MPHNO]) \|$")
_CITED = re.compile(r"\b(PM|DK|CP|CR|NW|AR)(\d+)(?:–(?:PM|DK|CP|CR|NW|AR)?(\d+))?\b")


def test_rows_have_unique_ids_a_status_and_cited_rows_exist() -> None:
    row_lines = [line for line in DOC.splitlines() if re.match(r"^\| (?:PM|DK|CP|CR|NW|AR)\d+ \|", line)]
    ids = []
    for line in row_lines:
        m = _ROW.match(line)
        assert m is not None, f"row without a status M/P/H/N/O: {line[:60]}"
        ids.append(m[1])
    assert len(ids) == len(set(ids))
    cited = {f"{p}{i}" for p, lo, hi in _CITED.findall(DOC) for i in range(int(lo), int(hi or lo) + 1)}
    assert cited - set(ids) == set()
    coverage = DOC.split("## Coverage", 1)[1].split("\n## ", 1)[0]
    in_matrix = {
        f"{p}{i}" for p, lo, hi in _CITED.findall(coverage) for i in range(int(lo), int(hi or lo) + 1)
    }
    assert set(ids) - in_matrix == set(), "every row belongs to some attacker × surface cell"
