"""Proves the fake kube-apiserver speaks list/watch like the real one, to the real client too."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import urllib3

from tests.support.builders import endpoint_slice, node, service
from tests.support.fake_apiserver import DEFAULT_USER, FakeApiServer, client_credentials

JSON = dict[str, Any]
NODE_IP = "192.168.0.10"  # where a Node lives unless a test says otherwise
CoreV1Api = kubernetes.client.CoreV1Api


# --- helpers: the real client, and raw HTTP for framing ------------------------------------


def list_services(core: CoreV1Api, **params: Any) -> JSON:
    with core.list_service_for_all_namespaces(_preload_content=False, **params) as resp:
        return json.loads(resp.data)


def watch_services(core: CoreV1Api, **params: Any) -> urllib3.BaseHTTPResponse:
    params.setdefault("_request_timeout", (2, 5))
    return core.list_service_for_all_namespaces(watch=True, _preload_content=False, **params)


def read_events(lines: Iterator[bytes], count: int | None = None) -> list[JSON]:
    """Decode watch events line by line until `count` of them, or the end of the stream.

    Pass `iter(resp)` made once per response: urllib3 splits the chunked body on newlines as
    it arrives, but a dropped line iterator closes the connection (see the last test).
    """
    events = []
    for line in lines:
        events.append(json.loads(line))
        if len(events) == count:
            break
    return events


def summary(events: list[JSON]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["object"]["metadata"].get("name")) for e in events]


def connect(server: FakeApiServer, *, timeout: float = 5.0) -> socket.socket:
    """A connection to the server, over TLS with the default user's certificate if it has TLS."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    context = server.client_context()
    return context.wrap_socket(sock, server_hostname="127.0.0.1") if context else sock


def raw_get(server: FakeApiServer, path: str, *, timeout: float = 5.0) -> tuple[bytes, bytes]:
    """One GET with `Connection: close`; the head and the body as read until the server closes."""
    with connect(server, timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n".encode())
        data = b""
        for _ in range(10_000):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def dechunk(body: bytes) -> tuple[list[JSON], bool]:
    """The events of a chunked body, and whether it ended with the terminating 0-length chunk."""
    events = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return events, rest == b"\r\n"
        events.append(json.loads(rest[:size]))
        body = rest[size + 2 :]
    return events, False


def add_services(server: FakeApiServer, *names: str, namespace: str = "default") -> None:
    for i, name in enumerate(names):
        server.create(
            "services",
            service(name, namespace=namespace, cluster_ip=f"10.96.0.{i + 1}", served=True),
        )


# --- state ---------------------------------------------------------------------------------


def test_writes_stamp_uid_creation_time_and_the_global_resource_version(
    apiserver: FakeApiServer,
) -> None:
    before = int(apiserver.resource_version)
    svc = apiserver.create("services", service("web", served=True))
    created = apiserver.create("nodes", node("node-1", NODE_IP, served=True))
    assert svc["metadata"]["resourceVersion"] == str(before + 1)
    assert created["metadata"]["resourceVersion"] == str(before + 2) == apiserver.resource_version
    assert svc["metadata"]["uid"] and svc["metadata"]["creationTimestamp"]
    assert "namespace" not in created["metadata"]
    updated = apiserver.update(
        "services", {**service("web", served=True), "spec": {"clusterIP": "None"}}
    )
    assert updated["metadata"]["uid"] == svc["metadata"]["uid"]
    assert updated["metadata"]["resourceVersion"] == str(before + 3)


def test_an_update_that_changes_nothing_is_not_a_write(apiserver: FakeApiServer) -> None:
    first = apiserver.apply("services", service("web", served=True))
    again = apiserver.apply("services", service("web", served=True))
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert apiserver.resource_version == first["metadata"]["resourceVersion"]


def test_create_refuses_an_existing_object_and_update_a_missing_one(
    apiserver: FakeApiServer,
) -> None:
    apiserver.create("services", service("web", served=True))
    with pytest.raises(KeyError, match="already exists"):
        apiserver.create("services", service("web", served=True))
    with pytest.raises(KeyError, match="not found"):
        apiserver.update("services", service("other", served=True))
    with pytest.raises(KeyError, match="not found"):
        apiserver.delete("services", "default", "other")


# --- list ----------------------------------------------------------------------------------


def test_list_items_are_in_namespace_name_order_without_kind(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "b", "a", namespace="ns-2")
    add_services(apiserver, "c", namespace="ns-1")
    body = list_services(core)
    assert body["kind"] == "ServiceList" and body["apiVersion"] == "v1"
    assert body["metadata"] == {"resourceVersion": apiserver.resource_version}
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in body["items"]] == [
        ("ns-1", "c"),
        ("ns-2", "a"),
        ("ns-2", "b"),
    ]
    assert all("kind" not in i and "apiVersion" not in i for i in body["items"])


def test_list_pages_come_from_one_snapshot_even_when_objects_change_between_pages(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "s1", "s2", "s3", "s4", "s5")
    first = list_services(core, limit=2)
    snapshot_rv = first["metadata"]["resourceVersion"]
    assert first["metadata"]["remainingItemCount"] == 3
    apiserver.delete("services", "default", "s4")
    apiserver.create("services", service("s6", served=True))
    apiserver.update("services", service("s3", cluster_ip="10.96.9.9", served=True))
    pages, token = [first], first["metadata"]["continue"]
    for _ in range(5):
        page = list_services(core, limit=2, _continue=token)
        pages.append(page)
        token = page["metadata"].get("continue")
        if not token:
            break
    items = [item for page in pages for item in page["items"]]
    assert [i["metadata"]["name"] for i in items] == ["s1", "s2", "s3", "s4", "s5"]
    assert items[2]["spec"]["clusterIP"] == "10.96.0.3"
    assert {p["metadata"]["resourceVersion"] for p in pages} == {snapshot_rv}
    assert [r.query.get("limit") for r in apiserver.requests_to("services")] == ["2"] * 3


def test_an_expired_or_unknown_continue_token_is_answered_with_410_expired(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "s1", "s2", "s3")
    token = list_services(core, limit=1)["metadata"]["continue"]
    apiserver.compact()
    for bad in (token, "not-a-token"):
        with pytest.raises(kubernetes.client.exceptions.ApiException) as caught:
            list_services(core, limit=1, _continue=bad)
        assert caught.value.status == 410
        status = json.loads(caught.value.body)
        assert (status["kind"], status["reason"], status["code"]) == ("Status", "Expired", 410)


def test_label_selector_leaves_out_services_with_a_proxy_name_or_headless_label(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    apiserver.create("services", service("plain", served=True))
    apiserver.create(
        "services",
        service(
            "other-proxy", labels={"service.kubernetes.io/service-proxy-name": "x"}, served=True
        ),
    )
    apiserver.create(
        "services", service("headless", labels={"service.kubernetes.io/headless": ""}, served=True)
    )
    selector = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
    body = list_services(core, label_selector=selector)
    assert [i["metadata"]["name"] for i in body["items"]] == ["plain"]
    body = list_services(core, label_selector="service.kubernetes.io/service-proxy-name=x")
    assert [i["metadata"]["name"] for i in body["items"]] == ["other-proxy"]
    body = list_services(core, label_selector="service.kubernetes.io/service-proxy-name notin (x)")
    assert [i["metadata"]["name"] for i in body["items"]] == ["headless", "plain"]


def test_a_bad_selector_is_a_400(apiserver: FakeApiServer, core: CoreV1Api) -> None:
    for params in ({"label_selector": "a=(b"}, {"field_selector": "spec.clusterIP=1.2.3.4"}):
        with pytest.raises(kubernetes.client.exceptions.ApiException) as caught:
            list_services(core, **params)
        assert caught.value.status == 400


def test_nodes_are_listed_by_a_field_selector_on_the_name(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    apiserver.create("nodes", node("node-1", "192.168.0.11", served=True))
    apiserver.create("nodes", node("node-2", "192.168.0.12", served=True))
    with core.list_node(field_selector="metadata.name=node-1", _preload_content=False) as resp:
        body = json.loads(resp.data)
    assert body["kind"] == "NodeList"
    assert [i["metadata"]["name"] for i in body["items"]] == ["node-1"]
    assert body["items"][0]["status"]["addresses"][0] == {
        "type": "InternalIP",
        "address": "192.168.0.11",
    }
    assert apiserver.requests[-1].query == {"fieldSelector": "metadata.name=node-1"}


def test_endpoint_slices_are_listed_through_the_discovery_client(
    apiserver: FakeApiServer, api_client: kubernetes.client.ApiClient
) -> None:
    apiserver.create("endpointslices", endpoint_slice("web", "10.244.1.2", served=True))
    discovery = kubernetes.client.DiscoveryV1Api(api_client)
    with discovery.list_endpoint_slice_for_all_namespaces(limit=10, _preload_content=False) as resp:
        body = json.loads(resp.data)
    assert (body["kind"], body["apiVersion"]) == ("EndpointSliceList", "discovery.k8s.io/v1")
    [item] = body["items"]
    assert item["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert item["endpoints"][0]["addresses"] == ["10.244.1.2"]
    assert apiserver.requests[-1].path == "/apis/discovery.k8s.io/v1/endpointslices"


def test_namespaced_paths_see_only_their_namespace(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "a", namespace="one")
    add_services(apiserver, "b", namespace="two")
    with core.list_namespaced_service("two", _preload_content=False) as resp:
        body = json.loads(resp.data)
    assert [i["metadata"]["name"] for i in body["items"]] == ["b"]
    with core.read_namespaced_service("a", "one", _preload_content=False) as resp:
        assert json.loads(resp.data)["kind"] == "Service"


def test_an_unknown_path_is_a_404_status(apiserver: FakeApiServer) -> None:
    head, body = raw_get(apiserver, "/api/v1/pods")
    assert head.startswith(b"HTTP/1.1 404")
    assert json.loads(body)["reason"] == "NotFound"


# --- TLS and who the client is --------------------------------------------------------------


def test_a_client_without_a_certificate_fails_the_handshake(apiserver: FakeApiServer) -> None:
    context = ssl.create_default_context(cadata=client_credentials().ca_pem.decode())
    # TLS 1.3: the server's refusal arrives with the first read after the handshake.
    with (
        socket.create_connection(("127.0.0.1", apiserver.port), timeout=5) as sock,
        pytest.raises(ssl.SSLError),
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /api/v1/services HTTP/1.1\r\nHost: fake\r\n\r\n")
        tls.recv(1)
    assert apiserver.requests == []


def test_a_client_certificate_from_an_unknown_ca_fails_the_handshake(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig", trusted=False)
    with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as client:
        client.configuration.retries = False
        core = kubernetes.client.CoreV1Api(client)
        with pytest.raises(urllib3.exceptions.MaxRetryError) as caught:
            list_services(core, _request_timeout=(2, 2))
    assert isinstance(caught.value.reason, urllib3.exceptions.SSLError)
    assert apiserver.requests == []


def test_the_client_certificate_names_the_user_whom_rbac_may_forbid_a_resource(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    apiserver.forbid(DEFAULT_USER, "endpointslices")
    assert list_services(core)["items"] == []
    discovery = kubernetes.client.DiscoveryV1Api(core.api_client)
    with pytest.raises(kubernetes.client.exceptions.ApiException) as caught:
        discovery.list_endpoint_slice_for_all_namespaces()
    assert caught.value.status == 403
    assert json.loads(caught.value.body)["message"] == (
        'endpointslices is forbidden: User "system:kube-proxy" cannot list resource '
        '"endpointslices" in API group "discovery.k8s.io" at the cluster scope'
    )
    apiserver.permit(DEFAULT_USER)
    assert discovery.list_endpoint_slice_for_all_namespaces().items == []


def test_an_unauthorized_user_gets_401_for_everything(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    apiserver.unauthorize("someone-else")
    assert list_services(core)["items"] == []  # other users are unaffected
    apiserver.unauthorize(DEFAULT_USER)
    for call in (core.list_service_for_all_namespaces, core.list_node):
        with pytest.raises(kubernetes.client.exceptions.ApiException) as caught:
            call()
        assert caught.value.status == 401
        assert json.loads(caught.value.body)["reason"] == "Unauthorized"


def test_the_plain_http_variant_serves_without_credentials(tmp_path: Path) -> None:
    with FakeApiServer(tls=False) as server:
        assert server.url.startswith("http://")
        add_services(server, "a")
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as client:
            names = [
                s.metadata.name
                for s in kubernetes.client.CoreV1Api(client).list_service_for_all_namespaces().items
            ]
        assert names == ["a"]
    assert server.errors == []


# --- watch ---------------------------------------------------------------------------------


def test_watch_from_a_list_resource_version_delivers_later_writes_in_order(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "old")
    listed_rv = list_services(core)["metadata"]["resourceVersion"]
    apiserver.create("services", service("before-watch", served=True))
    with watch_services(core, resource_version=listed_rv) as resp:
        apiserver.update("services", service("before-watch", cluster_ip="10.96.1.1", served=True))
        apiserver.delete("services", "default", "before-watch")
        events = read_events(iter(resp), 3)
    assert summary(events) == [
        ("ADDED", "before-watch"),
        ("MODIFIED", "before-watch"),
        ("DELETED", "before-watch"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[-1] == int(apiserver.resource_version)
    deleted = events[2]["object"]
    assert (deleted["kind"], deleted["apiVersion"]) == ("Service", "v1")
    assert deleted["spec"]["clusterIP"] == "10.96.1.1"


def test_watch_without_a_resource_version_starts_with_the_current_objects(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "a", "b")
    with watch_services(core) as resp:
        assert summary(read_events(iter(resp), 2)) == [("ADDED", "a"), ("ADDED", "b")]


def test_bookmarks_arrive_periodically_and_on_demand_only_when_allowed(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "a")
    apiserver.bookmark_interval = 60.0
    with watch_services(core, resource_version="1", allow_watch_bookmarks=True) as resp:
        lines = iter(resp)
        assert summary(read_events(lines, 1)) == [("ADDED", "a")]
        apiserver.create("nodes", node("node-1", NODE_IP, served=True))
        apiserver.send_bookmark()
        [bookmark] = read_events(lines, 1)
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"] == {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": apiserver.resource_version},
    }
    apiserver.bookmark_interval = 0.05
    with watch_services(core, resource_version="1", allow_watch_bookmarks=True) as resp:
        assert [e["type"] for e in read_events(iter(resp), 3)] == ["ADDED", "BOOKMARK", "BOOKMARK"]
    _, body = raw_get(apiserver, "/api/v1/services?watch=1&resourceVersion=1&timeoutSeconds=0.3")
    assert [e["type"] for e in dechunk(body)[0]] == ["ADDED"]


def test_timeout_seconds_ends_the_stream_with_the_terminating_chunk(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "a")
    started = time.monotonic()
    head, body = raw_get(apiserver, "/api/v1/services?watch=1&timeoutSeconds=0.3")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Type: application/json" in head
    added = {"type": "ADDED", "object": apiserver.get("services", "default", "a")}
    assert dechunk(body) == ([added], True)
    assert 0.3 <= time.monotonic() - started < 2
    with watch_services(core, timeout_seconds=1) as resp:
        assert summary(read_events(iter(resp))) == [("ADDED", "a")]  # ends without an error
    assert 1 <= time.monotonic() - started < 3


def test_watch_from_a_compacted_resource_version_gets_a_410_error_event(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "a", "b")
    apiserver.compact()
    with watch_services(core, resource_version="2") as resp:
        assert resp.status == 200
        [error] = read_events(iter(resp))
    assert error["type"] == "ERROR"
    assert error["object"] == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: 2 ({apiserver.resource_version})",
        "reason": "Expired",
        "code": 410,
    }
    with watch_services(core, resource_version=apiserver.resource_version) as resp:
        apiserver.create("services", service("c", served=True))
        assert summary(read_events(iter(resp), 1)) == [("ADDED", "c")]


def test_gone_next_watch_answers_410_as_an_error_event_or_as_http(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    apiserver.gone_next_watch("services")
    with watch_services(core, resource_version="1") as resp:
        events = read_events(iter(resp))
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]
    apiserver.gone_next_watch("services", as_http=True)
    with pytest.raises(kubernetes.client.exceptions.ApiException) as caught:
        watch_services(core, resource_version="1")
    assert caught.value.status == 410


def test_a_selected_watch_sees_an_object_that_stops_matching_as_deleted(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    with watch_services(core, label_selector="!service.kubernetes.io/headless") as resp:
        apiserver.create("services", service("web", served=True))
        headless = service("web", labels={"service.kubernetes.io/headless": ""}, served=True)
        apiserver.update("services", headless)
        apiserver.update("services", service("web", served=True))
        events = read_events(iter(resp), 3)
    assert summary(events) == [("ADDED", "web"), ("DELETED", "web"), ("ADDED", "web")]
    assert "labels" not in events[1]["object"]["metadata"]  # the last state that matched


# --- faults --------------------------------------------------------------------------------


def test_drop_watch_cuts_the_connection_without_the_terminating_chunk(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "a", "b", "c")
    apiserver.drop_watch("services", after_events=1)
    _, body = raw_get(apiserver, "/api/v1/services?watch=true&resourceVersion=1")
    events, complete = dechunk(body)
    assert summary(events) == [("ADDED", "a")] and not complete
    with watch_services(core, resource_version="1") as resp:
        lines = iter(resp)
        assert summary(read_events(lines, 1)) == [("ADDED", "a")]
        assert summary(read_events(lines, 2)) == [("ADDED", "b"), ("ADDED", "c")]
        apiserver.drop_watch("services", after_events=1)  # the open watch takes it
        apiserver.create("services", service("d", served=True))
        assert summary(read_events(lines, 1)) == [("ADDED", "d")]
        with pytest.raises(urllib3.exceptions.ProtocolError, match="ended prematurely"):
            read_events(lines)


def test_stall_watch_goes_silent_so_a_client_read_timeout_fires(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "a")
    apiserver.stall_watch("services", after_events=1)
    with watch_services(core, resource_version="1", _request_timeout=(2, 0.5)) as resp:
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            read_events(iter(resp))
    assert 0.5 <= time.monotonic() - started < 2
    apiserver.wait_until(
        lambda: apiserver.open_watches("services") == 0, what="no open watch", timeout=2
    )


def test_a_released_stall_goes_on_with_what_queued_meanwhile(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "a")
    apiserver.stall_watch("services", after_events=1)
    with watch_services(core, resource_version="1", _request_timeout=(2, 5)) as resp:
        lines = iter(resp)
        assert summary(read_events(lines, 1)) == [("ADDED", "a")]
        apiserver.create("services", service("b", served=True))
        time.sleep(0.3)  # silent meanwhile: nothing is read before the release below
        apiserver.release_stalls()
        assert summary(read_events(lines, 1)) == [("ADDED", "b")]


def test_go_away_refuses_connections_then_serves_the_same_objects_on_the_same_port(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    add_services(apiserver, "a")
    port = apiserver.port
    with watch_services(core, resource_version="1") as resp:
        lines = iter(resp)
        assert summary(read_events(lines, 1)) == [("ADDED", "a")]
        refused: list[bool] = []

        def try_to_connect() -> None:
            time.sleep(0.2)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            refused.append(True)

        prober = threading.Thread(target=try_to_connect)
        prober.start()
        apiserver.go_away(0.6)
        prober.join()
        with pytest.raises(urllib3.exceptions.ProtocolError):
            read_events(lines)  # the open watch was cut
    assert refused == [True] and apiserver.port == port
    assert [s["metadata"]["name"] for s in list_services(core)["items"]] == ["a"]


def test_fail_next_answers_the_next_request_with_a_500_status(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    apiserver.fail_next("services", 500)
    with pytest.raises(kubernetes.client.exceptions.ApiException) as caught:
        list_services(core)
    assert caught.value.status == 500
    assert json.loads(caught.value.body)["reason"] == "InternalError"
    assert list_services(core)["items"] == []


def test_fail_next_can_aim_at_watches_only(apiserver: FakeApiServer, core: CoreV1Api) -> None:
    apiserver.fail_next(None, 503, verb="watch")
    assert list_services(core)["items"] == []
    with pytest.raises(kubernetes.client.exceptions.ApiException) as caught:
        watch_services(core)
    assert caught.value.status == 503


def test_delay_holds_responses_back_until_a_read_timeout(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
    config.retries = False  # else urllib3 retries the read timeout three times
    apiserver.delay("services", 1.0)
    with kubernetes.client.ApiClient(config) as client:
        core = kubernetes.client.CoreV1Api(client)
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            list_services(core, _request_timeout=(2, 0.2))
        apiserver.delay("services", 0)
        assert list_services(core)["items"] == []


def test_stop_ends_open_watches_and_refuses_new_connections(tmp_path: Path) -> None:
    with FakeApiServer() as server:
        port, kubeconfig = server.port, server.write_kubeconfig(tmp_path / "kubeconfig")
        with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as client:
            core = kubernetes.client.CoreV1Api(client)
            with watch_services(core) as resp:
                started = time.monotonic()
                server.stop()
                with pytest.raises(urllib3.exceptions.ProtocolError):
                    read_events(iter(resp))
            assert time.monotonic() - started < 2
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert server.errors == []


# --- the request log and ApiClient.call_api -----------------------------------------------


def test_the_request_log_shows_how_a_client_listed_and_watched(
    apiserver: FakeApiServer, api_client: kubernetes.client.ApiClient
) -> None:
    method, url, headers, _, _ = api_client.param_serialize(
        "GET",
        "/api/v1/services",
        query_params=[("watch", True), ("resourceVersion", "1"), ("timeoutSeconds", 0.2)],
        auth_settings=["BearerToken"],
    )
    assert "authorization" not in headers  # the client certificate says who we are
    result = api_client.call_api(method, url, header_params=headers, _request_timeout=(2, 5))
    with result.response as resp:
        assert read_events(iter(resp)) == []
    [request] = apiserver.requests_to("services", watch=True)
    assert request == (
        "GET",
        "/api/v1/services",
        {
            "watch": "true",
            "resourceVersion": "1",
            "timeoutSeconds": "0.2",
        },
    )


def test_a_watch_must_be_read_through_one_line_iterator(
    apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    """urllib3 closes the connection when a half-read `iter(resp)` is dropped; a reader that
    then iterates `resp` afresh sees a quiet end of stream, not an error."""
    add_services(apiserver, "a", "b")
    with watch_services(core) as resp:
        assert summary(read_events(iter(resp), 1)) == [("ADDED", "a")]
        assert read_events(iter(resp)) == []
    apiserver.wait_until(lambda: apiserver.open_watches() == 0, what="no open watch", timeout=2)


def post(server: FakeApiServer, path: str, body: object) -> tuple[int, JSON]:
    """POST JSON as the default user; the status and the decoded answer."""
    pool = urllib3.PoolManager(ssl_context=server.client_context(), retries=False)
    try:
        answer = pool.request("POST", server.url + path, body=json.dumps(body).encode())
        return answer.status, answer.json()
    finally:
        pool.clear()


EVENTS = "/apis/events.k8s.io/v1/namespaces/default/events"


def an_event(name: str = "node-1.1", **fields: Any) -> JSON:
    return {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name}, **fields}


def test_an_event_posted_is_stored_and_answered_201_once_then_409(
    apiserver: FakeApiServer,
) -> None:
    status, created = post(apiserver, EVENTS, an_event(reason="Starting"))
    assert status == 201
    assert created["metadata"]["namespace"] == "default" and created["reason"] == "Starting"
    assert apiserver.objects("events") == [created]
    assert post(apiserver, EVENTS, an_event())[0] == 409


def test_a_post_the_real_server_would_refuse_is_refused(apiserver: FakeApiServer) -> None:
    assert post(apiserver, "/api/v1/namespaces/default/services", service("web"))[0] == 405
    elsewhere = an_event(metadata={"name": "x", "namespace": "kube-system"})
    assert post(apiserver, EVENTS, elsewhere)[0] == 400
    assert post(apiserver, "/apis/events.k8s.io/v1/events", an_event())[0] == 400
    assert post(apiserver, EVENTS, an_event(name=""))[0] == 422
    apiserver.forbid(DEFAULT_USER, "events")
    status, refusal = post(apiserver, EVENTS, an_event())
    assert status == 403 and 'cannot create resource "events"' in refusal["message"]
    assert apiserver.objects("events") == []
