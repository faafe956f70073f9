"""Every metric, under kube-proxy's names, types, labels and buckets (registry passed in)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from pykubeproxy.backends.iptables.chains import BUILTIN_CHAINS
from pykubeproxy.backends.iptables.ruleset import Ruleset
from pykubeproxy.model import ProxyState
from pykubeproxy.timestamps import parse_rfc3339
from pykubeproxy.translate import categorize_endpoints

SUBSYSTEM = "kubeproxy"
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


class ProxyMetrics:
    """kube-proxy's metrics for one proxy, registered in the registry given."""

    def __init__(
        self, registry: CollectorRegistry, *, started: float, ip_family: str = "IPv4"
    ) -> None:
        # Trigger times from before we started describe changes someone else programmed.
        self.started = started
        self.ip_family = ip_family
        name = f"{SUBSYSTEM}_sync_proxy_rules"

        def histogram(metric: str, help_text: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(metric, help_text, ["ip_family"], buckets=buckets, registry=registry)

        self.sync_duration = histogram(
            f"{name}_duration_seconds", "SyncProxyRules latency in seconds", SYNC_BUCKETS
        )
        self.full_sync_duration = histogram(
            f"{SUBSYSTEM}_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            SYNC_BUCKETS,
        )
        self.partial_sync_duration = histogram(
            f"{SUBSYSTEM}_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            SYNC_BUCKETS,
        )
        self.network_programming = histogram(
            f"{SUBSYSTEM}_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            PROGRAMMING_BUCKETS,
        )
        self.last_sync = Gauge(
            f"{name}_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            registry=registry,
        )
        self.last_queued = Gauge(
            f"{name}_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            registry=registry,
        )
        self.endpoint_changes_pending = Gauge(
            f"{name}_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            registry=registry,
        )
        self.endpoint_changes = Counter(
            f"{name}_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
            registry=registry,
        )
        self.service_changes_pending = Gauge(
            f"{name}_service_changes_pending",
            "Pending proxy rules Service changes",
            registry=registry,
        )
        self.service_changes = Counter(
            f"{name}_service_changes_total",
            "Cumulative proxy rules Service changes",
            registry=registry,
        )
        self.restore_failures = Counter(
            f"{name}_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
            registry=registry,
        )
        self.partial_restore_failures = Counter(
            f"{name}_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures",
            registry=registry,
        )
        self.rules_total = Gauge(
            f"{name}_iptables_total",
            "Total number of iptables rules owned by the proxy",
            ["table"],
            registry=registry,
        )
        self.rules_last = Gauge(
            f"{name}_iptables_last",
            "Number of iptables rules written by the proxy in last sync",
            ["table"],
            registry=registry,
        )
        self.no_local_endpoints = Gauge(
            f"{name}_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            ["traffic_policy"],
            registry=registry,
        )
        self.healthz = Counter(
            f"{SUBSYSTEM}_proxy_healthz_total",
            "Cumulative proxy healthz HTTP status",
            ["code"],
            registry=registry,
        )
        self.livez = Counter(
            f"{SUBSYSTEM}_proxy_livez_total",
            "Cumulative proxy livez HTTP status",
            ["code"],
            registry=registry,
        )
        self.skipped = Gauge(
            "pykubeproxy_skipped_objects",
            "Objects not programmed because they are invalid, by kind and reason class",
            ["kind", "reason"],
            registry=registry,
        )
        self.rejected = Counter(
            "pykubeproxy_rejected_service_ports_total",
            "Service ports whose rules the kernel refused, so they were left out of a sync",
            registry=registry,
        )
        self.noop_syncs = Counter(
            "pykubeproxy_sync_proxy_rules_unchanged_total",
            "Syncs that found the kernel already holding the desired rules and wrote nothing",
            registry=registry,
        )
        self.backend = Info(
            "pykubeproxy_backend", "The proxy mode and kernel interface in use", registry=registry
        )
        for table in ("filter", "nat"):
            self.rules_total.labels(table)
            self.rules_last.labels(table)
        for policy in ("internal", "external"):
            self.no_local_endpoints.labels(policy)
        for histogram_metric in (
            self.sync_duration,
            self.full_sync_duration,
            self.partial_sync_duration,
            self.network_programming,
        ):
            histogram_metric.labels(ip_family)

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

    def rules(self, *, desired: Ruleset, written: dict[str, int]) -> None:
        """Rule counts: owned rules per table (as iptables-save shows them), written last sync."""
        for table in desired:
            owned = sum(len(c.rules) for c in table.chains if c.name not in BUILTIN_CHAINS)
            self.rules_total.labels(table.name).set(owned)
            self.rules_last.labels(table.name).set(written.get(table.name, 0))

    def traffic_policies(self, state: ProxyState) -> None:
        """Services whose Local traffic policy has no local endpoint to go to (kube-proxy's)."""
        internal = external = 0
        for port in state.services:
            selection = categorize_endpoints(port, state.endpoints_of(port.name))
            if selection.has_any and not selection.local:
                internal += port.internal_policy_local
                external += port.external_policy_local
        self.no_local_endpoints.labels("internal").set(internal)
        self.no_local_endpoints.labels("external").set(external)


def standard_registry() -> CollectorRegistry:
    """A registry with the process, platform and Python GC collectors, as a Go binary exports."""
    # Go's client (kube-proxy's) has no *_created series; dashboards and alerts do not expect them.
    disable_created_metrics()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
