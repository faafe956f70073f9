"""When to sync: coalesce bursts, keep the minimum interval, resync fully each period, back off."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Due:
    """Whether a sync should run now, and whether it must be a full one."""

    run: bool
    full: bool = False


# How often a full sync (read the kernel, repair drift) runs when nothing else asks for one:
# kube-proxy's FullSyncPeriod since 1.33 (it had been the sync period).
FULL_SYNC_INTERVAL = 3600.0


class SyncSchedule:
    """kube-proxy's bounded-frequency runner as a state machine; the caller supplies the time.

    - a change requests a sync, run no sooner than `min_interval` after the previous one starts;
    - with nothing changed, a sync runs every `max_interval` (the sync period): a partial one,
      which writes nothing when nothing changed;
    - a full sync (the kernel read and its drift repaired) is the first, one every
      `full_interval`, and every retry after a failure, which waits
      `backoff_base * 2**(failures-1)`, capped at `backoff_max`.
    """

    def __init__(
        self,
        *,
        min_interval: float,
        max_interval: float,
        full_interval: float = FULL_SYNC_INTERVAL,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.full_interval = max(full_interval, max_interval)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.pending = False
        self.failures = 0
        self.last_start: float | None = None
        self.last_full: float | None = None
        self.retry_at: float | None = None
        self.full_wanted = False

    def request(self) -> None:
        """Something changed: a sync is wanted."""
        self.pending = True

    def request_full(self) -> None:
        """The kernel lost our rules: a full sync is wanted, as soon as the minimum interval
        allows."""
        self.pending = True
        self.full_wanted = True

    def next_time(self) -> float:
        """The earliest moment at which a sync is due (may be in the past)."""
        if self.last_start is None:
            return float("-inf")
        earliest = self.last_start + self.min_interval
        candidates = [self.last_start + self.max_interval]
        if self.pending:
            candidates.append(earliest)
        if self.retry_at is not None:
            candidates.append(max(self.retry_at, earliest))
        return min(candidates)

    def due(self, now: float) -> Due:
        if now < self.next_time():
            return Due(run=False)
        periodic = self.last_full is None or now >= self.last_full + self.full_interval
        return Due(run=True, full=periodic or self.full_wanted or self.retry_at is not None)

    def started(self, now: float, *, full: bool) -> None:
        """A sync starts now; changes from here on need another one."""
        self.pending = False
        self.last_start = now
        if full:
            self.last_full = now
            self.full_wanted = False

    def finished(self, now: float, *, ok: bool) -> None:
        if ok:
            self.failures = 0
            self.retry_at = None
            return
        self.failures += 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** (self.failures - 1))
        self.retry_at = now + delay
