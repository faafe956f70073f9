"""What IPVS mode needs from the kernel, one small protocol per facility, and the real kernel.

- `IpvsTable`: IPVS virtual servers, their real servers, connection timeouts;
- `DummyLink`: the dummy device (kube-ipvs0) that holds the Service addresses;
- `Ipsets`: the KUBE- ipsets the iptables rules match;
- `IpvsKernel`: all three on one object, for the few steps that use them together (a sync reads
  all of them; cleanup removes all of them).

`PyrouteIpvs` is the real one (`netlink.py` for IPVS and the link, the `ipset` binary for sets);
tests/unit/fake_ipvs.py keeps the same state in memory. Deleting something that is already gone
is not an error in either (another actor got there first).
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from pykubeproxy.backends.ipvs.commands import IpsetCommand
from pykubeproxy.backends.ipvs.model import (
    DUMMY_INTERFACE,
    IPSet,
    KernelRealServer,
    KernelVirtualServer,
    RealServer,
    ServiceKey,
    VirtualServer,
)
from pykubeproxy.backends.ipvs.netlink import NetlinkDummyLink, NetlinkIpvs


class IpvsTable(Protocol):
    """The IPVS table: virtual servers and their real servers."""

    def list_virtual_servers(self) -> list[KernelVirtualServer]: ...

    def list_real_servers(self, service: ServiceKey) -> list[KernelRealServer]:
        """[] when the virtual server does not exist."""
        ...

    def add_virtual_server(self, virtual_server: VirtualServer) -> None: ...

    def edit_virtual_server(self, virtual_server: VirtualServer) -> None: ...

    def delete_virtual_server(self, service: ServiceKey) -> None: ...

    def flush_virtual_servers(self) -> int:
        """Delete every IPVS service of the namespace (fwmark ones too); how many there were."""
        ...

    def add_real_server(self, service: ServiceKey, real_server: RealServer) -> None: ...

    def edit_real_server(self, service: ServiceKey, real_server: RealServer) -> None: ...

    def delete_real_server(self, service: ServiceKey, address: str, port: int) -> None: ...

    def set_timeouts(self, *, tcp: int, tcpfin: int, udp: int) -> None:
        """IPVS connection timeouts in seconds, as `ipvsadm --set`; 0 leaves one unchanged."""
        ...


class DummyLink(Protocol):
    """The dummy interface (kube-ipvs0) and the Service addresses bound to it."""

    def ensure_dummy_interface(self) -> None: ...

    def delete_dummy_interface(self) -> bool: ...

    def list_addresses(self) -> list[str]:
        """Addresses on the dummy interface ([] when it does not exist)."""
        ...

    def add_address(self, address: str) -> None: ...

    def delete_address(self, address: str) -> None: ...


class Ipsets(Protocol):
    """The KUBE- ipsets, read and written whole."""

    def read_ipsets(self) -> list[IPSet]:
        """Every set whose name starts with KUBE-, entries as `ipset save` prints them."""
        ...

    def restore_ipsets(self, payload: str) -> None:
        """Run `ipset restore -exist` with this payload."""
        ...


class IpvsKernel(IpvsTable, DummyLink, Ipsets, Protocol):
    """The three facilities on one object (a sync reads all of them, cleanup removes all)."""


class PyrouteIpvs(NetlinkIpvs, NetlinkDummyLink, IpsetCommand):
    """The real `IpvsKernel`: IPVS and kube-ipvs0 through pyroute2, ipsets through `ipset`.

    With `netns`, everything happens in that (existing) network namespace: sockets are opened
    inside it and commands run under `ip netns exec`.
    """

    def __init__(
        self,
        *,
        netns: str | None = None,
        dummy_interface: str = DUMMY_INTERFACE,
        ipset_binary: str = "ipset",
        read_proc: bool = True,
    ) -> None:
        NetlinkIpvs.__init__(self, netns=netns, read_proc=read_proc)
        NetlinkDummyLink.__init__(self, netns=netns, dummy_interface=dummy_interface)
        IpsetCommand.__init__(self, netns=netns, ipset_binary=ipset_binary)

    def close(self) -> None:
        NetlinkIpvs.close(self)
        NetlinkDummyLink.close(self)

    def __enter__(self) -> PyrouteIpvs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
