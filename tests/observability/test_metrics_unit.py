"""Metrics, health and /rules as a real Proxy drives them, over a fake kernel that keeps state.

Each test builds a private registry and wires it with an `Observer`, as the daemon does, then
changes the store and syncs, and reads the values back with `get_sample_value`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from pykubeproxy.backends import SyncError, SyncOutcome
from pykubeproxy.backends.iptables.backend import IptablesBackend, RenderedRules
from pykubeproxy.backends.iptables.ruleset import format_restore
from pykubeproxy.config import Config
from pykubeproxy.health import ProxyHealth
from pykubeproxy.metrics import ProxyMetrics
from pykubeproxy.observe import Observer
from pykubeproxy.pipeline import NodeIdentity
from pykubeproxy.proxy import Proxy
from pykubeproxy.servers import RulesView, health_routes
from pykubeproxy.store import Store
from tests.support.builders import TRIGGER_TIME, endpoint, endpoint_slice, node, service
from tests.support.fakes import FakeClock, FakeIptables

STARTED = 1_800_000_000.0  # when the proxy under test started (seconds since the epoch)
IPV4 = {"ip_family": "IPv4"}
SYNC = "kubeproxy_sync_proxy_rules"

Obj = dict[str, object]


def rfc3339(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


HTTP = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
SLICE_HTTP = {"name": "http", "port": 8080, "protocol": "TCP"}

# The Services here live in namespace shop, with one TCP port "http" (80 → 8080).
shop_service = functools.partial(service, namespace="shop", ports=[HTTP])


def slice_of(svc: str, *endpoints: tuple[str, str], trigger_time: str | None = None) -> Obj:
    """The EndpointSlice of shop/`svc`, with ready endpoints given as (address, node name)."""
    return endpoint_slice(
        svc,
        *(endpoint(ip, where, ready=True) for ip, where in endpoints),
        namespace="shop",
        ports=[SLICE_HTTP],
        annotations={TRIGGER_TIME: trigger_time} if trigger_time else None,
    )


WEB = shop_service("web", cluster_ip="10.96.0.10")
WEB_SLICE = slice_of("web", ("10.244.1.11", "node-1"), ("10.244.2.12", "node-2"))


@dataclass
class Observed:
    """A proxy over a fake kernel, wired to private metrics, health and /rules by an Observer."""

    config: Config = field(default_factory=Config)
    # The wall clock that metrics, health and /rules read.
    clock: FakeClock = field(default_factory=lambda: FakeClock(STARTED + 1))
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    kernel: FakeIptables = field(default_factory=FakeIptables)
    store: Store = field(default_factory=Store)
    rules: RulesView = field(default_factory=RulesView)

    def __post_init__(self) -> None:
        self.metrics = ProxyMetrics(self.registry, started=STARTED)
        self.health = ProxyHealth(timeout=2 * self.config.sync_period, clock=self.clock)
        self.proxy = Proxy(
            backend=IptablesBackend(self.config, self.kernel),
            identity=NodeIdentity("node-1", True),
        )
        observer = Observer(
            self.store, metrics=self.metrics, health=self.health, rules=self.rules, clock=self.clock
        )
        self.store.on_change(observer.changed)
        self.proxy.observer = observer
        self.routes = health_routes(self.health, self.metrics)

    def cluster(self, *objects: Obj) -> None:
        """Replace the store's contents by kind, as a re-read of the manifests does."""
        for kind in ("Service", "EndpointSlice", "Node"):
            self.store.replace(kind, [o for o in objects if kind_of(o) == kind])

    def sync(self, *, full: bool = False) -> SyncOutcome:
        return self.proxy.sync(self.store, full=full)

    def value(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        assert value is not None, f"no sample {name}{labels}"
        return value

    def probe(self, path: str) -> tuple[int, Mapping[str, object]]:
        code, _, body = self.routes[path]({})
        return code, json.loads(body)


def kind_of(obj: Obj) -> str:
    return str(obj["kind"])


def written_lines(payloads: list[str], table: str) -> int:
    """-A and -I lines of one table in restore payloads."""
    count, current = 0, ""
    for payload in payloads:
        for line in payload.splitlines():
            if line.startswith("*"):
                current = line[1:]
            elif current == table and line.startswith(("-A ", "-I ")):
                count += 1
    return count


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[MutableMapping[str, object]]]:
    """Log events kept in memory: the stderr structlog was set up with may be closed by now."""
    with capture_logs() as events:
        yield events


@pytest.fixture
def observed() -> Observed:
    return Observed()


# -- sync durations -------------------------------------------------------------------------------


def test_a_first_sync_is_observed_as_full_and_a_later_change_as_partial(
    observed: Observed,
) -> None:
    observed.cluster(node(), WEB, WEB_SLICE)
    assert observed.sync(full=False).full  # the first sync is always full

    assert observed.value(f"{SYNC}_duration_seconds_count", **IPV4) == 1
    assert observed.value("kubeproxy_sync_full_proxy_rules_duration_seconds_count", **IPV4) == 1
    assert observed.value("kubeproxy_sync_partial_proxy_rules_duration_seconds_count", **IPV4) == 0

    observed.store.upsert(
        "EndpointSlice",
        slice_of("web", ("10.244.1.11", "node-1"), ("10.244.1.13", "node-1")),
    )
    assert not observed.sync(full=False).full

    assert observed.value(f"{SYNC}_duration_seconds_count", **IPV4) == 2
    assert observed.value("kubeproxy_sync_full_proxy_rules_duration_seconds_count", **IPV4) == 1
    assert observed.value("kubeproxy_sync_partial_proxy_rules_duration_seconds_count", **IPV4) == 1
    all_seconds = observed.value(f"{SYNC}_duration_seconds_sum", **IPV4)
    full_seconds = observed.value("kubeproxy_sync_full_proxy_rules_duration_seconds_sum", **IPV4)
    part_seconds = observed.value("kubeproxy_sync_partial_proxy_rules_duration_seconds_sum", **IPV4)
    assert all_seconds == pytest.approx(full_seconds + part_seconds)


def test_a_sync_that_finds_nothing_to_change_is_counted_as_unchanged(observed: Observed) -> None:
    observed.cluster(node(), WEB, WEB_SLICE)
    observed.sync()
    assert observed.value("pykubeproxy_sync_proxy_rules_unchanged_total") == 0

    assert not observed.sync().wrote

    assert observed.value("pykubeproxy_sync_proxy_rules_unchanged_total") == 1


def test_last_sync_and_last_queued_timestamps_follow_the_clock(observed: Observed) -> None:
    observed.cluster(node(), WEB, WEB_SLICE)
    queued_at = observed.clock.now
    observed.clock.advance(0.5)
    observed.sync()

    assert observed.value(f"{SYNC}_last_queued_timestamp_seconds") == queued_at
    assert observed.value(f"{SYNC}_last_timestamp_seconds") == queued_at + 0.5


# -- restore failures -----------------------------------------------------------------------------


def test_a_refused_partial_restore_counts_as_a_failure_and_a_partial_failure(
    observed: Observed,
) -> None:
    observed.cluster(node(), WEB, WEB_SLICE)
    observed.sync()
    observed.store.upsert("EndpointSlice", slice_of("web", ("10.244.1.13", "node-1")))
    observed.kernel.refuse_all = True

    with pytest.raises(SyncError):
        observed.sync(full=False)

    assert observed.value(f"{SYNC}_iptables_restore_failures_total") == 1
    assert observed.value(f"{SYNC}_iptables_partial_restore_failures_total") == 1
    # A failed sync is no sync: neither its duration nor its time is recorded.
    assert observed.value(f"{SYNC}_duration_seconds_count", **IPV4) == 1
    assert observed.rules.last is not None and not observed.rules.last.ok


def test_a_refused_full_restore_counts_only_as_a_failure(observed: Observed) -> None:
    observed.cluster(node(), WEB, WEB_SLICE)
    observed.kernel.refuse_all = True

    with pytest.raises(SyncError):
        observed.sync(full=True)

    assert observed.value(f"{SYNC}_iptables_restore_failures_total") == 1
    assert observed.value(f"{SYNC}_iptables_partial_restore_failures_total") == 0

    observed.kernel.refuse_all = False
    observed.sync(full=True)
    assert observed.value(f"{SYNC}_iptables_restore_failures_total") == 1
    assert observed.rules.last is not None and observed.rules.last.ok


def test_a_service_the_kernel_refuses_counts_a_failure_and_a_rejected_port(
    observed: Observed,
) -> None:
    observed.cluster(node(), WEB, WEB_SLICE, shop_service("odd", cluster_ip="10.96.0.66"))
    observed.kernel.refuse_containing = "10.96.0.66"

    result = observed.sync(full=True)

    assert [s.name for s in result.rejected] == ["odd"]
    assert observed.value(f"{SYNC}_iptables_restore_failures_total") == 1
    assert observed.value("pykubeproxy_rejected_service_ports_total") == 1
    assert observed.value(f"{SYNC}_duration_seconds_count", **IPV4) == 1


def test_a_partial_restore_that_falls_back_to_a_full_one_counts_as_a_partial_failure(
    observed: Observed,
) -> None:
    observed.cluster(node(), WEB, WEB_SLICE)
    observed.sync()
    observed.store.upsert("Service", shop_service("odd", cluster_ip="10.96.0.66"))
    observed.kernel.refuse_containing = "10.96.0.66"

    assert observed.sync(full=False).rejected

    assert observed.value(f"{SYNC}_iptables_restore_failures_total") == 1
    assert observed.value(f"{SYNC}_iptables_partial_restore_failures_total") == 1


# -- rule counts ----------------------------------------------------------------------------------


def test_rule_gauges_count_the_rules_of_kube_chains_in_each_table(observed: Observed) -> None:
    observed.cluster(
        node(), WEB, WEB_SLICE, shop_service("api", cluster_ip="10.96.0.20", type="NodePort")
    )
    result = observed.sync()

    for table in ("filter", "nat"):
        assert isinstance(result.desired, RenderedRules)
        rendered = result.desired.tables().ruleset().table(table)
        kube = sum(len(c.rules) for c in rendered.chains if c.name.startswith("KUBE-"))
        assert kube > 0
        assert observed.value(f"{SYNC}_iptables_total", table=table) == kube
        assert observed.kernel.kube_rules(table) == kube
        # A full sync writes every rule, plus the jumps from the built-in chains.
        written = written_lines(observed.kernel.written, table)
        assert observed.value(f"{SYNC}_iptables_last", table=table) == written
        assert written >= kube


def test_rules_written_gauge_counts_only_what_a_partial_sync_wrote(observed: Observed) -> None:
    observed.cluster(node(), WEB, WEB_SLICE, shop_service("api", cluster_ip="10.96.0.20"))
    observed.sync()
    observed.store.upsert(
        "EndpointSlice", slice_of("web", ("10.244.1.11", "node-1"), ("10.244.1.13", "node-1"))
    )
    observed.sync()

    nat_total = observed.value(f"{SYNC}_iptables_total", table="nat")
    nat_last = observed.value(f"{SYNC}_iptables_last", table="nat")
    assert nat_total == observed.kernel.kube_rules("nat")
    assert 0 < nat_last < nat_total
    assert nat_last == written_lines(observed.kernel.written[-1:], "nat")

    observed.sync()  # nothing changed: nothing written
    assert observed.value(f"{SYNC}_iptables_last", table="nat") == 0
    assert observed.value(f"{SYNC}_iptables_total", table="nat") == nat_total


# -- change counts --------------------------------------------------------------------------------


def test_change_counters_count_store_changes_and_pending_returns_to_zero_after_a_sync(
    observed: Observed,
) -> None:
    observed.cluster(node(), WEB, WEB_SLICE, shop_service("api", cluster_ip="10.96.0.20"))
    assert observed.value(f"{SYNC}_service_changes_pending") == 2
    assert observed.value(f"{SYNC}_endpoint_changes_pending") == 1

    observed.sync()
    assert observed.value(f"{SYNC}_service_changes_pending") == 0
    assert observed.value(f"{SYNC}_endpoint_changes_pending") == 0
    assert observed.value(f"{SYNC}_service_changes_total") == 2
    assert observed.value(f"{SYNC}_endpoint_changes_total") == 1

    observed.store.upsert("Service", WEB)  # the same object again is no change
    observed.store.upsert("EndpointSlice", slice_of("web", ("10.244.1.13", "node-1")))
    observed.store.delete("Service", shop_service("api", cluster_ip="10.96.0.20"))
    assert observed.value(f"{SYNC}_service_changes_pending") == 1
    assert observed.value(f"{SYNC}_endpoint_changes_pending") == 1

    observed.sync()
    assert observed.value(f"{SYNC}_service_changes_pending") == 0
    assert observed.value(f"{SYNC}_endpoint_changes_pending") == 0
    assert observed.value(f"{SYNC}_service_changes_total") == 3
    assert observed.value(f"{SYNC}_endpoint_changes_total") == 2


def test_changes_taken_by_a_failed_sync_are_still_counted(observed: Observed) -> None:
    observed.cluster(node(), WEB, WEB_SLICE)
    observed.kernel.refuse_all = True
    with pytest.raises(SyncError):
        observed.sync()

    # The failed sync consumed them from the store: the next one will not see them again.
    assert observed.value(f"{SYNC}_service_changes_total") == 1
    assert observed.value(f"{SYNC}_endpoint_changes_total") == 1
    assert observed.value(f"{SYNC}_service_changes_pending") == 0


# -- network programming latency ------------------------------------------------------------------


def test_network_programming_observes_only_trigger_times_newer_than_the_start(
    observed: Observed,
) -> None:
    observed.cluster(
        node(),
        WEB,
        shop_service("api", cluster_ip="10.96.0.20"),
        slice_of("web", ("10.244.1.11", "node-1"), trigger_time=rfc3339(STARTED - 60)),
        slice_of("api", ("10.244.1.21", "node-1"), trigger_time=rfc3339(STARTED + 5)),
    )
    observed.clock.now = STARTED + 8
    observed.sync()

    histogram = "kubeproxy_network_programming_duration_seconds"
    assert observed.value(f"{histogram}_count", **IPV4) == 1
    assert observed.value(f"{histogram}_sum", **IPV4) == pytest.approx(3.0)
    assert observed.value(f"{histogram}_bucket", le="2.0", **IPV4) == 0
    assert observed.value(f"{histogram}_bucket", le="3.0", **IPV4) == 1

    observed.sync()  # a trigger time is observed once, by the sync that programmed it
    assert observed.value(f"{histogram}_count", **IPV4) == 1


# -- health ---------------------------------------------------------------------------------------


def test_healthz_is_200_while_starting_and_after_every_update(observed: Observed) -> None:
    code, body = observed.probe("/healthz")
    assert code == 200
    assert body["lastUpdated"] == ""
    assert body["nodeEligible"] is True

    observed.cluster(node(), WEB, WEB_SLICE)
    observed.sync()
    code, body = observed.probe("/healthz")
    assert code == 200
    assert body == {
        "lastUpdated": rfc3339(observed.clock.now),
        "currentTime": rfc3339(observed.clock.now),
        "nodeEligible": True,
    }
    assert observed.value("kubeproxy_proxy_healthz_total", code="200") == 2


def test_healthz_turns_503_when_a_queued_change_waits_twice_the_sync_period(
    observed: Observed,
) -> None:
    timeout = 2 * observed.config.sync_period
    observed.cluster(node(), WEB, WEB_SLICE)
    observed.sync()
    observed.store.upsert("EndpointSlice", slice_of("web", ("10.244.1.13", "node-1")))

    observed.clock.advance(timeout - 0.1)
    assert observed.probe("/healthz")[0] == 200
    observed.clock.advance(0.1)
    assert observed.probe("/healthz")[0] == 503
    assert observed.probe("/livez")[0] == 503  # livez is about the proxy, not the node

    observed.sync()
    assert observed.probe("/healthz")[0] == 200
    assert observed.value("kubeproxy_proxy_healthz_total", code="503") == 1
    assert observed.value("kubeproxy_proxy_healthz_total", code="200") == 2
    assert observed.value("kubeproxy_proxy_livez_total", code="503") == 1


@pytest.mark.parametrize(
    "leaving",
    [
        pytest.param(node(deletionTimestamp="2027-01-15T08:00:00Z"), id="deletion-timestamp"),
        pytest.param(
            {
                **node(),
                "spec": {
                    "taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]
                },
            },
            id="autoscaler-taint",
        ),
    ],
)
def test_healthz_turns_503_for_a_node_being_removed_while_livez_stays_200(
    observed: Observed, leaving: Obj
) -> None:
    observed.cluster(leaving, WEB, WEB_SLICE)
    observed.sync()

    code, body = observed.probe("/healthz")
    assert code == 503
    assert body["nodeEligible"] is False
    code, body = observed.probe("/livez")
    assert code == 200
    assert "nodeEligible" not in body

    observed.store.replace("Node", [node()])  # the removal was called off
    observed.sync()
    assert observed.probe("/healthz")[0] == 200


# -- traffic policies -----------------------------------------------------------------------------


def test_no_local_endpoints_counts_local_policy_services_with_only_remote_endpoints(
    observed: Observed,
) -> None:
    observed.cluster(
        node(),
        shop_service(
            "ext-remote",
            cluster_ip="10.96.0.31",
            type="NodePort",
            externalTrafficPolicy="Local",
            ports=[{**HTTP, "nodePort": 30031}],
        ),
        slice_of("ext-remote", ("10.244.2.31", "node-2")),
        shop_service(
            "ext-here",
            cluster_ip="10.96.0.32",
            type="NodePort",
            externalTrafficPolicy="Local",
            ports=[{**HTTP, "nodePort": 30032}],
        ),
        slice_of("ext-here", ("10.244.1.32", "node-1"), ("10.244.2.32", "node-2")),
        shop_service("int-remote", cluster_ip="10.96.0.33", internalTrafficPolicy="Local"),
        slice_of("int-remote", ("10.244.2.33", "node-2")),
        # No endpoints anywhere is a different case: rejected, not "no local endpoints".
        shop_service("int-none", cluster_ip="10.96.0.34", internalTrafficPolicy="Local"),
        WEB,
        WEB_SLICE,
    )
    observed.sync()

    name = f"{SYNC}_no_local_endpoints_total"
    assert observed.value(name, traffic_policy="external") == 1
    assert observed.value(name, traffic_policy="internal") == 1

    observed.store.upsert("EndpointSlice", slice_of("int-remote", ("10.244.1.33", "node-1")))
    observed.sync()
    assert observed.value(name, traffic_policy="internal") == 0


# -- /rules ---------------------------------------------------------------------------------------


def test_rules_view_shows_the_ruleset_of_the_last_sync_and_its_outcome(
    observed: Observed,
) -> None:
    assert observed.rules.text() == "# no sync has run yet\n"
    observed.cluster(node(), WEB, WEB_SLICE)
    result = observed.sync()

    finished = rfc3339(observed.clock.now)
    assert isinstance(result.desired, RenderedRules)
    ruleset = result.desired.tables().ruleset()
    assert observed.rules.text() == f"# last sync {finished}: ok\n" + format_restore(ruleset)
    body = json.loads(observed.rules.json())
    assert body["lastSync"] == {"finished": finished, "ok": True, "message": ""}
    assert set(body["tables"]) == {"filter", "nat"}

    observed.kernel.refuse_all = True
    observed.store.upsert("EndpointSlice", slice_of("web", ("10.244.1.13", "node-1")))
    with pytest.raises(SyncError):
        observed.sync()
    assert observed.rules.text().startswith(f"# last sync {finished}: failed: ")
    assert json.loads(observed.rules.json())["lastSync"]["ok"] is False
