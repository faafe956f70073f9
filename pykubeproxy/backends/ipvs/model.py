"""What IPVS mode programs, as data: virtual servers, addresses on kube-ipvs0, ipsets."""

from __future__ import annotations

from dataclasses import dataclass

DUMMY_INTERFACE = "kube-ipvs0"
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh", "dh", "mh", "lblc", "lblcr", "sed", "nq")
DEFAULT_SCHEDULER = "rr"


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
    def key(self) -> tuple[str, str, int]:
        return (self.protocol, self.address, self.port)

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol.upper()} {host}:{self.port}"


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
