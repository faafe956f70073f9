"""--service-proxy-name against the fake API server: the reflectors' selector narrows what is listed
and watched to the Services (and slices) labelled with the name, and only those are programmed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykubeproxy.cli import main
from pykubeproxy.sources.clients import api_client, connect, requesters
from pykubeproxy.sources.kube import PROXY_LABEL_SELECTOR, KubeSource, Timing
from pykubeproxy.sources.listing import list_once
from pykubeproxy.store import Store
from tests.support.fake_apiserver import FakeApiServer
from tests.support.proxy_names import OURS, split_cluster
from tests.support.wait import wait_until

OUR_SELECTOR = f"service.kubernetes.io/service-proxy-name={OURS},!service.kubernetes.io/headless"
RESOURCES = {"Service": "services", "EndpointSlice": "endpointslices", "Node": "nodes"}


@pytest.fixture(autouse=True)
def _no_node_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def split(apiserver: FakeApiServer) -> FakeApiServer:
    for obj in split_cluster():
        apiserver.create(RESOURCES[obj["kind"]], obj)
    return apiserver


def names(store: Store) -> tuple[set[str], set[str]]:
    snap = store.snapshot()
    services = {str(obj["metadata"]["name"]) for obj in snap.services}  # type: ignore[index]
    slices = {str(obj["metadata"]["name"]) for obj in snap.endpoint_slices}  # type: ignore[index]
    return services, slices


@pytest.mark.parametrize("client", ["urllib3", "kubernetes"])
def test_the_reflectors_ask_for_the_named_proxys_selector_and_get_only_its_services(
    split: FakeApiServer, kubeconfig: Path, client: str
) -> None:
    if client == "kubernetes":
        api = api_client(str(kubeconfig), "")
        request_by_kind, close = requesters(api, "node-1", OURS), api.close
    else:
        connection = connect(str(kubeconfig), "", "node-1", proxy_name=OURS)
        request_by_kind, close = connection.request_by_kind, connection.close
    store = Store()
    timing = Timing(watch_timeout=30, read_timeout=1.0, connect_timeout=1.0)
    kube = KubeSource(request_by_kind=request_by_kind, store=store, timing=timing)
    kube.start()
    try:
        wait_until(lambda: kube.synced, timeout=10, what="the first lists")
        wait_until(lambda: split.requests_to("services", watch=True), timeout=10, what="a watch")
    finally:
        kube.stop(timeout=5.0)
        close()

    assert names(store) == ({"moved"}, {"moved-abcde"})
    for resource in ("services", "endpointslices"):
        selectors = {r.query.get("labelSelector") for r in split.requests_to(resource)}
        assert selectors == {OUR_SELECTOR}, resource


def test_without_a_name_the_reflectors_keep_kube_proxys_selector(
    split: FakeApiServer, kubeconfig: Path
) -> None:
    connection = connect(str(kubeconfig), "", "node-1")
    store = Store()
    try:
        list_once(connection.request_by_kind, store, server=connection.server)
    finally:
        connection.close()

    assert names(store) == ({"stays"}, {"stays-abcde"})
    selectors = {r.query.get("labelSelector") for r in split.requests_to("services")}
    assert selectors == {PROXY_LABEL_SELECTOR}


def test_a_live_dry_run_with_a_proxy_name_programs_only_the_labelled_service(
    split: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--dry-run", "--kubeconfig", str(kubeconfig), "--hostname-override", "node-1",
                 "--service-proxy-name", OURS])  # fmt: skip
    out, err = capsys.readouterr()

    assert code == 0, err
    assert "10.96.50.1/32" in out and "default/moved" in out
    assert "10.96.50.2" not in out and "10.96.50.3" not in out
    assert {r.query.get("labelSelector") for r in split.requests_to("services")} == {OUR_SELECTOR}
