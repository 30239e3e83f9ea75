"""Where the tests find the real tools they check our output against (OPA, Jaeger, natscli, promtool,
stunnel, iptables), and the privileges some tests need (network namespaces need root).

Go tools come from ``make tools`` (``.tools/bin``, or ``CONTRAST_TOOLS_DIR``); Debian's from ``PATH`` or
``/usr/sbin``. A missing tool skips the test with the reason, except on CI, where ``.ci/run`` sets
``CONTRAST_REQUIRE_TOOLS=1`` and a missing tool is a failure: CI must run these tests, not skip them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOW = {
    "opa": "make tools (needs go)",
    "jaeger": "make tools (needs go)",
    "nats": "make tools (needs go)",
    "promtool": "make system-packages (Debian's prometheus)",
    "stunnel": "make system-packages (Debian's stunnel4)",
    "iptables": "make system-packages (Debian's iptables)",
    "ip": "make system-packages (Debian's iproute2)",
}


def tools_dir() -> Path:
    return Path(os.environ.get("CONTRAST_TOOLS_DIR") or ROOT / ".tools") / "bin"


def find_tool(name: str) -> str | None:
    """The tool's path, or None: ``.tools/bin`` first (pinned builds), then ``PATH`` and ``/usr/sbin``."""
    local = tools_dir() / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CONTRAST_REQUIRE_TOOLS") == "1":
        pytest.fail(f"CONTRAST_REQUIRE_TOOLS=1 but {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The tool's path; otherwise skip (or fail under ``CONTRAST_REQUIRE_TOOLS=1``) saying how to get it."""
    path = find_tool(name)
    if path is not None:
        return path
    _missing(f"{name} is not installed; get it with `{HOW.get(name, 'your package manager')}`")


def require_root(why: str) -> None:
    """Skip (or fail under ``CONTRAST_REQUIRE_TOOLS=1``) unless the tests run as root, saying why root."""
    if os.geteuid() != 0:
        _missing(f"needs root: {why}")
