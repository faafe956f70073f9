"""Every metric, under kube-proxy's names, types, labels and buckets (registry passed in)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, TypeAlias, get_args, get_origin, get_type_hints

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from pykubeproxy.model import ProxyState
from pykubeproxy.selection import Place, categorize_endpoints
from pykubeproxy.timestamps import parse_rfc3339

# exponential buckets 0.001 x 2^k, k = 0..14, as kube-proxy's sync histograms
SYNC_BUCKETS = tuple(0.001 * 2**k for k in range(15))
# 0.25, 0.5, 1..59 by 1, 60..115 by 5, 120..300 by 30: kube-proxy's network programming buckets
PROGRAMMING_BUCKETS = (
    0.25,
    0.5,
    *range(1, 60),
    *range(60, 120, 5),
    *range(120, 301, 30),
)
# client-go's rest client latency buckets (component-base/metrics/prometheus/restclient)
CLIENT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
_FAMILY = ("ip_family",)

MetricType: TypeAlias = type[Counter] | type[Gauge] | type[Histogram] | type[Info]


@dataclass(frozen=True, slots=True)
class Declaration:
    """How one metric is registered; its type is the one it annotates in ProxyMetrics."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    # Label values whose series exist (at zero) before the first sync, as kube-proxy's do.
    values: tuple[str, ...] = ()

    def register(
        self, kind: MetricType, *, registry: CollectorRegistry, ip_family: str
    ) -> MetricWrapperBase:
        metric: MetricWrapperBase
        if issubclass(kind, Histogram):
            metric = kind(
                self.name, self.help, self.labels, buckets=self.buckets, registry=registry
            )
        else:
            metric = kind(self.name, self.help, self.labels, registry=registry)
        # Series labelled by IP family exist for the proxy's own family.
        values = (ip_family,) if self.labels == _FAMILY else self.values
        for value in values:
            metric.labels(value)
        return metric


def _declared(cls: type) -> Iterator[tuple[str, MetricType, Declaration]]:
    """The metrics a class declares: attribute, type and declaration, in the order written."""
    for attribute, hint in get_type_hints(cls, include_extras=True).items():
        if get_origin(hint) is Annotated:
            kind, declaration = get_args(hint)
            yield attribute, kind, declaration


class ProxyMetrics:
    """kube-proxy's metrics for one proxy, registered in the registry given.

    Each metric is an attribute annotated with its type and how it is declared; they are
    registered in the order written here, which is the order /metrics lists them in.
    """

    started: float
    ip_family: str
    sync_duration: Annotated[
        Histogram,
        Declaration(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            labels=_FAMILY,
            buckets=SYNC_BUCKETS,
        ),
    ]
    full_sync_duration: Annotated[
        Histogram,
        Declaration(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            labels=_FAMILY,
            buckets=SYNC_BUCKETS,
        ),
    ]
    partial_sync_duration: Annotated[
        Histogram,
        Declaration(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            labels=_FAMILY,
            buckets=SYNC_BUCKETS,
        ),
    ]
    network_programming: Annotated[
        Histogram,
        Declaration(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            labels=_FAMILY,
            buckets=PROGRAMMING_BUCKETS,
        ),
    ]
    last_sync: Annotated[
        Gauge,
        Declaration(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
        ),
    ]
    last_queued: Annotated[
        Gauge,
        Declaration(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
        ),
    ]
    endpoint_changes_pending: Annotated[
        Gauge,
        Declaration(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
        ),
    ]
    endpoint_changes: Annotated[
        Counter,
        Declaration(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
        ),
    ]
    service_changes_pending: Annotated[
        Gauge,
        Declaration(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
        ),
    ]
    service_changes: Annotated[
        Counter,
        Declaration(
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
        ),
    ]
    canary_missing: Annotated[
        Counter,
        Declaration(
            "pykubeproxy_iptables_canary_missing_total",
            "Times the KUBE-PROXY-CANARY chain was found gone (rules wiped from outside), each "
            "followed by a full sync",
        ),
    ]
    restore_failures: Annotated[
        Counter,
        Declaration(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
        ),
    ]
    partial_restore_failures: Annotated[
        Counter,
        Declaration(
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures",
        ),
    ]
    rules_total: Annotated[
        Gauge,
        Declaration(
            "kubeproxy_sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by the proxy",
            labels=("table",),
            values=("filter", "nat"),
        ),
    ]
    rules_last: Annotated[
        Gauge,
        Declaration(
            "kubeproxy_sync_proxy_rules_iptables_last",
            "Number of iptables rules written by the proxy in last sync",
            labels=("table",),
            values=("filter", "nat"),
        ),
    ]
    no_local_endpoints: Annotated[
        Gauge,
        Declaration(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            labels=("traffic_policy",),
            values=("internal", "external"),
        ),
    ]
    healthz: Annotated[
        Counter,
        Declaration(
            "kubeproxy_proxy_healthz_total",
            "Cumulative proxy healthz HTTP status",
            labels=("code",),
        ),
    ]
    livez: Annotated[
        Counter,
        Declaration(
            "kubeproxy_proxy_livez_total",
            "Cumulative proxy livez HTTP status",
            labels=("code",),
        ),
    ]
    # Our own, beyond kube-proxy's.
    skipped: Annotated[
        Gauge,
        Declaration(
            "pykubeproxy_skipped_objects",
            "Objects not programmed because they are invalid, by kind and reason class",
            labels=("kind", "reason"),
        ),
    ]
    rejected: Annotated[
        Counter,
        Declaration(
            "pykubeproxy_rejected_service_ports_total",
            "Service ports whose rules the kernel refused, so they were left out of a sync",
        ),
    ]
    noop_syncs: Annotated[
        Counter,
        Declaration(
            "pykubeproxy_sync_proxy_rules_unchanged_total",
            "Syncs that found the kernel already holding the desired rules and wrote nothing",
        ),
    ]
    kernel_operations: Annotated[
        Counter,
        Declaration(
            "pykubeproxy_kernel_operations_total",
            "Kernel changes besides rule writes (IPVS virtual and real servers, addresses, "
            "ipsets), by sync",
        ),
    ]
    backend: Annotated[
        Info,
        Declaration("pykubeproxy_backend", "The proxy mode and kernel interface in use"),
    ]

    def __init__(
        self, registry: CollectorRegistry, *, started: float, ip_family: str = "IPv4"
    ) -> None:
        # Trigger times from before we started describe changes someone else programmed.
        self.started = started
        self.ip_family = ip_family
        for attribute, kind, declaration in _declared(ProxyMetrics):
            metric = declaration.register(kind, registry=registry, ip_family=ip_family)
            setattr(self, attribute, metric)

    def queued(self, now: float) -> None:
        """A change arrived that needs a sync."""
        self.last_queued.set(now)

    def pending(self, *, services: int, endpoints: int) -> None:
        self.service_changes_pending.set(services)
        self.endpoint_changes_pending.set(endpoints)

    def synced(
        self,
        *,
        seconds: float,
        full: bool,
        now: float,
        service_changes: int,
        endpoint_changes: int,
        trigger_times: Iterable[str],
    ) -> None:
        """A sync succeeded: the rules are in the kernel as of `now` (seconds since the epoch)."""
        family = self.ip_family
        self.sync_duration.labels(family).observe(seconds)
        part = self.full_sync_duration if full else self.partial_sync_duration
        part.labels(family).observe(seconds)
        self.last_sync.set(now)
        self.service_changes.inc(service_changes)
        self.endpoint_changes.inc(endpoint_changes)
        for text in trigger_times:
            when = parse_rfc3339(text)
            if when is not None and when.timestamp() > self.started:
                self.network_programming.labels(family).observe(max(now - when.timestamp(), 0))

    def rules(self, *, owned: Mapping[str, int], written: Mapping[str, int]) -> None:
        """Rule counts per table: owned (as iptables-save shows them), written last sync."""
        for table, count in owned.items():
            self.rules_total.labels(table).set(count)
            self.rules_last.labels(table).set(written.get(table, 0))

    def traffic_policies(self, state: ProxyState) -> None:
        """Services whose Local traffic policy has no local endpoint to go to (kube-proxy's)."""
        internal = external = 0
        place = Place.of(state.node)
        for port in state.services:
            selection = categorize_endpoints(port, state.endpoints_of(port.name), place=place)
            if selection.has_any and not selection.local:
                internal += port.internal_policy_local
                external += port.external_policy_local
        self.no_local_endpoints.labels("internal").set(internal)
        self.no_local_endpoints.labels("external").set(external)


class ClientMetrics:
    """client-go's metrics of requests to the API server, registered in the registry given.

    Only a proxy that reads the API server has them: like a Go binary, which omits a vector
    that has no series yet, a proxy reading files exports neither.
    """

    requests: Annotated[
        Counter,
        Declaration(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            labels=("code", "method", "host"),
        ),
    ]
    duration: Annotated[
        Histogram,
        Declaration(
            "rest_client_request_duration_seconds",
            "Request latency in seconds. Broken down by verb, and host.",
            labels=("verb", "host"),
            buckets=CLIENT_BUCKETS,
        ),
    ]

    def __init__(self, registry: CollectorRegistry) -> None:
        for attribute, kind, declaration in _declared(ClientMetrics):
            metric = declaration.register(kind, registry=registry, ip_family="")
            setattr(self, attribute, metric)


def standard_registry() -> CollectorRegistry:
    """A registry with the process, platform and Python GC collectors, as a Go binary exports."""
    # Go's client (kube-proxy's) has no *_created series; dashboards and alerts do not expect them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
