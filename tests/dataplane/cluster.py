"""Owns the manifests the data-plane tests feed to pykubeproxy, and running it in the node."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.dataplane.topology import Topology
from tests.support.builders import endpoint, endpoint_slice, node


def pod_slice(
    service_name: str,
    topo: Topology,
    pods: Iterable[str],
    ports: Sequence[dict[str, Any]],
    *,
    not_ready: Iterable[str] = (),
) -> dict[str, Any]:
    """The EndpointSlice `<service>-slice` of the topology's pods, all on node-1."""
    not_ready = set(not_ready)
    backends = [endpoint(topo.pod_ip[pod], ready=pod not in not_ready) for pod in pods]
    return endpoint_slice(service_name, *backends, ports=ports, name=f"{service_name}-slice")


def this_node(topo: Topology) -> dict[str, Any]:
    """node-1, at the node namespace's address."""
    return node("node-1", topo.node_ip)


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
