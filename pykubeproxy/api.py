"""The Kubernetes API vocabulary we read: kinds, labels, annotations and JSON shapes.

The TypedDicts describe well-formed objects (only the fields we use), as the API server sends
them. Objects from manifest files may be malformed, so translate.py checks every field it reads
instead of trusting these types.

This module sits below both the sources and translate: it declares names, and does nothing.
"""

from __future__ import annotations

from typing import TypeAlias, TypedDict

# The kinds kube-proxy follows, in the order the store and the manifest reader keep them.
KINDS = ("Service", "EndpointSlice", "Node")

# Objects carrying either label are not ours to proxy (kube-proxy filters them in its informers).
LABEL_SERVICE_PROXY_NAME = "service.kubernetes.io/service-proxy-name"
LABEL_HEADLESS = "service.kubernetes.io/headless"
# The Service an EndpointSlice belongs to.
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
# When the change an EndpointSlice carries happened (for the network programming latency).
ANNOTATION_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
# The cluster autoscaler's taint on a Node it is about to delete.
TAINT_TO_BE_DELETED = "ToBeDeletedByClusterAutoscaler"


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    resourceVersion: str
    deletionTimestamp: str


class ServicePortJSON(TypedDict, total=False):
    name: str
    protocol: str
    port: int
    targetPort: int | str
    nodePort: int


class ClientIPConfig(TypedDict, total=False):
    timeoutSeconds: int


class SessionAffinityConfig(TypedDict, total=False):
    clientIP: ClientIPConfig


class ServiceSpec(TypedDict, total=False):
    type: str
    clusterIP: str
    clusterIPs: list[str]
    ipFamilies: list[str]
    ports: list[ServicePortJSON]
    externalIPs: list[str]
    loadBalancerSourceRanges: list[str]
    externalTrafficPolicy: str
    internalTrafficPolicy: str
    healthCheckNodePort: int
    sessionAffinity: str
    sessionAffinityConfig: SessionAffinityConfig
    externalName: str


class LoadBalancerIngress(TypedDict, total=False):
    ip: str
    hostname: str
    ipMode: str


class LoadBalancerStatus(TypedDict, total=False):
    ingress: list[LoadBalancerIngress]


class ServiceStatus(TypedDict, total=False):
    loadBalancer: LoadBalancerStatus


class ServiceJSON(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: ServiceSpec
    status: ServiceStatus


class EndpointConditions(TypedDict, total=False):
    ready: bool | None
    serving: bool | None
    terminating: bool | None


class ForZone(TypedDict):
    name: str


class ForNode(TypedDict):
    name: str


class EndpointHints(TypedDict, total=False):
    forZones: list[ForZone]
    forNodes: list[ForNode]


class EndpointJSON(TypedDict, total=False):
    addresses: list[str]
    conditions: EndpointConditions
    nodeName: str
    zone: str
    hints: EndpointHints


class EndpointPortJSON(TypedDict, total=False):
    name: str | None
    port: int | None
    protocol: str


class EndpointSliceJSON(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    addressType: str
    endpoints: list[EndpointJSON]
    ports: list[EndpointPortJSON]


class NodeAddress(TypedDict):
    type: str
    address: str


class Taint(TypedDict, total=False):
    key: str
    value: str
    effect: str


class NodeSpec(TypedDict, total=False):
    taints: list[Taint]


class NodeStatus(TypedDict, total=False):
    addresses: list[NodeAddress]


class NodeJSON(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: NodeSpec
    status: NodeStatus


# An object of one of the KINDS.
ObjectJSON: TypeAlias = ServiceJSON | EndpointSliceJSON | NodeJSON


# --- the envelopes of list and watch responses ---------------------------------------------

# `continue` is a Python keyword, hence the functional form.
ListMeta = TypedDict("ListMeta", {"resourceVersion": str, "continue": str}, total=False)


class ListJSON(TypedDict, total=False):
    metadata: ListMeta
    items: list[ObjectJSON]


class StatusJSON(TypedDict, total=False):
    """What an ERROR watch event carries instead of an object (code 410: history expired)."""

    metadata: ListMeta
    code: int
    message: str
    reason: str


class WatchEventJSON(TypedDict, total=False):
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK or ERROR
    object: ObjectJSON | StatusJSON  # BOOKMARK: only metadata.resourceVersion is set
