"""Wires metrics, health and /rules to the store and the proxy: what each sync and change tells."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable

from pykubeproxy.daemon import Proxy, SyncReport
from pykubeproxy.health import ProxyHealth, node_eligible
from pykubeproxy.metrics import ProxyMetrics
from pykubeproxy.servers import LastSync, RulesView
from pykubeproxy.store import Store
from pykubeproxy.timestamps import rfc3339

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:[.:/]\d+)*")


def reason_class(reason: str) -> str:
    """A skip reason without its object-specific values, so it can label a metric."""
    return _NUMBER.sub("N", _QUOTED.sub("…", reason))[:80]


def _written_per_table(payloads: tuple[str, ...]) -> dict[str, int]:
    written: Counter[str] = Counter()
    for payload in payloads:
        table = ""
        for line in payload.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(("-A ", "-I ")):
                written[table] += 1
    return dict(written)


def observe(
    proxy: Proxy,
    store: Store,
    *,
    metrics: ProxyMetrics,
    health: ProxyHealth,
    rules: RulesView,
    clock: Callable[[], float] = time.time,
) -> None:
    def changed() -> None:
        health.queued()
        metrics.queued(clock())
        metrics.pending(services=store.pending("Service"), endpoints=store.pending("EndpointSlice"))

    def synced(report: SyncReport) -> None:
        now = clock()
        metrics.pending(services=store.pending("Service"), endpoints=store.pending("EndpointSlice"))
        if report.failed_restores:
            metrics.restore_failures.inc(report.failed_restores)
            if not report.attempted_full:
                metrics.partial_restore_failures.inc()
        ruleset = report.desired.ruleset() if report.result is None else report.result.ruleset
        if report.result is None:
            # The snapshot took these changes out of the store: count them now or never.
            metrics.service_changes.inc(report.snapshot.service_changes)
            metrics.endpoint_changes.inc(report.snapshot.endpoint_changes)
            rules.record(LastSync(ruleset, rfc3339(now), False, report.error))
            return
        snapshot, state = report.snapshot, report.desired.state
        metrics.synced(
            seconds=report.seconds,
            full=report.full,
            now=now,
            service_changes=snapshot.service_changes,
            endpoint_changes=snapshot.endpoint_changes,
            trigger_times=snapshot.trigger_times,
        )
        metrics.rules(desired=ruleset, written=_written_per_table(report.result.plan.payloads))
        metrics.traffic_policies(state)
        metrics.rejected.inc(len(report.result.rejected))
        if not report.result.wrote:
            metrics.noop_syncs.inc()
        skipped = Counter((s.kind, reason_class(s.reason)) for s in state.skipped if s.invalid)
        metrics.skipped.clear()
        for (kind, reason), count in skipped.items():
            metrics.skipped.labels(kind, reason).set(count)
        node = next(
            (n for n in snapshot.nodes if (n.get("metadata") or {}).get("name") == state.node.name),  # type: ignore[attr-defined]
            None,
        )
        health.updated(node_eligible=node_eligible(node))
        rules.record(LastSync(ruleset, rfc3339(now), True, ""))

    store.on_change(changed)
    proxy.observers.append(synced)
