"""An outside flush of the node's nat table: the canary is missed and traffic is back in 2 s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.dataplane.cluster import pod_slice, proxy_argv, this_node, write_manifests
from tests.dataplane.topology import Topology
from tests.support.builders import service
from tests.support.wait import poll

HTTP = {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
SLICE_PORTS = [{"name": "http", "protocol": "TCP", "port": 8080}]
VIP = "10.96.1.20"
REPAIR_WITHIN = 2.0  # seconds, with a 1 s sync period (the monitor's interval, as kube-proxy's)


def answered(topo: Topology) -> bool:
    return topo.run_client(topo.client_ns, VIP, 80, count=1, timeout=0.3).replies == {"pod-a": 1}


@pytest.mark.parametrize("delete", [False, True], ids=["F", "F-X"])
@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_traffic_through_a_cluster_ip_is_back_within_2s_after_the_nat_table_is_wiped(
    topology: Topology, backend: str, delete: bool
) -> None:
    path = write_manifests(
        Path(topology.workdir) / f"canary-{backend}-{delete}" / "cluster.yaml",
        [
            this_node(topology),
            service("canary", cluster_ip=VIP, ports=[HTTP]),
            pod_slice("canary", topology, ("pod-a",), SLICE_PORTS),
        ],
    )
    argv = proxy_argv(
        path.parent,
        topology,
        "--iptables-backend",
        backend,
        "--iptables-sync-period",
        "1s",
        "--iptables-min-sync-period",
        "100ms",
    )
    proxy = topology.start_process(topology.node_ns, argv, log_name=f"pykubeproxy-{backend}")
    log = lambda: topology.process_log(proxy)  # noqa: E731
    poll(lambda: answered(topology), until=bool, what="the first sync", timeout=15.0, detail=log)
    time.sleep(1.5)  # the canaries are placed at the first look after the first sync

    # `iptables -t nat -F` (and -X: a firewalld reload's effect), only in the node's namespace.
    iptables = f"iptables-{backend}"
    topology.exec(topology.node_ns, iptables, "-t", "nat", "-F")
    if delete:
        topology.exec(topology.node_ns, iptables, "-t", "nat", "-X")
    wiped_at = time.monotonic()
    # (Not asserted unanswered here: the monitor may look, and repair, before the client asks.)

    poll(lambda: answered(topology), until=bool, what="traffic back", timeout=10.0, detail=log)
    took = time.monotonic() - wiped_at
    assert took <= REPAIR_WITHIN, f"repaired after {took:.2f} s\n{log()}"
    assert "iptables canary gone" in log()
    assert topology.stop_process(proxy) == 0
    # The topology is shared: the rules of the other backend must not carry this VIP next time.
    cleaned = topology.exec(topology.node_ns, *proxy_argv(path.parent, topology, "--cleanup"))
    assert cleaned.returncode == 0, cleaned.stderr
