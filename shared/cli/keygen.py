"""``contrast keygen``: make the workload-owner key (ECDSA P-384) and the seed-share owner key (RSA).

Keys are written as PKCS#8 PEM with mode 0600 and never overwritten; existing keys are kept. The public keys
are printed in the manifest's encoding (hex DER SPKI) for ``WorkloadOwnerPubKeys`` and
``SeedshareOwnerPubKeys``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contrast.cli.common import emit
from contrast.cli.exitcodes import EXIT_OK, EXIT_USAGE, UsageError
from contrast.crypto.ownerkeys import (
    MIN_SEEDSHARE_OWNER_RSA_BITS,
    SEEDSHARE_OWNER_KEY_FILE,
    SEEDSHARE_OWNER_RSA_BITS,
    WORKLOAD_OWNER_KEY_FILE,
    ensure_owner_keys,
    public_key_hex,
)
from contrast.errors import ContrastError


def keygen(args: argparse.Namespace) -> int:
    directory = Path(args.workspace)
    if args.rsa_bits < MIN_SEEDSHARE_OWNER_RSA_BITS:
        print(f"contrast keygen: --rsa-bits must be at least {MIN_SEEDSHARE_OWNER_RSA_BITS}")
        return EXIT_USAGE
    try:
        existed = {f: (directory / f).exists() for f in (WORKLOAD_OWNER_KEY_FILE, SEEDSHARE_OWNER_KEY_FILE)}
        workload, seedshare = ensure_owner_keys(directory, rsa_bits=args.rsa_bits)
    except (OSError, UsageError) as e:
        print(f"contrast keygen: {e}")
        return EXIT_USAGE
    except ContrastError as e:
        print(f"contrast keygen: {e.code}: {e.message}")
        return 1
    result = {
        "ok": True,
        "WorkloadOwnerPubKeys": [public_key_hex(workload)],
        "SeedshareOwnerPubKeys": [public_key_hex(seedshare)],
        "created": [f for f, was in existed.items() if not was],
    }
    emit(
        args,
        result,
        "\n".join(
            [
                *(f"{'kept' if was else 'created'} {directory / f}" for f, was in existed.items()),
                f"WorkloadOwnerPubKeys:  {public_key_hex(workload)}",
                f"SeedshareOwnerPubKeys: {public_key_hex(seedshare)}",
            ]
        ),
    )
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "keygen",
        help="make the workload-owner and seed-share owner keys",
        description=f"Create {WORKLOAD_OWNER_KEY_FILE} and {SEEDSHARE_OWNER_KEY_FILE} where missing.",
    )
    p.add_argument("--rsa-bits", type=int, default=SEEDSHARE_OWNER_RSA_BITS, help="seed-share key size")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--workspace", default=".", help="directory for the keys (default: .)")
    p.set_defaults(func=keygen)
