"""Which endpoints each kind of traffic may use: kube-proxy's CategorizeEndpoints.

Pure and mode-neutral: every backend, the conntrack cleanup and the metrics ask here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pykubeproxy.model import Endpoint, ServicePort


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


def _usable(endpoints: Sequence[Endpoint], *, local_only: bool) -> tuple[Endpoint, ...]:
    """Ready endpoints; when there are none, fall back to serving terminating ones."""
    candidates = [ep for ep in endpoints if ep.is_local or not local_only]
    ready = tuple(ep for ep in candidates if ep.ready)
    if ready:
        return ready
    return tuple(ep for ep in candidates if ep.serving and ep.terminating)


def categorize_endpoints(port: ServicePort, endpoints: Sequence[Endpoint]) -> EndpointSelection:
    cluster = _usable(endpoints, local_only=False) if uses_cluster_endpoints(port) else ()
    if not uses_local_endpoints(port):
        return EndpointSelection(cluster, (), cluster, bool(cluster))
    local = _usable(endpoints, local_only=True)
    has_any = bool(cluster) or any(ep.ready or (ep.serving and ep.terminating) for ep in endpoints)
    reachable = {str(ep): ep for ep in (*cluster, *local)}
    return EndpointSelection(
        cluster, local, tuple(reachable[k] for k in sorted(reachable)), has_any
    )
