"""What to change so the kernel holds the plan: ownership, then the ordered operations.

Pure: an `IpvsPlan` and the `IpvsState` read from the kernel in, a `Transaction` out. Creates
come first, deletes last, and only what is ours is ever edited or deleted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass, replace

from pykubeproxy.backends.ipvs.graceful import RealServerRef
from pykubeproxy.backends.ipvs.ipsets import node_ports_in_ipsets
from pykubeproxy.backends.ipvs.model import (
    IpvsPlan,
    IpvsState,
    KernelVirtualServer,
    ServiceKey,
    VirtualServer,
)
from pykubeproxy.backends.ipvs.operations import (
    AddAddress,
    AddRealServer,
    AddVirtualServer,
    DeleteAddress,
    DeleteRealServer,
    DeleteVirtualServer,
    DrainRealServer,
    EditRealServer,
    EditVirtualServer,
    Operation,
    Transaction,
)


def canonical_address(address: str) -> str:
    """The kernel's spelling of an address (IPv6 compressed); IPv4 is taken as written."""
    if ":" in address:
        return str(ipaddress.ip_address(address))
    return address


def _canonical_plan_servers(desired: IpvsPlan) -> dict[ServiceKey, VirtualServer]:
    servers: dict[ServiceKey, VirtualServer] = {}
    for vs in desired.virtual_servers:
        if ":" in vs.address or any(":" in rs.address for rs in vs.real_servers):
            vs = replace(
                vs,
                address=canonical_address(vs.address),
                real_servers=tuple(
                    replace(rs, address=canonical_address(rs.address)) for rs in vs.real_servers
                ),
            )
        servers.setdefault(vs.key, vs)
    return servers


@dataclass(frozen=True, slots=True)
class Ownership:
    """Which virtual servers a sync may edit or delete: never another tool's."""

    addresses: frozenset[str]  # on kube-ipvs0 now, or planned there
    node_addresses: frozenset[str]  # where NodePort virtual servers live
    node_ports: frozenset[tuple[str, int]]  # planned, or recorded in KUBE-NODE-PORT-* sets
    excluded: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def owns(self, vs: KernelVirtualServer) -> bool:
        if self.excluded:
            ip = ipaddress.ip_address(vs.address)
            if any(ip in net for net in self.excluded):
                return False
        if vs.address in self.addresses:
            return True
        return vs.address in self.node_addresses and (vs.protocol, vs.port) in self.node_ports


def plan_ownership(
    desired: IpvsPlan,
    actual: IpvsState,
    *,
    node_addresses: Collection[str] = (),
    exclude_cidrs: Collection[str] = (),
) -> Ownership:
    planned_addresses = {canonical_address(a) for a in desired.addresses}
    node_servers = [
        vs
        for vs in desired.virtual_servers
        if canonical_address(vs.address) not in planned_addresses
    ]
    return Ownership(
        addresses=frozenset(actual.addresses) | planned_addresses,
        node_addresses=frozenset(canonical_address(a) for a in node_addresses)
        | {canonical_address(vs.address) for vs in node_servers},
        node_ports=frozenset((vs.protocol, vs.port) for vs in node_servers)
        | node_ports_in_ipsets(actual.ipsets),
        excluded=tuple(ipaddress.ip_network(c, strict=False) for c in exclude_cidrs),
    )


def _plan_real_servers(
    want: VirtualServer,
    have: KernelVirtualServer,
    draining: Collection[RealServerRef],
) -> tuple[list[Operation], list[Operation]]:
    """(adds and edits, drains) for the real servers of a virtual server that stays."""
    creates: list[Operation] = []
    drains: list[Operation] = []
    current = {(rs.address, rs.port): rs for rs in have.real_servers}
    wanted = {(rs.address, rs.port): rs for rs in want.real_servers}
    for where, rs in sorted(wanted.items()):
        now = current.get(where)
        if now is None:
            creates.append(AddRealServer(want.key, rs))
        elif now.weight != rs.weight or now.forwarding != "masq":
            creates.append(EditRealServer(want.key, rs))
    for (address, port), now in sorted(current.items()):
        if (address, port) in wanted:
            continue
        ref = RealServerRef(want.key, address, port)
        if ref in draining and now.weight == 0:
            continue
        drains.append(DrainRealServer(want.key, address, port))
    return creates, drains


def plan_changes(
    desired: IpvsPlan,
    actual: IpvsState,
    *,
    draining: Collection[RealServerRef] = frozenset(),
    node_addresses: Collection[str] = (),
    exclude_cidrs: Collection[str] = (),
) -> Transaction:
    """The operations that turn `actual` into `desired`, in a safe order; empty when in step.

    Creates come first (address, then virtual server, then its real servers), then edits and
    drains, then deletes (real servers, then their virtual server, then addresses). Real servers
    leaving a virtual server that stays are drained, not deleted: graceful termination deletes
    them later. `draining` lists those already at weight 0 and tracked, so that a re-sync does
    not drain them again. Virtual servers that are not ours (see `Ownership`) are left alone.
    """
    wanted = _canonical_plan_servers(desired)
    owner = plan_ownership(
        desired, actual, node_addresses=node_addresses, exclude_cidrs=exclude_cidrs
    )
    planned_addresses = sorted({canonical_address(a) for a in desired.addresses})
    present = set(actual.addresses)
    current = {vs.key: vs for vs in actual.virtual_servers}

    creates: list[Operation] = [AddAddress(a) for a in planned_addresses if a not in present]
    drains: list[Operation] = []
    for key, want in wanted.items():
        have = current.get(key)
        if have is None:
            creates.append(AddVirtualServer(replace(want, real_servers=())))
            unique = {(rs.address, rs.port): rs for rs in want.real_servers}
            creates.extend(AddRealServer(key, unique[where]) for where in sorted(unique))
            continue
        if (have.scheduler, have.persistence) != (want.scheduler, want.persistence):
            creates.append(EditVirtualServer(replace(want, real_servers=())))
        adds, gone = _plan_real_servers(want, have, draining)
        creates += adds
        drains += gone

    deletes: list[Operation] = []
    for key, have in sorted(current.items()):
        if key in wanted or not owner.owns(have):
            continue
        deletes.extend(DeleteRealServer(key, rs.address, rs.port) for rs in have.real_servers)
        deletes.append(DeleteVirtualServer(key))
    keep = set(planned_addresses)
    deletes.extend(DeleteAddress(a) for a in sorted(present - keep))
    return Transaction(creates + drains + deletes)
