"""Count public-key operations: every call into ``cryptography``'s asymmetric primitives on this thread.

:class:`PublicKeyOps` installs a profile hook (``sys.setprofile``) that sees each call of a C or Rust
function, and counts those that are a signature, a verification (of a signature or of a certificate), an
encryption or decryption under a public key (HPKE, RSA), a key agreement or encapsulation, or a key
generation, in ``cryptography``'s asymmetric-key modules. Parsing a key, hashing and MACs are not counted.
It sees what the code does, not what it claims to do: no wrapper of ours has to be called for a count.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from types import FrameType, ModuleType, TracebackType
from typing import Any, Final

_OPERATIONS: Final = frozenset(
    {
        "sign",
        "verify",
        "verify_directly_issued_by",
        "encrypt",
        "decrypt",
        "exchange",
        "encapsulate",
        "decapsulate",
        "generate",
        "generate_key",
        "generate_private_key",
        "generate_mlkem768_key",
    }
)
_ASYMMETRIC: Final = ("ec", "rsa", "dsa", "dh", "x25519", "x448", "ed25519", "ed448", "mlkem", "hpke", "x509")
_PREFIX: Final = "cryptography.hazmat.bindings._rust"


def _module_of(fn: Any) -> str:
    owner = getattr(fn, "__self__", None)
    if owner is None:
        return str(getattr(fn, "__module__", "") or "")
    if isinstance(owner, ModuleType):  # a module-level function
        return owner.__name__
    return str((owner if isinstance(owner, type) else type(owner)).__module__)


def _counted(module: str, name: str) -> bool:
    # Rust functions at module level name their module briefly ("ec"), methods by its full path.
    if name not in _OPERATIONS or not (module.startswith(_PREFIX) or "." not in module):
        return False
    return module.rsplit(".", 1)[-1] in _ASYMMETRIC


class PublicKeyOps:
    """Use ``with PublicKeyOps() as ops:``, then read ``ops.total`` and ``ops.by_name`` (by method name).

    Counts only on the thread that entered it (an asyncio service under test runs there).
    """

    def __init__(self) -> None:
        self.by_name: Counter[str] = Counter()
        self._thread = threading.get_ident()
        self._previous: Any = None

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def _hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            name = getattr(arg, "__name__", "")
            if name in _OPERATIONS and _counted(_module_of(arg), name):
                self.by_name[getattr(arg, "__qualname__", name)] += 1

    def __enter__(self) -> PublicKeyOps:
        self._thread = threading.get_ident()
        self._previous = sys.getprofile()
        sys.setprofile(self._hook)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        sys.setprofile(self._previous)
