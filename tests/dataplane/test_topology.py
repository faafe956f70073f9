"""Owns the proof that the data-plane harness itself works, with no proxy rules installed."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.dataplane.topology import (
    PREFIX_RE,
    REQUIREMENTS,
    Topology,
    remove_leftovers,
    topology_context,
)
from tests.support.needs import need_root_and
from tests.support.netns import Netns, names_with_prefix, process_running
from tests.support.paths import REPO
from tests.support.wait import poll


def _skip_without_privileges() -> None:
    # For the tests that build their own topology instead of using the fixture.
    need_root_and(*REQUIREMENTS)


def _netns_pids(ns: str) -> list[int]:
    return Netns(ns).pids()


def test_client_pod_reaches_every_pod_by_name_over_tcp(topology: Topology) -> None:
    for pod, ip in topology.pod_ip.items():
        for port in topology.echo_ports:
            result = topology.run_client(topology.client_ns, ip, port, count=2)
            assert result.replies == {pod: 2}, (pod, port, result)


def test_client_pod_reaches_every_pod_by_name_over_udp(topology: Topology) -> None:
    for pod, ip in topology.pod_ip.items():
        for port in topology.echo_ports:
            result = topology.run_client(topology.client_ns, ip, port, proto="udp", count=2)
            assert result.replies == {pod: 2}, (pod, port, result)


def test_pod_reaches_another_pod_directly(topology: Topology) -> None:
    result = topology.run_client(topology.pod_ns["pod-a"], topology.pod_ip["pod-b"], 8080)
    assert result.replies == {"pod-b": 1}


def test_each_request_uses_a_new_source_port(topology: Topology) -> None:
    # Distinct source ports are what give iptables' per-connection random split a chance.
    before = len(topology.echo_requests("pod-c"))
    result = topology.run_client(topology.client_ns, topology.pod_ip["pod-c"], 9090, count=5)
    assert result.replies == {"pod-c": 5}
    seen = topology.echo_requests("pod-c")[before:]
    assert [(r.proto, r.port, r.source_ip) for r in seen] == [("tcp", 9090, topology.client_ip)] * 5
    assert len({r.source_port for r in seen}) == 5


def test_external_host_reaches_the_node_ip_and_a_closed_port_counts_as_refused(
    topology: Topology,
) -> None:
    # Nothing listens on the node: an RST back proves the path and the "refused" bucket at once.
    result = topology.run_client(topology.external_ns, topology.node_ip, 8080, count=3)
    assert (result.replies, result.refused, result.timeout, result.other) == ({}, 3, 0, {})


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_closed_port_in_a_pod_counts_as_refused(topology: Topology, proto: str) -> None:
    # UDP: the pod's ICMP port unreachable surfaces as ECONNREFUSED on the connected socket;
    # a burst of them must not be rate limited into timeouts.
    ip = topology.pod_ip["pod-a"]
    result = topology.run_client(topology.client_ns, ip, 7777, proto=proto, count=10)
    assert (result.replies, result.refused, result.timeout, result.other) == ({}, 10, 0, {})


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_address_with_nothing_behind_it_counts_as_timeout(topology: Topology, proto: str) -> None:
    # 10.244.1.99 is on-link but unanswered: ARP fails silently for ~3 s, far past the timeout.
    result = topology.run_client(
        topology.client_ns, "10.244.1.99", 8080, proto=proto, count=2, timeout=0.3
    )
    assert (result.replies, result.refused, result.timeout, result.other) == ({}, 0, 2, {})


def test_service_and_load_balancer_addresses_route_towards_the_node(topology: Topology) -> None:
    # Before any DNAT, a VIP must already be routable from the node's own OUTPUT path...
    node_route = topology.exec(topology.node_ns, "ip", "route", "get", "10.96.0.10").stdout
    assert f"via {topology.external_ip} dev {topology.node_uplink}" in node_route
    # ...and the external host must send Service and LoadBalancer traffic to the node.
    for vip in ("10.96.0.10", "198.51.100.5"):
        ext_route = topology.exec(topology.external_ns, "ip", "route", "get", vip).stdout
        assert f"via {topology.node_ip}" in ext_route, ext_route


def test_node_is_configured_as_a_forwarding_kube_proxy_node(topology: Topology) -> None:
    keys = ("net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet")
    out = topology.exec(topology.node_ns, "sysctl", "-n", *keys).stdout.split()
    assert out == ["1", "1"]
    links = topology.exec(topology.node_ns, "ip", "-o", "link", "show", "master", "cbr0").stdout
    assert sorted(line.split()[1].split("@")[0] for line in links.splitlines()) == [
        "veth-client",
        "veth-pod-a",
        "veth-pod-b",
        "veth-pod-c",
    ]


def test_exec_refuses_a_namespace_outside_the_topology(topology: Topology) -> None:
    # The guard that keeps helpers from ever acting in the host namespace by mistake.
    with pytest.raises(ValueError):
        topology.exec("default", "true")
    with pytest.raises(ValueError):
        topology.start_process("", ["true"])


def test_teardown_stops_tracked_processes_and_removes_every_namespace() -> None:
    _skip_without_privileges()
    with topology_context() as topo:
        assert names_with_prefix(topo.prefix) == sorted(topo.namespaces)
        # Stands in for a long-running pykubeproxy in the node namespace, one that has a
        # child of its own which teardown does not track.
        sleeper = topo.start_process(topo.node_ns, ["sh", "-c", "sleep 30 & wait"])
        pids = poll(
            lambda: _netns_pids(topo.node_ns),
            until=lambda found: len(found) >= 2,
            what="the sleeper and its child in the node namespace",
            timeout=5.0,
            interval=0.02,
        )
        assert sleeper.pid in pids and len(pids) == 2
        workdir = topo.workdir
    assert sleeper.returncode is not None
    assert not any(process_running(pid) for pid in pids)
    assert names_with_prefix(topo.prefix) == []
    assert not workdir.exists()
    assert not process_running(sleeper.pid)


def test_leftovers_of_a_killed_run_are_removed_with_their_processes() -> None:
    _skip_without_privileges()
    # A run that dies without its teardown: build in a child, then SIGKILL the child by PID.
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from tests.dataplane.topology import build_topology\n"
        "print(build_topology().prefix, flush=True); time.sleep(30)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code, str(REPO)], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None
            prefix = child.stdout.readline().decode().strip()
        finally:
            child.kill()
            child.wait(timeout=5)
    assert PREFIX_RE.match(prefix), prefix
    assert len(names_with_prefix(prefix)) == 6
    orphan_pids = [pid for ns in names_with_prefix(prefix) for pid in _netns_pids(ns)]
    assert len(orphan_pids) == 3  # the echo servers outlived their parent
    assert len(remove_leftovers(prefix)) == 6
    assert names_with_prefix(prefix) == []
    assert not any(process_running(pid) for pid in orphan_pids)
    assert not list(Path(tempfile.gettempdir()).glob(f"{prefix}*"))
