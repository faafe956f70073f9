"""Owns a small cluster split between kube-proxy and another proxy by the proxy-name label."""

from __future__ import annotations

from typing import Any

from tests.support.builders import endpoint_slice, node, service

PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
OURS = "pykubeproxy"

# name → (cluster IP, endpoint IP, the label's value or None)
SPLIT = {
    "moved": ("10.96.50.1", "10.244.1.1", OURS),
    "stays": ("10.96.50.2", "10.244.1.2", None),
    "elsewhere": ("10.96.50.3", "10.244.1.3", "other-proxy"),
}


def split_cluster() -> list[dict[str, Any]]:
    """A Node, and a Service with its slice for each entry of SPLIT, labelled as it says."""
    objects: list[dict[str, Any]] = [node("node-1", served=True)]
    for name, (cluster_ip, endpoint_ip, owner) in SPLIT.items():
        labels = {PROXY_NAME_LABEL: owner} if owner else None
        objects.append(service(name, cluster_ip=cluster_ip, labels=labels, served=True))
        piece = endpoint_slice(name, endpoint_ip, served=True)
        if owner:  # the EndpointSlice controller copies the Service's label onto its slices
            piece["metadata"]["labels"][PROXY_NAME_LABEL] = owner
        objects.append(piece)
    return objects
