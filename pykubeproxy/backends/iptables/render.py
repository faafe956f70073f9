"""The desired iptables ruleset for a ProxyState, with kube-proxy's chains, rules and comments.

Pure: no I/O, deterministic. Rules are written in iptables-save's canonical form (see ruleset.py),
one rendering function per chain kind, following kube-proxy's iptables proxier rule for rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables import shared_rules
from pykubeproxy.backends.iptables.ruleset import Chain, Ruleset, Table, spec
from pykubeproxy.backends.iptables.shared_rules import comment as _comment
from pykubeproxy.model import Endpoint, ProxyState, ServicePort
from pykubeproxy.selection import EndpointSelection, categorize_endpoints

NODEPORTS_COMMENT = "kubernetes service nodeports; NOTE: this must be the last rule in this chain"


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """The node configuration that shapes the rules (kube-proxy flags of the same names)."""

    masquerade_bit: int = 14
    masquerade_all: bool = False
    # The pod network (kube-proxy's --cluster-cidr, this family): tells pod traffic apart.
    cluster_cidr: str | None = None
    # CIDRs selecting which node addresses accept NodePorts; empty means every local address.
    nodeport_addresses: tuple[str, ...] = ()
    localhost_nodeports: bool = True
    node_ips: tuple[str, ...] = field(default=())

    @property
    def mark(self) -> str:
        return hex(1 << self.masquerade_bit)


# Jumps from the built-in chains, in the order they end up in a kube-proxy node's chains
# (kube-proxy prepends each of its list in turn, so later entries sit higher).
_FILTER_JUMPS: dict[str, tuple[shared_rules.Jump, ...]] = {
    "INPUT": (
        (c.KUBE_PROXY_FIREWALL, "kube-proxy firewall rules", True),
        (c.KUBE_NODEPORTS, "kubernetes health check service ports", False),
        (c.KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", True),
    ),
    "FORWARD": (
        (c.KUBE_PROXY_FIREWALL, "kube-proxy firewall rules", True),
        (c.KUBE_FORWARD, "kubernetes forwarding rules", False),
        (c.KUBE_SERVICES, "kubernetes service portals", True),
        (c.KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", True),
    ),
    "OUTPUT": (
        (c.KUBE_PROXY_FIREWALL, "kube-proxy firewall rules", True),
        (c.KUBE_SERVICES, "kubernetes service portals", True),
    ),
}


def _host(ip: str) -> str:
    return ip if "/" in ip else f"{ip}/32"


def _match(
    comment: str | None,
    proto: str,
    *,
    dst: str | None = None,
    dport: int | None = None,
    before_port: str | None = None,
) -> str:
    """`-d IP/32 -p proto -m comment … [before_port] -m proto --dport N`, in save order."""
    return spec(
        f"-d {_host(dst)}" if dst else None,
        f"-p {proto}",
        _comment(comment) if comment is not None else None,
        before_port,
        f"-m {proto} --dport {dport}" if dport is not None else f"-m {proto}",
    )


def probability(remaining: int) -> str:
    return f"{1.0 / remaining:0.10f}"


@dataclass
class _Tables:
    """Rules collected while walking the Services; chains keep their first-seen order."""

    filter: dict[str, list[str]]
    nat: dict[str, list[str]]

    def add(self, table: str, chain: str, rule: str) -> None:
        getattr(self, table).setdefault(chain, []).append(rule)

    def declare(self, table: str, chain: str) -> None:
        getattr(self, table).setdefault(chain, [])


@dataclass(frozen=True, slots=True)
class _Plan:
    """Which chains one Service port uses, as decided by kube-proxy's traffic policy logic."""

    port: ServicePort
    selection: EndpointSelection
    internal_chain: str
    external_policy_chain: str
    has_internal: bool
    has_external: bool
    uses_ext_chain: bool
    uses_fw_chain: bool

    @property
    def name(self) -> str:
        return str(self.port.name)

    @property
    def proto(self) -> str:
        return self.port.name.protocol.lower()

    @property
    def ext_chain(self) -> str:
        return c.external_chain(self.port.name)

    @property
    def lb_chain(self) -> str:
        return c.firewall_chain(self.port.name) if self.uses_fw_chain else self.ext_chain

    @property
    def filter_verdict(self) -> tuple[str, str]:
        """Target and comment for filter rules catching traffic that has no endpoint to go to."""
        if not self.selection.has_any:
            return "REJECT --reject-with icmp-port-unreachable", f"{self.name} has no endpoints"
        return "DROP", f"{self.name} has no local endpoints"


def plan_service_port(port: ServicePort, endpoints: Sequence[Endpoint]) -> _Plan:
    selection = categorize_endpoints(port, endpoints)
    cluster_chain = c.service_chain(port.name)
    local_chain = c.local_service_chain(port.name)
    has_any = selection.has_any
    internal_chain, has_internal = cluster_chain, has_any
    if port.internal_policy_local:
        internal_chain, has_internal = local_chain, has_any and bool(selection.local)
    external_chain, has_external = cluster_chain, has_any
    if port.external_policy_local:
        external_chain, has_external = local_chain, has_any and bool(selection.local)
    return _Plan(
        port=port,
        selection=selection,
        internal_chain=internal_chain,
        external_policy_chain=external_chain,
        has_internal=has_internal,
        has_external=has_external,
        uses_ext_chain=has_any and port.externally_accessible,
        uses_fw_chain=has_any
        and bool(port.load_balancer_ips)
        and bool(port.load_balancer_source_ranges),
    )


def _render_capture_rules(t: _Tables, p: _Plan) -> None:
    """KUBE-SERVICES / KUBE-NODEPORTS entries, and filter rules for traffic with nowhere to go."""
    port, proto, verdict = p.port, p.proto, p.filter_verdict
    if p.has_internal:
        rule = _match(f"{p.name} cluster IP", proto, dst=port.cluster_ip, dport=port.port)
        t.add("nat", c.KUBE_SERVICES, f"{rule} -j {p.internal_chain}")
    else:
        rule = _match(verdict[1], proto, dst=port.cluster_ip, dport=port.port)
        t.add("filter", c.KUBE_SERVICES, f"{rule} -j {verdict[0]}")
    for ip in port.external_ips:
        if p.selection.has_any:
            rule = _match(f"{p.name} external IP", proto, dst=ip, dport=port.port)
            t.add("nat", c.KUBE_SERVICES, f"{rule} -j {p.ext_chain}")
        if not p.has_external:
            rule = _match(verdict[1], proto, dst=ip, dport=port.port)
            t.add("filter", c.KUBE_EXTERNAL_SERVICES, f"{rule} -j {verdict[0]}")
    for ip in port.load_balancer_ips:
        if p.selection.has_any:
            rule = _match(f"{p.name} loadbalancer IP", proto, dst=ip, dport=port.port)
            t.add("nat", c.KUBE_SERVICES, f"{rule} -j {p.lb_chain}")
        if p.uses_fw_chain:
            text = f"{p.name} traffic not accepted by {c.firewall_chain(port.name)}"
            rule = _match(text, proto, dst=ip, dport=port.port)
            t.add("filter", c.KUBE_PROXY_FIREWALL, f"{rule} -j DROP")
    if not p.has_external:
        for ip in port.load_balancer_ips:
            rule = _match(verdict[1], proto, dst=ip, dport=port.port)
            t.add("filter", c.KUBE_EXTERNAL_SERVICES, f"{rule} -j {verdict[0]}")
    _render_node_port_rules(t, p)


def _render_node_port_rules(t: _Tables, p: _Plan) -> None:
    port, proto, verdict = p.port, p.proto, p.filter_verdict
    if port.node_port:
        if p.selection.has_any:
            rule = _match(p.name, proto, dport=port.node_port)
            t.add("nat", c.KUBE_NODEPORTS, f"{rule} -j {p.ext_chain}")
        if not p.has_external:
            local = "-m addrtype --dst-type LOCAL"
            rule = _match(verdict[1], proto, dport=port.node_port, before_port=local)
            t.add("filter", c.KUBE_EXTERNAL_SERVICES, f"{rule} -j {verdict[0]}")
    if port.health_check_node_port:
        text = f"{p.name} health check node port"
        rule = _match(text, "tcp", dport=port.health_check_node_port)
        t.add("filter", c.KUBE_NODEPORTS, f"{rule} -j ACCEPT")


def _render_cluster_masquerade(t: _Tables, p: _Plan, opts: RenderOptions) -> None:
    """Traffic to the cluster IP from outside the pod network is masqueraded (off-node hops)."""
    if not p.has_internal:
        return
    source = None
    if not opts.masquerade_all:
        if not opts.cluster_cidr:
            return  # kube-proxy cannot tell pod traffic apart without --cluster-cidr
        source = f"! -s {opts.cluster_cidr}"
    rule = _match(f"{p.name} cluster IP", p.proto, dst=p.port.cluster_ip, dport=p.port.port)
    t.add("nat", p.internal_chain, f"{spec(source, rule)} -j {c.KUBE_MARK_MASQ}")


def _render_external_chain(t: _Tables, p: _Plan, opts: RenderOptions) -> None:
    """KUBE-EXT-*: masquerade (Cluster policy) or keep the client IP (Local policy)."""
    if not p.uses_ext_chain:
        return
    chain = p.ext_chain
    t.declare("nat", chain)
    cluster_chain = c.service_chain(p.port.name)
    if not p.port.external_policy_local:
        text = f"masquerade traffic for {p.name} external destinations"
        t.add("nat", chain, f"{_comment(text)} -j {c.KUBE_MARK_MASQ}")
    else:
        if opts.cluster_cidr:
            # Pods reaching an external address behave as if they went out and came back.
            text = f"pod traffic for {p.name} external destinations"
            t.add("nat", chain, f"-s {opts.cluster_cidr} {_comment(text)} -j {cluster_chain}")
        local = "-m addrtype --src-type LOCAL"
        text = f"masquerade LOCAL traffic for {p.name} external destinations"
        t.add("nat", chain, f"{_comment(text)} {local} -j {c.KUBE_MARK_MASQ}")
        text = f"route LOCAL traffic for {p.name} external destinations"
        t.add("nat", chain, f"{_comment(text)} {local} -j {cluster_chain}")
    if p.has_external:
        t.add("nat", chain, f"-j {p.external_policy_chain}")


def _render_firewall_chain(t: _Tables, p: _Plan, opts: RenderOptions) -> None:
    """KUBE-FW-*: only loadBalancerSourceRanges may reach the external chain."""
    if not p.uses_fw_chain:
        return
    chain = c.firewall_chain(p.port.name)
    t.declare("nat", chain)
    comment = _comment(f"{p.name} loadbalancer IP")
    allow_from_node = False
    for cidr in p.port.load_balancer_source_ranges:
        net = ipaddress.ip_network(cidr)
        # iptables-save leaves out a match-anything source, so we do too.
        source = f"-s {cidr}" if net.prefixlen else None
        t.add("nat", chain, f"{spec(source, comment)} -j {p.ext_chain}")
        allow_from_node |= any(ipaddress.ip_address(ip) in net for ip in opts.node_ips)
    if allow_from_node:
        # A node reaching its own load balancer IP loops back with that IP as its source.
        for ip in p.port.load_balancer_ips:
            t.add("nat", chain, f"-s {_host(ip)} {comment} -j {p.ext_chain}")
    text = f"other traffic to {p.name} will be dropped by KUBE-PROXY-FIREWALL"
    t.add("nat", chain, _comment(text))


def _render_balancing_chain(
    t: _Tables, p: _Plan, chain: str, endpoints: Sequence[Endpoint]
) -> None:
    """KUBE-SVC-* / KUBE-SVL-*: affinity, then a random pick among the endpoints."""
    t.declare("nat", chain)
    name = p.port.name
    if p.port.affinity_timeout is not None:
        for ep in endpoints:
            sep = c.endpoint_chain(name, ep)
            recent = (
                f"-m recent --rcheck --seconds {p.port.affinity_timeout} --reap "
                f"--name {sep} --mask 255.255.255.255 --rsource"
            )
            t.add("nat", chain, f"{_comment(f'{name} -> {ep}')} {recent} -j {sep}")
    for index, ep in enumerate(endpoints):
        remaining = len(endpoints) - index
        pick = None
        if remaining > 1:
            pick = f"-m statistic --mode random --probability {probability(remaining)}"
        rule = spec(_comment(f"{name} -> {ep}"), pick, f"-j {c.endpoint_chain(name, ep)}")
        t.add("nat", chain, rule)


def _render_endpoint_chain(t: _Tables, p: _Plan, ep: Endpoint) -> None:
    """KUBE-SEP-*: hairpin masquerade, then DNAT to the endpoint."""
    chain = c.endpoint_chain(p.port.name, ep)
    comment = _comment(p.name)
    t.add("nat", chain, f"-s {_host(ep.ip)} {comment} -j {c.KUBE_MARK_MASQ}")
    affinity = None
    if p.port.affinity_timeout is not None:
        affinity = f"-m recent --set --name {chain} --mask 255.255.255.255 --rsource"
    dnat = f"-j DNAT --to-destination {ep}"
    t.add("nat", chain, spec(f"-p {p.proto}", comment, affinity, f"-m {p.proto}", dnat))


def _render_service_port(t: _Tables, p: _Plan, opts: RenderOptions) -> None:
    _render_capture_rules(t, p)
    _render_external_chain(t, p, opts)
    _render_firewall_chain(t, p, opts)
    policies = (
        (c.service_chain(p.port.name), p.selection.cluster),
        (c.local_service_chain(p.port.name), p.selection.local),
    )
    for chain, endpoints in policies:
        if not endpoints:
            continue
        if p.internal_chain == chain:
            _render_cluster_masquerade(t, p, opts)
        _render_balancing_chain(t, p, chain, endpoints)
    for ep in p.selection.reachable:
        _render_endpoint_chain(t, p, ep)


def _nodeport_destinations(opts: RenderOptions) -> list[str]:
    """How KUBE-SERVICES hands over to KUBE-NODEPORTS: by local address type or by node IP."""
    nets = [ipaddress.ip_network(cidr, strict=False) for cidr in opts.nodeport_addresses]
    # kube-proxy treats a zero CIDR (0.0.0.0/0) like an empty list: every local address.
    if not nets or any(net.prefixlen == 0 for net in nets):
        local = "-m addrtype --dst-type LOCAL"
        if not opts.localhost_nodeports:
            return [f"! -d 127.0.0.0/8 {_comment(NODEPORTS_COMMENT)} {local}"]
        return [f"{_comment(NODEPORTS_COMMENT)} {local}"]
    ips = sorted(
        {ip for ip in opts.node_ips if any(ipaddress.ip_address(ip) in net for net in nets)},
        key=ipaddress.ip_address,
    )
    if opts.localhost_nodeports and any(net.overlaps(_LOOPBACK) for net in nets):
        ips.append("127.0.0.1")
    return [f"-d {_host(ip)} {_comment(NODEPORTS_COMMENT)}" for ip in ips]


_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def _render_static_rules(t: _Tables, opts: RenderOptions) -> None:
    for rule in shared_rules.forward_rules(opts.mark):
        t.add("filter", c.KUBE_FORWARD, rule)
    for rule in shared_rules.postrouting_rules(opts.mark):
        t.add("nat", c.KUBE_POSTROUTING, rule)
    for rule in shared_rules.mark_masq_rules(opts.mark):
        t.add("nat", c.KUBE_MARK_MASQ, rule)


LOCALNET_COMMENT = "block incoming localnet connections"


def _localnet_nodeports(opts: RenderOptions) -> bool:
    """Whether NodePorts answer on 127.0.0.1 (so route_localnet is on and must be guarded)."""
    if not opts.localhost_nodeports:
        return False
    nets = [ipaddress.ip_network(cidr, strict=False) for cidr in opts.nodeport_addresses]
    return not nets or any(net.overlaps(_LOOPBACK) for net in nets)


def _firewall_chains(opts: RenderOptions) -> list[Chain]:
    """kube-proxy's guard for route_localnet (CVE-2020-8558): only local senders reach 127/8.

    Its jumps sit above the others in INPUT and OUTPUT, as on a kube-proxy node.
    """
    if not _localnet_nodeports(opts):
        return []
    drop = (
        f"! -s 127.0.0.0/8 -d 127.0.0.0/8 {_comment(LOCALNET_COMMENT)} "
        "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
    )
    return [Chain(c.KUBE_FIREWALL, (drop,))]


def _with_firewall_jumps(chains: list[Chain], opts: RenderOptions) -> list[Chain]:
    if not _localnet_nodeports(opts):
        return chains
    jump = f"-j {c.KUBE_FIREWALL}"
    return [
        Chain(ch.name, (jump, *ch.rules)) if ch.name in ("INPUT", "OUTPUT") else ch for ch in chains
    ]


def render_ruleset(state: ProxyState, opts: RenderOptions) -> Ruleset:
    """The complete desired filter and nat tables for this node."""
    t = _Tables(filter={}, nat={})
    for name in (
        c.KUBE_SERVICES,
        c.KUBE_EXTERNAL_SERVICES,
        c.KUBE_FORWARD,
        c.KUBE_NODEPORTS,
        c.KUBE_PROXY_FIREWALL,
    ):
        t.declare("filter", name)
    for name in (c.KUBE_SERVICES, c.KUBE_NODEPORTS, c.KUBE_POSTROUTING, c.KUBE_MARK_MASQ):
        t.declare("nat", name)
    _render_static_rules(t, opts)
    for port in state.services:
        _render_service_port(t, plan_service_port(port, state.endpoints_of(port.name)), opts)
    for destination in _nodeport_destinations(opts):
        t.add("nat", c.KUBE_SERVICES, f"{destination} -j {c.KUBE_NODEPORTS}")
    return Ruleset(
        tables=(
            Table(
                "filter",
                (
                    *_with_firewall_jumps(shared_rules.jump_chains(_FILTER_JUMPS), opts),
                    *_chains(t.filter),
                    *_firewall_chains(opts),
                ),
            ),
            Table("nat", (*shared_rules.jump_chains(shared_rules.NAT_JUMPS), *_chains(t.nat))),
        )
    )


def _chains(rules: dict[str, list[str]]) -> tuple[Chain, ...]:
    return tuple(Chain(name, tuple(chain_rules)) for name, chain_rules in rules.items())
