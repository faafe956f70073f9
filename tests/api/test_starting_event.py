"""kube-proxy's Starting event: its fields, one POST through our transport, counted as client-go."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from pykubeproxy.client_metrics import RequestMetrics, api_host
from pykubeproxy.metrics import ClientMetrics
from pykubeproxy.sources.clients import connect
from pykubeproxy.sources.events import StartingEvent, events_path, starting_event
from pykubeproxy.sources.kube import KubeSource, Timing
from pykubeproxy.sources.transport import Transport, load_config
from pykubeproxy.store import Store
from tests.support.builders import node
from tests.support.fake_apiserver import DEFAULT_USER, FakeApiServer
from tests.support.wait import wait_until

REQUESTS = "rest_client_requests_total"
DURATION = "rest_client_request_duration_seconds"
FAST = Timing(read_timeout=1.0, connect_timeout=1.0, backoff_base=0.05, backoff_max=0.2)


def test_the_event_has_kube_proxys_fields() -> None:
    assert starting_event("node-1", now_ns=1_764_770_125_123_456_789, hostname="host-a") == {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "node-1.187db91422348f15", "namespace": "default"},
        "eventTime": "2025-12-03T13:55:25.123456Z",
        "reportingController": "kube-proxy",
        "reportingInstance": "kube-proxy-host-a",
        "action": "StartKubeProxy",
        "reason": "Starting",
        "regarding": {"kind": "Node", "name": "node-1", "uid": "node-1"},
        "type": "Normal",
    }
    assert f"{1_764_770_125_123_456_789:x}" == "187db91422348f15"


def poster(kubeconfig: Path, registry: CollectorRegistry) -> tuple[StartingEvent, str]:
    config = load_config(str(kubeconfig), "")
    host = api_host(config.server)
    observer = RequestMetrics(ClientMetrics(registry), host)
    return StartingEvent(Transport(config), "node-1", observer=observer), host


def counted(registry: CollectorRegistry, host: str, code: str) -> tuple[float, float]:
    """(POSTs answered with `code`, POSTs timed)."""
    requests = {"code": code, "method": "POST", "host": host}
    timed = {"verb": "POST", "host": host}
    return (
        registry.get_sample_value(REQUESTS, requests) or 0.0,
        registry.get_sample_value(f"{DURATION}_count", timed) or 0.0,
    )


def test_the_event_is_created_in_default_and_counted_as_a_timed_post(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    registry = CollectorRegistry()
    event, host = poster(kubeconfig, registry)
    assert event.post() == 201
    [stored] = apiserver.objects("events")
    assert stored["metadata"]["namespace"] == "default"
    assert stored["reason"] == "Starting" and stored["action"] == "StartKubeProxy"
    assert stored["regarding"] == {"kind": "Node", "name": "node-1", "uid": "node-1"}
    assert stored["reportingInstance"] == f"kube-proxy-{socket.gethostname()}"
    [post] = [r for r in apiserver.requests if r.method == "POST"]
    assert post.path == events_path("default") == "/apis/events.k8s.io/v1/namespaces/default/events"
    assert counted(registry, host, "201") == (1.0, 1.0)


def test_a_forbidden_post_is_logged_once_as_a_warning_and_counted(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.forbid(DEFAULT_USER, "events")
    registry = CollectorRegistry()
    event, host = poster(kubeconfig, registry)
    with capture_logs() as logs:
        assert event.post() == 403
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["status"] == 403
    assert 'cannot create resource "events"' in warnings[0]["error"]
    assert apiserver.objects("events") == []
    assert counted(registry, host, "403") == (1.0, 1.0)


def test_an_unreachable_server_is_logged_and_counted_as_no_response(tmp_path: Path) -> None:
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    registry = CollectorRegistry()
    event, host = poster(kubeconfig, registry)  # the server is gone: connection refused
    with capture_logs() as logs:
        assert event.post() is None
    assert [line["log_level"] for line in logs] == ["warning"]
    assert counted(registry, host, "<error>") == (1.0, 1.0)


def test_the_event_is_posted_once_after_the_nodes_first_list_however_often_it_relists(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.create("nodes", node("node-1"))
    connection = connect(str(kubeconfig), "", "node-1")
    assert connection.transport is not None
    event = StartingEvent(connection.transport, "node-1")
    source = KubeSource(
        request_by_kind={"Node": connection.request_by_kind["Node"]},
        store=Store(),
        timing=FAST,
        on_listed={"Node": event.announce},
    )
    source.start()
    try:
        assert event.done.wait(5.0)
        # A relist announces again, and must not post again.
        apiserver.gone_next_watch("nodes", as_http=True)
        apiserver.drop_watch("nodes")
        wait_until(lambda: source.reflectors[0].lists >= 2, what="a second LIST of the Node")
    finally:
        source.stop()
        connection.close()
    assert [e["regarding"]["name"] for e in apiserver.objects("events")] == ["node-1"]


def test_the_kubernetes_client_fallback_has_no_transport_for_the_event(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: Path
) -> None:
    from pykubeproxy.sources import clients
    from pykubeproxy.sources.transport import Unsupported

    def unsupported(*_: object) -> None:
        raise Unsupported("the kubeconfig's user has exec")

    monkeypatch.setattr(clients, "load_config", unsupported)
    connection = connect(str(kubeconfig), "", "node-1")
    try:
        assert connection.client == "kubernetes" and connection.transport is None
    finally:
        connection.close()
