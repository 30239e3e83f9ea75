"""Choose the evidence source from the environment. Never falls back to the emulator by itself.

``CONTRAST_PLATFORM``:

- ``auto`` (default): configfs-tsm if present, else ``/dev/sev-guest``, else an error that says what to set;
- ``configfs-tsm`` / ``sev-guest``: that interface, or an error if it is missing;
- ``emulated-snp`` / ``emulated-tdx``: the INSECURE emulator, with its state in ``CONTRAST_EMULATOR_DIR``
  (default ``.run/emulator``) and the policy hash the emulated "host" launches us with in
  ``CONTRAST_EMULATED_POLICY_HASH`` (64 hex digits).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from contrast.platform.base import Platform
from contrast.platform.configfs_tsm import ConfigfsTsm
from contrast.platform.emulated import load_emulated
from contrast.platform.sev_guest import SevGuestDevice

DEFAULT_EMULATOR_DIR = Path(".run/emulator")
CHOICES = ("auto", "configfs-tsm", "sev-guest", "emulated-snp", "emulated-tdx")


class PlatformConfigError(Exception):
    """The environment names no usable evidence source."""


async def platform_from_env(env: Mapping[str, str] | None = None) -> Platform:
    env = os.environ if env is None else env
    choice = env.get("CONTRAST_PLATFORM", "auto")
    if choice not in CHOICES:
        raise PlatformConfigError(f"CONTRAST_PLATFORM={choice!r}; expected one of {', '.join(CHOICES)}")
    if choice in ("emulated-snp", "emulated-tdx"):
        raw = env.get("CONTRAST_EMULATED_POLICY_HASH", "")
        try:
            policy_hash = bytes.fromhex(raw)
        except ValueError:
            policy_hash = b""
        if len(policy_hash) != 32:
            raise PlatformConfigError("CONTRAST_EMULATED_POLICY_HASH must be 64 hex digits for an emulator")
        state = Path(env.get("CONTRAST_EMULATOR_DIR", str(DEFAULT_EMULATOR_DIR)))
        return await load_emulated("snp" if choice == "emulated-snp" else "tdx", state, policy_hash)
    if choice in ("auto", "configfs-tsm") and ConfigfsTsm.available():
        tsm = ConfigfsTsm()
        await tsm.probe()
        return tsm
    if choice in ("auto", "sev-guest") and SevGuestDevice.available():
        return SevGuestDevice()
    raise PlatformConfigError(
        f"no TEE interface found for CONTRAST_PLATFORM={choice} (no configfs-tsm, no /dev/sev-guest); for "
        "development set CONTRAST_PLATFORM=emulated-snp or emulated-tdx (INSECURE)"
    )
