"""The real reflector, on the real kubernetes client, against the fake API server and its faults."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pykubeproxy.sources.clients import Connection, api_client, connect, requesters
from pykubeproxy.sources.kube import KubeSource, Reflector, Timing
from pykubeproxy.store import Store
from tests.support.builders import endpoint_slice, node, service
from tests.support.fake_apiserver import FakeApiServer
from tests.support.wait import wait_until

NODE_IP = "192.168.0.10"  # where every Node of these tests lives
FAST = Timing(
    page_size=2,
    watch_timeout=30,
    read_timeout=1.0,
    connect_timeout=1.0,
    backoff_base=0.05,
    backoff_max=0.2,
)


def names(store: Store, kind: str) -> set[str]:
    snap = store.snapshot()
    objects = {"Service": snap.services, "EndpointSlice": snap.endpoint_slices, "Node": snap.nodes}
    found = set()
    for obj in objects[kind]:
        meta = obj["metadata"]
        assert isinstance(meta, dict)
        found.add(f"{meta.get('namespace', '')}/{meta['name']}")
    return found


def connection(kubeconfig: Path, client: str) -> Connection:
    """The daemon's way to the server (urllib3 for these kubeconfigs), or the kubernetes client."""
    if client == "kubernetes":
        api = api_client(str(kubeconfig), "")
        return Connection(
            requesters(api, "node-1"), "kubernetes", api.close, api.configuration.host
        )
    found = connect(str(kubeconfig), "", "node-1")
    assert found.client == client
    return found


@contextlib.contextmanager
def reflecting(
    kubeconfig: Path, store: Store, *, client: str = "urllib3", timing: Timing = FAST
) -> Iterator[KubeSource]:
    """The real source (reflectors on a real client) running into `store`, stopped after."""
    api = connection(kubeconfig, client)
    kube = KubeSource(request_by_kind=api.request_by_kind, store=store, timing=timing)
    kube.start()
    try:
        yield kube
    finally:
        kube.stop(timeout=5.0)
        api.close()


@pytest.fixture(params=["urllib3", "kubernetes"])
def client(request: pytest.FixtureRequest) -> str:
    """Which client carries the requests: ours on urllib3, or the kubernetes library's."""
    return str(request.param)


@pytest.fixture
def source(
    apiserver: FakeApiServer, kubeconfig: Path, client: str
) -> Iterator[tuple[KubeSource, Store]]:
    for i in range(5):
        apiserver.create(
            "services", service(f"svc-{i}", cluster_ip=f"10.96.0.{10 + i}", served=True)
        )
    apiserver.create("endpointslices", endpoint_slice("svc-0", "10.244.1.5", served=True))
    apiserver.create("nodes", node("node-1", NODE_IP, served=True))
    apiserver.create("nodes", node("node-2", NODE_IP, served=True))
    store = Store()
    with reflecting(kubeconfig, store, client=client) as kube:
        yield kube, store


def reflector(kube: KubeSource, kind: str):  # type: ignore[no-untyped-def]
    return next(r for r in kube.reflectors if r.kind == kind)


def test_the_initial_sync_lists_in_pages_and_then_watches_from_the_list_version(
    apiserver: FakeApiServer, source: tuple[KubeSource, Store]
) -> None:
    kube, store = source
    wait_until(lambda: kube.synced, what="the source to sync")

    assert names(store, "Service") == {f"default/svc-{i}" for i in range(5)}
    assert names(store, "Node") == {"/node-1"}  # only this node, by field selector
    lists = apiserver.requests_to("services", watch=False)
    assert [r.query.get("limit") for r in lists] == ["2", "2", "2"]
    assert "continue" in lists[1].query
    wait_until(
        lambda: bool(apiserver.requests_to("services", watch=True)), what="a watch of services"
    )
    watch = apiserver.requests_to("services", watch=True)[0]
    assert watch.query["allowWatchBookmarks"] in ("true", "True")
    # Nothing was written after the LIST: the watch starts at the version it returned.
    assert watch.query["resourceVersion"] == apiserver.resource_version
    assert watch.query["labelSelector"] == (
        "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
    )


def test_added_modified_and_deleted_objects_reach_the_store(
    apiserver: FakeApiServer, source: tuple[KubeSource, Store]
) -> None:
    kube, store = source
    wait_until(lambda: kube.synced, what="the source to sync")
    apiserver.wait_for_watches("services")

    apiserver.create("services", service("new", cluster_ip="10.96.1.1", served=True))
    changed = service(
        "svc-1",
        cluster_ip="10.96.0.11",
        ports=[{"name": "", "protocol": "TCP", "port": 8443, "targetPort": 8443}],
        served=True,
    )
    apiserver.update("services", changed)
    apiserver.delete("services", "default", "svc-2")
    apiserver.create("endpointslices", endpoint_slice("new", "10.244.2.2", served=True))

    want = {"default/new", "default/svc-0", "default/svc-1", "default/svc-3", "default/svc-4"}
    wait_until(
        lambda: names(store, "Service") == want, what="the store to hold the changed Services"
    )
    snap = store.snapshot()
    svc1 = next(s for s in snap.services if s["metadata"]["name"] == "svc-1")  # type: ignore[index]
    assert svc1["spec"]["ports"][0]["port"] == 8443  # type: ignore[index]
    wait_until(
        lambda: len(store.snapshot().endpoint_slices) == 2, what="two EndpointSlices in the store"
    )


def test_a_410_relists_and_applies_deletions_made_while_disconnected(
    apiserver: FakeApiServer, source: tuple[KubeSource, Store]
) -> None:
    kube, store = source
    wait_until(lambda: kube.synced, what="the source to sync")
    apiserver.wait_for_watches("services")
    services = reflector(kube, "Service")

    # The watch breaks; while we are away, a Service goes and the server forgets its history.
    apiserver.delay("services", 0.5)
    apiserver.drop_watch("services")
    apiserver.delete("services", "default", "svc-3")
    apiserver.compact()
    apiserver.delay("services", 0)

    wait_until(
        lambda: "default/svc-3" not in names(store, "Service"), what="svc-3 to leave the store"
    )
    assert services.lists >= 2


def test_an_http_410_on_watch_also_relists(
    apiserver: FakeApiServer, source: tuple[KubeSource, Store]
) -> None:
    kube, _ = source
    wait_until(lambda: kube.synced, what="the source to sync")
    apiserver.wait_for_watches("endpointslices")
    slices = reflector(kube, "EndpointSlice")

    apiserver.gone_next_watch("endpointslices", as_http=True)
    apiserver.drop_watch("endpointslices")

    wait_until(lambda: slices.lists >= 2, what="a second list of EndpointSlices")
    assert kube.synced


def test_a_dropped_watch_resumes_from_the_last_version_without_relisting(
    apiserver: FakeApiServer, source: tuple[KubeSource, Store]
) -> None:
    kube, store = source
    wait_until(lambda: kube.synced, what="the source to sync")
    apiserver.wait_for_watches("services")
    services = reflector(kube, "Service")

    apiserver.drop_watch("services", after_events=1)
    apiserver.create("services", service("one", cluster_ip="10.96.2.1", served=True))
    apiserver.create("services", service("two", cluster_ip="10.96.2.2", served=True))

    wait_until(
        lambda: {"default/one", "default/two"} <= names(store, "Service"),
        what="Services one and two in the store",
    )
    assert services.lists == 1
    watches = apiserver.requests_to("services", watch=True)
    assert len(watches) >= 2
    assert watches[-1].query["resourceVersion"] != watches[0].query["resourceVersion"]


def test_a_stalled_watch_is_noticed_by_the_read_timeout_and_replaced(
    apiserver: FakeApiServer, source: tuple[KubeSource, Store]
) -> None:
    kube, store = source
    wait_until(lambda: kube.synced, what="the source to sync")
    apiserver.wait_for_watches("services")
    apiserver.stall_watch("services")
    apiserver.create("services", service("during-stall", cluster_ip="10.96.3.1", served=True))

    wait_until(
        lambda: "default/during-stall" in names(store, "Service"),
        what="the Service created during the stall in the store",
        timeout=15,
    )


def test_server_errors_back_off_and_the_sync_completes(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.create("services", service("svc", cluster_ip="10.96.0.10", served=True))
    apiserver.fail_next("services", status=500, count=3, verb="list")
    with reflecting(kubeconfig, Store()) as kube:
        wait_until(lambda: kube.synced, what="the source to sync")
        assert reflector(kube, "Service").lists == 1
        assert len(apiserver.requests_to("services", watch=False)) == 4


def test_a_watch_the_server_answered_starts_the_back_off_afresh(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    # Failed watches push the back-off up; once a watch is answered, a later cut starts it over
    # (else, after an outage, every dropped watch would wait the longest delay).
    apiserver.fail_next("services", status=500, count=3, verb="watch")
    with reflecting(kubeconfig, Store()) as kube:
        services = reflector(kube, "Service")
        answered = lambda: services.failures == 0  # noqa: E731
        wait_until(answered, what="the fourth watch, answered, to clear the three failures")
        apiserver.drop_watch("services")
        wait_until(
            lambda: len(apiserver.requests_to("services", watch=True)) == 5,
            what="the watch made again after the cut",
        )
        wait_until(answered, what="the watch after the cut, answered, to clear its failure")


def test_bookmarks_advance_the_resource_version(
    apiserver: FakeApiServer, source: tuple[KubeSource, Store]
) -> None:
    kube, _ = source
    wait_until(lambda: kube.synced, what="the source to sync")
    apiserver.wait_for_watches("services")
    # A write elsewhere moves the global version; only a bookmark tells the Service watch.
    apiserver.create("nodes", node("node-3", NODE_IP, served=True))
    apiserver.send_bookmark("services")

    wait_until(
        lambda: reflector(kube, "Service").resource_version == apiserver.resource_version,
        what="the Service reflector to reach the server's resource version",
    )


def test_nothing_is_synced_until_every_kind_has_listed(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.fail_next("nodes", status=503, count=8, verb="list")
    with reflecting(kubeconfig, Store()) as kube:
        wait_until(lambda: reflector(kube, "Service").synced.is_set(), what="Services to be listed")
        wait_until(
            lambda: len(apiserver.requests_to("nodes", watch=False)) >= 3,
            what="three lists of nodes",
        )
        assert not kube.synced  # Services listed, but this node is not known yet
        wait_until(lambda: kube.synced, what="the source to sync")
        assert len(apiserver.requests_to("nodes", watch=False)) == 9


def test_objects_are_stored_slim_from_the_list_and_from_watch_events(
    apiserver: FakeApiServer, source: tuple[KubeSource, Store]
) -> None:
    kube, store = source
    wait_until(lambda: kube.synced, what="the source to sync")
    apiserver.wait_for_watches("services")
    apiserver.create("services", service("new", cluster_ip="10.96.1.1", served=True))
    wait_until(lambda: "default/new" in names(store, "Service"), what="the new Service")
    for obj in store.snapshot().services:
        meta = obj["metadata"]
        assert isinstance(meta, dict)
        # The server set uid and creationTimestamp; nothing in the proxy reads them.
        assert "uid" not in meta and "creationTimestamp" not in meta
        assert meta["resourceVersion"]


def test_a_relist_keeps_the_objects_already_held_and_marks_only_what_changed(
    apiserver: FakeApiServer, source: tuple[KubeSource, Store]
) -> None:
    kube, store = source
    wait_until(lambda: kube.synced, what="the source to sync")
    apiserver.wait_for_watches("services")
    services = reflector(kube, "Service")
    held = {id(obj) for obj in store.snapshot().services}

    apiserver.delay("services", 0.5)
    apiserver.drop_watch("services")
    apiserver.delete("services", "default", "svc-3")
    apiserver.compact()
    apiserver.delay("services", 0)
    # the store took the LIST before counting
    wait_until(lambda: services.lists >= 2, what="a second LIST")

    snapshot = store.snapshot()
    # One copy of each unchanged object (its translation is kept too); one Service changed.
    assert {id(obj) for obj in snapshot.services} < held
    assert {str(name) for name in snapshot.changed} == {"default/svc-3"}


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "http"])
def test_stop_cuts_stalled_watches_short_without_waiting_for_the_read_timeout(
    tls: bool, client: str, tmp_path: Path
) -> None:
    """The reader threads sit in a read that no byte will end (no events, no bookmarks, a
    minute of read timeout): stop must not depend on them waking by themselves."""
    with FakeApiServer(bookmark_interval=600, tls=tls) as server:
        server.create("nodes", node("node-1", NODE_IP, served=True))
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        api = connection(kubeconfig, client)
        timing = replace(FAST, read_timeout=60.0, watch_timeout=600)
        kube = KubeSource(request_by_kind=api.request_by_kind, store=Store(), timing=timing)
        kube.start()
        for resource in ("services", "endpointslices", "nodes"):
            server.wait_for_watches(resource)
            server.stall_watch(resource)
        wait_until(lambda: server.faults_pending() == 0, what="every watch stalled")

        started = time.monotonic()
        kube.stop(timeout=5.0)
        took = time.monotonic() - started
        api.close()

        assert took < 0.5
        assert not any(thread.is_alive() for thread in kube._threads)
        assert [r.failures for r in kube.reflectors] == [0, 0, 0]  # stopping is no failure
    assert server.errors == []


class _StuckResponse:
    """A response without a socket to find, whose close() blocks until released."""

    status = 200
    data = b""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        self.release.wait(5)
        return iter(())

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        self.release.wait(5)
        self.closed.set()


def test_interrupt_never_waits_for_a_response_it_cannot_shut_down() -> None:
    response = _StuckResponse()
    stop = threading.Event()
    one = Reflector(kind="Service", request=lambda **_: response, store=Store(), stop=stop)
    thread = threading.Thread(target=one._watch, daemon=True)
    thread.start()
    wait_until(lambda: one._active is response, what="the watch to be read")

    stop.set()
    started = time.monotonic()
    one.interrupt()
    assert time.monotonic() - started < 0.1
    response.release.set()  # the close() started in the background can now finish
    assert response.closed.wait(5)
    thread.join(5)
    assert not thread.is_alive()
