"""The whole desired iptables state: fixed chains, every Service port's rules, our jumps.

Pure, apart from a cache: `Renderer` keeps each Service port's rendered rules between syncs and
renders again only the ports whose Service changed (or whose port or endpoints differ), so a
sync at 10 000 Services renders what changed and joins cached text for the rest.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable, Mapping

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables import shared_rules
from pykubeproxy.backends.iptables.render import (
    NODEPORTS_COMMENT,
    PortRules,
    RenderOptions,
    render_port,
)
from pykubeproxy.backends.iptables.ruleset import Ruleset
from pykubeproxy.backends.iptables.shared_rules import comment as _comment
from pykubeproxy.backends.iptables.tables import Body, Tables, TableState, make_body
from pykubeproxy.model import Endpoint, ProxyState, ServiceName, ServicePort, ServicePortName

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
# The chains every Service shares, in the order a kube-proxy node lists them.
FILTER_CHAINS = (
    c.KUBE_SERVICES,
    c.KUBE_EXTERNAL_SERVICES,
    c.KUBE_FORWARD,
    c.KUBE_NODEPORTS,
    c.KUBE_PROXY_FIREWALL,
)
NAT_CHAINS = (c.KUBE_SERVICES, c.KUBE_NODEPORTS, c.KUBE_POSTROUTING, c.KUBE_MARK_MASQ)
NAT = "nat"
LOCALNET_COMMENT = "block incoming localnet connections"
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def _host(ip: str) -> str:
    return ip if "/" in ip else f"{ip}/32"


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


def _localnet_nodeports(opts: RenderOptions) -> bool:
    """Whether NodePorts answer on 127.0.0.1 (so route_localnet is on and must be guarded)."""
    if not opts.localhost_nodeports:
        return False
    nets = [ipaddress.ip_network(cidr, strict=False) for cidr in opts.nodeport_addresses]
    return not nets or any(net.overlaps(_LOOPBACK) for net in nets)


def _filter_jumps(opts: RenderOptions) -> dict[str, tuple[str, ...]]:
    """Our jumps in filter's built-in chains; KUBE-FIREWALL's (route_localnet's guard,
    CVE-2020-8558) sit above the others in INPUT and OUTPUT, as on a kube-proxy node."""
    jumps = {ch.name: ch.rules for ch in shared_rules.jump_chains(_FILTER_JUMPS)}
    if _localnet_nodeports(opts):
        for name in ("INPUT", "OUTPUT"):
            jumps[name] = (f"-j {c.KUBE_FIREWALL}", *jumps[name])
    return jumps


def _fixed_rules(opts: RenderOptions) -> dict[tuple[str, str], list[str]]:
    """The rules of the shared chains that do not depend on any Service."""
    return {
        ("filter", c.KUBE_FORWARD): list(shared_rules.forward_rules(opts.mark)),
        ("nat", c.KUBE_POSTROUTING): list(shared_rules.postrouting_rules(opts.mark)),
        ("nat", c.KUBE_MARK_MASQ): list(shared_rules.mark_masq_rules(opts.mark)),
    }


def assemble(ports: Iterable[PortRules], opts: RenderOptions) -> Tables:
    """The filter and nat tables from the fixed chains and the ports' rules, in port order."""
    fixed = _fixed_rules(opts)
    shared: dict[tuple[str, str], list[str]] = {
        **{("filter", name): [] for name in FILTER_CHAINS},
        **{("nat", name): [] for name in NAT_CHAINS},
    }
    for key, rules in fixed.items():
        shared[key].append(make_body(key[1], rules))
    own: dict[str, Body] = {}
    own_rules = 0
    for port in ports:
        for table, chain, lines in port.shared:
            shared[(table, chain)].append(lines)
        own.update(port.chains)
        own_rules += port.rules
    nodeports = [f"{d} -j {c.KUBE_NODEPORTS}" for d in _nodeport_destinations(opts)]
    shared[("nat", c.KUBE_SERVICES)].append(make_body(c.KUBE_SERVICES, nodeports))
    filter_chains = {name: "".join(shared[("filter", name)]) for name in FILTER_CHAINS}
    if _localnet_nodeports(opts):
        drop = (
            f"! -s 127.0.0.0/8 -d 127.0.0.0/8 {_comment(LOCALNET_COMMENT)} "
            "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        )
        filter_chains[c.KUBE_FIREWALL] = make_body(c.KUBE_FIREWALL, [drop])
    nat_chains: dict[str, Body] = {name: "".join(shared[("nat", name)]) for name in NAT_CHAINS}
    shared_rules_count = sum(str(body).count("\n") for body in nat_chains.values())
    nat_chains.update(own)
    nat_jumps = {ch.name: ch.rules for ch in shared_rules.jump_chains(shared_rules.NAT_JUMPS)}
    return Tables(
        (
            TableState("filter", _filter_jumps(opts), filter_chains),
            TableState("nat", nat_jumps, nat_chains, shared_rules_count + own_rules),
        )
    )


_Key = tuple[ServicePort, tuple[Endpoint, ...]]
# Called with a port's rules as they are known, and a way to render them in full again.
PortHook = Callable[[PortRules, Callable[[], PortRules]], None]


def _again(
    port: ServicePort, endpoints: tuple[Endpoint, ...], opts: RenderOptions
) -> Callable[[], PortRules]:
    return lambda: render_port(port, endpoints, opts)


class Renderer:
    """Renders a ProxyState, reusing each Service port's rules while its inputs stay the same.

    `changed` (the Services changed since the last sync) lets it skip even the comparison for
    the others; without it every port's inputs are compared with the cached ones. Options
    that differ from the last render's (the node's addresses, say) drop the whole cache.
    """

    def __init__(self) -> None:
        self._ports: dict[ServicePortName, tuple[_Key, PortRules]] = {}
        self._options: RenderOptions | None = None
        self._fresh: set[ServicePortName] = set()  # rendered since the last `compact`
        self._tables: Tables | None = None  # the last result
        self.rendered = 0  # ports rendered by the last call (the rest came from the cache)

    def render(
        self,
        state: ProxyState,
        opts: RenderOptions,
        changed: Collection[ServiceName] | None = None,
        *,
        on_port: PortHook | None = None,
    ) -> Tables:
        """The desired tables; `on_port` sees each port's rules as soon as they are known,
        with a way to render them again in full (a cached port may keep only digests).

        With `changed`, the result is the last one patched where ports changed, and says
        which chains it touched (the only ones that can differ from the last result)."""
        if opts != self._options:
            self._ports, self._options, changed, self._fresh = {}, opts, None, set()
        previous, cache, fresh = self._ports, self._ports, {}
        self.rendered = 0
        endpoints: Mapping[ServicePortName, tuple[Endpoint, ...]] = state.endpoints
        for port in state.services:
            name = port.name
            entry = cache.get(name)
            if entry is not None and changed is not None and name.service not in changed:
                fresh[name] = entry
                if on_port is not None:
                    on_port(entry[1], _again(port, endpoints.get(name, ()), opts))
                continue
            key = (port, endpoints.get(name, ()))
            if entry is None or entry[0] != key:
                entry = (key, render_port(port, key[1], opts))
                self.rendered += 1
                self._fresh.add(name)
            fresh[name] = entry
            if on_port is not None:
                on_port(entry[1], _again(port, key[1], opts))
        self._ports = fresh
        if changed is None or self._tables is None:
            self._tables = assemble((entry[1] for entry in fresh.values()), opts)
        else:
            self._tables = _patched(self._tables, previous, fresh, opts)
        return self._tables

    def compact(self) -> None:
        """Once written: keep digests of the ports' own chains instead of their text."""
        ports = self._ports
        names: list[str] = []
        for name in self._fresh:
            if (entry := ports.get(name)) is not None:
                ports[name] = (entry[0], entry[1].compact())
                names.extend(chain for chain, _ in entry[1].chains)
        self._fresh = set()
        if self._tables is not None and names:
            self._tables = self._tables.digested(NAT, names)


def _patched(
    last: Tables,
    old: Mapping[ServicePortName, tuple[_Key, PortRules]],
    new: Mapping[ServicePortName, tuple[_Key, PortRules]],
    opts: RenderOptions,
) -> Tables:
    """`last` with the ports that changed between `old` and `new` put right, and marked."""
    moved = [n for n, (_, rules) in new.items() if n not in old or old[n][1] is not rules]
    moved += [n for n in old if n not in new]
    if not moved:
        return Tables(tuple(table.touching(()) for table in last))
    nat, filter_ = last.get(NAT), last.get("filter")
    assert nat is not None and filter_ is not None
    chains = dict(nat.chains)
    touched: set[str] = set()
    rules = nat.rule_count
    shared_changed = False
    for name in moved:
        before, after = old.get(name), new.get(name)
        if before is not None:
            for chain, _ in before[1].chains:
                chains.pop(chain, None)
                touched.add(chain)
            rules -= before[1].rules
        if after is not None:
            chains.update(after[1].chains)
            touched.update(chain for chain, _ in after[1].chains)
            rules += after[1].rules
        shared_changed |= (before[1].shared if before else ()) != (after[1].shared if after else ())
    if not shared_changed:
        return Tables(
            (filter_.touching(()), TableState(NAT, nat.builtins, chains, rules, frozenset(touched)))
        )
    fresh = assemble((entry[1] for entry in new.values()), opts)
    fresh_nat, fresh_filter = fresh.get(NAT), fresh.get("filter")
    assert fresh_nat is not None and fresh_filter is not None
    for chain in NAT_CHAINS:
        chains[chain] = fresh_nat.chains[chain]
    touched.update(NAT_CHAINS)
    return Tables(
        (
            fresh_filter.touching(FILTER_CHAINS),
            TableState(NAT, nat.builtins, chains, fresh_nat.rule_count, frozenset(touched)),
        )
    )


def fixed_tables(opts: RenderOptions) -> Tables:
    """The tables with no Service at all: the shared chains' fixed rules, our jumps."""
    return assemble((), opts)


def render_tables(state: ProxyState, opts: RenderOptions) -> Tables:
    """The desired tables for a state, rendered from scratch."""
    return assemble(
        (render_port(p, state.endpoints_of(p.name), opts) for p in state.services), opts
    )


def render_ruleset(state: ProxyState, opts: RenderOptions) -> Ruleset:
    """The complete desired filter and nat tables for this node, rule by rule."""
    return render_tables(state, opts).ruleset()
