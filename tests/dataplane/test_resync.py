"""The long-running proxy follows manifest edits, and leaves rules in place when it stops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.dataplane.cluster import pod_slice, proxy_argv, this_node, write_manifests
from tests.dataplane.topology import ClientResult, Topology
from tests.support.builders import service
from tests.support.wait import poll

HTTP = {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
SLICE_PORTS = [{"name": "http", "protocol": "TCP", "port": 8080}]
VIP = "10.96.1.10"


def manifests(topo: Topology, pods: tuple[str, ...]) -> list[dict[str, object]]:
    return [
        this_node(topo),
        service("follow", cluster_ip=VIP, ports=[HTTP]),
        pod_slice("follow", topo, pods, SLICE_PORTS),
    ]


def wait_for(topo: Topology, want: set[str], log: Callable[[], str]) -> ClientResult:
    """Ask the VIP until only the wanted backends answer (bounded in time)."""
    return poll(
        lambda: topo.run_client(topo.client_ns, VIP, 80, count=20, timeout=0.5),
        until=lambda result: set(result.replies) == want,
        what=f"only {sorted(want)} to answer at {VIP}",
        timeout=15.0,
        interval=0.3,
        detail=log,
    )


def test_editing_the_manifests_moves_traffic_and_stopping_keeps_the_rules(
    topology: Topology,
) -> None:
    path = write_manifests(
        Path(topology.workdir) / "follow" / "cluster.yaml", manifests(topology, ("pod-a", "pod-b"))
    )
    proxy = topology.start_process(
        topology.node_ns,
        proxy_argv(path.parent, topology, "--iptables-min-sync-period", "100ms"),
        log_name="pykubeproxy-follow",
    )

    log = lambda: topology.process_log(proxy)  # noqa: E731
    first = wait_for(topology, {"pod-a", "pod-b"}, log)
    assert set(first.replies) == {"pod-a", "pod-b"}, topology.process_log(proxy)

    write_manifests(path, manifests(topology, ("pod-c",)))
    moved = wait_for(topology, {"pod-c"}, log)
    assert moved.replies == {"pod-c": 20}, topology.process_log(proxy)

    assert topology.stop_process(proxy) == 0
    after_stop = topology.run_client(topology.client_ns, VIP, 80, count=5)
    assert after_stop.replies == {"pod-c": 5}
