"""The long-running proxy: sources feed the store, the schedule says when, the proxy syncs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pykubeproxy.backends.iptables.kernel import Iptables, count_rules
from pykubeproxy.backends.iptables.sync import SyncError, SyncResult
from pykubeproxy.config import Config
from pykubeproxy.conntrack import TRACKED, Conntrack, clear_stale_flows
from pykubeproxy.log import get_logger
from pykubeproxy.model import ProxyState
from pykubeproxy.pipeline import Desired, NodeIdentity, desired_state
from pykubeproxy.runner import SyncSchedule
from pykubeproxy.sources.files import ManifestError, manifest_files, read_manifests
from pykubeproxy.store import Snapshot, Store

FILE_POLL_INTERVAL = 1.0  # seconds between looks at the manifests' modification times
MAX_IDLE_WAIT = 1.0  # the loop looks at its sources at least this often

log = get_logger("pykubeproxy.daemon")


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What observers (metrics, health, /rules) learn after every sync attempt."""

    snapshot: Snapshot
    desired: Desired
    full: bool  # whether the kernel was rewritten in full (a refused restore forces one)
    attempted_full: bool  # whether the sync set out to be full
    seconds: float
    failed_restores: int  # restores the kernel refused during this sync
    result: SyncResult | None  # None when the sync failed
    error: str = ""


class Syncer(Protocol):
    """What the proxy needs from a mode's syncer (IptablesSyncer, IpvsSyncer)."""

    kernel: Iptables

    @property
    def needs_full(self) -> bool: ...

    @property
    def failed_restores(self) -> int: ...

    def sync(self, state: ProxyState, opts: Any, *, full: bool = False) -> SyncResult: ...


class Proxy:
    """One node's proxy: turns a snapshot of the store into kernel rules."""

    def __init__(
        self,
        *,
        config: Config,
        identity: NodeIdentity,
        syncer: Syncer,
        conntrack: Conntrack | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.syncer = syncer
        self.conntrack = conntrack
        self._flows_checked_for: frozenset[object] | None = None
        self._reported: set[str] = set()
        # Told about every sync attempt (metrics, health and /rules hook in here).
        self.observers: list[Callable[[SyncReport], None]] = []

    def _notify(self, report: SyncReport) -> None:
        for observer in self.observers:
            observer(report)

    def sync(self, store: Store, *, full: bool) -> SyncResult:
        started = time.monotonic()
        snapshot = store.snapshot()
        desired = desired_state(snapshot, self.config, self.identity)
        self._report_skipped([str(s) for s in desired.state.skipped if s.invalid])
        refused_before = self.syncer.failed_restores
        attempted_full = full or self.syncer.needs_full
        try:
            result = self.syncer.sync(desired.state, desired.options, full=full)
        except SyncError as exc:
            refused = self.syncer.failed_restores - refused_before
            seconds = time.monotonic() - started
            self._notify(
                SyncReport(
                    snapshot,
                    desired,
                    attempted_full,
                    attempted_full,
                    seconds,
                    refused,
                    None,
                    str(exc),
                )
            )
            raise
        self._clear_stale_flows(desired.state)
        elapsed = time.monotonic() - started
        for skipped in result.rejected:
            log.warning(
                "service skipped",
                service=f"{skipped.namespace}/{skipped.name}",
                reason=skipped.reason,
            )
        log.info(
            "synced" if result.wrote else "synced, nothing to change",
            mode=self.config.mode,
            backend=self.syncer.kernel.backend,
            full=result.full,
            services=len(desired.state.services),
            endpoints=sum(len(eps) for eps in desired.state.endpoints.values()),
            chains_written=result.plan.chains_written,
            chains_deleted=result.plan.chains_deleted,
            rules=count_rules(result.ruleset),
            seconds=round(elapsed, 4),
        )
        refused = self.syncer.failed_restores - refused_before
        self._notify(
            SyncReport(snapshot, desired, result.full, attempted_full, elapsed, refused, result)
        )
        return result

    def _clear_stale_flows(self, state: ProxyState) -> None:
        """After the rules are in: drop UDP/SCTP flows pinned to endpoints that left."""
        if self.conntrack is None:
            return
        # Only when some UDP/SCTP Service's endpoints changed (or on the first sync).
        seen = frozenset(
            (port.name, state.endpoints_of(port.name))
            for port in state.services
            if port.name.protocol in TRACKED
        )
        if seen != self._flows_checked_for:
            clear_stale_flows(self.conntrack, state)
            self._flows_checked_for = seen

    def _report_skipped(self, reasons: list[str]) -> None:
        """Warn about each invalid object once, not at every sync."""
        for reason in reasons:
            if reason not in self._reported:
                log.warning("skipped invalid object", detail=reason)
        self._reported = set(reasons)


class Source(Protocol):
    """Feeds the store. `synced` turns true once it has delivered a complete view."""

    @property
    def synced(self) -> bool: ...

    def poll(self) -> None:
        """Look for changes (sources with threads of their own do nothing here)."""


def load_files(store: Store, paths: Sequence[Path]) -> None:
    manifests = read_manifests(paths)
    for kind, objects in manifests.objects.items():
        store.replace(kind, objects)
    for skipped in manifests.skipped:
        log.warning("skipped document", document=skipped.name, reason=skipped.reason)


def files_signature(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """What changes when a manifest is edited, added or removed."""
    try:
        files = manifest_files(paths)
    except ManifestError:
        return ()
    signature = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        signature.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(signature)


class FileSource:
    """Manifests on disk, re-read whenever a file's size or modification time changes."""

    def __init__(self, store: Store, paths: Sequence[Path]) -> None:
        self.store = store
        self.paths = paths
        self.synced = False
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._next_look = 0.0

    def poll(self) -> None:
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + FILE_POLL_INTERVAL
        current = files_signature(self.paths)
        if current == self._signature:
            return
        self._signature = current
        try:
            load_files(self.store, self.paths)
            self.synced = True
        except ManifestError as exc:
            # Keep programming what we had: an edit in progress must not wipe the node.
            log.error("cannot read manifests; keeping the previous ones", error=str(exc))


def run_sync_loop(
    proxy: Proxy,
    store: Store,
    source: Source,
    *,
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Sync whenever the schedule says so, until `stop` is set. Never before the source synced."""
    min_period, period = proxy.config.periods
    schedule = SyncSchedule(min_interval=min_period, max_interval=period)
    wake = threading.Event()

    def changed() -> None:
        schedule.request()
        wake.set()

    store.on_change(changed)
    while not stop.is_set():
        wake.clear()
        source.poll()
        now = clock()
        due = schedule.due(now)
        # A proxy restarting must not wipe the node's rules with a view it has not finished.
        if due.run and source.synced:
            schedule.started(now, full=due.full)
            try:
                proxy.sync(store, full=due.full)
                schedule.finished(clock(), ok=True)
            except SyncError as exc:
                schedule.finished(clock(), ok=False)
                log.error("sync failed; will retry", error=str(exc), failures=schedule.failures)
            except Exception:  # a bug must not stop the node's proxy: log it, retry, back off
                schedule.finished(clock(), ok=False)
                log.exception("sync crashed; will retry", failures=schedule.failures)
        wait = min(MAX_IDLE_WAIT, max(schedule.next_time() - clock(), 0.0))
        if not source.synced:
            wait = max(wait, 0.1)  # the store's change notification wakes us earlier
        wake.wait(max(wait, 0.01))
        if stop.is_set():
            break
