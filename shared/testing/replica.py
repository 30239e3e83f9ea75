"""``python -m contrast.testing.replica {verifier,ca} [runtime flags]``: a replica on the INSECURE fixture.

For tests and benchmarks that run verifier and CA replicas as real processes without a manifest service: the
replica's role keys come from the :class:`~contrast.testing.fixture.FixtureState` in
``CONTRAST_INSECURE_FIXTURE_DIR`` instead of a join. The production entry points (``python -m
contrast.verifier``, ``contrast.ca``) never read that variable. This one refuses to start unless
``CONTRAST_PLATFORM`` names an emulator, and the fixture refuses any other platform again at every join.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from contrast.ca.service import make_service as make_ca
from contrast.coordinator.pins import CoordinatorPins
from contrast.replica.deps import ReplicaDeps
from contrast.replica.membership import KeySource
from contrast.runtime import main as serve_main
from contrast.testing.fixture import FixtureKeySource, FixtureState
from contrast.verifier.service import make_service as make_verifier

FIXTURE_ENV = "CONTRAST_INSECURE_FIXTURE_DIR"
_EMULATED = frozenset({"emulated-snp", "emulated-tdx"})
_SERVICES = {"verifier": make_verifier, "ca": make_ca}


def fixture_deps(env: Mapping[str, str]) -> ReplicaDeps:
    """Replica dependencies whose key source is the fixture named by the environment; ``ValueError`` if the
    environment is not an emulated test setup."""
    directory = env.get(FIXTURE_ENV, "")
    if not directory:
        raise ValueError(f"{FIXTURE_ENV} is not set")
    if env.get("CONTRAST_PLATFORM", "") not in _EMULATED:
        raise ValueError("the INSECURE fixture runs only with CONTRAST_PLATFORM=emulated-snp or emulated-tdx")
    state = FixtureState.load(Path(directory))

    def key_source(replica: str, pins: CoordinatorPins) -> KeySource:
        return FixtureKeySource(state, None, replica, pins)

    return ReplicaDeps(key_source=key_source)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in _SERVICES:
        print(f"usage: python -m contrast.testing.replica {{{','.join(_SERVICES)}}} [flags]", file=sys.stderr)
        return 2
    kind, rest = args[0], args[1:]
    try:
        deps = fixture_deps(os.environ)
    except (ValueError, OSError) as e:
        print(f"contrast.testing.replica: {e}", file=sys.stderr)
        return 2
    return serve_main(_SERVICES[kind](deps), rest, prog=f"python -m contrast.testing.replica {kind}")


if __name__ == "__main__":
    sys.exit(main())
