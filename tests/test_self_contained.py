"""The repository stands alone: vendored vectors match their recorded provenance, and no file refers to a
path outside the checkout (a clone with nothing beside it must pass ``make test``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "data" / "vectors"


def _vector_dirs() -> list[Path]:
    return sorted(p.parent for p in VECTORS.glob("*/expected.json"))


def test_vectors_are_present() -> None:
    kinds = {json.loads((d / "expected.json").read_text())["kind"] for d in _vector_dirs()}
    assert kinds == {"sev-snp", "tdx"}


@pytest.mark.parametrize("vector", _vector_dirs(), ids=lambda p: p.name)
def test_verbatim_vector_files_match_their_recorded_source_hash(vector: Path) -> None:
    provenance = json.loads((vector / "expected.json").read_text())["provenance"]
    verbatim = [p for p in provenance if p.get("how") == "copied verbatim"]
    assert verbatim, "every vector has at least one file copied verbatim"
    for p in verbatim:
        digest = hashlib.sha256((vector / p["file"]).read_bytes()).hexdigest()
        assert digest == p["source_sha256"], p["file"]


@pytest.mark.parametrize("vector", _vector_dirs(), ids=lambda p: p.name)
def test_every_listed_file_exists(vector: Path) -> None:
    files = json.loads((vector / "expected.json").read_text())["files"]
    for rel in files.values():
        assert (vector / rel).is_file(), rel


def test_no_tracked_file_refers_outside_the_repository() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    outside = ("/work/", "../shared/", "/home/", "/root/")
    offenders = []
    for name in listed.stdout.decode().split("\0"):
        path = ROOT / name
        if (
            not name
            or name.startswith("tests/data/")
            or path == Path(__file__).resolve()
            or not path.is_file()
        ):
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{name}: {marker}" for marker in outside if marker in text]
    assert offenders == []
