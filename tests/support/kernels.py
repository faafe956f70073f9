"""The iptables kernels the sync scenarios run against, each with the same way to tamper with it.

A scenario gets a `TamperableIptables`: the two calls a sync makes (`save`, `restore`) plus
what another actor on the node does behind the proxy's back (delete a rule, flush a chain,
append a rule, create a chain). Two implement it: `NamespacedIptables`, the real kernel in a
namespace of ours (iptables-legacy or iptables-nft), tampered with through the `iptables`
command; and `FakeIptables` (tests/support/fakes.py), which edits its tables in memory. Rules
are given in iptables-save's canonical form, which is what the kernel would report back.
"""

from __future__ import annotations

import shlex
from typing import Protocol

from pykubeproxy.backends.iptables.kernel import Iptables, IptablesBinaries, KernelIptables
from tests.support.fakes import FakeIptables
from tests.support.netns import Netns


class TamperableIptables(Iptables, Protocol):
    def delete_rule(self, table: str, chain: str, number: int) -> None:
        """`iptables -t TABLE -D CHAIN NUMBER` (rules count from 1)."""
        ...

    def flush_chain(self, table: str, chain: str) -> None:
        """`iptables -t TABLE -F CHAIN`."""
        ...

    def append_rule(self, table: str, chain: str, rule: str) -> None:
        """`iptables -t TABLE -A CHAIN RULE...`."""
        ...

    def new_chain(self, table: str, chain: str) -> None:
        """`iptables -t TABLE -N CHAIN`."""
        ...

    def delete_chain(self, table: str, chain: str) -> None:
        """`iptables -t TABLE -X CHAIN`."""
        ...


class NamespacedIptables(KernelIptables):
    """The real kernel's iptables (one backend) inside a namespace of ours, tamperable."""

    def __init__(self, backend: str, netns: Netns) -> None:
        super().__init__(IptablesBinaries(backend, netns.prefix))
        self.netns = netns

    def _iptables(self, table: str, *args: str) -> None:
        self.netns.exec(f"iptables-{self.backend}", "-t", table, *args)

    def delete_rule(self, table: str, chain: str, number: int) -> None:
        self._iptables(table, "-D", chain, str(number))

    def flush_chain(self, table: str, chain: str) -> None:
        self._iptables(table, "-F", chain)

    def append_rule(self, table: str, chain: str, rule: str) -> None:
        self._iptables(table, "-A", chain, *shlex.split(rule))

    def new_chain(self, table: str, chain: str) -> None:
        self._iptables(table, "-N", chain)

    def delete_chain(self, table: str, chain: str) -> None:
        self._iptables(table, "-X", chain)


# What the scenarios run against: both real backends (root) and the fake (no root needed).
KERNELS = ("legacy", "nft", "fake")


def tamperable_kernel(kind: str, netns: Netns | None) -> TamperableIptables:
    """The kernel `kind` names (one of KERNELS); the real ones live in `netns`."""
    if kind == "fake":
        return FakeIptables()
    if netns is None:
        raise ValueError(f"iptables-{kind} needs a namespace of ours")
    return NamespacedIptables(kind, netns)
