"""The daemon's loop: nothing is written before the source has synced; changes trigger syncs."""

from __future__ import annotations

import functools
import threading
import time

from pykubeproxy.backends import SyncOutcome
from pykubeproxy.backends.iptables.backend import IptablesBackend
from pykubeproxy.config import Config
from pykubeproxy.loop import run_sync_loop
from pykubeproxy.model import ProxyState, ServiceName
from pykubeproxy.pipeline import NodeIdentity
from pykubeproxy.proxy import Proxy
from pykubeproxy.store import Store
from tests.support.builders import service
from tests.support.fakes import FakeIptables
from tests.support.wait import wait_until


class RecordingBackend(IptablesBackend):
    """The real backend over a fake kernel, remembering the Services of every sync."""

    def __init__(self) -> None:
        super().__init__(Config(min_sync_period=0.0), FakeIptables())
        self.synced: list[list[str]] = []

    def sync(
        self,
        state: ProxyState,
        *,
        full: bool = False,
        changed: frozenset[ServiceName] | None = None,
    ) -> SyncOutcome:
        self.synced.append([str(p.name) for p in state.services])
        return super().sync(state, full=full, changed=changed)


class ManualSource:
    def __init__(self) -> None:
        self.synced = False

    def start(self) -> None:
        pass

    def poll(self) -> None:
        pass

    def stop(self, timeout: float = 2.0) -> None:
        pass


# Services as small as the API allows: one port, nothing else.
minimal_service = functools.partial(service, cluster_ip="10.96.0.1", ports=[{"port": 80}])


def test_no_sync_before_the_source_is_synced_then_changes_are_followed() -> None:
    store, source, syncer = Store(), ManualSource(), RecordingBackend()
    proxy = Proxy(backend=syncer, identity=NodeIdentity("node-1", True))
    stop = threading.Event()
    loop = threading.Thread(
        target=run_sync_loop, args=(proxy, store, source), kwargs={"stop": stop}
    )
    loop.start()
    try:
        store.upsert("Service", minimal_service("half-listed"))
        time.sleep(0.3)
        assert syncer.synced == []  # an incomplete view must never reach the kernel

        source.synced = True
        wait_until(
            lambda: syncer.synced == [["default/half-listed"]],
            what="the first sync, of the listed Service",
            timeout=5.0,
        )

        store.upsert("Service", minimal_service("added"))
        wait_until(
            lambda: syncer.synced[-1] == ["default/added", "default/half-listed"],
            what="a sync with the added Service",
            timeout=5.0,
        )
    finally:
        stop.set()
        loop.join(5)
    assert not loop.is_alive()


class CrashingOnceBackend(RecordingBackend):
    """Fails its first sync with an unexpected error, as a bug would."""

    def sync(
        self,
        state: ProxyState,
        *,
        full: bool = False,
        changed: frozenset[ServiceName] | None = None,
    ) -> SyncOutcome:
        if not self.synced:
            self.synced.append(["crash"])
            raise RuntimeError("a bug")
        return super().sync(state, full=full, changed=changed)


def test_an_unexpected_error_in_a_sync_is_retried_instead_of_stopping_the_proxy() -> None:
    store, source, syncer = Store(), ManualSource(), CrashingOnceBackend()
    source.synced = True
    proxy = Proxy(backend=syncer, identity=NodeIdentity("node-1", True))
    store.upsert("Service", minimal_service("svc"))
    stop = threading.Event()
    loop = threading.Thread(
        target=run_sync_loop, args=(proxy, store, source), kwargs={"stop": stop}
    )
    loop.start()
    try:
        wait_until(
            lambda: syncer.synced[-1:] == [["default/svc"]],
            what="a sync after the crash",
            timeout=5.0,
        )
        assert syncer.synced[0] == ["crash"]
    finally:
        stop.set()
        loop.join(5)
    assert not loop.is_alive()
