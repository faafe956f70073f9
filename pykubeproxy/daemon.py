"""The long-running proxy: feed the store, decide when to sync, sync, until told to stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pykubeproxy.backends.iptables.kernel import count_rules
from pykubeproxy.backends.iptables.sync import IptablesSyncer, SyncError, SyncResult
from pykubeproxy.config import Config
from pykubeproxy.log import get_logger
from pykubeproxy.pipeline import NodeIdentity, desired_state
from pykubeproxy.runner import SyncSchedule
from pykubeproxy.sources.files import ManifestError, manifest_files, read_manifests
from pykubeproxy.store import Store

FILE_POLL_INTERVAL = 1.0  # seconds between looks at the manifests' modification times

log = get_logger("pykubeproxy.daemon")


class Proxy:
    """One node's proxy: turns the store's current snapshot into kernel rules."""

    def __init__(self, *, config: Config, identity: NodeIdentity, syncer: IptablesSyncer) -> None:
        self.config = config
        self.identity = identity
        self.syncer = syncer
        self._reported: set[str] = set()

    def sync(self, store: Store, *, full: bool) -> SyncResult:
        started = time.monotonic()
        desired = desired_state(store.snapshot(), self.config, self.identity)
        self._report_skipped([str(s) for s in desired.state.skipped if s.invalid])
        result = self.syncer.sync(desired.state, desired.options, full=full)
        for skipped in result.rejected:
            log.warning(
                "service skipped",
                service=f"{skipped.namespace}/{skipped.name}",
                reason=skipped.reason,
            )
        log.info(
            "synced" if result.wrote else "synced, nothing to change",
            mode="iptables",
            backend=self.syncer.kernel.backend,
            full=result.full,
            services=len(desired.state.services),
            endpoints=sum(len(eps) for eps in desired.state.endpoints.values()),
            chains_written=result.plan.chains_written,
            chains_deleted=result.plan.chains_deleted,
            rules=count_rules(result.ruleset),
            seconds=round(time.monotonic() - started, 4),
        )
        return result

    def _report_skipped(self, reasons: list[str]) -> None:
        """Warn about each invalid object once, not at every sync."""
        for reason in reasons:
            if reason not in self._reported:
                log.warning("skipped invalid object", detail=reason)
        self._reported = set(reasons)


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


def run_from_files(
    proxy: Proxy,
    paths: Sequence[Path],
    *,
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Re-read the manifests when they change and keep the kernel in step until `stop` is set."""
    store = Store()
    schedule = SyncSchedule(
        min_interval=proxy.config.min_sync_period, max_interval=proxy.config.sync_period
    )
    signature: tuple[tuple[str, int, int], ...] | None = None
    loaded = False  # never sync an empty view before the manifests were read once
    while not stop.is_set():
        current = files_signature(paths)
        if current != signature:
            try:
                load_files(store, paths)
                signature, loaded = current, True
                schedule.request()
            except ManifestError as exc:
                # Keep programming what we had: an edit in progress must not wipe the node.
                log.error("cannot read manifests; keeping the previous ones", error=str(exc))
                signature = current
        now = clock()
        due = schedule.due(now)
        if due.run and loaded:
            schedule.started(now, full=due.full)
            try:
                proxy.sync(store, full=due.full)
                schedule.finished(clock(), ok=True)
            except SyncError as exc:
                schedule.finished(clock(), ok=False)
                log.error("sync failed; will retry", error=str(exc), failures=schedule.failures)
        wait = min(FILE_POLL_INTERVAL, max(schedule.next_time() - clock(), 0.0))
        stop.wait(max(wait, 0.01))
