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

    `refuse_all` makes it refuse every payload; `refuse_containing` only payloads holding that
    text (say, one Service's cluster IP), as a kernel lacking one match extension would.
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


# IPVS mode's in-memory kernel keeps state and answers like the kernel already; its test helpers
# (put_virtual_server, set_connections, put_set, referenced_sets) stand in for other actors.
FakeIpvs = MemoryIpvs
FakeIpvsTable = MemoryIpvsTable
FakeDummyLink = MemoryDummyLink
FakeIpsets = MemoryIpsets
