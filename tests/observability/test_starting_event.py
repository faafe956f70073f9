"""The daemon on the API posts kube-proxy's Starting event once, and a refusal never stops it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.harness import Namespace, ProxyProcess, api_server_in, publish
from tests.support.fake_apiserver import DEFAULT_USER, FakeApiServer
from tests.support.wait import wait_until


@pytest.fixture
def apiserver(obs_netns: Namespace, cluster: Path) -> Iterator[FakeApiServer]:
    with api_server_in(obs_netns) as server:
        publish(server, cluster)
        yield server


@pytest.fixture
def start_proxy(
    obs_netns: Namespace, cluster: Path, apiserver: FakeApiServer, tmp_path: Path
) -> Iterator[ProxyProcess]:
    """The daemon on the fake API server as node-1; stopped after the test (ports are shared)."""
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    proxy = ProxyProcess(obs_netns, cluster, kubeconfig=kubeconfig)
    yield proxy
    proxy.stop()


def test_the_daemon_posts_one_starting_event_naming_its_node(
    start_proxy: ProxyProcess, apiserver: FakeApiServer
) -> None:
    proxy = start_proxy
    wait_until(lambda: apiserver.objects("events"), what="the Starting event", timeout=15.0)
    proxy.wait_for_syncs(total=3, partial=1, timeout=15.0)
    [event] = apiserver.objects("events")
    assert event["metadata"]["namespace"] == "default"
    assert event["metadata"]["name"].startswith("node-1.")
    assert (event["reason"], event["action"], event["type"]) == (
        "Starting",
        "StartKubeProxy",
        "Normal",
    )
    assert event["regarding"] == {"kind": "Node", "name": "node-1", "uid": "node-1"}
    assert event["reportingController"] == "kube-proxy"
    assert event["reportingInstance"].startswith("kube-proxy-")
    scrape = proxy.scrape()
    assert scrape is not None
    host = f"127.0.0.1:{apiserver.port}"
    assert scrape.value("rest_client_requests_total", code="201", method="POST", host=host) == 1
    assert scrape.value("rest_client_request_duration_seconds_count", verb="POST", host=host) == 1
    assert len(proxy.logged("posted the Starting event")) == 1


def test_a_forbidden_starting_event_is_logged_once_and_the_daemon_keeps_serving(
    obs_netns: Namespace, cluster: Path, apiserver: FakeApiServer, tmp_path: Path
) -> None:
    apiserver.forbid(DEFAULT_USER, "events")
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    proxy = ProxyProcess(obs_netns, cluster, kubeconfig=kubeconfig)
    try:
        refused = "the API server refused the Starting event"
        wait_until(lambda: proxy.logged(refused), what="the refusal logged", timeout=15.0)
        proxy.wait_for_syncs(total=3, partial=1, timeout=15.0)
        proxy.assert_running()
        [warning] = proxy.logged(refused)
        assert warning["level"] == "warning" and warning["status"] == 403
        assert len([r for r in apiserver.requests if r.method == "POST"]) == 1  # not retried
        assert apiserver.objects("events") == []
    finally:
        proxy.stop()
