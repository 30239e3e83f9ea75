"""The pod's netfilter rules for the mesh: transparent ingress redirection (TPROXY) and the default deny.

Redirection follows Contrast's service mesh. In the mangle table, ``PREROUTING`` sends TCP to
``CONTRAST_INBOUND``, which returns loopback traffic (the sidecar's own connections to the application, and
everything inside the pod) and packets of established or related connections (so only a connection's first
packet is redirected, and the pod's outbound connections get their answers). The rest goes to
``CONTRAST_IN_REDIRECT``: passthrough ports (``<name>#<port>#true``) return unredirected, TLS-without-client-
certificate ports (``#false``) are sent by TPROXY to the sidecar's port 15007, and every other port to 15006,
which requires a mesh client certificate. TPROXY keeps the packet's destination, so the sidecar reads the
original destination from its accepted socket. A connection whose original destination is one of the
sidecar's own ports is dropped by the sidecar (it would connect to itself: loop prevention).

Until the sidecar has its certificates, listeners and these rules, the default-deny rule (``filter INPUT``,
drop everything not established or related; for IPv6, TCP only) keeps the pod unreachable. The guest image
installs it before any container starts (``python -m contrast.meshproxy default-deny install``, run by a
boot unit); the sidecar removes it once it is ready; pods without a sidecar are opened by the
``contrast-open`` init container that ``contrast generate --guest-default-deny`` adds
(:mod:`contrast.generate.mesh`).

The rules are written with ``iptables-restore --noflush``: the two chains are declared (created, or flushed
if they exist) and refilled in one atomic commit, so a restarted sidecar reconciles instead of duplicating.

Redirection is IPv4 only, as Contrast's. Beyond Contrast, IPv6 fails closed: where the pod has IPv6, the
filter table's ``CONTRAST_INBOUND`` rejects every new inbound TCP connection except on loopback and to the
passthrough ports, so a dual-stack pod cannot be reached around the sidecar.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from contrast.mesh.config import INGRESS_PORT, INGRESS_PORT_NO_CLIENT_CERT, Ingress, PortMode

CHAIN_INBOUND: Final = "CONTRAST_INBOUND"
CHAIN_REDIRECT: Final = "CONTRAST_IN_REDIRECT"
PREROUTING_JUMP: Final = ("PREROUTING", "-p", "tcp", "-j", CHAIN_INBOUND)
INPUT_JUMP: Final = ("INPUT", "-p", "tcp", "-j", CHAIN_INBOUND)  # IPv6, filter table
DEFAULT_DENY: Final = ("INPUT", "-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP")
# IPv6: TCP only. Dropping everything would drop neighbour discovery, and with it the pod's own outbound
# connections (the initializer's, before the mesh exists).
DEFAULT_DENY6: Final = ("INPUT", "-p", "tcp", *DEFAULT_DENY[1:])
COMMAND_TIMEOUT: Final = 30.0
LOCK_WAIT_SECONDS: Final = "5"


class NetfilterError(RuntimeError):
    """An iptables command failed (its stderr is the message)."""


def ingress_ruleset(ingress: Ingress, *, add_jump: bool) -> str:
    """The ``iptables-restore`` input for the mangle table (pure: the rules as text).

    ``add_jump``: also append ``PREROUTING``'s jump to ``CONTRAST_INBOUND`` (only when it is missing, since
    ``--noflush`` keeps built-in chains as they are).
    """
    if not ingress.enabled:
        raise ValueError("ingress is DISABLED: no redirection rules")
    lines = ["*mangle", f":{CHAIN_INBOUND} - [0:0]", f":{CHAIN_REDIRECT} - [0:0]"]
    if add_jump:
        lines.append("-A " + " ".join(PREROUTING_JUMP))
    lines += [
        f"-A {CHAIN_INBOUND} -p tcp -i lo -j RETURN",
        f"-A {CHAIN_INBOUND} -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        f"-A {CHAIN_INBOUND} -p tcp -j {CHAIN_REDIRECT}",
    ]
    for rule in ingress.rules:
        if rule.mode is PortMode.PASSTHROUGH:
            lines.append(f"-A {CHAIN_REDIRECT} -p tcp --dport {rule.port} -j RETURN")
        else:
            tproxy = f"TPROXY --on-port {INGRESS_PORT_NO_CLIENT_CERT}"
            lines.append(f"-A {CHAIN_REDIRECT} -p tcp --dport {rule.port} -j {tproxy}")
    lines += [f"-A {CHAIN_REDIRECT} -p tcp -j TPROXY --on-port {INGRESS_PORT}", "COMMIT", ""]
    return "\n".join(lines)


def ipv6_ruleset(ingress: Ingress, *, add_jump: bool) -> str:
    """The ``ip6tables-restore`` input for the filter table: IPv6 inbound TCP fails closed (pure)."""
    if not ingress.enabled:
        raise ValueError("ingress is DISABLED: no inbound rules")
    lines = ["*filter", f":{CHAIN_INBOUND} - [0:0]"]
    if add_jump:
        lines.append("-A " + " ".join(INPUT_JUMP))
    lines += [
        f"-A {CHAIN_INBOUND} -p tcp -i lo -j RETURN",
        f"-A {CHAIN_INBOUND} -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
    ]
    lines += [
        f"-A {CHAIN_INBOUND} -p tcp --dport {r.port} -j RETURN"
        for r in ingress.rules
        if r.mode is PortMode.PASSTHROUGH
    ]
    lines += [f"-A {CHAIN_INBOUND} -p tcp -j REJECT --reject-with tcp-reset", "COMMIT", ""]
    return "\n".join(lines)


def _find(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


@dataclass(frozen=True)
class Netfilter:
    """Runs ``iptables`` and ``iptables-restore`` (asynchronously) in the caller's network namespace."""

    iptables: str
    ip6tables: str | None = None  # None: the pod has no IPv6 tooling, so nothing to close there

    @classmethod
    def from_path(cls) -> Netfilter:
        path = _find("iptables")
        if path is None:
            raise NetfilterError("iptables is not installed")
        return cls(path, _find("ip6tables"))

    @staticmethod
    def _restore(binary: str) -> str:
        return str(Path(binary).with_name(Path(binary).name + "-restore"))

    async def _run(self, argv: Sequence[str], stdin: bytes | None = None) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                _, err = await proc.communicate(stdin)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NetfilterError(
                f"{Path(argv[0]).name} did not finish within {COMMAND_TIMEOUT:g} s"
            ) from None
        assert proc.returncode is not None
        return proc.returncode, err.decode(errors="replace").strip()

    async def _check(self, table: str, rule: Sequence[str], *, binary: str | None = None) -> bool:
        """Whether ``rule`` exists (``iptables -C``: exit 1 means "no such rule", other codes are errors)."""
        argv = [binary or self.iptables, "-w", LOCK_WAIT_SECONDS, "-t", table, "-C", *rule]
        code, err = await self._run(argv)
        if code == 0:
            return True
        if code == 1 or "does not exist" in err or "No chain" in err:
            return False
        raise NetfilterError(f"iptables -C {' '.join(rule)}: {err}")

    async def _must(self, argv: Sequence[str], stdin: bytes | None = None) -> None:
        code, err = await self._run(argv, stdin)
        if code != 0:
            raise NetfilterError(f"{Path(argv[0]).name} {' '.join(argv[1:])}: exit {code}: {err}")

    async def apply_ingress(self, ingress: Ingress) -> str:
        """Install (or reconcile) the rules for ``ingress``; returns the rulesets applied.

        IPv6 is skipped only where the pod has none (no ``ip6tables``, or a kernel without IPv6).
        """
        jump = await self._check("mangle", PREROUTING_JUMP)
        ruleset = ingress_ruleset(ingress, add_jump=not jump)
        await self._must(
            [self._restore(self.iptables), "-w", LOCK_WAIT_SECONDS, "--noflush"], ruleset.encode()
        )
        ip6 = self.ip6tables
        if ip6 is None:
            return ruleset
        try:
            jump6 = await self._check("filter", INPUT_JUMP, binary=ip6)
        except NetfilterError as e:
            if _no_ipv6(e):
                return ruleset  # no IPv6 in this kernel: nothing to close
            raise
        ruleset6 = ipv6_ruleset(ingress, add_jump=not jump6)
        await self._must([self._restore(ip6), "-w", LOCK_WAIT_SECONDS, "--noflush"], ruleset6.encode())
        return ruleset + ruleset6

    def _families(self) -> list[tuple[str, tuple[str, ...]]]:
        """(binary, default-deny rule) per address family the pod has tooling for."""
        out: list[tuple[str, tuple[str, ...]]] = [(self.iptables, DEFAULT_DENY)]
        if self.ip6tables is not None:
            out.append((self.ip6tables, DEFAULT_DENY6))
        return out

    async def _deny_present(self, binary: str, rule: Sequence[str]) -> bool | None:
        """Whether the rule is there; None for IPv6 on a kernel without it (nothing to open or close)."""
        try:
            return await self._check("filter", rule, binary=binary)
        except NetfilterError as e:
            if binary == self.ip6tables and _no_ipv6(e):
                return None
            raise

    async def default_deny_present(self) -> bool:
        return bool(await self._deny_present(self.iptables, DEFAULT_DENY))

    async def install_default_deny(self) -> bool:
        """Insert the default-deny rules first in ``INPUT``; False if they were already there."""
        changed = False
        for binary, rule in self._families():
            if await self._deny_present(binary, rule) is False:
                await self._must(
                    [binary, "-w", LOCK_WAIT_SECONDS, "-t", "filter", "-I", rule[0], "1", *rule[1:]]
                )
                changed = True
        return changed

    async def remove_default_deny(self) -> bool:
        """Delete the default-deny rules; False if absent (a restarted container, or no guest rule)."""
        changed = False
        for binary, rule in self._families():
            if await self._deny_present(binary, rule):
                await self._must([binary, "-w", LOCK_WAIT_SECONDS, "-t", "filter", "-D", *rule])
                changed = True
        return changed


def _no_ipv6(e: NetfilterError) -> bool:
    text = str(e).lower()
    return "not supported" in text or "can't initialize" in text
