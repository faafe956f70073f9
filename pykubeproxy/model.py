"""The proxy's vocabulary: what a node must forward, independent of any kernel backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

FAMILY = 4  # the IP family this release programs (IPv4 only)


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class TrafficPolicy(StrEnum):
    CLUSTER = "Cluster"
    LOCAL = "Local"


@dataclass(frozen=True, slots=True, order=True)
class ServiceName:
    """One Service: what changes are tracked by (all its ports change together)."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, order=True)
class ServicePortName:
    """One port of one Service: kube-proxy's key for everything it programs."""

    namespace: str
    name: str
    port: str  # the port's name; "" when the Service has a single unnamed port
    protocol: Protocol

    @property
    def service(self) -> ServiceName:
        return ServiceName(self.namespace, self.name)

    def __str__(self) -> str:
        suffix = f":{self.port}" if self.port else ""
        return f"{self.namespace}/{self.name}{suffix}"


@dataclass(frozen=True, slots=True)
class ServicePort:
    """Everything the data plane needs to know about one port of one Service (one IP family)."""

    name: ServicePortName
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    load_balancer_source_ranges: tuple[str, ...] = ()
    external_traffic_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    internal_traffic_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    health_check_node_port: int = 0
    # Seconds of ClientIP session affinity; None when the Service has no affinity.
    affinity_timeout: int | None = None

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    @property
    def external_policy_local(self) -> bool:
        # kube-proxy ignores externalTrafficPolicy on Services nobody can reach from outside.
        return self.externally_accessible and self.external_traffic_policy is TrafficPolicy.LOCAL

    @property
    def internal_policy_local(self) -> bool:
        return self.internal_traffic_policy is TrafficPolicy.LOCAL


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One backend address of one Service port, with its EndpointSlice conditions."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    is_local: bool = False
    node_name: str | None = None
    zone: str | None = None
    zone_hints: tuple[str, ...] = ()  # hints.forZones names
    node_hints: tuple[str, ...] = ()  # hints.forNodes names

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Node:
    """The node this proxy runs on."""

    name: str
    ips: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Skipped:
    """An input object (or part of one) that was not programmed, and why."""

    kind: str
    namespace: str
    name: str
    reason: str
    # True when the input was wrong (an operator should look); False for what is simply not
    # ours to program, such as ExternalName or headless Services.
    invalid: bool = False

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ProxyState:
    """What this node must program: Service ports in a stable order and their endpoints."""

    node: Node
    services: tuple[ServicePort, ...]
    endpoints: Mapping[ServicePortName, tuple[Endpoint, ...]]
    skipped: tuple[Skipped, ...] = ()

    def endpoints_of(self, name: ServicePortName) -> tuple[Endpoint, ...]:
        return self.endpoints.get(name, ())
