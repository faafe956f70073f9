"""Which endpoints each kind of traffic may use: kube-proxy's CategorizeEndpoints.

Pure and mode-neutral: every backend, the conntrack cleanup and the metrics ask here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pykubeproxy.model import Endpoint, Node, ServicePort

ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass(frozen=True, slots=True)
class Place:
    """Where this proxy runs, as topology hints name it: the node's name and its zone label."""

    node: str = ""
    zone: str = ""

    @classmethod
    def of(cls, node: Node) -> Place:
        return cls(node.name, node.labels.get(ZONE_LABEL, ""))


@dataclass(frozen=True, slots=True)
class EndpointSelection:
    """kube-proxy's CategorizeEndpoints: the endpoints each traffic policy may use."""

    cluster: tuple[Endpoint, ...]  # for Cluster policy
    local: tuple[Endpoint, ...]  # for Local policy
    reachable: tuple[Endpoint, ...]  # every endpoint a chain must exist for
    has_any: bool  # whether any usable endpoint exists anywhere


def uses_cluster_endpoints(port: ServicePort) -> bool:
    # External traffic from pods short-circuits to the cluster chain even under Local policy.
    return not port.internal_policy_local or port.externally_accessible


def uses_local_endpoints(port: ServicePort) -> bool:
    return port.internal_policy_local or port.external_policy_local


# The modes topology hints can put a Service port in (kube-proxy's names for them).
SAME_NODE = "PreferSameNode"
SAME_ZONE = "PreferSameZone"


def topology_mode(endpoints: Sequence[Endpoint], place: Place) -> str | None:
    """Which hints to follow, as kube-proxy's topologyModeFromHints decides; None: no topology.

    A kind of hint is followed only when every ready endpoint carries one and at least one
    names this node (or zone); node hints win over zone hints. The Service's own fields are not
    read here: the EndpointSlice controller writes hints only for Services asking for them.
    """
    ready = [ep for ep in endpoints if ep.ready]
    if not ready:
        return None
    by_node = [ep.node_hints for ep in ready]
    if all(by_node) and any(place.node in hints for hints in by_node):
        return SAME_NODE
    by_zone = [ep.zone_hints for ep in ready]
    if all(by_zone) and any(place.zone in hints for hints in by_zone):
        return SAME_ZONE
    return None


def _in_place(endpoint: Endpoint, mode: str | None, place: Place) -> bool:
    if mode == SAME_NODE:
        return place.node in endpoint.node_hints
    if mode == SAME_ZONE:
        return place.zone in endpoint.zone_hints
    return True


def _usable(endpoints: Sequence[Endpoint], *, local_only: bool) -> tuple[Endpoint, ...]:
    """Ready endpoints; when there are none, fall back to serving terminating ones."""
    candidates = [ep for ep in endpoints if ep.is_local or not local_only]
    ready = tuple(ep for ep in candidates if ep.ready)
    if ready:
        return ready
    return tuple(ep for ep in candidates if ep.serving and ep.terminating)


def _cluster(endpoints: Sequence[Endpoint], place: Place) -> tuple[Endpoint, ...]:
    """Ready endpoints the topology hints allow; else serving terminating ones, any topology.

    A topology mode is only chosen when some ready endpoint fits it, so an empty first pick
    means no endpoint is ready anywhere.
    """
    mode = topology_mode(endpoints, place)
    chosen = tuple(ep for ep in endpoints if ep.ready and _in_place(ep, mode, place))
    return chosen or tuple(ep for ep in endpoints if ep.serving and ep.terminating)


def categorize_endpoints(
    port: ServicePort, endpoints: Sequence[Endpoint], *, place: Place | None = None
) -> EndpointSelection:
    """`place` is this node for topology hints; without it no hint can match."""
    place = place or Place()
    cluster = _cluster(endpoints, place) if uses_cluster_endpoints(port) else ()
    if not uses_local_endpoints(port):
        return EndpointSelection(cluster, (), cluster, bool(cluster))
    local = _usable(endpoints, local_only=True)
    has_any = bool(cluster) or any(ep.ready or (ep.serving and ep.terminating) for ep in endpoints)
    reachable = {str(ep): ep for ep in (*cluster, *local)}
    return EndpointSelection(
        cluster, local, tuple(reachable[k] for k in sorted(reachable)), has_any
    )
