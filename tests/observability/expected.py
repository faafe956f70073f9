"""kube-proxy's metrics as its own code declares them (pkg/proxy/metrics), written out by hand.

Kept apart from pykubeproxy.metrics on purpose: the tests compare our output with this list,
not with our own constants.
"""

from __future__ import annotations

import math

PREFIX = "kubeproxy_"

# name → type, with the labels each series carries besides ip_family on the histograms
KUBE_PROXY_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kubeproxy_sync_proxy_rules_duration_seconds": ("histogram", ()),
    "kubeproxy_sync_full_proxy_rules_duration_seconds": ("histogram", ()),
    "kubeproxy_sync_partial_proxy_rules_duration_seconds": ("histogram", ()),
    "kubeproxy_network_programming_duration_seconds": ("histogram", ()),
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds": ("gauge", ()),
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds": ("gauge", ()),
    "kubeproxy_sync_proxy_rules_endpoint_changes_pending": ("gauge", ()),
    "kubeproxy_sync_proxy_rules_endpoint_changes_total": ("counter", ()),
    "kubeproxy_sync_proxy_rules_service_changes_pending": ("gauge", ()),
    "kubeproxy_sync_proxy_rules_service_changes_total": ("counter", ()),
    "kubeproxy_sync_proxy_rules_iptables_restore_failures_total": ("counter", ()),
    "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total": ("counter", ()),
    "kubeproxy_sync_proxy_rules_iptables_total": ("gauge", ("table",)),
    "kubeproxy_sync_proxy_rules_iptables_last": ("gauge", ("table",)),
    "kubeproxy_sync_proxy_rules_no_local_endpoints_total": ("gauge", ("traffic_policy",)),
    "kubeproxy_proxy_healthz_total": ("counter", ("code",)),
    "kubeproxy_proxy_livez_total": ("counter", ("code",)),
}

HISTOGRAMS = tuple(name for name, (kind, _) in KUBE_PROXY_METRICS.items() if kind == "histogram")

# What a Go binary's process collector exports and every kube-proxy dashboard uses.
PROCESS_METRICS = ("process_cpu_seconds_total", "process_resident_memory_bytes")

# prometheus.ExponentialBuckets(0.001, 2, 15)
SYNC_BUCKETS = (*(0.001 * 2**k for k in range(15)), math.inf)
# LinearBuckets(0.25, 0.25, 2) + (1, 1, 59) + (60, 5, 12) + (120, 30, 7)
PROGRAMMING_BUCKETS = (
    0.25,
    0.5,
    *(1.0 + k for k in range(59)),
    *(60.0 + 5 * k for k in range(12)),
    *(120.0 + 30 * k for k in range(7)),
    math.inf,
)


def same_bounds(have: list[float], want: tuple[float, ...]) -> bool:
    return len(have) == len(want) and all(
        math.isclose(a, b) or a == b for a, b in zip(have, want, strict=True)
    )


# client-go's rest client metrics (component-base/metrics/prometheus/restclient/metrics.go)
CLIENT_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "rest_client_requests_total": ("counter", ("code", "method", "host")),
    "rest_client_request_duration_seconds": ("histogram", ("verb", "host")),
}
CLIENT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, math.inf)
