"""End to end: a fake API server, the pykubeproxy daemon on --kubeconfig, and real traffic."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2 import netns

from tests.dataplane.topology import ClientResult, Topology
from tests.support.builders import endpoint_slice, node, service
from tests.support.fake_apiserver import FakeApiServer
from tests.support.paths import REPO
from tests.support.wait import poll, wait_until

VIP = "10.96.5.10"
HTTP = {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
SLICE_PORT = {"name": "http", "protocol": "TCP", "port": 8080}


def start_apiserver(topology: Topology, **options: object) -> FakeApiServer:
    """A fake API server listening on 127.0.0.1 inside the node namespace only."""
    netns.pushns(topology.node_ns)  # this thread only; the listening socket stays in there
    try:
        return FakeApiServer(**options).start()  # type: ignore[arg-type]
    finally:
        netns.popns()


@pytest.fixture(scope="module")
def apiserver(topology: Topology) -> Iterator[FakeApiServer]:
    server = start_apiserver(topology, bookmark_interval=0.5)
    try:
        server.create("nodes", node("node-1", topology.node_ip, served=True))
        yield server
    finally:
        server.stop()


def replies(topo: Topology, want: set[str], log: Callable[[], str]) -> ClientResult:
    """Ask the VIP from the client pod until exactly `want` answers (bounded in time)."""
    return poll(
        lambda: topo.run_client(topo.client_ns, VIP, 80, count=12, timeout=0.5),
        until=lambda result: set(result.replies) == want,
        what=f"only {sorted(want)} to answer at {VIP}",
        timeout=15.0,
        interval=0.2,
        detail=log,
    )


def slice_of(topo: Topology, *pods: str) -> dict[str, object]:
    addresses = [topo.pod_ip[p] for p in pods]
    return endpoint_slice("web", *addresses, ports=[SLICE_PORT], name="web-1", served=True)


def start_proxy(topology: Topology, kubeconfig: Path, log_name: str) -> subprocess.Popen[bytes]:
    return topology.start_process(
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
        log_name=log_name,
    )


def test_services_created_changed_and_deleted_through_the_api_reach_the_kernel(
    topology: Topology, apiserver: FakeApiServer
) -> None:
    assert apiserver.tls
    kubeconfig = apiserver.write_kubeconfig(Path(topology.workdir) / "kubeconfig")
    proxy = start_proxy(topology, kubeconfig, "pykubeproxy-api")
    log = lambda: topology.process_log(proxy)  # noqa: E731

    apiserver.create("services", service("web", cluster_ip=VIP, ports=[HTTP], served=True))
    apiserver.create("endpointslices", slice_of(topology, "pod-a", "pod-b"))
    assert set(replies(topology, {"pod-a", "pod-b"}, log).replies) == {"pod-a", "pod-b"}, log()

    apiserver.update("endpointslices", slice_of(topology, "pod-c"))
    assert replies(topology, {"pod-c"}, log).replies == {"pod-c": 12}, log()

    # The endpoints go: connections are refused at once (REJECT), not left to time out.
    apiserver.delete("endpointslices", "default", "web-1")
    gone = poll(
        lambda: topology.run_client(topology.client_ns, VIP, 80, count=5, timeout=0.5),
        until=lambda result: result.refused == 5,
        what=f"connections to {VIP} to be refused",
        timeout=15.0,
        interval=0.2,
        detail=log,
    )
    assert gone.refused == 5, log()

    # The Service goes: its rules go too, and nothing answers for the address any more.
    apiserver.delete("services", "default", "web")
    wait_until(
        lambda: VIP not in kernel_rules(topology),
        what=f"the rules of {VIP} to leave the kernel",
        timeout=15.0,
        interval=0.2,
        detail=log,
    )
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


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "http"])
def test_sigterm_stops_the_daemon_within_two_seconds_with_every_watch_open(
    topology: Topology, tls: bool
) -> None:
    """Nothing comes on the watches (no events, no bookmarks): the daemon must not wait for a
    byte to stop. It exits 0 and leaves its rules in the kernel."""
    vip = "10.96.5.20"
    server = start_apiserver(topology, bookmark_interval=600, tls=tls)
    try:
        server.create("nodes", node("node-1", topology.node_ip, served=True))
        server.create("services", service("stop", cluster_ip=vip, ports=[HTTP], served=True))
        slice_ = endpoint_slice(
            "stop", topology.pod_ip["pod-a"], ports=[SLICE_PORT], name="stop-1", served=True
        )
        server.create("endpointslices", slice_)
        kubeconfig = server.write_kubeconfig(Path(topology.workdir) / f"kubeconfig-stop-{tls}")
        proxy = start_proxy(topology, kubeconfig, f"pykubeproxy-stop-{tls}")
        log = lambda: topology.process_log(proxy)  # noqa: E731
        wait_until(
            lambda: vip in kernel_rules(topology),
            what=f"the rules of {vip} in the kernel",
            timeout=20.0,
            interval=0.2,
            detail=log,
        )
        for resource in ("services", "endpointslices", "nodes"):
            server.wait_for_watches(resource, timeout=10.0)
        time.sleep(0.5)  # the readers are deep in a read that no byte will end

        proxy.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proxy.wait(timeout=10.0)
        took = time.monotonic() - started

        assert code == 0, log()
        assert took <= 2.0, f"stopped in {took:.2f} s\n{log()}"
        assert "stopped; rules left in place" in log()
        assert vip in kernel_rules(topology)
    finally:
        server.stop()
    assert server.errors == []
