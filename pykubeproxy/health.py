"""/healthz and /livez with kube-proxy's semantics: healthy unless a queued update is overdue."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pykubeproxy.api import TAINT_TO_BE_DELETED
from pykubeproxy.timestamps import rfc3339


def node_eligible(node: Mapping[str, object] | None) -> bool:
    """False while the node is being deleted or drained by the cluster autoscaler."""
    if node is None:
        return True
    meta = node.get("metadata")
    if isinstance(meta, dict) and meta.get("deletionTimestamp"):
        return False
    spec = node.get("spec")
    taints = spec.get("taints") if isinstance(spec, dict) else None
    if isinstance(taints, list):
        return not any(isinstance(t, dict) and t.get("key") == TAINT_TO_BE_DELETED for t in taints)
    return True


@dataclass(frozen=True, slots=True)
class HealthReport:
    healthy: bool
    body: str

    @property
    def code(self) -> int:
        return 200 if self.healthy else 503


class ProxyHealth:
    """Tracks queued and applied updates. Unhealthy when one waits longer than `timeout`.

    kube-proxy's timeout is twice the sync period. A proxy that is starting, or has applied
    everything queued, is healthy.
    """

    def __init__(self, *, timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.timeout = timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._oldest_pending: float | None = None
        self._last_updated: float | None = None
        self._node_eligible = True

    def queued(self) -> None:
        with self._lock:
            if self._oldest_pending is None:
                self._oldest_pending = self.clock()

    def updated(self, *, node_eligible: bool = True) -> None:
        with self._lock:
            self._last_updated = self.clock()
            self._oldest_pending = None
            self._node_eligible = node_eligible

    def report(self, *, include_node: bool) -> HealthReport:
        with self._lock:
            now = self.clock()
            pending = self._oldest_pending
            healthy = pending is None or now - pending < self.timeout
            eligible = self._node_eligible
            last = self._last_updated
        if include_node:
            healthy = healthy and eligible
        body = {"lastUpdated": "" if last is None else rfc3339(last), "currentTime": rfc3339(now)}
        if include_node:
            body["nodeEligible"] = eligible  # type: ignore[assignment]
        return HealthReport(healthy, json.dumps(body))
