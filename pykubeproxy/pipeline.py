"""From a snapshot of API objects to what this node must program: the one path for every mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pykubeproxy.model import FAMILY, Node, ProxyState
from pykubeproxy.store import Snapshot
from pykubeproxy.translate import InvalidObject, translate_cluster, translate_node


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Who this node is: its name, how it was chosen, and addresses given on the command line."""

    name: str
    explicit: bool  # from --hostname-override or NODE_NAME, not just the machine's hostname
    ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Translated:
    """This node's ProxyState for one snapshot, and how the node was found (for the log)."""

    state: ProxyState
    note: str


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


def translate_snapshot(snapshot: Snapshot, identity: NodeIdentity) -> Translated:
    """What this node must program for a snapshot, whatever the proxy mode."""
    node, note = resolve_node(identity, snapshot.nodes)
    state = translate_cluster(
        services=snapshot.services,
        endpoint_slices=snapshot.endpoint_slices,
        node=node,
        family=FAMILY,
    )
    return Translated(state, note)
