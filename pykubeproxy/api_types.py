"""The shape of the Kubernetes API JSON we read, as TypedDicts (only the fields we use).

These describe well-formed objects. Input from files or the API may still be malformed, so
translate.py checks every field it reads instead of trusting these types.
"""

from __future__ import annotations

from typing import TypedDict


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


class EndpointHints(TypedDict, total=False):
    forZones: list[ForZone]


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


class NodeStatus(TypedDict, total=False):
    addresses: list[NodeAddress]


class NodeJSON(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    status: NodeStatus
