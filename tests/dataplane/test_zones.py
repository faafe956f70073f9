"""Owns the proof with real packets that topology hints keep a Service's traffic in this node's
zone, and that it falls back to every endpoint when the zone has none or the hints are partial.

pod-a and pod-b are hinted for zone-a (this node's zone), pod-c for zone-b. Each stage rewrites
the manifests and syncs once, then counts which pods answer connections to the cluster IP.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.dataplane.cluster import sync_once, write_manifests
from tests.dataplane.topology import Topology
from tests.support.builders import endpoint, endpoint_slice, node, service

CLUSTER_IP = "10.96.0.70"
ZONE_LABEL = "topology.kubernetes.io/zone"
HTTP = {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
SLICE_PORTS = [{"name": "http", "protocol": "TCP", "port": 8080}]
# pod: (the node it runs on, its zone)
PLACES = {
    "pod-a": ("node-1", "zone-a"),
    "pod-b": ("node-2", "zone-a"),
    "pod-c": ("node-3", "zone-b"),
}
REQUESTS = 60


def _endpoint(topo: Topology, pod: str, *, hinted: bool, ready: bool) -> dict[str, Any]:
    on, zone = PLACES[pod]
    raw = endpoint(topo.pod_ip[pod], on, ready=ready, serving=ready, terminating=False)
    raw["zone"] = zone
    if hinted:
        raw["hints"] = {"forZones": [{"name": zone}]}
    return raw


def _program(
    topo: Topology,
    *,
    zone: str = "zone-a",
    not_ready: Iterable[str] = (),
    unhinted: Iterable[str] = (),
) -> None:
    not_ready, unhinted = set(not_ready), set(unhinted)
    endpoints = [
        _endpoint(topo, pod, hinted=pod not in unhinted, ready=pod not in not_ready)
        for pod in PLACES
    ]
    objects = [
        node("node-1", topo.node_ip, labels={ZONE_LABEL: zone}),
        service(
            "zoned",
            cluster_ip=CLUSTER_IP,
            ports=[HTTP],
            trafficDistribution="PreferClose",
        ),
        endpoint_slice("zoned", *endpoints, ports=SLICE_PORTS, name="zoned-slice"),
    ]
    manifests = Path(topo.workdir) / "zones" / "cluster.yaml"
    sync_once(topo, write_manifests(manifests, objects))


def _answering(topo: Topology) -> set[str]:
    result = topo.run_client(topo.client_ns, CLUSTER_IP, 80, count=REQUESTS)
    assert sum(result.replies.values()) == REQUESTS, result
    return set(result.replies)


def test_hinted_traffic_stays_in_this_zone_and_falls_back_when_it_cannot(
    topology: Topology,
) -> None:
    # 60 connections split at random over three pods would all miss pod-c with odds of
    # (2/3)**60, about 3e-11: seeing only pod-a and pod-b is proof the rules excluded it.
    _program(topology)
    assert _answering(topology) == {"pod-a", "pod-b"}

    # The zone empties: no ready endpoint is hinted for zone-a, so every ready one is used.
    _program(topology, not_ready=("pod-a", "pod-b"))
    assert _answering(topology) == {"pod-c"}

    # One ready endpoint without hints turns topology off: all three pods answer.
    _program(topology, unhinted=("pod-c",))
    assert _answering(topology) == {"pod-a", "pod-b", "pod-c"}

    # This node's zone label decides which zone is "here".
    _program(topology, zone="zone-b")
    assert _answering(topology) == {"pod-c"}
