"""IPVS mode, planned: ProxyState → virtual servers, kube-ipvs0 addresses and ipsets.

Pure: ProxyState and options in, data out, in a stable order. Follows kube-proxy's IPVS proxier:
one virtual server per Service address and port (cluster IP, each externalIP and load-balancer
IP, and the NodePort on each node address), masquerade decided by ipset matches in a few fixed
iptables rules (`rules.py`) instead of per-Service chains.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pykubeproxy.backends.ipvs.model import (
    DEFAULT_SCHEDULER,
    IPSet,
    IpvsPlan,
    RealServer,
    VirtualServer,
)
from pykubeproxy.model import Endpoint, ProxyState, ServicePort
from pykubeproxy.selection import Place, categorize_endpoints

# kube-proxy's ipsets: name → (type, comment).
SET_SPECS: dict[str, tuple[str, str]] = {
    "KUBE-LOOP-BACK": (
        "hash:ip,port,ip",
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    "KUBE-CLUSTER-IP": (
        "hash:ip,port",
        "Kubernetes service cluster ip + port for masquerade purpose",
    ),
    "KUBE-EXTERNAL-IP": (
        "hash:ip,port",
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    "KUBE-EXTERNAL-IP-LOCAL": (
        "hash:ip,port",
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    "KUBE-LOAD-BALANCER": ("hash:ip,port", "Kubernetes service lb portal"),
    "KUBE-LOAD-BALANCER-FW": (
        "hash:ip,port",
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    "KUBE-LOAD-BALANCER-LOCAL": (
        "hash:ip,port",
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    "KUBE-LOAD-BALANCER-SOURCE-IP": (
        "hash:ip,port,ip",
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    "KUBE-LOAD-BALANCER-SOURCE-CIDR": (
        "hash:ip,port,net",
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    "KUBE-NODE-PORT-TCP": ("bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose"),
    "KUBE-NODE-PORT-LOCAL-TCP": (
        "bitmap:port",
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    "KUBE-NODE-PORT-UDP": ("bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose"),
    "KUBE-NODE-PORT-LOCAL-UDP": (
        "bitmap:port",
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    "KUBE-NODE-PORT-SCTP-HASH": (
        "hash:ip,port",
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH": (
        "hash:ip,port",
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    "KUBE-HEALTH-CHECK-NODE-PORT": ("bitmap:port", "Kubernetes health check node port"),
    "KUBE-IPVS-IPS": ("hash:ip", "Kubernetes IPVS service addresses"),
}


@dataclass(frozen=True, slots=True)
class IpvsOptions:
    """The node configuration that shapes IPVS mode (kube-proxy flags of the same names)."""

    scheduler: str = DEFAULT_SCHEDULER
    masquerade_bit: int = 14
    masquerade_all: bool = False
    cluster_cidr: str | None = None
    # Node addresses that accept NodePorts (already filtered by --nodeport-addresses).
    node_ips: tuple[str, ...] = ()

    @property
    def mark(self) -> str:
        return hex(1 << self.masquerade_bit)


def _real_servers(endpoints: Iterable[Endpoint]) -> tuple[RealServer, ...]:
    return tuple(sorted({RealServer(ep.ip, ep.port) for ep in endpoints}))


def _port_entry(ip: str, port: ServicePort, number: int | None = None) -> str:
    return f"{ip},{port.name.protocol.lower()}:{port.port if number is None else number}"


@dataclass
class _Sets:
    entries: dict[str, set[str]]

    def add(self, name: str, entry: str) -> None:
        self.entries[name].add(entry)


def _virtual_servers(
    port: ServicePort, state: ProxyState, opts: IpvsOptions
) -> list[VirtualServer]:
    selection = categorize_endpoints(
        port, state.endpoints_of(port.name), place=Place.of(state.node)
    )
    internal = selection.local if port.internal_policy_local else selection.cluster
    external = selection.local if port.external_policy_local else selection.cluster
    proto = port.name.protocol.lower()

    def virtual(
        address: str, number: int, endpoints: Iterable[Endpoint], what: str
    ) -> VirtualServer:
        return VirtualServer(
            protocol=proto,
            address=address,
            port=number,
            scheduler=opts.scheduler,
            persistence=port.affinity_timeout,
            real_servers=_real_servers(endpoints),
            comment=f"{port.name} {what}",
        )

    servers = [virtual(port.cluster_ip, port.port, internal, "cluster IP")]
    servers += [virtual(ip, port.port, external, "external IP") for ip in port.external_ips]
    servers += [
        virtual(ip, port.port, external, "load balancer IP") for ip in port.load_balancer_ips
    ]
    if port.node_port:
        servers += [virtual(ip, port.node_port, external, "node port") for ip in opts.node_ips]
    return servers


def _fill_sets(sets: _Sets, port: ServicePort, state: ProxyState, opts: IpvsOptions) -> None:
    proto = port.name.protocol.lower()
    sets.add("KUBE-CLUSTER-IP", _port_entry(port.cluster_ip, port))
    selection = categorize_endpoints(
        port, state.endpoints_of(port.name), place=Place.of(state.node)
    )
    for ep in selection.reachable:
        sets.add("KUBE-LOOP-BACK", f"{ep.ip},{proto}:{ep.port},{ep.ip}")
    local = port.external_policy_local
    for ip in port.external_ips:
        sets.add("KUBE-EXTERNAL-IP-LOCAL" if local else "KUBE-EXTERNAL-IP", _port_entry(ip, port))
    for ip in port.load_balancer_ips:
        entry = _port_entry(ip, port)
        sets.add("KUBE-LOAD-BALANCER", entry)
        if local:
            sets.add("KUBE-LOAD-BALANCER-LOCAL", entry)
        if port.load_balancer_source_ranges:
            sets.add("KUBE-LOAD-BALANCER-FW", entry)
            for cidr in port.load_balancer_source_ranges:
                sets.add("KUBE-LOAD-BALANCER-SOURCE-CIDR", f"{entry},{cidr}")
            net_ranges = [ipaddress.ip_network(cidr) for cidr in port.load_balancer_source_ranges]
            for node_ip in opts.node_ips:
                if any(ipaddress.ip_address(node_ip) in net for net in net_ranges):
                    # A node reaching its own LB IP loops back with that IP as its source.
                    sets.add("KUBE-LOAD-BALANCER-SOURCE-IP", f"{entry},{ip}")
    if port.node_port:
        _fill_node_port_sets(sets, port, opts)
    if port.health_check_node_port:
        sets.add("KUBE-HEALTH-CHECK-NODE-PORT", str(port.health_check_node_port))


def _fill_node_port_sets(sets: _Sets, port: ServicePort, opts: IpvsOptions) -> None:
    proto = port.name.protocol.lower()
    local = port.external_policy_local
    if proto == "sctp":
        for ip in opts.node_ips:
            entry = _port_entry(ip, port, port.node_port)
            sets.add("KUBE-NODE-PORT-SCTP-HASH", entry)
            if local:
                sets.add("KUBE-NODE-PORT-LOCAL-SCTP-HASH", entry)
        return
    sets.add(f"KUBE-NODE-PORT-{proto.upper()}", str(port.node_port))
    if local:
        sets.add(f"KUBE-NODE-PORT-LOCAL-{proto.upper()}", str(port.node_port))


def _set_order(entry: str) -> tuple[object, ...]:
    if entry.isdigit():
        return (0, int(entry))
    ip = entry.split(",", 1)[0]
    return (1, ipaddress.ip_address(ip), entry)


def plan_ipvs(state: ProxyState, opts: IpvsOptions) -> IpvsPlan:
    """The virtual servers, kube-ipvs0 addresses and ipsets for this node."""
    servers: dict[tuple[str, str, int], VirtualServer] = {}
    sets = _Sets({name: set() for name in SET_SPECS})
    for port in state.services:
        for server in _virtual_servers(port, state, opts):
            servers.setdefault(server.key, server)
        _fill_sets(sets, port, state, opts)
    addresses = sorted(
        {
            ip
            for port in state.services
            for ip in (port.cluster_ip, *port.external_ips, *port.load_balancer_ips)
        },
        key=ipaddress.ip_address,
    )
    for ip in addresses:
        sets.add("KUBE-IPVS-IPS", ip)
    ipsets = tuple(
        IPSet(name, kind, comment, tuple(sorted(sets.entries[name], key=_set_order)))
        for name, (kind, comment) in SET_SPECS.items()
    )
    ordered = sorted(
        servers.values(), key=lambda s: (ipaddress.ip_address(s.address), s.port, s.protocol)
    )
    return IpvsPlan(tuple(ordered), tuple(addresses), ipsets)
