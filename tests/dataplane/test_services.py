"""Real packets through the rules pykubeproxy writes: ClusterIP, NodePort, LB IP, externalIP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dataplane.cluster import pod_slice, sync_once, this_node, write_manifests
from tests.dataplane.topology import Topology
from tests.support.builders import service

HTTP = {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
DNS = {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 8080}
ECHO_PORTS = [
    {"name": "http", "protocol": "TCP", "port": 8080},
    {"name": "dns", "protocol": "UDP", "port": 8080},
]
ALT_PORT = [{"name": "http", "protocol": "TCP", "port": 9090}]
ALL_PODS = ("pod-a", "pod-b", "pod-c")

CLUSTER_IP = "10.96.0.10"
LB_CLUSTER_IP, LB_IP = "10.96.0.20", "198.51.100.10"
EXT_CLUSTER_IP, EXTERNAL_IP = "10.96.0.30", "198.51.100.20"
EMPTY_IP = "10.96.0.40"
PARTLY_IP = "10.96.0.50"
SELF_IP = "10.96.0.60"
NODE_PORT, EMPTY_NODE_PORT = 30080, 30040


def objects(topo: Topology) -> list[dict[str, object]]:
    return [
        this_node(topo),
        service(
            "echo",
            cluster_ip=CLUSTER_IP,
            ports=[{**HTTP, "nodePort": NODE_PORT}, DNS],
            type="NodePort",
        ),
        pod_slice("echo", topo, ALL_PODS, ECHO_PORTS),
        service(
            "lb",
            cluster_ip=LB_CLUSTER_IP,
            ports=[{**HTTP, "targetPort": 9090}],
            type="LoadBalancer",
            status={"loadBalancer": {"ingress": [{"ip": LB_IP}]}},
        ),
        pod_slice("lb", topo, ALL_PODS, ALT_PORT),
        service("ext", cluster_ip=EXT_CLUSTER_IP, ports=[HTTP], externalIPs=[EXTERNAL_IP]),
        pod_slice("ext", topo, ("pod-b",), ECHO_PORTS[:1]),
        service(
            "empty",
            cluster_ip=EMPTY_IP,
            ports=[{**HTTP, "nodePort": EMPTY_NODE_PORT}],
            type="NodePort",
        ),
        service("partly", cluster_ip=PARTLY_IP, ports=[HTTP]),
        pod_slice("partly", topo, ("pod-a", "pod-b"), ECHO_PORTS[:1], not_ready=("pod-b",)),
        service("self", cluster_ip=SELF_IP, ports=[HTTP]),
        pod_slice("self", topo, ("pod-a",), ECHO_PORTS[:1]),
    ]


@pytest.fixture(scope="module")
def proxied(topology: Topology) -> Iterator[Topology]:
    manifests = write_manifests(
        Path(topology.workdir) / "cluster" / "cluster.yaml", objects(topology)
    )
    sync_once(topology, manifests)
    yield topology


def assert_uniform(replies: dict[str, int], total: int, backends: tuple[str, ...]) -> None:
    # Each backend's count is Binomial(total, 1/n). For 300 over 3 the standard deviation is
    # 8.2, so [60, 140] is a band of 4.9 standard deviations either way: a correct proxy fails
    # it about once in a million runs, while a broken split (say 50/25/25) lands outside it.
    assert set(replies) == set(backends), replies
    expected = total / len(backends)
    sd = (total * (1 / len(backends)) * (1 - 1 / len(backends))) ** 0.5
    for backend in backends:
        assert abs(replies[backend] - expected) <= 4.9 * sd, replies


def test_cluster_ip_from_a_pod_reaches_every_ready_backend_uniformly(proxied: Topology) -> None:
    result = proxied.run_client(proxied.client_ns, CLUSTER_IP, 80, count=300)

    assert result.total == 300 and sum(result.replies.values()) == 300, result
    assert_uniform(result.replies, 300, ALL_PODS)


def test_cluster_ip_from_the_node_itself_goes_through_output(proxied: Topology) -> None:
    result = proxied.run_client(proxied.node_ns, CLUSTER_IP, 80, count=30)

    assert sum(result.replies.values()) == 30, result
    assert set(result.replies) <= set(ALL_PODS)


def test_udp_through_the_cluster_ip(proxied: Topology) -> None:
    result = proxied.run_client(proxied.client_ns, CLUSTER_IP, 53, proto="udp", count=60)

    assert sum(result.replies.values()) == 60, result
    assert set(result.replies) == set(ALL_PODS)


def test_node_port_from_outside_the_node(proxied: Topology) -> None:
    result = proxied.run_client(proxied.external_ns, proxied.node_ip, NODE_PORT, count=30)

    assert sum(result.replies.values()) == 30, result
    assert set(result.replies) <= set(ALL_PODS)


def test_load_balancer_ip_from_outside_reaches_the_service(proxied: Topology) -> None:
    result = proxied.run_client(proxied.external_ns, LB_IP, 80, count=30)

    assert sum(result.replies.values()) == 30, result
    assert set(result.replies) <= set(ALL_PODS)


def test_external_ip_from_outside_reaches_the_service(proxied: Topology) -> None:
    result = proxied.run_client(proxied.external_ns, EXTERNAL_IP, 80, count=10)

    assert result.replies == {"pod-b": 10}, result


def test_external_traffic_is_masqueraded_to_the_node_address(proxied: Topology) -> None:
    before = len(proxied.echo_requests("pod-b"))
    proxied.run_client(proxied.external_ns, EXTERNAL_IP, 80, count=3)

    sources = {r.source_ip for r in proxied.echo_requests("pod-b")[before:]}
    assert sources == {proxied.node_bridge_ip}


def test_a_service_without_endpoints_is_refused_at_once(proxied: Topology) -> None:
    from_pod = proxied.run_client(proxied.client_ns, EMPTY_IP, 80, count=5, timeout=2.0)
    from_outside = proxied.run_client(
        proxied.external_ns, proxied.node_ip, EMPTY_NODE_PORT, count=5
    )

    assert from_pod.refused == 5, from_pod
    assert from_outside.refused == 5, from_outside


def test_a_not_ready_endpoint_never_receives_traffic(proxied: Topology) -> None:
    result = proxied.run_client(proxied.client_ns, PARTLY_IP, 80, count=40)

    assert result.replies == {"pod-a": 40}, result


def test_a_pod_reaching_its_own_service_is_hairpinned_back_to_itself(proxied: Topology) -> None:
    result = proxied.run_client(proxied.pod_ns["pod-a"], SELF_IP, 80, count=5)

    assert result.replies == {"pod-a": 5}, result
