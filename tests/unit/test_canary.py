"""The canary chains: placed in mangle, nat and filter; their loss brings a full sync at once."""

from __future__ import annotations

import threading

from pykubeproxy.backends.iptables.backend import IptablesBackend
from pykubeproxy.backends.iptables.canary import CanaryMonitor
from pykubeproxy.backends.iptables.chains import CANARY_TABLES, KUBE_PROXY_CANARY
from pykubeproxy.backends.iptables.diff import plan_cleanup
from pykubeproxy.backends.iptables.kernel import IptablesError
from pykubeproxy.backends.iptables.tables import parse_save_tables
from pykubeproxy.config import Config
from pykubeproxy.loop import run_sync_loop
from pykubeproxy.pipeline import NodeIdentity
from pykubeproxy.proxy import Proxy, SyncReport
from pykubeproxy.runner import SyncSchedule
from pykubeproxy.store import Store
from tests.support.builders import service
from tests.support.fakes import FakeIptables
from tests.support.wait import wait_until


def test_the_first_look_places_a_canary_in_mangle_nat_and_filter() -> None:
    kernel = FakeIptables()
    monitor = CanaryMonitor(kernel, interval=30.0)
    assert monitor.check(0.0) is False
    assert all(kernel.chain_exists(t, KUBE_PROXY_CANARY) for t in CANARY_TABLES)
    assert kernel.tables["mangle"][KUBE_PROXY_CANARY] == []


def test_a_deleted_canary_asks_for_a_full_sync_at_the_next_look_and_is_put_back() -> None:
    kernel = FakeIptables()
    monitor = CanaryMonitor(kernel, interval=30.0)
    monitor.check(0.0)
    assert monitor.check(30.0) is False  # all there: nothing to do
    kernel.delete_chain("filter", KUBE_PROXY_CANARY)
    assert monitor.check(45.0) is False  # not looked at before the interval is over
    assert monitor.check(60.0) is True
    assert monitor.vanished == 1
    assert kernel.chain_exists("filter", KUBE_PROXY_CANARY)
    assert monitor.check(90.0) is False  # put back, so the next look is quiet again


def test_a_canary_that_cannot_be_placed_is_tried_again_at_the_next_look() -> None:
    class Refusing(FakeIptables):
        refuse = True

        def ensure_chain(self, table: str, chain: str) -> None:
            if self.refuse:
                raise IptablesError("no mangle table here")
            super().ensure_chain(table, chain)

    kernel = Refusing()
    monitor = CanaryMonitor(kernel, interval=1.0)
    assert monitor.check(0.0) is False and not monitor.placed
    kernel.refuse = False
    assert monitor.check(1.0) is False and monitor.placed  # placed, not taken for a loss


def test_a_flushed_nat_table_is_seen_by_its_missing_entry_jump_once_a_sync_wrote_it() -> None:
    kernel = FakeIptables()
    monitor = CanaryMonitor(kernel, interval=1.0)
    monitor.check(0.0)
    assert monitor.check(1.0) is False  # no sync yet: no jump expected
    monitor.synced_once = True
    kernel.tables["nat"]["PREROUTING"].append(
        '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    )
    kernel.tables["nat"]["KUBE-SERVICES"] = []
    assert monitor.check(2.0) is False
    kernel.flush_chain("nat", "PREROUTING")
    assert monitor.check(3.0) is True


def test_an_expensive_look_into_nat_is_made_less_often_to_stay_within_its_budget() -> None:
    # A look into nat that takes 0.5 s (legacy at 10 000 Services) may cost 0.5 % of the time:
    # once per 100 s, though the canaries of mangle and filter are looked at every 30 s.
    ticks = iter([0.0, 0.5] * 10)
    kernel = FakeIptables()
    monitor = CanaryMonitor(kernel, interval=30.0, clock=lambda: next(ticks))
    monitor.check(0.0)
    monitor.synced_once = True
    kernel.tables["nat"]["PREROUTING"].append("-j KUBE-SERVICES")
    kernel.tables["nat"]["KUBE-SERVICES"] = []
    assert monitor.check(30.0) is False  # looked into nat: 0.5 s
    kernel.flush_chain("nat", "PREROUTING")
    assert monitor.check(60.0) is False  # not yet: the budget allows one look per 100 s
    assert monitor.check(90.0) is False
    assert monitor.check(120.0) is True  # 90 s after the last look: the flush is seen
    kernel.delete_chain("mangle", KUBE_PROXY_CANARY)
    assert monitor.check(150.0) is True  # the cheap canaries are looked at every time


def test_cleanup_removes_the_canaries_of_every_table() -> None:
    kernel = FakeIptables()
    CanaryMonitor(kernel, interval=1.0).check(0.0)
    payload = plan_cleanup(parse_save_tables(kernel.save_text()))
    assert payload is not None
    kernel.restore(payload)
    assert not any(kernel.chain_exists(t, KUBE_PROXY_CANARY) for t in CANARY_TABLES)


def test_a_full_sync_leaves_the_canaries_alone() -> None:
    kernel = FakeIptables()
    backend = IptablesBackend(Config(min_sync_period=0.0), kernel)
    backend.rules_wiped(0.0)
    proxy = Proxy(backend=backend, identity=NodeIdentity("node-1", True))
    store = Store()
    store.upsert("Service", service("web", cluster_ip="10.96.0.10", ports=[{"port": 80}]))
    proxy.sync(store, full=True)
    assert all(kernel.chain_exists(t, KUBE_PROXY_CANARY) for t in CANARY_TABLES)


def test_a_requested_full_sync_runs_after_the_minimum_interval_and_is_full() -> None:
    schedule = SyncSchedule(min_interval=1.0, max_interval=30.0)
    schedule.started(0.0, full=True)
    schedule.finished(0.1, ok=True)
    schedule.request_full()
    assert schedule.due(0.5).run is False
    due = schedule.due(1.0)
    assert due.run and due.full
    schedule.started(1.0, full=True)
    assert schedule.due(31.0).full is False  # asked once, granted once


class SyncedSource:
    synced = True

    def start(self) -> None:
        pass

    def poll(self) -> None:
        pass

    def stop(self, timeout: float = 2.0) -> None:
        pass


class Reports:
    def __init__(self) -> None:
        self.reports: list[SyncReport] = []

    def synced(self, report: SyncReport) -> None:
        self.reports.append(report)


def test_the_loop_repairs_a_wiped_nat_table_within_the_sync_period() -> None:
    kernel = FakeIptables()
    backend = IptablesBackend(Config(min_sync_period=0.0, sync_period=0.2), kernel)
    proxy = Proxy(backend=backend, identity=NodeIdentity("node-1", True))
    reports = Reports()
    proxy.observer = reports
    store = Store()
    store.upsert("Service", service("web", cluster_ip="10.96.0.10", ports=[{"port": 80}]))
    stop = threading.Event()
    loop = threading.Thread(
        target=run_sync_loop, args=(proxy, store, SyncedSource()), kwargs={"stop": stop}
    )
    loop.start()
    try:
        wait_until(lambda: "KUBE-SERVICES" in kernel.tables["nat"], what="the first sync")
        wait_until(lambda: kernel.chain_exists("nat", KUBE_PROXY_CANARY), what="the canary")
        # What `iptables -t nat -F` leaves: every chain, empty (the canary too: still there).
        kernel.tables["nat"] = {chain: [] for chain in kernel.tables["nat"]}
        wait_until(
            lambda: "KUBE-SERVICES" in kernel.tables["nat"] and kernel.tables["nat"]["PREROUTING"],
            what="the nat table rewritten",
            timeout=3.0,
        )
        wait_until(lambda: any(r.rules_wiped for r in reports.reports), what="the loss reported")
        wiped = next(r for r in reports.reports if r.rules_wiped)
        assert wiped.attempted_full
        assert kernel.chain_exists("nat", KUBE_PROXY_CANARY)
    finally:
        stop.set()
        loop.join(timeout=5)
