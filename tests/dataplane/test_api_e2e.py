"""End to end: a fake API server, the pykubeproxy daemon on --kubeconfig, and real traffic."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from api.fake_apiserver import FakeApiServer, make_endpoint_slice, make_node, make_service
from pyroute2 import netns

from .cluster import REPO
from .topology import ClientResult, Topology

VIP = "10.96.5.10"
HTTP = {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
SLICE_PORT = {"name": "http", "protocol": "TCP", "port": 8080}


@pytest.fixture(scope="module")
def apiserver(topology: Topology) -> Iterator[FakeApiServer]:
    """A fake API server listening on 127.0.0.1 inside the node namespace only."""
    netns.pushns(topology.node_ns)  # this thread only; the listening socket stays in there
    try:
        server = FakeApiServer(bookmark_interval=0.5).start()
    finally:
        netns.popns()
    try:
        server.create("nodes", make_node("node-1", topology.node_ip))
        yield server
    finally:
        server.stop()


def replies(topo: Topology, want: set[str], seconds: float = 15.0) -> ClientResult:
    """Ask the VIP from the client pod until exactly `want` answers (bounded in time)."""
    deadline = time.monotonic() + seconds
    result = topo.run_client(topo.client_ns, VIP, 80, count=12, timeout=0.5)
    while set(result.replies) != want and time.monotonic() < deadline:
        time.sleep(0.2)
        result = topo.run_client(topo.client_ns, VIP, 80, count=12, timeout=0.5)
    return result


def slice_of(topo: Topology, *pods: str) -> dict[str, object]:
    return make_endpoint_slice(
        "web", addresses=[topo.pod_ip[p] for p in pods], ports=[SLICE_PORT], name="web-1"
    )


def test_services_created_changed_and_deleted_through_the_api_reach_the_kernel(
    topology: Topology, apiserver: FakeApiServer
) -> None:
    kubeconfig = apiserver.write_kubeconfig(Path(topology.workdir) / "kubeconfig")
    proxy = topology.start_process(
        topology.node_ns,
        [
            sys.executable,
            "-m",
            "pykubeproxy",
            "--kubeconfig",
            str(kubeconfig),
            "--hostname-override",
            "node-1",
            "--cluster-cidr",
            topology.pod_cidr,
            "--iptables-min-sync-period",
            "100ms",
        ],
        cwd=REPO,
        log_name="pykubeproxy-api",
    )
    log = lambda: topology.process_log(proxy)  # noqa: E731

    apiserver.create("services", make_service("web", cluster_ip=VIP, ports=[HTTP]))
    apiserver.create("endpointslices", slice_of(topology, "pod-a", "pod-b"))
    assert set(replies(topology, {"pod-a", "pod-b"}).replies) == {"pod-a", "pod-b"}, log()

    apiserver.update("endpointslices", slice_of(topology, "pod-c"))
    assert replies(topology, {"pod-c"}).replies == {"pod-c": 12}, log()

    # The endpoints go: connections are refused at once (REJECT), not left to time out.
    apiserver.delete("endpointslices", "default", "web-1")
    deadline = time.monotonic() + 15
    gone = topology.run_client(topology.client_ns, VIP, 80, count=5, timeout=0.5)
    while gone.refused != 5 and time.monotonic() < deadline:
        time.sleep(0.2)
        gone = topology.run_client(topology.client_ns, VIP, 80, count=5, timeout=0.5)
    assert gone.refused == 5, log()

    # The Service goes: its rules go too, and nothing answers for the address any more.
    apiserver.delete("services", "default", "web")
    deadline = time.monotonic() + 15
    while VIP in kernel_rules(topology) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert VIP not in kernel_rules(topology), log()
    after = topology.run_client(topology.client_ns, VIP, 80, count=3, timeout=0.5)
    assert after.replies == {}

    assert topology.stop_process(proxy) == 0


def kernel_rules(topo: Topology) -> str:
    out = []
    for backend in ("legacy", "nft"):
        result = topo.exec(topo.node_ns, f"iptables-{backend}-save", check=False)
        out.append(result.stdout)
    return "\n".join(out)
