"""What each store change and sync attempt tells the metrics, the health checks and /rules."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping

from pykubeproxy.health import ProxyHealth, node_eligible
from pykubeproxy.metrics import ProxyMetrics
from pykubeproxy.proxy import SyncReport
from pykubeproxy.servers import LastSync, RulesView
from pykubeproxy.store import Store
from pykubeproxy.timestamps import rfc3339

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:[.:/]\d+)*")


def reason_class(reason: str) -> str:
    """A skip reason without its object-specific values, so it can label a metric."""
    return _NUMBER.sub("N", _QUOTED.sub("…", reason))[:80]


def _node_object(report: SyncReport) -> Mapping[str, object] | None:
    for obj in report.snapshot.nodes:
        meta = obj.get("metadata")
        if isinstance(meta, dict) and meta.get("name") == report.state.node.name:
            return obj
    return None


class Observer:
    """Feeds metrics, health and /rules. The store calls `changed`, the proxy `synced`."""

    def __init__(
        self,
        store: Store,
        *,
        metrics: ProxyMetrics,
        health: ProxyHealth,
        rules: RulesView,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.health = health
        self.rules = rules
        self.clock = clock

    def changed(self) -> None:
        self.health.queued()
        self.metrics.queued(self.clock())
        self._pending()

    def _pending(self) -> None:
        self.metrics.pending(
            services=self.store.pending("Service"), endpoints=self.store.pending("EndpointSlice")
        )

    def synced(self, report: SyncReport) -> None:
        now = self.clock()
        self._pending()
        if report.rules_wiped:
            self.metrics.canary_missing.inc(report.rules_wiped)
        if report.failed_writes:
            self.metrics.restore_failures.inc(report.failed_writes)
            if not report.attempted_full:
                self.metrics.partial_restore_failures.inc()
        if report.outcome is None:
            self._failed(report, now)
            return
        outcome, snapshot, state = report.outcome, report.snapshot, report.state
        self.metrics.synced(
            seconds=report.seconds,
            full=outcome.full,
            now=now,
            service_changes=snapshot.service_changes,
            endpoint_changes=snapshot.endpoint_changes,
            trigger_times=snapshot.trigger_times,
        )
        self.metrics.rules(owned=outcome.desired.rule_counts(), written=outcome.rules_written)
        self.metrics.traffic_policies(state)
        self.metrics.rejected.inc(len(outcome.rejected))
        self.metrics.kernel_operations.inc(len(outcome.operations))
        if not outcome.wrote:
            self.metrics.noop_syncs.inc()
        skipped = Counter((s.kind, reason_class(s.reason)) for s in state.skipped if s.invalid)
        self.metrics.skipped.clear()
        for (kind, reason), count in skipped.items():
            self.metrics.skipped.labels(kind, reason).set(count)
        self.health.updated(node_eligible=node_eligible(_node_object(report)))
        self.rules.record(LastSync(outcome.desired, rfc3339(now), True, ""))

    def _failed(self, report: SyncReport, now: float) -> None:
        # The snapshot took these changes out of the store: count them now or never.
        self.metrics.service_changes.inc(report.snapshot.service_changes)
        self.metrics.endpoint_changes.inc(report.snapshot.endpoint_changes)
        if report.desired is not None:
            self.rules.record(LastSync(report.desired, rfc3339(now), False, report.error))
