"""One node's proxy: a snapshot of the store → this node's state → the backend → observers."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from pykubeproxy.backends import Backend, Programmed, SyncError, SyncOutcome
from pykubeproxy.conntrack import TRACKED, Conntrack, clear_stale_flows
from pykubeproxy.log import get_logger
from pykubeproxy.model import ProxyState, ServiceName
from pykubeproxy.pipeline import NodeIdentity, Translated, Translator
from pykubeproxy.store import Snapshot, Store

log = get_logger("pykubeproxy.proxy")


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What observers (metrics, health, /rules) learn after every sync attempt."""

    snapshot: Snapshot
    state: ProxyState
    attempted_full: bool  # whether the sync set out to be full
    seconds: float
    failed_writes: int  # writes the kernel refused during this sync
    outcome: SyncOutcome | None  # None when the sync failed
    desired: Programmed | None  # what it meant to program (None if it failed before knowing)
    error: str = ""
    rules_wiped: int = 0  # times the rules were found wiped from outside since the last report


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside a sync: at 10 000 Services a sync allocates hundreds
    of thousands of objects, and the collections they set off would each walk the whole heap.
    The young garbage is collected after, outside the sync's latency."""
    if not gc.isenabled():
        yield  # already paused (a sync within a sync) or turned off by the embedder
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class SyncObserver(Protocol):
    def synced(self, report: SyncReport) -> None: ...


class Proxy:
    """Turns snapshots of the store into the kernel state of one backend."""

    def __init__(
        self,
        *,
        backend: Backend,
        identity: NodeIdentity,
        conntrack: Conntrack | None = None,
    ) -> None:
        self.backend = backend
        self.conntrack = conntrack
        self.observer: SyncObserver | None = None
        self._flows_checked_for: frozenset[object] | None = None
        self._reported: set[str] = set()
        self.translator = Translator(identity)
        # Services changed since the last successful sync; None: not known (at start, or after
        # this node changed), so the backend must look at every Service.
        self._unsynced: set[ServiceName] | None = None
        self._wiped = 0  # canary losses not yet reported to the observer

    def rules_wiped(self, now: float) -> bool:
        """Whether the backend found its rules wiped from outside (a full sync is due now)."""
        wiped = self.backend.rules_wiped(now)
        self._wiped += wiped
        return wiped

    @property
    def identity(self) -> NodeIdentity:
        return self.translator.identity

    def translate(self, store: Store) -> tuple[Snapshot, Translated]:
        with collector_paused():
            return self._translate(store)

    def _translate(self, store: Store) -> tuple[Snapshot, Translated]:
        snapshot = store.snapshot()
        # Recorded first: the snapshot took them out of the store, a crash below must not lose them.
        if self._unsynced is not None:
            self._unsynced |= snapshot.changed
        translated = self.translator.translate(snapshot)
        if translated.changed is None:
            self._unsynced = None
        return snapshot, translated

    def sync(self, store: Store, *, full: bool) -> SyncOutcome:
        """Program what the store holds now. Raises SyncError (the observer hears either way)."""
        started = time.monotonic()
        with collector_paused():
            snapshot, translated = self.translate(store)
            self._report_skipped([str(s) for s in translated.state.skipped if s.invalid])
            return self.program(snapshot, translated.state, full=full, started=started)

    def program(
        self,
        snapshot: Snapshot,
        state: ProxyState,
        *,
        full: bool,
        started: float | None = None,
    ) -> SyncOutcome:
        """Sync the backend to `state` (translated from `snapshot`), log it, tell the observer.

        `started`: when the sync began (before translating), if earlier than now."""
        with collector_paused():
            return self._program(snapshot, state, full=full, started=started)

    def _program(
        self, snapshot: Snapshot, state: ProxyState, *, full: bool, started: float | None
    ) -> SyncOutcome:
        translated_at = time.monotonic()
        started = translated_at if started is None else started
        refused_before = self.backend.failed_writes
        attempted_full = full or self.backend.needs_full
        # What changed since the last successful sync, when known; a backend that must sync in
        # full (its first sync, any after a failure) is told nothing, so it looks at everything.
        unsynced = self._unsynced
        changed = None if self.backend.needs_full or unsynced is None else frozenset(unsynced)
        try:
            outcome = self.backend.sync(state, full=full, changed=changed)
        except SyncError as exc:
            refused = self.backend.failed_writes - refused_before
            seconds = time.monotonic() - started
            self._notify(
                SyncReport(
                    snapshot, state, attempted_full, seconds, refused, None, exc.desired, str(exc)
                )
            )
            raise
        self._unsynced = set()
        self._clear_stale_flows(state)
        elapsed = time.monotonic() - started
        phases = {"translate": round(translated_at - started, 4), **outcome.phases}
        self._log(state, replace(outcome, phases=phases), elapsed, changed)
        refused = self.backend.failed_writes - refused_before
        self._notify(
            SyncReport(snapshot, state, attempted_full, elapsed, refused, outcome, outcome.desired)
        )
        return outcome

    def _notify(self, report: SyncReport) -> None:
        report, self._wiped = replace(report, rules_wiped=self._wiped), 0
        if self.observer is not None:
            self.observer.synced(report)

    def _log(
        self,
        state: ProxyState,
        outcome: SyncOutcome,
        seconds: float,
        changed: frozenset[ServiceName] | None,
    ) -> None:
        for skipped in outcome.rejected:
            log.warning(
                "service skipped",
                service=f"{skipped.namespace}/{skipped.name}",
                reason=skipped.reason,
            )
        log.info(
            "synced" if outcome.wrote else "synced, nothing to change",
            mode=self.backend.mode,
            backend=self.backend.interface,
            full=outcome.full,
            changed_services="all" if changed is None else len(changed),
            translated_objects=self.translator.translated,
            services=len(state.services),
            endpoints=sum(len(eps) for eps in state.endpoints.values()),
            chains_written=outcome.chains_written,
            chains_deleted=outcome.chains_deleted,
            operations=len(outcome.operations),
            rules=sum(outcome.desired.rule_counts().values()),
            seconds=round(seconds, 4),
            **{f"seconds_{phase}": value for phase, value in outcome.phases.items()},
        )
        for operation in outcome.operations:
            log.debug("kernel operation", operation=operation)

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
