"""Fixtures shared by the generate tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from contrast.crypto.ownerkeys import (
    SEEDSHARE_OWNER_KEY_FILE,
    ensure_owner_keys,
    generate_seedshare_owner_key,
    save_private_key,
)


@pytest.fixture(scope="session")
def owner_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Owner keys made once per session; tests copy them into their workspaces."""
    d = tmp_path_factory.mktemp("keys")
    # 3072 bits (the accepted minimum) instead of the default 4096: key generation dominates test time.
    save_private_key(generate_seedshare_owner_key(3072), d / SEEDSHARE_OWNER_KEY_FILE)
    ensure_owner_keys(d)
    return d
