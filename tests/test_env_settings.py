"""Every environment setting the code reads is documented in the README's configuration tables."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SETTING = re.compile(r"\b(CONTRAST_[A-Z][A-Z0-9_]*[A-Z0-9])\b")


def test_every_setting_the_code_reads_is_in_the_readme() -> None:
    sources = [
        *(ROOT / "shared").rglob("*.py"),
        *(ROOT / "services").rglob("*.py"),
        ROOT / "tests" / "tooling.py",
    ]
    read = {m for path in sources for m in _SETTING.findall(path.read_text())}
    assert {
        "CONTRAST_NONCE_LIFETIME_MS",
        "CONTRAST_VERDICT_MAX_AGE_S",
        "CONTRAST_INSECURE_FIXTURE_DIR",
    } <= read
    documented = set(re.findall(r"`(CONTRAST_[A-Z0-9_]+)`", (ROOT / "README.md").read_text()))
    assert read - documented == set()
