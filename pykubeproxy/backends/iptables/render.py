"""One Service port's iptables rules, with kube-proxy's chains, rules and comments.

Pure: no I/O, deterministic. Rules are written in iptables-save's canonical form (see ruleset.py),
one rendering function per chain kind, following kube-proxy's iptables proxier rule for rule.
Each port renders on its own (`render_port`), so that a sync re-renders only the ports that
changed; `assemble.py` puts the ports and the fixed chains together.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables.ruleset import escape, spec
from pykubeproxy.backends.iptables.shared_rules import comment as _comment
from pykubeproxy.backends.iptables.tables import Body, digest, make_body
from pykubeproxy.model import Endpoint, ServicePort
from pykubeproxy.selection import EndpointSelection, Place, categorize_endpoints

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
    # This node's name and zone, for topology hints (a new zone label re-renders every port).
    place: Place = field(default_factory=Place)

    @property
    def mark(self) -> str:
        return hex(1 << self.masquerade_bit)


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


def _pick(remaining: int) -> str | None:
    """The random pick of endpoint i of n, with n - i endpoints left (the last one: none)."""
    if remaining <= 1:
        return None
    return f"-m statistic --mode random --probability {probability(remaining)}"


_PICK = tuple(_pick(n) for n in range(64))


class _PortTables:
    """One Service port's rules as they are collected: its own nat chains (first-touch order)
    and its lines in the chains every Service shares (KUBE-SERVICES, KUBE-NODEPORTS, ...)."""

    __slots__ = ("own", "shared")

    def __init__(self) -> None:
        self.own: dict[str, list[str]] = {}
        self.shared: dict[tuple[str, str], list[str]] = {}

    def add(self, chain: str, rule: str) -> None:
        """A rule in one of this port's own (nat) chains."""
        lines = self.own.get(chain)
        if lines is None:
            self.own[chain] = [f"-A {chain} {rule}\n"]
        else:
            lines.append(f"-A {chain} {rule}\n")

    def add_lines(self, chain: str, lines: str) -> None:
        """Restore lines (`-A chain ...\n` each) for one of this port's own chains."""
        self.own.setdefault(chain, []).append(lines)

    def declare(self, chain: str) -> None:
        self.own.setdefault(chain, [])

    def share(self, table: str, chain: str, rule: str) -> None:
        """A rule this port adds to a chain every Service shares."""
        self.shared.setdefault((table, chain), []).append(rule)

    def rules(self) -> PortRules:
        chains = tuple((name, "".join(lines)) for name, lines in self.own.items())
        return PortRules(
            chains=chains,
            shared=tuple(
                (table, chain, make_body(chain, rules))
                for (table, chain), rules in self.shared.items()
            ),
            rules=sum(body.count("\n") for _, body in chains),
        )


@dataclass(frozen=True, slots=True)
class PortRules:
    """What one Service port renders to: its own nat chains with their bodies, in order, and
    its lines in the shared chains as (table, chain, lines). Cached per port between syncs,
    `compact` once written: then its own chains keep only digests (the text is 80 % of what a
    10 000-Service cache holds, and a port that changes is rendered again anyway)."""

    chains: tuple[tuple[str, Body], ...]
    shared: tuple[tuple[str, str, str], ...]
    rules: int  # in its own chains

    def compact(self) -> PortRules:
        chains = tuple((name, digest(body)) for name, body in self.chains)
        return PortRules(chains, self.shared, self.rules)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Which chains one Service port uses, as decided by kube-proxy's traffic policy logic."""

    port: ServicePort
    selection: EndpointSelection
    name: str  # ns/svc:port, as comments say it
    comment: str  # `-m comment --comment ns/svc:port`, quoted as iptables-save quotes it
    quoted_name: str  # the name escaped for a double-quoted comment
    proto: str
    svc_chain: str
    svl_chain: str
    ext_chain: str
    fw_chain: str
    internal_chain: str
    external_policy_chain: str
    has_internal: bool
    has_external: bool
    uses_ext_chain: bool
    uses_fw_chain: bool
    endpoint_chains: dict[Endpoint, str]

    @property
    def lb_chain(self) -> str:
        return self.fw_chain if self.uses_fw_chain else self.ext_chain

    @property
    def filter_verdict(self) -> tuple[str, str]:
        """Target and comment for filter rules catching traffic that has no endpoint to go to."""
        if not self.selection.has_any:
            return "REJECT --reject-with icmp-port-unreachable", f"{self.name} has no endpoints"
        return "DROP", f"{self.name} has no local endpoints"


def plan_service_port(
    port: ServicePort, endpoints: Sequence[Endpoint], *, place: Place | None = None
) -> _Plan:
    selection = categorize_endpoints(port, endpoints, place=place)
    name = str(port.name)
    suffix = c.port_proto_hash(port.name)
    cluster_chain, local_chain = "KUBE-SVC-" + suffix, "KUBE-SVL-" + suffix
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
        name=name,
        comment=_comment(name),
        quoted_name=escape(name),
        proto=port.name.protocol.lower(),
        svc_chain=cluster_chain,
        svl_chain=local_chain,
        ext_chain="KUBE-EXT-" + suffix,
        fw_chain="KUBE-FW-" + suffix,
        internal_chain=internal_chain,
        external_policy_chain=external_chain,
        has_internal=has_internal,
        has_external=has_external,
        uses_ext_chain=has_any and port.externally_accessible,
        uses_fw_chain=has_any
        and bool(port.load_balancer_ips)
        and bool(port.load_balancer_source_ranges),
        endpoint_chains={ep: c.endpoint_chain(port.name, ep) for ep in selection.reachable},
    )


def _render_capture_rules(t: _PortTables, p: _Plan) -> None:
    """KUBE-SERVICES / KUBE-NODEPORTS entries, and filter rules for traffic with nowhere to go."""
    port, proto, verdict = p.port, p.proto, p.filter_verdict
    if p.has_internal:
        rule = _match(f"{p.name} cluster IP", proto, dst=port.cluster_ip, dport=port.port)
        t.share("nat", c.KUBE_SERVICES, f"{rule} -j {p.internal_chain}")
    else:
        rule = _match(verdict[1], proto, dst=port.cluster_ip, dport=port.port)
        t.share("filter", c.KUBE_SERVICES, f"{rule} -j {verdict[0]}")
    for ip in port.external_ips:
        if p.selection.has_any:
            rule = _match(f"{p.name} external IP", proto, dst=ip, dport=port.port)
            t.share("nat", c.KUBE_SERVICES, f"{rule} -j {p.ext_chain}")
        if not p.has_external:
            rule = _match(verdict[1], proto, dst=ip, dport=port.port)
            t.share("filter", c.KUBE_EXTERNAL_SERVICES, f"{rule} -j {verdict[0]}")
    for ip in port.load_balancer_ips:
        if p.selection.has_any:
            rule = _match(f"{p.name} loadbalancer IP", proto, dst=ip, dport=port.port)
            t.share("nat", c.KUBE_SERVICES, f"{rule} -j {p.lb_chain}")
        if p.uses_fw_chain:
            text = f"{p.name} traffic not accepted by {p.fw_chain}"
            rule = _match(text, proto, dst=ip, dport=port.port)
            t.share("filter", c.KUBE_PROXY_FIREWALL, f"{rule} -j DROP")
    if not p.has_external:
        for ip in port.load_balancer_ips:
            rule = _match(verdict[1], proto, dst=ip, dport=port.port)
            t.share("filter", c.KUBE_EXTERNAL_SERVICES, f"{rule} -j {verdict[0]}")
    _render_node_port_rules(t, p)


def _render_node_port_rules(t: _PortTables, p: _Plan) -> None:
    port, proto, verdict = p.port, p.proto, p.filter_verdict
    if port.node_port:
        if p.selection.has_any:
            rule = _match(p.name, proto, dport=port.node_port)
            t.share("nat", c.KUBE_NODEPORTS, f"{rule} -j {p.ext_chain}")
        if not p.has_external:
            local = "-m addrtype --dst-type LOCAL"
            rule = _match(verdict[1], proto, dport=port.node_port, before_port=local)
            t.share("filter", c.KUBE_EXTERNAL_SERVICES, f"{rule} -j {verdict[0]}")
    if port.health_check_node_port:
        text = f"{p.name} health check node port"
        rule = _match(text, "tcp", dport=port.health_check_node_port)
        t.share("filter", c.KUBE_NODEPORTS, f"{rule} -j ACCEPT")


def _render_cluster_masquerade(t: _PortTables, p: _Plan, opts: RenderOptions) -> None:
    """Traffic to the cluster IP from outside the pod network is masqueraded (off-node hops)."""
    if not p.has_internal:
        return
    source = None
    if not opts.masquerade_all:
        if not opts.cluster_cidr:
            return  # kube-proxy cannot tell pod traffic apart without --cluster-cidr
        source = f"! -s {opts.cluster_cidr}"
    rule = _match(f"{p.name} cluster IP", p.proto, dst=p.port.cluster_ip, dport=p.port.port)
    t.add(p.internal_chain, f"{spec(source, rule)} -j {c.KUBE_MARK_MASQ}")


def _render_external_chain(t: _PortTables, p: _Plan, opts: RenderOptions) -> None:
    """KUBE-EXT-*: masquerade (Cluster policy) or keep the client IP (Local policy)."""
    if not p.uses_ext_chain:
        return
    chain = p.ext_chain
    t.declare(chain)
    cluster_chain = p.svc_chain
    if not p.port.external_policy_local:
        text = f"masquerade traffic for {p.name} external destinations"
        t.add(chain, f"{_comment(text)} -j {c.KUBE_MARK_MASQ}")
    else:
        if opts.cluster_cidr:
            # Pods reaching an external address behave as if they went out and came back.
            text = f"pod traffic for {p.name} external destinations"
            t.add(chain, f"-s {opts.cluster_cidr} {_comment(text)} -j {cluster_chain}")
        local = "-m addrtype --src-type LOCAL"
        text = f"masquerade LOCAL traffic for {p.name} external destinations"
        t.add(chain, f"{_comment(text)} {local} -j {c.KUBE_MARK_MASQ}")
        text = f"route LOCAL traffic for {p.name} external destinations"
        t.add(chain, f"{_comment(text)} {local} -j {cluster_chain}")
    if p.has_external:
        t.add(chain, f"-j {p.external_policy_chain}")


def _render_firewall_chain(t: _PortTables, p: _Plan, opts: RenderOptions) -> None:
    """KUBE-FW-*: only loadBalancerSourceRanges may reach the external chain."""
    if not p.uses_fw_chain:
        return
    chain = p.fw_chain
    t.declare(chain)
    comment = _comment(f"{p.name} loadbalancer IP")
    allow_from_node = False
    for cidr in p.port.load_balancer_source_ranges:
        net = ipaddress.ip_network(cidr)
        # iptables-save leaves out a match-anything source, so we do too.
        source = f"-s {cidr}" if net.prefixlen else None
        t.add(chain, f"{spec(source, comment)} -j {p.ext_chain}")
        allow_from_node |= any(ipaddress.ip_address(ip) in net for ip in opts.node_ips)
    if allow_from_node:
        # A node reaching its own load balancer IP loops back with that IP as its source.
        for ip in p.port.load_balancer_ips:
            t.add(chain, f"-s {_host(ip)} {comment} -j {p.ext_chain}")
    text = f"other traffic to {p.name} will be dropped by KUBE-PROXY-FIREWALL"
    t.add(chain, _comment(text))


def _render_balancing_chain(
    t: _PortTables, p: _Plan, chain: str, endpoints: Sequence[Endpoint]
) -> None:
    """KUBE-SVC-* / KUBE-SVL-*: affinity, then a random pick among the endpoints."""
    t.declare(chain)
    # The comment of each endpoint's rules, `"ns/svc:port -> ip:port"`, quoted as save does.
    comment = f'-m comment --comment "{p.quoted_name} -> '
    seps = p.endpoint_chains
    lines = []
    if p.port.affinity_timeout is not None:
        recent = f"-m recent --rcheck --seconds {p.port.affinity_timeout} --reap --name"
        for ep in endpoints:
            sep = seps[ep]
            lines.append(
                f'-A {chain} {comment}{ep.ip}:{ep.port}" {recent} {sep} '
                f"--mask 255.255.255.255 --rsource -j {sep}\n"
            )
    count = len(endpoints)
    for index, ep in enumerate(endpoints):
        remaining = count - index
        pick = _PICK[remaining] if remaining < len(_PICK) else _pick(remaining)
        pick = f" {pick}" if pick else ""
        lines.append(f'-A {chain} {comment}{ep.ip}:{ep.port}"{pick} -j {seps[ep]}\n')
    t.add_lines(chain, "".join(lines))


def _render_endpoint_chain(t: _PortTables, p: _Plan, ep: Endpoint) -> None:
    """KUBE-SEP-*: hairpin masquerade, then DNAT to the endpoint."""
    chain = p.endpoint_chains[ep]
    comment, proto = p.comment, p.proto
    affinity = ""
    if p.port.affinity_timeout is not None:
        affinity = f" -m recent --set --name {chain} --mask 255.255.255.255 --rsource"
    t.add_lines(
        chain,
        f"-A {chain} -s {_host(ep.ip)} {comment} -j {c.KUBE_MARK_MASQ}\n"
        f"-A {chain} -p {proto} {comment}{affinity} -m {proto} "
        f"-j DNAT --to-destination {ep.ip}:{ep.port}\n",
    )


def _render_service_port(t: _PortTables, p: _Plan, opts: RenderOptions) -> None:
    _render_capture_rules(t, p)
    _render_external_chain(t, p, opts)
    _render_firewall_chain(t, p, opts)
    policies = ((p.svc_chain, p.selection.cluster), (p.svl_chain, p.selection.local))
    for chain, endpoints in policies:
        if not endpoints:
            continue
        if p.internal_chain == chain:
            _render_cluster_masquerade(t, p, opts)
        _render_balancing_chain(t, p, chain, endpoints)
    for ep in p.selection.reachable:
        _render_endpoint_chain(t, p, ep)


def render_port(port: ServicePort, endpoints: Sequence[Endpoint], opts: RenderOptions) -> PortRules:
    """Every rule one Service port contributes, given its endpoints."""
    t = _PortTables()
    _render_service_port(t, plan_service_port(port, endpoints, place=opts.place), opts)
    return t.rules()
