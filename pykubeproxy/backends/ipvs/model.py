"""IPVS mode's state as data: what a sync wants (virtual servers, kube-ipvs0 addresses, ipsets)
and what the kernel holds (the same, with the kernel's counters and forwarding methods)."""

from __future__ import annotations

from dataclasses import dataclass

DUMMY_INTERFACE = "kube-ipvs0"
DEFAULT_SCHEDULER = "rr"  # the list kube-proxy accepts is config.IPVS_SCHEDULERS
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}

# (protocol, address, port) of a virtual server, as `VirtualServer.key`.
ServiceKey = tuple[str, str, int]


def bracketed(address: str) -> str:
    """An address as it goes before `:port` (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def service_text(service: ServiceKey) -> str:
    """`TCP 10.96.0.10:80`, as logs and operations name a virtual server."""
    protocol, address, port = service
    return f"{protocol.upper()} {bracketed(address)}:{port}"


# --- what a sync wants -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class RealServer:
    """One backend of a virtual server. Always forwarded by masquerade (NAT), as kube-proxy."""

    address: str
    port: int
    weight: int = 1


@dataclass(frozen=True, slots=True, order=True)
class VirtualServer:
    """One IPVS service: protocol, address and port, and where its traffic goes."""

    protocol: str  # "tcp", "udp" or "sctp"
    address: str
    port: int
    scheduler: str = DEFAULT_SCHEDULER
    # ClientIP session affinity: IPVS persistence, in seconds; None without affinity.
    persistence: int | None = None
    real_servers: tuple[RealServer, ...] = ()
    comment: str = ""  # which Service port this is, for --dry-run and logs

    @property
    def key(self) -> ServiceKey:
        return (self.protocol, self.address, self.port)

    def __str__(self) -> str:
        return service_text(self.key)


@dataclass(frozen=True, slots=True)
class IPSet:
    """One ipset kube-proxy's IPVS mode keeps, with its entries in ipset's own syntax."""

    name: str
    type: str  # "hash:ip,port", "hash:ip,port,ip", "hash:ip,port,net", "bitmap:port", "hash:ip"
    comment: str
    entries: tuple[str, ...] = ()

    @property
    def create_options(self) -> str:
        if self.type == "bitmap:port":
            return "range 0-65535"
        return "family inet hashsize 1024 maxelem 65536"


@dataclass(frozen=True, slots=True)
class IpvsPlan:
    """Everything IPVS mode wants in the kernel except the iptables rules (rendered apart)."""

    virtual_servers: tuple[VirtualServer, ...]
    # Addresses bound to the dummy interface so the node accepts traffic for them (/32 each).
    addresses: tuple[str, ...]
    ipsets: tuple[IPSet, ...]


# --- what the kernel holds ---------------------------------------------------------------------


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
