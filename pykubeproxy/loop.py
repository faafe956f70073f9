"""The long-running loop: sources feed the store, the schedule says when, the proxy syncs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pykubeproxy.backends import SyncError
from pykubeproxy.log import get_logger
from pykubeproxy.proxy import Proxy
from pykubeproxy.runner import SyncSchedule
from pykubeproxy.sources import Source
from pykubeproxy.store import Store

MAX_IDLE_WAIT = 1.0  # the loop looks at its sources at least this often
START_GRACE = 120.0  # seconds the loop waits for a first sync before calling after_start anyway

log = get_logger("pykubeproxy.loop")


def run_sync_loop(
    proxy: Proxy,
    store: Store,
    source: Source,
    *,
    stop: threading.Event,
    wake: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    after_start: Callable[[], None] | None = None,
) -> None:
    """Sync whenever the schedule says so, until `stop` is set. Never before the source synced.

    `after_start` is called once: after the first sync attempt (whether it worked or not), or
    after START_GRACE seconds without one (a source that cannot list). Whoever sets `stop`
    sets `wake` too, so that the loop notices at once rather than at its next look.
    """
    min_period, period = proxy.backend.periods
    schedule = SyncSchedule(min_interval=min_period, max_interval=period)
    wake = wake or threading.Event()
    start_by = clock() + START_GRACE

    def changed() -> None:
        schedule.request()
        wake.set()

    store.on_change(changed)
    while not stop.is_set():
        wake.clear()
        source.poll()
        now = clock()
        if source.synced and proxy.rules_wiped(now):
            schedule.request_full()
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
            start_by = now
        if after_start is not None and now >= start_by:
            after_start()
            after_start = None
        wait = min(MAX_IDLE_WAIT, max(schedule.next_time() - clock(), 0.0))
        if not source.synced:
            wait = max(wait, 0.1)  # the store's change notification wakes us earlier
        wake.wait(max(wait, 0.01))
        if stop.is_set():
            break
