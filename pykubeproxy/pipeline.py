"""From a snapshot of API objects to the desired ruleset: one path for dry-run and the kernel."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from pykubeproxy.backends.iptables.render import RenderOptions, render_ruleset
from pykubeproxy.backends.iptables.ruleset import Ruleset
from pykubeproxy.backends.ipvs.model import DEFAULT_SCHEDULER
from pykubeproxy.backends.ipvs.plan import IpvsOptions
from pykubeproxy.backends.ipvs.rules import render_ipvs_state
from pykubeproxy.config import Config
from pykubeproxy.model import Node, ProxyState
from pykubeproxy.store import Snapshot
from pykubeproxy.translate import InvalidObject, translate_cluster, translate_node

FAMILY = 4  # this release programs IPv4 only


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Who this node is: its name, how it was chosen, and addresses given on the command line."""

    name: str
    explicit: bool  # from --hostname-override or NODE_NAME, not just the machine's hostname
    ips: tuple[str, ...] = ()


def node_identity(config: Config, node_ips: tuple[str, ...] = ()) -> NodeIdentity:
    """--hostname-override, else NODE_NAME, else the hostname (lowercased, as kubelet does)."""
    if config.hostname_override:
        return NodeIdentity(config.hostname_override.strip().lower(), True, node_ips)
    if env_name := os.environ.get("NODE_NAME", "").strip():
        return NodeIdentity(env_name.lower(), True, node_ips)
    return NodeIdentity(socket.gethostname().lower(), False, node_ips)


@dataclass(frozen=True, slots=True)
class Desired:
    state: ProxyState
    options: RenderOptions | IpvsOptions  # the proxy mode's own
    note: str  # how the node was found, for the log

    def ruleset(self) -> Ruleset:
        """Render the iptables rules of this state in the proxy mode in use (not cached)."""
        if isinstance(self.options, IpvsOptions):
            return render_ipvs_state(self.state, self.options)
        return render_ruleset(self.state, self.options)


def resolve_node(
    identity: NodeIdentity, nodes: tuple[Mapping[str, object], ...]
) -> tuple[Node, str]:
    """This node from the Node objects, and a note saying how it was found."""
    parsed = []
    for obj in nodes:
        try:
            parsed.append(translate_node(obj, family=FAMILY))
        except InvalidObject:
            continue
    match = next((n for n in parsed if n.name == identity.name), None)
    note = f"node {identity.name}"
    if match is None and not identity.explicit and len(parsed) == 1:
        # A manifest directory describing one node is that node: makes --dry-run on a laptop useful.
        match = parsed[0]
        note = f"node {match.name} (the only Node in the manifests; hostname is {identity.name})"
    node = match or Node(name=identity.name)
    if identity.ips:
        node = Node(name=node.name, ips=identity.ips, labels=node.labels)
    elif match is None:
        note = f"node {identity.name} (no Node object found: node IPs unknown)"
    return node, note


def ipvs_options(config: Config, node: Node) -> IpvsOptions:
    """IPVS mode's options: NodePort virtual servers go on the node addresses selected."""
    cidrs = render_options(config, node).nodeport_addresses
    nets = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]
    node_ips = tuple(
        ip for ip in node.ips if not nets or any(ipaddress.ip_address(ip) in n for n in nets)
    )
    return IpvsOptions(
        scheduler=config.ipvs_scheduler or DEFAULT_SCHEDULER,
        masquerade_bit=config.masquerade_bit,
        masquerade_all=config.masquerade_all,
        cluster_cidr=config.cluster_cidr_of(FAMILY),
        node_ips=node_ips,
    )


def render_options(config: Config, node: Node) -> RenderOptions:
    nodeport_cidrs = []
    for entry in config.nodeport_addresses:
        if entry == "primary":
            nodeport_cidrs.extend(f"{ip}/32" for ip in node.ips[:1])
        elif ipaddress.ip_network(entry, strict=False).version == FAMILY:
            nodeport_cidrs.append(entry)
    return RenderOptions(
        masquerade_bit=config.masquerade_bit,
        masquerade_all=config.masquerade_all,
        cluster_cidr=config.cluster_cidr_of(FAMILY),
        nodeport_addresses=tuple(nodeport_cidrs),
        localhost_nodeports=config.localhost_nodeports,
        node_ips=node.ips,
    )


def desired_state(snapshot: Snapshot, config: Config, identity: NodeIdentity) -> Desired:
    """What this node must program for a snapshot, and the options to render it with."""
    node, note = resolve_node(identity, snapshot.nodes)
    state = translate_cluster(
        services=snapshot.services,
        endpoint_slices=snapshot.endpoint_slices,
        node=node,
        family=FAMILY,
    )
    options: RenderOptions | IpvsOptions = (
        ipvs_options(config, node) if config.mode == "ipvs" else render_options(config, node)
    )
    return Desired(state, options, note)
