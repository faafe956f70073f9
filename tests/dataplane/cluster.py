"""Owns the manifests the data-plane tests feed to pykubeproxy, and running it in the node."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.dataplane.topology import Topology

REPO = Path(__file__).resolve().parents[2]


def service(
    name: str, cluster_ip: str, ports: Sequence[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    status = spec.pop("status", None)
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": cluster_ip, "ports": list(ports), **spec},
    }
    if status:
        obj["status"] = status
    return obj


def endpoint_slice(
    service_name: str,
    topo: Topology,
    pods: Iterable[str],
    ports: Sequence[dict[str, Any]],
    *,
    not_ready: Iterable[str] = (),
) -> dict[str, Any]:
    not_ready = set(not_ready)
    pods = list(pods)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-slice",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [topo.pod_ip[pod]],
                "nodeName": "node-1",
                "conditions": {"ready": pod not in not_ready},
            }
            for pod in pods
        ],
        "ports": list(ports),
    }


def node(topo: Topology) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1"},
        "status": {"addresses": [{"type": "InternalIP", "address": topo.node_ip}]},
    }


def write_manifests(path: Path, objects: Sequence[dict[str, Any]]) -> Path:
    """Write atomically, so a watching proxy never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    tmp.replace(path)
    return path


def proxy_argv(manifests: Path, topo: Topology, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pykubeproxy",
        "--from-file",
        str(manifests),
        "--hostname-override",
        "node-1",
        "--cluster-cidr",
        topo.pod_cidr,
        *extra,
    ]


def sync_once(topo: Topology, manifests: Path) -> None:
    """Program the node namespace's kernel from the manifests, once."""
    result = topo.exec(
        topo.node_ns, *proxy_argv(manifests, topo, "--once"), check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
