"""A deterministic synthetic cluster of the shape issue 11 measures at scale.

N Services x 5 endpoints, one EndpointSlice per Service, every 4th Service (index % 4 == 0) has a
second port, every 10th (index % 10 == 0) is a NodePort. At N = 10 000 that is 12 500 Service
ports, 62 500 endpoints (endpoint x port) and, with a cluster CIDR, 217 000 nat rules in 76 500
per-Service chains. The endpoints of each Service sit on four nodes, one of them this node
(`node-1`), so every Service has a local endpoint.

The objects look like what an API server returns (uid, resourceVersion, targetRef, zone, ...;
no managedFields) and are identical on every run: same N, same bytes.

In-process:
    from cluster import generate
    objects = generate(10_000)          # Node, Services, EndpointSlices: plain dicts
Manifests (one JSON `kind: List` file, readable by `pykubeproxy --from-file`):
    uv run python benchmarks/cluster.py --services 10000 --out /tmp/pkp-10k
    uv run pykubeproxy --dry-run --from-file /tmp/pkp-10k --cluster-cidr 10.244.0.0/14
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

NODE_NAME = "node-1"
NODE_IP = "192.0.2.10"
# One /16 of pods per node; the four together are the cluster CIDR to render with.
NODES = ("node-1", "node-2", "node-3", "node-4")
CLUSTER_CIDR = "10.244.0.0/14"
SERVICE_BASE = int(ipaddress.IPv4Address("10.96.0.16"))  # below: kubernetes, kube-dns, ...
POD_BASE = int(ipaddress.IPv4Address("10.244.0.0"))
NODE_PORT_BASE = 30000
ENDPOINTS = 5
NAMESPACES = 100
CREATED = "2026-01-01T00:00:00Z"


def _uid(kind: str, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pkp-bench/{kind}/{index}"))


def _ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def service_name(index: int) -> tuple[str, str]:
    return f"ns-{index % NAMESPACES:02d}", f"svc-{index:05d}"


def service_ports(index: int) -> list[dict[str, object]]:
    """The Service's ports: http on 80 always, metrics on 9090 for every 4th Service."""
    ports: list[dict[str, object]] = [
        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
    ]
    if index % 4 == 0:
        ports.append({"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": 9090})
    if index % 10 == 0:
        # Two node ports reserved per NodePort Service: 30000-31999 at N = 10 000.
        for offset, port in enumerate(ports):
            port["nodePort"] = NODE_PORT_BASE + (index // 10) * 2 + offset
    return ports


def service(index: int) -> dict[str, object]:
    namespace, name = service_name(index)
    node_port = index % 10 == 0
    spec: dict[str, object] = {
        "type": "NodePort" if node_port else "ClusterIP",
        "clusterIP": _ip(SERVICE_BASE + index),
        "clusterIPs": [_ip(SERVICE_BASE + index)],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
        "sessionAffinity": "None",
        "selector": {"app": name},
        "ports": service_ports(index),
    }
    if node_port:
        spec["externalTrafficPolicy"] = "Cluster"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": _uid("Service", index),
            "resourceVersion": str(1000 + index),
            "creationTimestamp": CREATED,
            "labels": {"app": name},
        },
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def endpoint_placement(index: int, number: int) -> tuple[int, str]:
    """Endpoint `number` of Service `index`: its node (by index) and its pod IP.

    Pod p = 5*index + number lands on node p % 4 (= (index + number) % 4, as 5 = 1 mod 4), so
    five consecutive endpoints cover every node; each node's pods count up in its own /16.
    """
    pod = index * ENDPOINTS + number
    node = pod % len(NODES)
    return node, _ip(POD_BASE + (node << 16) + pod // len(NODES) + 1)


def endpoint_slice(index: int, endpoints: int = ENDPOINTS) -> dict[str, object]:
    namespace, name = service_name(index)
    items = []
    for number in range(endpoints):
        node, ip = endpoint_placement(index, number)
        items.append(
            {
                "addresses": [ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": NODES[node],
                "zone": f"zone-{'abcd'[node]}",
                "targetRef": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": f"{name}-pod-{number}",
                    "uid": _uid("Pod", index * ENDPOINTS + number),
                },
            }
        )
    ports = [
        {"name": p["name"], "protocol": p["protocol"], "port": p["targetPort"]}
        for p in service_ports(index)
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-{_uid('EndpointSlice', index)[:5]}",
            "namespace": namespace,
            "uid": _uid("EndpointSlice", index),
            "resourceVersion": str(1_000_000 + index),
            "creationTimestamp": CREATED,
            "generateName": f"{name}-",
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": CREATED},
        },
        "addressType": "IPv4",
        "endpoints": items,
        "ports": ports,
    }


def node() -> dict[str, object]:
    """This node: the one every generated Service has one endpoint on."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "uid": _uid("Node", 1),
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "topology.kubernetes.io/zone": "zone-a",
            },
        },
        "spec": {"podCIDR": "10.244.0.0/16", "podCIDRs": ["10.244.0.0/16"]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": NODE_NAME},
            ]
        },
    }


@dataclass(frozen=True)
class Expected:
    """What the payload holds, counted from the shape (not from a render)."""

    services: int
    service_ports: int
    node_port_ports: int
    endpoints: int  # endpoint x port pairs: one KUBE-SEP chain each
    nat_chains: int  # per-Service chains: SVC + SEP + EXT
    nat_rules: int  # with --cluster-cidr (one masquerade rule per SVC chain), static rules incl.
    # kube-proxy's fixed nat rules as this renderer writes them: 3 built-in jumps, 3
    # KUBE-POSTROUTING, 1 KUBE-MARK-MASQ, 1 KUBE-SERVICES → KUBE-NODEPORTS.
    static_nat_rules: int = field(default=8)


def expected(services: int, endpoints: int = ENDPOINTS) -> Expected:
    ports = services + len(range(0, services, 4))
    node_port_services = range(0, services, 10)
    node_port_ports = sum(2 if i % 4 == 0 else 1 for i in node_port_services)
    # Per port: KUBE-SERVICES jump, SVC masquerade + one rule per endpoint, SEP 2 rules each.
    # Per node port: KUBE-NODEPORTS jump, EXT masquerade + jump to SVC.
    nat_rules = ports * (1 + 1 + endpoints + 2 * endpoints) + node_port_ports * 3 + 8
    return Expected(
        services=services,
        service_ports=ports,
        node_port_ports=node_port_ports,
        endpoints=ports * endpoints,
        nat_chains=ports + ports * endpoints + node_port_ports,
        nat_rules=nat_rules,
    )


def generate(services: int, endpoints: int = ENDPOINTS) -> list[dict[str, object]]:
    """The Node, then every Service, then every EndpointSlice (plain decoded-JSON dicts)."""
    return [
        node(),
        *(service(i) for i in range(services)),
        *(endpoint_slice(i, endpoints) for i in range(services)),
    ]


def write(services: int, directory: Path, endpoints: int = ENDPOINTS) -> Path:
    """Write the cluster as one `kind: List` JSON file in `directory`; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"cluster-{services}x{endpoints}.json"
    body = {"apiVersion": "v1", "kind": "List", "items": generate(services, endpoints)}
    path.write_text(json.dumps(body, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=ENDPOINTS)
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON List")
    args = parser.parse_args()
    path = write(args.services, args.out, args.endpoints)
    exp = expected(args.services, args.endpoints)
    print(
        f"{path}: {exp.services} Services, {exp.service_ports} Service ports "
        f"({exp.node_port_ports} node ports), {exp.endpoints} endpoints; expect "
        f"{exp.nat_rules} nat rules in {exp.nat_chains} per-Service chains with "
        f"--cluster-cidr {CLUSTER_CIDR}"
    )


if __name__ == "__main__":
    main()
