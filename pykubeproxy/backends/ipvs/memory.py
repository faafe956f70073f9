"""IPVS mode's kernel facilities kept in memory: the IPVS table, kube-ipvs0, ipsets.

`--dry-run` syncs against them (empty) so that it runs exactly the code a node runs; the tests
use them as state-keeping fakes. They answer like the kernel where the sync depends on it: adding
what exists or editing what does not is an error, deleting what is gone is not, an unknown
scheduler is refused, `ipset restore -exist` is applied line by line (entries kept in `ipset
save`'s spelling) and stops at the first bad line, and a set "referenced by iptables" cannot be
destroyed.

Each class implements one protocol of `pykubeproxy.backends.ipvs.kernel`; `MemoryIpvs` is all
three on one object (an `IpvsKernel`, as `PyrouteIpvs`), with one call log for the IPVS and link
ones.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pykubeproxy.backends.ipvs.errors import IpvsKernelError, IpvsSetupError
from pykubeproxy.backends.ipvs.ipsets import normalize_ipset_entry
from pykubeproxy.backends.ipvs.model import (
    IPSet,
    KernelRealServer,
    KernelVirtualServer,
    RealServer,
    ServiceKey,
    VirtualServer,
)
from pykubeproxy.config import IPVS_SCHEDULERS

if TYPE_CHECKING:
    from pykubeproxy.backends.ipvs.kernel import DummyLink, Ipsets, IpvsKernel, IpvsTable


class MemoryIpvsTable:
    """Implements `IpvsTable` in memory. `calls` records every change, in order."""

    def __init__(self, *, calls: list[str] | None = None) -> None:
        self.services: dict[ServiceKey, KernelVirtualServer] = {}
        self.dests: dict[ServiceKey, dict[tuple[str, int], KernelRealServer]] = {}
        self.fwmark_services = 0
        self.timeouts = {"tcp": 900, "tcpfin": 120, "udp": 300}  # the kernel's defaults
        self.calls: list[str] = [] if calls is None else calls

    # - test helpers -

    def set_connections(
        self, service: ServiceKey, address: str, port: int, *, active: int, inactive: int = 0
    ) -> None:
        rs = self.dests[service][(address, port)]
        self.dests[service][(address, port)] = replace(
            rs, active_connections=active, inactive_connections=inactive
        )

    def real_server(self, service: ServiceKey, address: str, port: int) -> KernelRealServer | None:
        return self.dests.get(service, {}).get((address, port))

    def put_virtual_server(self, vs: KernelVirtualServer) -> None:
        """Someone else (ipvsadm, another tool) created this."""
        self.services[vs.key] = replace(vs, real_servers=())
        self.dests[vs.key] = {(rs.address, rs.port): rs for rs in vs.real_servers}

    # - IpvsTable -

    def _need(self, service: ServiceKey) -> dict[tuple[str, int], KernelRealServer]:
        if service not in self.services:
            raise IpvsKernelError(f"no virtual server {service}", code=errno.ESRCH)
        return self.dests[service]

    def list_virtual_servers(self) -> list[KernelVirtualServer]:
        return [
            replace(vs, real_servers=tuple(sorted(self.dests[key].values())))
            for key, vs in sorted(self.services.items())
        ]

    def list_real_servers(self, service: ServiceKey) -> list[KernelRealServer]:
        return sorted(self.dests.get(service, {}).values())

    def _kernel_vs(self, vs: VirtualServer) -> KernelVirtualServer:
        if vs.scheduler not in IPVS_SCHEDULERS:
            raise IpvsKernelError(f"no scheduler {vs.scheduler!r}", code=errno.ENOENT)
        return KernelVirtualServer(vs.protocol, vs.address, vs.port, vs.scheduler, vs.persistence)

    def add_virtual_server(self, virtual_server: VirtualServer) -> None:
        self.calls.append(f"add-vs {virtual_server}")
        if virtual_server.key in self.services:
            raise IpvsKernelError(f"{virtual_server} exists", code=errno.EEXIST)
        self.services[virtual_server.key] = self._kernel_vs(virtual_server)
        self.dests[virtual_server.key] = {}

    def edit_virtual_server(self, virtual_server: VirtualServer) -> None:
        self.calls.append(f"edit-vs {virtual_server}")
        self._need(virtual_server.key)
        self.services[virtual_server.key] = self._kernel_vs(virtual_server)

    def delete_virtual_server(self, service: ServiceKey) -> None:
        self.calls.append(f"del-vs {service}")
        self.services.pop(service, None)
        self.dests.pop(service, None)

    def flush_virtual_servers(self) -> int:
        count = len(self.services) + self.fwmark_services
        self.calls.append("flush")
        self.services.clear()
        self.dests.clear()
        self.fwmark_services = 0
        return count

    def add_real_server(self, service: ServiceKey, real_server: RealServer) -> None:
        self.calls.append(f"add-rs {service} {real_server.address}:{real_server.port}")
        dests = self._need(service)
        where = (real_server.address, real_server.port)
        if where in dests:
            raise IpvsKernelError(f"real server {where} exists", code=errno.EEXIST)
        dests[where] = KernelRealServer(*where, real_server.weight, "masq")

    def edit_real_server(self, service: ServiceKey, real_server: RealServer) -> None:
        self.calls.append(
            f"edit-rs {service} {real_server.address}:{real_server.port} w{real_server.weight}"
        )
        dests = self._need(service)
        where = (real_server.address, real_server.port)
        if where not in dests:
            raise IpvsKernelError(f"no real server {where}", code=errno.ENOENT)
        dests[where] = replace(dests[where], weight=real_server.weight, forwarding="masq")

    def delete_real_server(self, service: ServiceKey, address: str, port: int) -> None:
        self.calls.append(f"del-rs {service} {address}:{port}")
        self.dests.get(service, {}).pop((address, port), None)

    def set_timeouts(self, *, tcp: int, tcpfin: int, udp: int) -> None:
        self.calls.append(f"timeouts {tcp} {tcpfin} {udp}")
        for name, value in (("tcp", tcp), ("tcpfin", tcpfin), ("udp", udp)):
            if value:
                self.timeouts[name] = value


class MemoryDummyLink:
    """Implements `DummyLink` in memory: kube-ipvs0 and its addresses."""

    def __init__(self, *, dummy_supported: bool = True, calls: list[str] | None = None) -> None:
        self.dummy_supported = dummy_supported
        self.dummy = False
        self.addresses: set[str] = set()
        self.calls: list[str] = [] if calls is None else calls

    def ensure_dummy_interface(self) -> None:
        if not self.dummy_supported:
            raise IpvsSetupError("cannot create kube-ipvs0: this kernel has no 'dummy' type")
        if not self.dummy:
            self.calls.append("add-dummy")
        self.dummy = True

    def delete_dummy_interface(self) -> bool:
        existed, self.dummy = self.dummy, False
        self.addresses.clear()
        return existed

    def list_addresses(self) -> list[str]:
        return sorted(self.addresses)

    def add_address(self, address: str) -> None:
        self.calls.append(f"add-addr {address}")
        if not self.dummy:
            raise IpvsKernelError("no kube-ipvs0", code=errno.ENODEV)
        if address in self.addresses:
            raise IpvsKernelError(f"{address} exists", code=errno.EEXIST)
        self.addresses.add(address)

    def delete_address(self, address: str) -> None:
        self.calls.append(f"del-addr {address}")
        self.addresses.discard(address)


@dataclass
class _Set:
    type: str
    entries: set[str] = field(default_factory=set)


class MemoryIpsets:
    """Implements `Ipsets` in memory; `restores` keeps every payload, in order."""

    def __init__(self) -> None:
        self.sets: dict[str, _Set] = {}
        self.referenced_sets: set[str] = set()  # "iptables rules use these"
        self.restores: list[str] = []

    def put_set(self, name: str, type_: str, *entries: str) -> None:
        """Someone else (or an older run) created this set."""
        self.sets[name] = _Set(type_, {normalize_ipset_entry(e) for e in entries})

    def read_ipsets(self) -> list[IPSet]:
        return [
            IPSet(name, s.type, "", tuple(sorted(s.entries)))
            for name, s in sorted(self.sets.items())
            if name.startswith("KUBE-")
        ]

    def restore_ipsets(self, payload: str) -> None:
        self.restores.append(payload)
        for number, line in enumerate(payload.splitlines(), start=1):
            if line.strip():
                self._restore_line(number, line.split())

    def _restore_line(self, number: int, words: list[str]) -> None:
        command, name = words[0], words[1]

        def fail(why: str) -> IpvsKernelError:
            return IpvsKernelError(f"ipset restore: Error in line {number}: {why}")

        if command == "create":
            if name in self.sets and self.sets[name].type != words[2]:
                raise fail("Set cannot be created: set with the same name already exists")
            self.sets.setdefault(name, _Set(words[2]))
            return
        if name not in self.sets:
            raise fail("The set with the given name does not exist")
        if command == "add":
            self.sets[name].entries.add(normalize_ipset_entry(words[2]))
        elif command == "del":
            self.sets[name].entries.discard(normalize_ipset_entry(words[2]))
        elif command == "flush":
            self.sets[name].entries.clear()
        elif command == "destroy":
            if name in self.referenced_sets:
                raise fail("Set cannot be destroyed: it is in use by a kernel component")
            del self.sets[name]
        else:
            raise fail(f"unknown command {command}")


class MemoryIpvs(MemoryIpvsTable, MemoryDummyLink, MemoryIpsets):
    """Implements `IpvsKernel` in memory: the three fakes on one object, one `calls` log."""

    def __init__(self, *, dummy_supported: bool = True) -> None:
        calls: list[str] = []
        MemoryIpvsTable.__init__(self, calls=calls)
        MemoryDummyLink.__init__(self, dummy_supported=dummy_supported, calls=calls)
        MemoryIpsets.__init__(self)


if TYPE_CHECKING:  # mypy checks that each fake implements its protocol
    _table: IpvsTable = MemoryIpvsTable()
    _link: DummyLink = MemoryDummyLink()
    _ipsets: Ipsets = MemoryIpsets()
    _kernel: IpvsKernel = MemoryIpvs()
