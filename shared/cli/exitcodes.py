"""The exit codes of every ``contrast`` command, and the error that means "exit code 2", in one place."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0  # done; accepted
EXIT_REJECTED: Final = 1  # rejected, refused or failed: the reason code is printed (and in the JSON)
EXIT_USAGE: Final = 2  # a usage or I/O error (argparse exits with 2 as well)
# NATS cannot be reached, or no ready Coordinator replica answered: nothing was decided, try again later (or
# after `contrast recover`). The reason code is printed, as for a refusal.
EXIT_UNAVAILABLE: Final = 3
EXIT_INTERRUPTED: Final = 130  # Ctrl-C


class UsageError(Exception):
    """Bad arguments or unreadable input: exit code 2."""
