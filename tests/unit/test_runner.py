"""When syncs run: coalescing, minimum and maximum intervals, backoff — on fake time."""

from __future__ import annotations

from pykubeproxy.runner import SyncSchedule


def schedule() -> SyncSchedule:
    return SyncSchedule(min_interval=1.0, max_interval=30.0, backoff_base=1.0, backoff_max=8.0)


def run(s: SyncSchedule, now: float, *, ok: bool = True) -> bool:
    """Run a sync at `now` if one is due; return whether it was a full one."""
    due = s.due(now)
    assert due.run, f"no sync due at {now}"
    s.started(now, full=due.full)
    s.finished(now, ok=ok)
    return due.full


def test_the_first_sync_is_due_at_once_and_is_full() -> None:
    s = schedule()
    assert s.due(0.0).run and s.due(0.0).full


def test_a_burst_of_changes_is_coalesced_into_one_sync_after_the_minimum_interval() -> None:
    s = schedule()
    run(s, 0.0)
    for t in (0.1, 0.2, 0.3, 0.9):
        s.request()
        assert not s.due(t).run

    assert s.next_time() == 1.0
    assert not run(s, 1.0)  # a change-driven sync is partial
    assert not s.due(1.5).run  # the burst was consumed by that one sync


def test_with_no_changes_a_partial_sync_runs_every_sync_period_and_a_full_one_hourly() -> None:
    s = schedule()
    run(s, 0.0)
    assert not s.due(29.9).run
    assert run(s, 30.0) is False
    assert s.next_time() == 60.0
    now = 60.0
    while now < 3600.0:
        assert run(s, now) is False
        now = s.next_time()
    assert now == 3600.0
    assert run(s, 3600.0) is True


def test_the_sync_period_counts_from_the_last_sync_and_the_full_one_from_the_last_full() -> None:
    s = schedule()
    run(s, 0.0)
    s.request()
    run(s, 10.0)
    assert s.next_time() == 40.0
    s = SyncSchedule(min_interval=1.0, max_interval=30.0, full_interval=100.0)
    run(s, 0.0)
    run(s, 30.0)
    run(s, 60.0)
    run(s, 90.0)
    assert s.due(100.0).run is False and s.next_time() == 120.0
    assert run(s, 120.0) is True  # the first sync due after 100 s is the full one


def test_failures_back_off_exponentially_up_to_the_cap_and_retry_in_full() -> None:
    s = schedule()
    delays = []
    now = 0.0
    for _ in range(6):
        run(s, now, ok=False)
        delays.append(s.next_time() - now)
        now = s.next_time()
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert s.due(now).full


def test_a_success_resets_the_backoff() -> None:
    s = schedule()
    run(s, 0.0, ok=False)
    run(s, 1.0, ok=False)
    run(s, 3.0, ok=True)
    s.request()
    assert s.next_time() == 4.0


def test_a_retry_still_respects_the_minimum_interval() -> None:
    s = SyncSchedule(min_interval=5.0, max_interval=30.0, backoff_base=1.0)
    run(s, 0.0, ok=False)
    assert s.next_time() == 5.0
