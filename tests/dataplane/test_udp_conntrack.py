"""A UDP client keeping its source port follows an endpoint change (stale conntrack cleared)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.dataplane.cluster import pod_slice, sync_once, this_node, write_manifests
from tests.dataplane.topology import Topology
from tests.support.builders import service

VIP = "10.96.7.53"
DNS = {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 8080}
SLICE_PORT = [{"name": "dns", "protocol": "UDP", "port": 8080}]

# One UDP socket with a fixed source port: the same conntrack entry for every query, as a
# resolver that keeps its socket. Bounded: three tries of one second.
ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 40053))
s.settimeout(1.0)
for _ in range(3):
    s.sendto(b"q", (sys.argv[1], 53))
    try:
        print(s.recvfrom(100)[0].decode().strip())
        break
    except OSError:
        continue
s.close()
"""


def ask(topo: Topology) -> str:
    result = topo.exec(topo.client_ns, sys.executable, "-I", "-S", "-c", ASK, VIP, timeout=20)
    return result.stdout.strip()


def manifests(topo: Topology, pod: str) -> list[dict[str, object]]:
    return [
        this_node(topo),
        service("resolver", cluster_ip=VIP, ports=[DNS]),
        pod_slice("resolver", topo, (pod,), SLICE_PORT),
    ]


def test_a_long_lived_udp_flow_moves_to_the_new_endpoint_after_a_sync(topology: Topology) -> None:
    path = Path(topology.workdir) / "udp" / "cluster.yaml"
    sync_once(topology, write_manifests(path, manifests(topology, "pod-a")))
    assert ask(topology) == "pod-a"

    sync_once(topology, write_manifests(path, manifests(topology, "pod-b")))

    # Without the cleanup the flow would stay pinned to pod-a, which still answers.
    assert ask(topology) == "pod-b"
