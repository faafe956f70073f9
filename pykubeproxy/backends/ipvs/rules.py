"""The iptables rules IPVS mode still needs, one function per chain, as kube-proxy's IPVS proxier.

Pure. There are no per-Service chains: a few fixed rules match the plan's ipsets to mark traffic
for masquerade, send NodePorts and load balancers their way, and filter. Rules are written in
iptables-save's canonical form (see iptables/ruleset.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables import shared_rules
from pykubeproxy.backends.iptables.ruleset import Chain, Ruleset, Table
from pykubeproxy.backends.iptables.shared_rules import Jump, comment
from pykubeproxy.backends.ipvs.model import IpvsPlan
from pykubeproxy.backends.ipvs.plan import IpvsOptions, plan_ipvs
from pykubeproxy.model import ProxyState

_NEW_ONLY = "-m conntrack --ctstate NEW"
_FILTER_JUMPS: dict[str, tuple[Jump, ...]] = {
    "INPUT": (
        (c.KUBE_PROXY_FIREWALL, "kube-proxy firewall rules", True),
        (c.KUBE_NODE_PORT, "kubernetes health check rules", False),
        (c.KUBE_IPVS_FILTER, "kubernetes ipvs access filter", False),
    ),
    "FORWARD": (
        (c.KUBE_PROXY_FIREWALL, "kube-proxy firewall rules", True),
        (c.KUBE_FORWARD, "kubernetes forwarding rules", False),
    ),
    "OUTPUT": ((c.KUBE_PROXY_FIREWALL, "kube-proxy firewall rules", True),),
}


@dataclass(frozen=True, slots=True)
class _Sets:
    """Matches on the plan's ipsets; a rule's comment is its set's, as kube-proxy writes it."""

    comments: Mapping[str, str]

    @staticmethod
    def match(name: str, flags: str) -> str:
        return f"-m set --match-set {name} {flags}"

    def commented(self, name: str, flags: str) -> str:
        return f"{comment(self.comments[name])} {self.match(name, flags)}"


# --- nat ---------------------------------------------------------------------------------------


def _cluster_ip_masquerade(opts: IpvsOptions, sets: _Sets) -> str:
    """Which traffic to a cluster IP is masqueraded: all, from outside the pods, or hairpin."""
    mark_masq = f"-j {c.KUBE_MARK_MASQ}"
    to_cluster_ip = sets.commented("KUBE-CLUSTER-IP", "dst,dst")
    if opts.masquerade_all:
        return f"{to_cluster_ip} {mark_masq}"
    if opts.cluster_cidr:
        return f"! -s {opts.cluster_cidr} {to_cluster_ip} {mark_masq}"
    # As kube-proxy without a cluster CIDR: the node's own connections to a cluster IP take
    # that VIP (bound to kube-ipvs0) as their source; unmasqueraded, a pod on another node
    # answers a VIP that node also holds, and the reply never comes back.
    return f"{sets.commented('KUBE-CLUSTER-IP', 'src,dst')} {mark_masq}"


def _services_chain(opts: IpvsOptions, sets: _Sets) -> Chain:
    """KUBE-SERVICES: masquerade marks, then load balancers and NodePorts to their chains."""
    return Chain(
        c.KUBE_SERVICES,
        (
            _cluster_ip_masquerade(opts, sets),
            f"{sets.commented('KUBE-LOAD-BALANCER', 'dst,dst')} -j {c.KUBE_LOAD_BALANCER}",
            f"{sets.commented('KUBE-EXTERNAL-IP', 'dst,dst')} -j {c.KUBE_MARK_MASQ}",
            f"-m addrtype --dst-type LOCAL -j {c.KUBE_NODE_PORT}",
            f"{sets.match('KUBE-CLUSTER-IP', 'dst,dst')} -j ACCEPT",
            f"{sets.match('KUBE-LOAD-BALANCER', 'dst,dst')} -j ACCEPT",
        ),
    )


def _load_balancer_chain(sets: _Sets) -> Chain:
    """KUBE-LOAD-BALANCER: masquerade, except for Services with externalTrafficPolicy Local."""
    return Chain(
        c.KUBE_LOAD_BALANCER,
        (
            f"{sets.commented('KUBE-LOAD-BALANCER-LOCAL', 'dst,dst')} -j RETURN",
            f"-j {c.KUBE_MARK_MASQ}",
        ),
    )


def _node_port_nat_chain(sets: _Sets) -> Chain:
    """nat KUBE-NODE-PORT: masquerade NodePort traffic, except for Local policy NodePorts."""
    rules = []
    for proto in ("tcp", "udp"):
        local, every = f"KUBE-NODE-PORT-LOCAL-{proto.upper()}", f"KUBE-NODE-PORT-{proto.upper()}"
        rules += [
            f"-p {proto} {sets.commented(local, 'dst')} -j RETURN",
            f"-p {proto} {sets.commented(every, 'dst')} -j {c.KUBE_MARK_MASQ}",
        ]
    # SCTP NodePorts are kept as address,port pairs (hash:ip,port), not in a bitmap.
    local, every = "KUBE-NODE-PORT-LOCAL-SCTP-HASH", "KUBE-NODE-PORT-SCTP-HASH"
    rules += [
        f"-p sctp {sets.commented(local, 'dst,dst')} -j RETURN",
        f"-p sctp {sets.commented(every, 'dst,dst')} -j {c.KUBE_MARK_MASQ}",
    ]
    return Chain(c.KUBE_NODE_PORT, tuple(rules))


def _postrouting_chain(opts: IpvsOptions, sets: _Sets) -> Chain:
    """KUBE-POSTROUTING: hairpin (a pod reaching itself) first, then the shared masquerade."""
    hairpin = f"{sets.commented('KUBE-LOOP-BACK', 'dst,dst,src')} -j MASQUERADE"
    return Chain(c.KUBE_POSTROUTING, (hairpin, *shared_rules.postrouting_rules(opts.mark)))


def _nat_chains(opts: IpvsOptions, sets: _Sets) -> tuple[Chain, ...]:
    return (
        *shared_rules.jump_chains(shared_rules.NAT_JUMPS),
        _services_chain(opts, sets),
        _load_balancer_chain(sets),
        _node_port_nat_chain(sets),
        _postrouting_chain(opts, sets),
        Chain(c.KUBE_MARK_MASQ, shared_rules.mark_masq_rules(opts.mark)),
    )


# --- filter ------------------------------------------------------------------------------------


def _node_port_filter_chain(sets: _Sets) -> Chain:
    """filter KUBE-NODE-PORT: accept healthCheckNodePorts."""
    health = f"{sets.commented('KUBE-HEALTH-CHECK-NODE-PORT', 'dst')} -j ACCEPT"
    return Chain(c.KUBE_NODE_PORT, (health,))


def _proxy_firewall_chain(sets: _Sets) -> Chain:
    """KUBE-PROXY-FIREWALL: load balancers with source ranges go through the range check."""
    check = f"{sets.commented('KUBE-LOAD-BALANCER-FW', 'dst,dst')}"
    return Chain(c.KUBE_PROXY_FIREWALL, (f"{check} -j {c.KUBE_SOURCE_RANGES_FIREWALL}",))


def _source_ranges_chain(sets: _Sets) -> Chain:
    """KUBE-SOURCE-RANGES-FIREWALL: allowed sources (and the node itself) pass, others drop."""
    return Chain(
        c.KUBE_SOURCE_RANGES_FIREWALL,
        (
            f"{sets.match('KUBE-LOAD-BALANCER-SOURCE-CIDR', 'dst,dst,src')} -j RETURN",
            f"{sets.match('KUBE-LOAD-BALANCER-SOURCE-IP', 'dst,dst,src')} -j RETURN",
            "-j DROP",
        ),
    )


def _ipvs_filter_chain(sets: _Sets) -> Chain:
    """KUBE-IPVS-FILTER: Service ports on IPVS addresses pass; the rest of those is refused."""
    services = (
        "KUBE-LOAD-BALANCER",
        "KUBE-CLUSTER-IP",
        "KUBE-EXTERNAL-IP",
        "KUBE-EXTERNAL-IP-LOCAL",
    )
    return Chain(
        c.KUBE_IPVS_FILTER,
        (
            *(f"{sets.match(name, 'dst,dst')} -j RETURN" for name in services),
            f"{sets.match('KUBE-HEALTH-CHECK-NODE-PORT', 'dst')} -j RETURN",
            # Anything else sent to an address only bound for IPVS is no Service port.
            f"{_NEW_ONLY} {sets.match('KUBE-IPVS-IPS', 'dst')} "
            "-j REJECT --reject-with icmp-port-unreachable",
        ),
    )


def _filter_chains(opts: IpvsOptions, sets: _Sets) -> tuple[Chain, ...]:
    return (
        *shared_rules.jump_chains(_FILTER_JUMPS),
        Chain(c.KUBE_FORWARD, shared_rules.forward_rules(opts.mark)),
        _node_port_filter_chain(sets),
        _proxy_firewall_chain(sets),
        _source_ranges_chain(sets),
        _ipvs_filter_chain(sets),
    )


def render_ipvs_ruleset(plan: IpvsPlan, opts: IpvsOptions) -> Ruleset:
    """The iptables rules IPVS mode needs: masquerade, NodePort marking and filtering."""
    sets = _Sets({s.name: s.comment for s in plan.ipsets})
    return Ruleset(
        (Table("filter", _filter_chains(opts, sets)), Table("nat", _nat_chains(opts, sets)))
    )


def render_ipvs_state(state: ProxyState, opts: IpvsOptions) -> Ruleset:
    """The IPVS-mode iptables rules for a state (the iptables syncer's renderer in IPVS mode)."""
    return render_ipvs_ruleset(plan_ipvs(state, opts), opts)
