"""Kernel fakes that keep state, built on the package's in-memory kernels, with faults to inject."""

from __future__ import annotations

from pykubeproxy.backends.iptables.kernel import IptablesError
from pykubeproxy.backends.iptables.memory import MemoryIptables
from pykubeproxy.backends.ipvs.memory import (
    MemoryDummyLink,
    MemoryIpsets,
    MemoryIpvs,
    MemoryIpvsTable,
)


class FakeIptables(MemoryIptables):
    """The in-memory iptables (it checks jumps and deletions as the kernel does), plus faults.

    `save` goes through `iptables-save` text and the package's parser, as the real kernel's
    does. `refuse_all` makes it refuse every payload; `refuse_containing` only payloads
    holding that text (say, one Service's cluster IP), as a kernel lacking one match extension
    would. The tamper methods (`delete_rule`, `flush_chain`, `append_rule`, `new_chain`,
    `delete_chain`) act as
    another tool on the node would, behind the proxy's back (see tests/support/kernels.py).
    """

    backend = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.refuse_all = False
        self.refuse_containing: str | None = None

    def restore(self, payload: str, *, test: bool = False) -> None:
        if self.refuse_all or (self.refuse_containing and self.refuse_containing in payload):
            raise IptablesError("fake kernel: refused", line=1)
        super().restore(payload, test=test)

    # -- tampering, as `iptables -t TABLE -D/-F/-A/-N` would ----------------------------------

    def delete_rule(self, table: str, chain: str, number: int) -> None:
        rules = self._chain(table, chain)
        if not 1 <= number <= len(rules):
            raise IptablesError(f"fake kernel: {table} {chain} has no rule {number}")
        del rules[number - 1]

    def flush_chain(self, table: str, chain: str) -> None:
        self._chain(table, chain).clear()

    def append_rule(self, table: str, chain: str, rule: str) -> None:
        self._chain(table, chain).append(rule)

    def new_chain(self, table: str, chain: str) -> None:
        if chain in self.tables[table]:
            raise IptablesError(f"fake kernel: {table} {chain} exists already")
        self.tables[table][chain] = []

    def delete_chain(self, table: str, chain: str) -> None:
        """`iptables -t TABLE -X CHAIN`: only an empty chain nothing jumps to, as the kernel."""
        if self._chain(table, chain):
            raise IptablesError(f"fake kernel: {table} {chain} is not empty")
        del self.tables[table][chain]

    def _chain(self, table: str, chain: str) -> list[str]:
        try:
            return self.tables[table][chain]
        except KeyError:
            raise IptablesError(f"fake kernel: no chain {chain} in {table}") from None


class FakeClock:
    """A clock (seconds, as `time.time` or `time.monotonic` give them) that moves only by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# IPVS mode's in-memory kernel keeps state and answers like the kernel already; its test helpers
# (put_virtual_server, set_connections, put_set, referenced_sets) stand in for other actors.
FakeIpvs = MemoryIpvs
FakeIpvsTable = MemoryIpvsTable
FakeDummyLink = MemoryDummyLink
FakeIpsets = MemoryIpsets
