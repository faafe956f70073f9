"""The IPVS edge: read virtual servers, kube-ipvs0 addresses and ipsets; diff; apply in order.

Layout of this module:

- the kernel's state as data (`IpvsState`), the operations a sync performs (`Operation`) and the
  `IpvsHandle` protocol they go through;
- pure planning: `plan_changes` (IpvsPlan + IpvsState -> ordered operations),
  `render_ipset_restore` / `render_ipset_destroy` (one `ipset restore` payload), the `ipset save`
  parser and the module and ownership helpers;
- the edges: `PyrouteIpvs` (pyroute2 netlink for IPVS, links and addresses; the `ipset` binary),
  `sync_ipvs`, `destroy_stale_sets`, `cleanup`, `check_kernel_modules`, `ensure_ipvs_sysctls`.

pyroute2 traps this module works around (0.9.7, checked against a real kernel in tests/vm):
`IPVSDest` defaults to direct routing (fwd_method 3), so every real server is written with
masquerade explicitly; `IPVSService/IPVSDest.from_message()` keep their defaults for the
forwarding method, persistence timeout and flags instead of the kernel's values, so dumps are read
from the raw netlink attributes; the `"update"` command sends IPVS_CMD_DEL_SERVICE (it deletes),
so edits use `"set"`; an IPv6 service needs its netmask (prefix length 128 as a raw u32) passed
as the "address" 128.0.0.0, or the kernel answers EINVAL; there is no flush or config call, and a
subclass of its `ipvsmsg` keeps the parent's compiled attribute table unless told not to.
Listing every virtual server through pyroute2 takes one request per service and slow decoding,
so the full listing reads /proc/net/ip_vs instead (persistence there is in jiffies: converted
with the kernel's HZ, learnt once from one netlink answer).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import struct
import subprocess
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from pykubeproxy.backends.ipvs.graceful import (
    ConnectionCounts,
    GracefulTermination,
    RealServerRef,
    Removal,
    ServiceKey,
)
from pykubeproxy.backends.ipvs.model import (
    DUMMY_INTERFACE,
    IPSet,
    IpvsPlan,
    RealServer,
    VirtualServer,
)
from pykubeproxy.log import get_logger
from pykubeproxy.sysctl import PROC_SYS, ensure_sysctl

log = get_logger("pykubeproxy.ipvs")

OWNED_SET_PREFIX = "KUBE-"
NODE_PORT_SET_PREFIX = "KUBE-NODE-PORT-"
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}
# IP_VS_CONN_F_FWD_MASK values, named as ipvsadm -Ln shows them (lowercase).
FORWARDING = {0: "masq", 1: "local", 2: "tunnel", 3: "route", 4: "bypass"}
IP_VS_CONN_F_MASQ = 0
IP_VS_CONN_F_FWD_MASK = 0x7
IP_VS_SVC_F_PERSISTENT = 0x1
COMMAND_TIMEOUT = 120.0  # seconds, for each ipset / modprobe run
# An IPv6 service's netmask is a prefix length (128) the kernel reads as a raw host-order u32;
# pyroute2 only encodes this attribute as an IPv4 address, so spell those four bytes as one.
IPV6_NETMASK = socket.inet_ntoa(struct.pack("=I", 128))

# The sysctls kube-proxy sets in IPVS mode (and, with --ipvs-strict-arp, the ARP pair).
IPVS_SYSCTLS = (
    ("net/ipv4/vs/conntrack", 1),  # let iptables NAT (masquerade) see IPVS connections
    ("net/ipv4/vs/expire_nodest_conn", 1),  # drop a deleted real server's connections at once
    ("net/ipv4/vs/expire_quiescent_template", 1),  # weight 0 ends its affinity templates
    ("net/ipv4/ip_forward", 1),
)
STRICT_ARP_SYSCTLS = (
    ("net/ipv4/conf/all/arp_ignore", 1),  # do not answer ARP for kube-ipvs0 addresses
    ("net/ipv4/conf/all/arp_announce", 2),
)


class IpvsError(Exception):
    """Base of this module's errors.

    IpvsError
     ├── IpvsSetupError   the node cannot run IPVS mode (module, device type, sysctl, binary)
     ├── IpvsKernelError  one netlink request or ipset run failed (`errno` when the kernel said)
     └── IpvsSyncError    a sync finished with failed operations (`failures` lists them)
    """


class IpvsSetupError(IpvsError):
    pass


class IpvsKernelError(IpvsError):
    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


class IpvsSyncError(IpvsError):
    def __init__(self, failures: Sequence[tuple[str, str]]) -> None:
        shown = "; ".join(f"{what}: {why}" for what, why in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} IPVS change(s) failed: {shown}{more}")
        self.failures = tuple(failures)


# --- the kernel's state ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class KernelRealServer:
    """A real server as the kernel reports it, with its connection counters."""

    address: str
    port: int
    weight: int
    forwarding: str = "masq"  # "masq", "local", "tunnel", "route" or "bypass"
    active_connections: int = 0
    inactive_connections: int = 0

    def as_planned(self) -> RealServer:
        return RealServer(self.address, self.port, self.weight)


@dataclass(frozen=True, slots=True, order=True)
class KernelVirtualServer:
    """A virtual server (address-based; fwmark services are never listed) and its real servers."""

    protocol: str
    address: str
    port: int
    scheduler: str
    persistence: int | None = None
    real_servers: tuple[KernelRealServer, ...] = ()

    @property
    def key(self) -> ServiceKey:
        return (self.protocol, self.address, self.port)

    def as_planned(self) -> VirtualServer:
        """The plan's view of it: no counters, no comment; real servers sorted."""
        servers = tuple(sorted(rs.as_planned() for rs in self.real_servers))
        return VirtualServer(
            self.protocol, self.address, self.port, self.scheduler, self.persistence, servers
        )


@dataclass(frozen=True, slots=True)
class IpvsState:
    """What a sync reads before it plans: virtual servers, kube-ipvs0 addresses, KUBE- ipsets."""

    virtual_servers: tuple[KernelVirtualServer, ...] = ()
    addresses: tuple[str, ...] = ()
    ipsets: tuple[IPSet, ...] = ()


# --- operations --------------------------------------------------------------------------------


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _service_text(service: ServiceKey) -> str:
    protocol, address, port = service
    return f"{protocol.upper()} {_host(address)}:{port}"


@dataclass(frozen=True, slots=True)
class AddAddress:
    address: str

    def __str__(self) -> str:
        return f"add address {self.address}"


@dataclass(frozen=True, slots=True)
class AddVirtualServer:
    virtual_server: VirtualServer  # its real_servers are added by AddRealServer operations

    def __str__(self) -> str:
        vs = self.virtual_server
        return f"add virtual server {vs} scheduler {vs.scheduler} persistence {vs.persistence}"


@dataclass(frozen=True, slots=True)
class EditVirtualServer:
    virtual_server: VirtualServer

    def __str__(self) -> str:
        vs = self.virtual_server
        return f"edit virtual server {vs} scheduler {vs.scheduler} persistence {vs.persistence}"


@dataclass(frozen=True, slots=True)
class AddRealServer:
    service: ServiceKey
    real_server: RealServer

    def __str__(self) -> str:
        rs = self.real_server
        where = f"{_host(rs.address)}:{rs.port}"
        return f"add real server {_service_text(self.service)} -> {where} weight {rs.weight}"


@dataclass(frozen=True, slots=True)
class EditRealServer:
    """Weight or forwarding method differs (or it was draining and is wanted again)."""

    service: ServiceKey
    real_server: RealServer

    def __str__(self) -> str:
        rs = self.real_server
        where = f"{_host(rs.address)}:{rs.port}"
        return f"edit real server {_service_text(self.service)} -> {where} weight {rs.weight}"


@dataclass(frozen=True, slots=True)
class DrainRealServer:
    """Not wanted any more: weight 0 now, deleted by graceful termination later."""

    service: ServiceKey
    address: str
    port: int

    @property
    def ref(self) -> RealServerRef:
        return RealServerRef(self.service, self.address, self.port)

    def __str__(self) -> str:
        return f"drain real server {self.ref}"


@dataclass(frozen=True, slots=True)
class DeleteRealServer:
    service: ServiceKey
    address: str
    port: int

    def __str__(self) -> str:
        return f"delete real server {RealServerRef(self.service, self.address, self.port)}"


@dataclass(frozen=True, slots=True)
class DeleteVirtualServer:
    service: ServiceKey

    def __str__(self) -> str:
        return f"delete virtual server {_service_text(self.service)}"


@dataclass(frozen=True, slots=True)
class DeleteAddress:
    address: str

    def __str__(self) -> str:
        return f"delete address {self.address}"


Operation = (
    AddAddress
    | AddVirtualServer
    | EditVirtualServer
    | AddRealServer
    | EditRealServer
    | DrainRealServer
    | DeleteRealServer
    | DeleteVirtualServer
    | DeleteAddress
)


# --- the handle --------------------------------------------------------------------------------


class IpvsHandle(Protocol):
    """What the IPVS backend needs from the kernel. `PyrouteIpvs` is the real one.

    Deleting something that is already gone is not an error (another actor got there first).
    """

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

    def ensure_dummy_interface(self) -> None: ...

    def delete_dummy_interface(self) -> bool: ...

    def list_addresses(self) -> list[str]:
        """Addresses on the dummy interface ([] when it does not exist)."""
        ...

    def add_address(self, address: str) -> None: ...

    def delete_address(self, address: str) -> None: ...

    def read_ipsets(self) -> list[IPSet]:
        """Every set whose name starts with KUBE-, entries as `ipset save` prints them."""
        ...

    def restore_ipsets(self, payload: str) -> None:
        """Run `ipset restore -exist` with this payload."""
        ...


# --- pure planning -----------------------------------------------------------------------------


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


def node_ports_in_ipsets(ipsets: Iterable[IPSet]) -> frozenset[tuple[str, int]]:
    """(protocol, port) of every NodePort recorded in the KUBE-NODE-PORT-* sets."""
    ports = set()
    for ipset in ipsets:
        if not ipset.name.startswith(NODE_PORT_SET_PREFIX):
            continue
        protocol = next((p for p in PROTOCOL_NUMBERS if p.upper() in ipset.name), None)
        if protocol is None:
            continue
        for entry in ipset.entries:
            last = entry.split(",")[-1] if "," in entry else entry
            number = last.rpartition(":")[2]
            if number.isdigit():
                ports.add((protocol, int(number)))
    return frozenset(ports)


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
) -> list[Operation]:
    """The operations that turn `actual` into `desired`, in a safe order; [] when in step.

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
    return creates + drains + deletes


# --- ipsets (pure) -----------------------------------------------------------------------------

_IP_PROTOCOLS = ("tcp", "udp", "sctp", "udplite", "icmp", "icmpv6", "tcpudp")


def _normalize_part(part: str, index: int) -> str:
    part = part.strip()
    if "/" in part:
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            return part
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return str(net)
    try:
        return str(ipaddress.ip_address(part))
    except ValueError:
        pass
    protocol, sep, port = part.partition(":")
    if sep and protocol.lower() in _IP_PROTOCOLS:
        return f"{protocol.lower()}:{int(port) if port.isdigit() else port}"
    if part.isdigit():
        # hash:ip,port without a protocol means TCP; a lone port (bitmap:port) stays a number.
        return f"tcp:{int(part)}" if index == 1 else str(int(part))
    return part


def normalize_ipset_entry(entry: str) -> str:
    """An entry in the form `ipset save` prints it (tcp:80 for 80, no /32, lowercase protocol)."""
    return ",".join(_normalize_part(p, i) for i, p in enumerate(entry.split(",")))


def parse_ipset_save(text: str, *, prefix: str = OWNED_SET_PREFIX) -> list[IPSet]:
    """`ipset save` (or `ipset list -o save`) output → the sets whose name starts with prefix."""
    types: dict[str, str] = {}
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or not words[1].startswith(prefix):
            continue
        if words[0] == "create":
            types[words[1]] = words[2]
            entries.setdefault(words[1], [])
        elif words[0] == "add":
            entries.setdefault(words[1], []).append(words[2])
    return [
        IPSet(name, types.get(name, ""), "", tuple(sorted(entries[name]))) for name in sorted(types)
    ]


def render_ipset_restore(desired: Iterable[IPSet], actual: Iterable[IPSet]) -> str:
    """One `ipset restore -exist` payload: create missing sets, add and delete entries.

    Sets are compared by type and normalized entries only (not hashsize or maxelem). A set whose
    type changed is destroyed and created again at the end of the payload; that fails (and is
    reported) if iptables still references it.
    """
    have_sets = {s.name: s for s in actual}
    lines: list[str] = []
    late: list[str] = []
    for want in sorted(desired, key=lambda s: s.name):
        wanted = {normalize_ipset_entry(e): e for e in want.entries}
        have = have_sets.get(want.name)
        create = f"create {want.name} {want.type} {want.create_options}"
        if have is None or have.type != want.type:
            target = lines if have is None else late
            if have is not None:
                target.append(f"destroy {want.name}")
            target.append(create)
            target.extend(f"add {want.name} {wanted[e]}" for e in sorted(wanted))
            continue
        present = {normalize_ipset_entry(e): e for e in have.entries}
        lines.extend(f"add {want.name} {wanted[e]}" for e in sorted(wanted.keys() - present))
        lines.extend(f"del {want.name} {present[e]}" for e in sorted(present.keys() - wanted))
    payload = lines + late
    return "\n".join(payload) + "\n" if payload else ""


def render_ipset_destroy(desired: Iterable[IPSet], actual: Iterable[IPSet]) -> str:
    """`ipset restore` payload destroying KUBE- sets that are not planned any more."""
    keep = {s.name for s in desired}
    stale = sorted(
        s.name for s in actual if s.name.startswith(OWNED_SET_PREFIX) and s.name not in keep
    )
    return "".join(f"flush {name}\ndestroy {name}\n" for name in stale)


# --- modules (pure part) -----------------------------------------------------------------------


def required_modules(scheduler: str) -> tuple[str, ...]:
    return ("ip_vs", f"ip_vs_{scheduler}", "nf_conntrack")


def loaded_modules(proc_modules_text: str) -> set[str]:
    return {line.split()[0] for line in proc_modules_text.splitlines() if line.strip()}


def builtin_modules(modules_builtin_text: str) -> set[str]:
    """Names in modules.builtin (paths like kernel/net/netfilter/ipvs/ip_vs.ko)."""
    names = set()
    for line in modules_builtin_text.splitlines():
        base = line.strip().rsplit("/", 1)[-1]
        if base.endswith(".ko"):
            names.add(base[: -len(".ko")].replace("-", "_"))
    return names


# --- /proc/net/ip_vs (pure) ----------------------------------------------------------------------

PROC_IP_VS = Path("/proc/net/ip_vs")


def _proc_address(text: str) -> tuple[str, int]:
    """`0A60000A:0050` or `[fd00:0000:...:0010]:0050` → ("10.96.0.10", 80)."""
    host, _, port = text.rpartition(":")
    if host.startswith("["):
        address = str(ipaddress.IPv6Address(host.strip("[]")))
    else:
        address = str(ipaddress.IPv4Address(int(host, 16)))
    return address, int(port, 16)


def parse_proc_ip_vs(text: str) -> list[KernelVirtualServer]:
    """The kernel's /proc/net/ip_vs table → virtual servers (fwmark services are skipped).

    Service lines: `TCP  0A60000A:0050 rr [ops] [persistent <jiffies> <netmask>]`;
    real server lines: `  -> 0AF4010B:1F90      Masq    1      0          0`.
    The persistence timeout is left in jiffies (the table prints the kernel's HZ units).
    """
    found: list[tuple[KernelVirtualServer, list[KernelRealServer]]] = []
    servers: list[KernelRealServer] | None = None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] in ("IP", "Prot"):
            continue
        if words[0] == "->":
            if servers is not None and words[1] != "RemoteAddress:Port":
                address, port = _proc_address(words[1])
                weight, active, inactive = map(int, words[3:6])
                servers.append(
                    KernelRealServer(address, port, weight, words[2].lower(), active, inactive)
                )
            continue
        protocol = words[0].lower()
        if protocol not in PROTOCOL_NUMBERS:
            servers = None  # an FWM service and its real servers: not ours to list
            continue
        address, port = _proc_address(words[1])
        persistence = int(words[words.index("persistent") + 1]) if "persistent" in words else None
        servers = []
        found.append((KernelVirtualServer(protocol, address, port, words[2], persistence), servers))
    return [replace(vs, real_servers=tuple(sorted(rs))) for vs, rs in found]


# --- the real handle ---------------------------------------------------------------------------

_GONE = frozenset({errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENODEV})


def _code(exc: BaseException) -> int | None:
    """The errno of a pyroute2 NetlinkError (`code`) or an OSError (`errno`)."""
    for name in ("code", "errno"):
        code = getattr(exc, name, None)
        if isinstance(code, int) and code > 0:
            return code
    return None


def _fail(what: str, exc: BaseException) -> IpvsKernelError:
    code = _code(exc)
    reason = os.strerror(code) if code else f"{type(exc).__name__}: {exc}"
    return IpvsKernelError(f"{what}: {reason}", code=code)


def _ip_version(address: str) -> int:
    return 6 if ":" in address else 4


class PyrouteIpvs:
    """IPVS and kube-ipvs0 through pyroute2 netlink, ipsets through the `ipset` binary.

    With `netns`, everything happens in that (existing) network namespace: sockets are opened
    inside it and commands run under `ip netns exec`.

    The full listing a sync starts with reads /proc/net/ip_vs (the same data as the netlink
    dump, in one read): pyroute2 needs one request per virtual server and decodes each reply
    slowly, 5.2 s against 7 ms for 200 virtual servers x 5 real servers in the qemu guest.
    Everything else, and `read_proc=False`, goes through netlink.
    """

    def __init__(
        self,
        *,
        netns: str | None = None,
        dummy_interface: str = DUMMY_INTERFACE,
        ipset_binary: str = "ipset",
        read_proc: bool = True,
    ) -> None:
        self.netns = netns
        self.read_proc = read_proc
        self.dummy_interface = dummy_interface
        self.ipset_binary = ipset_binary
        self._ipvs_socket: Any = None
        self._iproute_socket: Any = None
        self._hz: int | None = None

    # - sockets -

    def _socket_args(self) -> dict[str, Any]:
        return {} if self.netns is None else {"netns": self.netns, "flags": 0}

    def _ipvs(self) -> Any:
        if self._ipvs_socket is None:
            from pyroute2 import IPVS  # type: ignore[import-untyped]

            try:
                self._ipvs_socket = IPVS(**self._socket_args())
            except Exception as exc:  # pyroute2 raises several kinds when the family is missing
                raise IpvsSetupError(
                    f"cannot open the IPVS netlink family (is the ip_vs module loaded?): {exc}"
                ) from exc
        return self._ipvs_socket

    def _iproute(self) -> Any:
        if self._iproute_socket is None:
            from pyroute2 import IPRoute

            self._iproute_socket = IPRoute(**self._socket_args())
        return self._iproute_socket

    def close(self) -> None:
        for sock in (self._ipvs_socket, self._iproute_socket):
            if sock is not None:
                sock.close()
        self._ipvs_socket = self._iproute_socket = None

    def __enter__(self) -> PyrouteIpvs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # - IPVS -

    @staticmethod
    def _service(service: ServiceKey, **extra: Any) -> Any:
        from pyroute2 import IPVSService

        protocol, address, port = service
        if _ip_version(address) == 6:
            extra.setdefault("netmask", IPV6_NETMASK)
        return IPVSService(addr=address, port=port, protocol=PROTOCOL_NUMBERS[protocol], **extra)

    def _full_service(self, vs: VirtualServer) -> Any:
        flags = IP_VS_SVC_F_PERSISTENT if vs.persistence else 0
        return self._service(
            vs.key,
            sched_name=vs.scheduler,
            timeout=vs.persistence or 0,
            flags={"flags": flags, "mask": 0xFFFF},
        )

    @staticmethod
    def _dest(address: str, port: int, weight: int = 1) -> Any:
        from pyroute2 import IPVSDest

        # fwd_method must be explicit: IPVSDest's default (3) is direct routing.
        return IPVSDest(addr=address, port=port, weight=weight, fwd_method=IP_VS_CONN_F_MASQ)

    def _dump_services(self) -> list[Any]:
        try:
            return [msg.get("IPVS_CMD_ATTR_SERVICE") for msg in self._ipvs().service("dump")]
        except IpvsError:
            raise
        except Exception as exc:
            raise _fail("dump IPVS services", exc) from exc

    def list_virtual_servers(self) -> list[KernelVirtualServer]:
        """Everything in one read of /proc/net/ip_vs (see `PROC_IP_VS`); netlink when off."""
        if not self.read_proc:
            return self.list_virtual_servers_netlink()
        servers = parse_proc_ip_vs(self._read_proc_ip_vs())
        persistent = [vs for vs in servers if vs.persistence]
        if not persistent:
            return servers
        hz = self._kernel_hz(persistent)
        return [
            replace(vs, persistence=vs.persistence // hz) if vs.persistence else vs
            for vs in servers
        ]

    def _kernel_hz(self, persistent: Sequence[KernelVirtualServer]) -> int:
        """The kernel's HZ: /proc shows persistence in jiffies, netlink in seconds. Asked once."""
        for vs in persistent:
            if self._hz is not None:
                break
            try:
                (message,) = self._ipvs().service("get", service=self._service(vs.key))
            except Exception as exc:
                raise _fail(f"get virtual server {_service_text(vs.key)}", exc) from exc
            seconds = message.get("IPVS_CMD_ATTR_SERVICE").get("IPVS_SVC_ATTR_TIMEOUT")
            if seconds and vs.persistence:
                self._hz = vs.persistence // int(seconds)
        if self._hz is None:
            raise IpvsKernelError("cannot tell the kernel's HZ from its persistent services")
        return self._hz

    def _read_proc_ip_vs(self) -> str:
        if self.netns is not None:
            try:
                return self._run(["cat", str(PROC_IP_VS)])
            except IpvsKernelError as exc:
                raise IpvsSetupError(f"cannot read {PROC_IP_VS} (is ip_vs loaded?): {exc}") from exc
        try:
            return PROC_IP_VS.read_text()
        except OSError as exc:
            raise IpvsSetupError(f"cannot read {PROC_IP_VS} (is ip_vs loaded?): {exc}") from exc

    def list_virtual_servers_netlink(self) -> list[KernelVirtualServer]:
        """The same through netlink: one dump per virtual server, ~1000x slower in pyroute2."""
        servers = []
        for attrs in self._dump_services():
            vs = _virtual_server_from_attrs(attrs)
            if vs is not None:
                servers.append(replace(vs, real_servers=tuple(self.list_real_servers(vs.key))))
        return servers

    def list_real_servers(self, service: ServiceKey) -> list[KernelRealServer]:
        try:
            messages = list(self._ipvs().dest("dump", service=self._service(service)))
        except Exception as exc:
            if _code(exc) in _GONE:
                return []
            raise _fail(f"dump real servers of {_service_text(service)}", exc) from exc
        return sorted(_real_server_from_attrs(m.get("IPVS_CMD_ATTR_DEST")) for m in messages)

    def _request(self, what: str, call: Any, *args: Any, gone_ok: bool = False, **kw: Any) -> None:
        try:
            call(*args, **kw)
        except Exception as exc:
            if gone_ok and _code(exc) in _GONE:
                return
            raise _fail(what, exc) from exc

    def add_virtual_server(self, virtual_server: VirtualServer) -> None:
        try:
            self._ipvs().service("add", service=self._full_service(virtual_server))
        except Exception as exc:
            if _code(exc) == errno.ENOENT:  # the kernel's answer for an unknown scheduler
                raise IpvsKernelError(
                    f"add virtual server {virtual_server}: no scheduler "
                    f"{virtual_server.scheduler!r} (is module ip_vs_{virtual_server.scheduler} "
                    "available?)",
                    code=errno.ENOENT,
                ) from exc
            raise _fail(f"add virtual server {virtual_server}", exc) from exc

    def edit_virtual_server(self, virtual_server: VirtualServer) -> None:
        # "set", never "update": pyroute2 maps "update" to IPVS_CMD_DEL_SERVICE.
        self._request(
            f"edit virtual server {virtual_server}",
            self._ipvs().service,
            "set",
            service=self._full_service(virtual_server),
        )

    def delete_virtual_server(self, service: ServiceKey) -> None:
        self._request(
            f"delete virtual server {_service_text(service)}",
            self._ipvs().service,
            "del",
            service=self._service(service),
            gone_ok=True,
        )

    def flush_virtual_servers(self) -> int:
        """One IPVS_CMD_FLUSH, as `ipvsadm -C` and kube-proxy's cleanup."""
        if self.read_proc:
            try:
                table = self._read_proc_ip_vs()
            except IpvsSetupError:
                return 0  # no ip_vs module: nothing to flush
            count = sum(1 for line in table.splitlines() if line[:1].isalpha()) - 2  # headers
        else:
            count = len(self._dump_services())
        if count:
            self._ipvs_command("flush IPVS services", IPVS_CMD_FLUSH)
        return count

    def add_real_server(self, service: ServiceKey, real_server: RealServer) -> None:
        rs = real_server
        self._request(
            f"add real server {RealServerRef(service, rs.address, rs.port)}",
            self._ipvs().dest,
            "add",
            service=self._service(service),
            dest=self._dest(rs.address, rs.port, rs.weight),
        )

    def edit_real_server(self, service: ServiceKey, real_server: RealServer) -> None:
        rs = real_server
        self._request(
            f"edit real server {RealServerRef(service, rs.address, rs.port)}",
            self._ipvs().dest,
            "set",
            service=self._service(service),
            dest=self._dest(rs.address, rs.port, rs.weight),
        )

    def delete_real_server(self, service: ServiceKey, address: str, port: int) -> None:
        self._request(
            f"delete real server {RealServerRef(service, address, port)}",
            self._ipvs().dest,
            "del",
            service=self._service(service),
            dest=self._dest(address, port),
            gone_ok=True,
        )

    def set_timeouts(self, *, tcp: int, tcpfin: int, udp: int) -> None:
        self._ipvs_command(
            f"set IPVS timeouts tcp={tcp} tcpfin={tcpfin} udp={udp}",
            IPVS_CMD_SET_CONFIG,
            [
                ("IPVS_CMD_ATTR_TIMEOUT_TCP", tcp),
                ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", tcpfin),
                ("IPVS_CMD_ATTR_TIMEOUT_UDP", udp),
            ],
        )
        log.info("ipvs timeouts set", tcp=tcp, tcpfin=tcpfin, udp=udp)

    def _ipvs_command(self, what: str, command: int, attrs: Sequence[tuple[str, int]] = ()) -> None:
        """A request pyroute2's IPVS class has no call for (flush, config).

        Sent the way its service() and dest() send theirs, with a message class that encodes
        the timeouts as u32 (pyroute2 declares them hex).
        """
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST  # type: ignore[import-untyped]

        msg = _ipvs_command_message()
        msg["cmd"] = command
        msg["version"] = 1
        msg["attrs"] = list(attrs)
        sock = self._ipvs()
        try:
            sock._run_with_cleanup(
                sock.asyncore._do_request, msg, msg_flags=NLM_F_REQUEST | NLM_F_ACK
            )
        except Exception as exc:
            raise _fail(what, exc) from exc

    # - kube-ipvs0 -

    def _dummy_index(self) -> int | None:
        found = self._iproute().link_lookup(ifname=self.dummy_interface)
        return int(found[0]) if found else None

    def ensure_dummy_interface(self) -> None:
        index = self._dummy_index()
        if index is not None:
            link = self._iproute().get_links(index)[0]
            kind = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
            if kind != "dummy":
                raise IpvsSetupError(
                    f"{self.dummy_interface} exists but is a {kind or 'plain'} device, not dummy"
                )
            return
        try:
            self._iproute().link("add", ifname=self.dummy_interface, kind="dummy")
        except Exception as exc:
            if _code(exc) in (errno.EOPNOTSUPP, errno.ENOTSUP):
                raise IpvsSetupError(
                    f"cannot create {self.dummy_interface}: this kernel has no 'dummy' network "
                    "device type (module dummy, CONFIG_DUMMY); IPVS mode binds Service "
                    "addresses to such a device"
                ) from exc
            if _code(exc) != errno.EEXIST:
                raise _fail(f"create {self.dummy_interface}", exc) from exc
        log.info("created dummy interface", interface=self.dummy_interface)

    def delete_dummy_interface(self) -> bool:
        index = self._dummy_index()
        if index is None:
            return False
        self._request(
            f"delete {self.dummy_interface}", self._iproute().link, "del", index=index, gone_ok=True
        )
        return True

    def list_addresses(self) -> list[str]:
        index = self._dummy_index()
        if index is None:
            return []
        found = []
        for msg in self._iproute().get_addr(index=index):
            address = msg.get("IFA_ADDRESS")
            if address and not ipaddress.ip_address(address).is_link_local:
                found.append(str(address))
        return sorted(found)

    def _address_request(self, command: str, address: str, *, gone_ok: bool) -> None:
        index = self._dummy_index()
        if index is None:
            if gone_ok:
                return
            raise IpvsKernelError(f"{command} address {address}: no {self.dummy_interface}")
        self._request(
            f"{command} address {address} on {self.dummy_interface}",
            self._iproute().addr,
            command,
            index=index,
            address=address,
            prefixlen=32 if _ip_version(address) == 4 else 128,
            gone_ok=gone_ok,
        )

    def add_address(self, address: str) -> None:
        self._address_request("add", address, gone_ok=False)

    def delete_address(self, address: str) -> None:
        self._address_request("del", address, gone_ok=True)

    # - ipsets -

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        prefix = () if self.netns is None else ("ip", "netns", "exec", self.netns)
        full = [*prefix, *argv]
        try:
            result = subprocess.run(
                full,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except FileNotFoundError as exc:
            raise IpvsSetupError(f"{full[0]} is not installed; IPVS mode needs it") from exc
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise IpvsKernelError(f"{' '.join(full)} could not run: {exc}") from exc
        if result.returncode != 0:
            message = result.stderr.strip() or f"exit status {result.returncode}"
            raise IpvsKernelError(f"{' '.join(argv[:2])}: {message}")
        return result.stdout

    def read_ipsets(self) -> list[IPSet]:
        return parse_ipset_save(self._run([self.ipset_binary, "save"]))

    def restore_ipsets(self, payload: str) -> None:
        self._run([self.ipset_binary, "restore", "-exist"], payload)


IPVS_CMD_FLUSH = 17
IPVS_CMD_SET_CONFIG = 12


def _ipvs_command_message() -> Any:
    """pyroute2's ipvsmsg with the three timeout attributes typed u32 (it declares them hex)."""
    return _ipvs_command_class()()


@functools.cache
def _ipvs_command_class() -> Any:
    from pyroute2.netlink.generic import ipvs  # type: ignore[import-untyped]

    class ipvs_command_msg(ipvs.ipvsmsg):  # type: ignore[misc]
        # pyroute2 compiles an NLA table once per class but reads the "compiled" flag through
        # inheritance: without this, a subclass made after ipvsmsg was used keeps its table.
        _nlmsg_base__compiled_nla = False
        nla_map = (
            ("IPVS_CMD_ATTR_UNSPEC", "none"),
            ("IPVS_CMD_ATTR_SERVICE", "none"),
            ("IPVS_CMD_ATTR_DEST", "none"),
            ("IPVS_CMD_ATTR_DAEMON", "none"),
            ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
            ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
            ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
        )

    return ipvs_command_msg


def _virtual_server_from_attrs(attrs: Any) -> KernelVirtualServer | None:
    """Read the raw attributes: `IPVSService.from_message` reports defaults for some of them."""
    address = attrs.get("IPVS_SVC_ATTR_ADDR")
    protocol = PROTOCOL_NAMES.get(attrs.get("IPVS_SVC_ATTR_PROTOCOL"))
    if attrs.get("IPVS_SVC_ATTR_FWMARK") or not address or protocol is None:
        return None
    flags = (attrs.get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0)
    persistent = bool(flags & IP_VS_SVC_F_PERSISTENT)
    return KernelVirtualServer(
        protocol=protocol,
        address=str(address),
        port=int(attrs.get("IPVS_SVC_ATTR_PORT")),
        scheduler=str(attrs.get("IPVS_SVC_ATTR_SCHED_NAME")),
        persistence=int(attrs.get("IPVS_SVC_ATTR_TIMEOUT")) if persistent else None,
    )


def _real_server_from_attrs(attrs: Any) -> KernelRealServer:
    """Read the raw attributes: `IPVSDest.from_message` always reports fwd_method 3."""
    method = int(attrs.get("IPVS_DEST_ATTR_FWD_METHOD")) & IP_VS_CONN_F_FWD_MASK
    return KernelRealServer(
        address=str(attrs.get("IPVS_DEST_ATTR_ADDR")),
        port=int(attrs.get("IPVS_DEST_ATTR_PORT")),
        weight=int(attrs.get("IPVS_DEST_ATTR_WEIGHT")),
        forwarding=FORWARDING.get(method, str(method)),
        active_connections=int(attrs.get("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0),
        inactive_connections=int(attrs.get("IPVS_DEST_ATTR_INACT_CONNS") or 0),
    )


# --- edges: read, apply, sync ------------------------------------------------------------------


def read_state(handle: IpvsHandle) -> IpvsState:
    return IpvsState(
        virtual_servers=tuple(sorted(handle.list_virtual_servers())),
        addresses=tuple(handle.list_addresses()),
        ipsets=tuple(handle.read_ipsets()),
    )


def _apply_one(handle: IpvsHandle, op: Operation, graceful: GracefulTermination) -> None:
    match op:
        case AddAddress(address):
            handle.add_address(address)
        case AddVirtualServer(vs):
            handle.add_virtual_server(vs)
        case EditVirtualServer(vs):
            handle.edit_virtual_server(vs)
        case AddRealServer(service, rs) | EditRealServer(service, rs):
            if isinstance(op, AddRealServer):
                handle.add_real_server(service, rs)
            else:
                handle.edit_real_server(service, rs)
            graceful.keep([RealServerRef(service, rs.address, rs.port)])
        case DrainRealServer(service, address, port):
            handle.edit_real_server(service, RealServer(address, port, weight=0))
            graceful.drain([op.ref])
        case DeleteRealServer(service, address, port):
            handle.delete_real_server(service, address, port)
            graceful.keep([RealServerRef(service, address, port)])
        case DeleteVirtualServer(service):
            handle.delete_virtual_server(service)
            graceful.keep(ref for ref in graceful.draining if ref.service == service)
        case DeleteAddress(address):
            handle.delete_address(address)


def _service_of(op: Operation) -> ServiceKey | None:
    if isinstance(op, AddVirtualServer | EditVirtualServer):
        return op.virtual_server.key
    if isinstance(op, AddAddress | DeleteAddress):
        return None
    return op.service


def apply_changes(
    handle: IpvsHandle,
    operations: Iterable[Operation],
    *,
    graceful: GracefulTermination,
) -> list[tuple[str, str]]:
    """Apply in order; a failure skips the rest of that virtual server, not the others.

    Returns the failures as (operation, error) pairs; `sync_ipvs` raises them as IpvsSyncError.
    """
    failures: list[tuple[str, str]] = []
    broken: set[ServiceKey] = set()
    for op in operations:
        service = _service_of(op)
        if service in broken:
            continue
        try:
            _apply_one(handle, op, graceful)
        except IpvsError as exc:
            failures.append((str(op), str(exc)))
            if isinstance(op, AddVirtualServer) and service is not None:
                broken.add(service)
    return failures


def collect_drained(handle: IpvsHandle, graceful: GracefulTermination) -> tuple[Removal, ...]:
    """Delete the draining real servers that are idle or overdue; what was deleted."""
    draining = graceful.draining
    if not draining:
        return ()
    counts: dict[RealServerRef, ConnectionCounts] = {}
    for service in sorted({ref.service for ref in draining}):
        for rs in handle.list_real_servers(service):
            ref = RealServerRef(service, rs.address, rs.port)
            if ref in draining:
                counts[ref] = ConnectionCounts(rs.active_connections, rs.inactive_connections)
    removals = graceful.removals(counts)
    for removal in removals:
        ref = removal.ref
        handle.delete_real_server(ref.service, ref.address, ref.port)
        graceful.keep([ref])
        log.info(
            "deleted drained real server",
            real_server=str(ref),
            reason=removal.reason,
            drained_seconds=round(removal.draining_for, 1),
        )
    return removals


@dataclass(frozen=True, slots=True)
class IpvsSyncResult:
    operations: tuple[Operation, ...]
    ipset_lines: int
    removals: tuple[Removal, ...]
    seconds: float

    @property
    def changed(self) -> bool:
        return bool(self.operations or self.ipset_lines or self.removals)


def _keep_wanted(plan: IpvsPlan, graceful: GracefulTermination) -> None:
    """Real servers back in the plan stop draining (their weight is restored by the sync)."""
    draining = graceful.draining
    if not draining:
        return
    services = {ref.service for ref in draining}
    graceful.keep(
        RealServerRef(vs.key, canonical_address(rs.address), rs.port)
        for vs in plan.virtual_servers
        if vs.key in services
        for rs in vs.real_servers
    )


def sync_ipvs(
    handle: IpvsHandle,
    plan: IpvsPlan,
    *,
    graceful: GracefulTermination,
    node_addresses: Collection[str] = (),
    exclude_cidrs: Collection[str] = (),
) -> IpvsSyncResult:
    """One IPVS sync against the kernel: ipsets (one restore), then IPVS, then drained ones.

    Call it before the iptables sync (the rules match these ipsets) and `destroy_stale_sets`
    after it. Raises IpvsSyncError after doing everything it could when some change failed.
    """
    started = time.monotonic()
    handle.ensure_dummy_interface()
    actual = read_state(handle)
    failures: list[tuple[str, str]] = []
    payload = render_ipset_restore(plan.ipsets, actual.ipsets)
    if payload:
        try:
            handle.restore_ipsets(payload)
        except IpvsError as exc:
            failures.append(("ipset restore", str(exc)))
    _keep_wanted(plan, graceful)
    operations = plan_changes(
        plan,
        actual,
        draining=graceful.draining,
        node_addresses=node_addresses,
        exclude_cidrs=exclude_cidrs,
    )
    failures += apply_changes(handle, operations, graceful=graceful)
    removals: tuple[Removal, ...] = ()
    try:
        removals = collect_drained(handle, graceful)
    except IpvsError as exc:
        failures.append(("delete drained real servers", str(exc)))
    result = IpvsSyncResult(
        tuple(operations), payload.count("\n"), removals, time.monotonic() - started
    )
    log.info(
        "ipvs sync",
        virtual_servers=len(plan.virtual_servers),
        operations=len(operations),
        ipset_lines=result.ipset_lines,
        draining=len(graceful.draining),
        removed_after_drain=len(removals),
        failures=len(failures),
        seconds=round(result.seconds, 3),
    )
    if failures:
        raise IpvsSyncError(failures)
    return result


def destroy_stale_sets(handle: IpvsHandle, desired: Iterable[IPSet]) -> tuple[str, ...]:
    """Destroy the KUBE- sets the plan does not have; call it after the iptables sync."""
    actual = handle.read_ipsets()
    payload = render_ipset_destroy(desired, actual)
    if not payload:
        return ()
    handle.restore_ipsets(payload)
    names = tuple(line.split()[1] for line in payload.splitlines() if line.startswith("destroy"))
    log.info("destroyed stale ipsets", ipsets=list(names))
    return names


@dataclass(frozen=True, slots=True)
class CleanupResult:
    virtual_servers: int
    dummy_deleted: bool
    ipsets: tuple[str, ...]


def cleanup(handle: IpvsHandle) -> CleanupResult:
    """kube-proxy's --cleanup for IPVS mode: flush ALL IPVS services, delete kube-ipvs0,
    destroy the KUBE- ipsets. Remove the iptables rules first: a referenced set cannot go.
    Running it again is harmless.
    """
    failures: list[tuple[str, str]] = []
    flushed, deleted = 0, False
    sets: tuple[str, ...] = ()
    try:
        flushed = handle.flush_virtual_servers()
    except IpvsError as exc:
        failures.append(("flush IPVS services", str(exc)))
    try:
        deleted = handle.delete_dummy_interface()
    except IpvsError as exc:
        failures.append((f"delete {DUMMY_INTERFACE}", str(exc)))
    try:
        sets = destroy_stale_sets(handle, ())
    except IpvsError as exc:
        failures.append(("destroy KUBE- ipsets", str(exc)))
    log.info("ipvs cleanup", virtual_servers=flushed, dummy_deleted=deleted, ipsets=len(sets))
    if failures:
        raise IpvsSyncError(failures)
    return CleanupResult(flushed, deleted, sets)


# --- node preparation --------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def check_kernel_modules(
    scheduler: str,
    *,
    proc_modules: Path = Path("/proc/modules"),
    modules_dir: Path | None = None,
    modprobe: str | None = "modprobe",
) -> tuple[str, ...]:
    """Make sure ip_vs, ip_vs_<scheduler> and nf_conntrack are there; which had to be loaded.

    A module counts when /proc/modules lists it or modules.builtin names it; otherwise
    `modprobe` is tried. Raises IpvsSetupError naming every module still missing.
    """
    if modules_dir is None:
        modules_dir = Path("/lib/modules") / os.uname().release
    builtin = builtin_modules(_read(modules_dir / "modules.builtin"))
    before = loaded_modules(_read(proc_modules)) | builtin
    wanted = required_modules(scheduler)
    errors: dict[str, str] = {}
    for name in (m for m in wanted if m not in before):
        if modprobe is None:
            errors[name] = "not loaded"
            continue
        try:
            result = subprocess.run(
                [modprobe, name], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors[name] = str(exc)
            continue
        if result.returncode != 0:
            errors[name] = result.stderr.strip() or f"modprobe exit status {result.returncode}"
    present = loaded_modules(_read(proc_modules)) | builtin
    missing = [m for m in wanted if m not in present]
    if missing:
        details = "; ".join(f"{m}: {errors.get(m, 'not loaded after modprobe')}" for m in missing)
        raise IpvsSetupError(
            f"IPVS mode needs kernel modules that are not loaded, not built in, and could not "
            f"be loaded: {', '.join(missing)} ({details})"
        )
    loaded_now = tuple(m for m in wanted if m not in before)
    log.info("kernel modules for ipvs", modules=list(wanted), loaded_now=list(loaded_now))
    return loaded_now


def ensure_ipvs_sysctls(*, strict_arp: bool, root: Path = PROC_SYS) -> tuple[str, ...]:
    """Set the sysctls kube-proxy sets in IPVS mode; which ones changed. Each is read back."""
    wanted = IPVS_SYSCTLS + (STRICT_ARP_SYSCTLS if strict_arp else ())
    changed = []
    wrong = []
    for name, value in wanted:
        if ensure_sysctl(name, value, root=root):
            changed.append(name)
        now = _read(root / name).strip()
        if now != str(value):
            wrong.append(f"{name}={now or 'missing'} (want {value})")
    if wrong:
        raise IpvsSetupError(f"cannot set the sysctls IPVS mode needs: {', '.join(wrong)}")
    return tuple(changed)
