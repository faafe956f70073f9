"""pipeline.Translator: only objects it has not seen are translated again, its result always
equals a translation from scratch, and it says what changed (or that anything may have)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pykubeproxy import pipeline
from pykubeproxy.backends import SyncError, SyncOutcome
from pykubeproxy.model import ProxyState, ServiceName
from pykubeproxy.pipeline import NodeIdentity, Translator, translate_snapshot
from pykubeproxy.proxy import Proxy
from pykubeproxy.store import Store

IDENTITY = NodeIdentity("node-1", True)


def service(name: str, ip: str, *ports: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "clusterIP": ip,
            "ports": [{"name": p, "port": 80 + n} for n, p in enumerate(ports or ("http",))],
        },
    }


def endpoint_slice(name: str, service: str, *endpoints: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "nodeName": on} for ip, on in endpoints],
        "ports": [{"name": "http", "port": 8080}],
    }


def node(name: str = "node-1", ip: str = "192.0.2.10", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def cluster_store() -> Store:
    store = Store()
    store.replace("Node", [node()])
    store.replace(
        "Service",
        [service("web", "10.96.0.10"), service("api", "10.96.0.20"), service("db", "10.96.0.30")],
    )
    store.replace(
        "EndpointSlice",
        [
            endpoint_slice("web-1", "web", ("10.244.1.1", "node-1"), ("10.244.2.1", "node-2")),
            endpoint_slice("web-2", "web", ("10.244.2.1", "node-1")),
            endpoint_slice("api-1", "api", ("10.244.1.2", "node-2")),
            endpoint_slice("db-1", "db", ("10.244.1.3", "node-2")),
        ],
    )
    return store


def translated(store: Store, translator: Translator) -> pipeline.Translated:
    """The translator's result, checked against a translation from scratch."""
    snapshot = store.snapshot()
    result = translator.translate(snapshot)
    assert result.state == translate_snapshot(snapshot, translator.identity).state
    return result


def test_the_first_translation_translates_every_object_and_says_anything_may_have_changed() -> None:
    store, translator = cluster_store(), Translator(IDENTITY)
    result = translated(store, translator)
    assert translator.translated == 7
    assert result.changed is None


def test_one_changed_slice_is_the_only_object_translated_again() -> None:
    store, translator = cluster_store(), Translator(IDENTITY)
    before = translated(store, translator).state
    store.upsert("EndpointSlice", endpoint_slice("api-1", "api", ("10.244.1.9", "node-2")))
    result = translated(store, translator)
    assert translator.translated == 1
    assert result.changed == {ServiceName("shop", "api")}
    # What did not change is what was kept, object for object.
    assert all(a is b for a, b in zip(result.state.services, before.services, strict=True))
    web = next(p.name for p in before.services if p.name.name == "web")
    assert result.state.endpoints[web] is before.endpoints[web]


def test_nothing_changed_translates_nothing() -> None:
    store, translator = cluster_store(), Translator(IDENTITY)
    before = translated(store, translator).state
    result = translated(store, translator)
    assert translator.translated == 0
    assert result.changed == frozenset()
    assert result.state.services is before.services


def test_a_deleted_service_and_slice_leave_the_state_and_the_cache() -> None:
    store, translator = cluster_store(), Translator(IDENTITY)
    translated(store, translator)
    store.delete("Service", service("db", "10.96.0.30"))
    store.delete("EndpointSlice", endpoint_slice("db-1", "db"))
    result = translated(store, translator)
    assert translator.translated == 0
    assert "db" not in {p.name.name for p in result.state.services}
    assert "db" not in {name.name for name in result.state.endpoints}
    assert len(translator._services._entries) == 2
    assert len(translator._slices._entries) == 3


def test_a_slice_moving_to_another_service_updates_both() -> None:
    store, translator = cluster_store(), Translator(IDENTITY)
    translated(store, translator)
    store.upsert("EndpointSlice", endpoint_slice("web-2", "api", ("10.244.2.1", "node-1")))
    result = translated(store, translator)
    assert result.changed == {ServiceName("shop", "web"), ServiceName("shop", "api")}


def test_a_new_label_or_address_of_this_node_passes_no_change_set() -> None:
    store, translator = cluster_store(), Translator(IDENTITY)
    translated(store, translator)
    store.upsert("Node", node(zone="zone-b"))
    assert translated(store, translator).changed is None
    assert translator.translated == 0  # slices do not depend on labels: nothing to redo
    store.upsert("Node", node(ip="192.0.2.11", zone="zone-b"))
    assert translated(store, translator).changed is None
    assert translated(store, translator).changed == frozenset()


def test_another_node_name_translates_every_slice_again() -> None:
    # Which endpoints are local depends on the node's name.
    store, translator = cluster_store(), Translator(NodeIdentity("node-1", False))
    translated(store, translator)
    store.replace("Node", [node("node-2")])
    result = translated(store, translator)
    assert translator.translated == 4
    assert result.changed is None


def test_a_translation_that_crashes_leaves_nothing_half_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, translator = cluster_store(), Translator(IDENTITY)
    translated(store, translator)
    store.upsert("Service", service("web", "10.96.0.11"))
    store.delete("Service", service("api", "10.96.0.20"))
    real = pipeline.translate_service

    def crash(obj: object, **_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "translate_service", crash)
    with pytest.raises(RuntimeError):
        translator.translate(store.snapshot())
    monkeypatch.setattr(pipeline, "translate_service", real)
    # The change set went with the failed snapshot; the translator starts over and says so.
    result = translated(store, translator)
    assert result.changed is None
    assert {p.name.name for p in result.state.services} == {"web", "db"}


def test_a_service_named_twice_is_resolved_as_a_translation_from_scratch_resolves_it() -> None:
    # No namespace means "default": two objects, one Service; the later one's ports win.
    store, translator = Store(), Translator(IDENTITY)
    bare, explicit = service("web", "10.96.0.10"), service("web", "10.96.0.11")
    del bare["metadata"]["namespace"]
    explicit["metadata"]["namespace"] = "default"
    store.replace("Service", [bare, explicit])
    translated(store, translator)
    store.delete("Service", explicit)
    (port,) = translated(store, translator).state.services
    assert port.cluster_ip == "10.96.0.10"


# --- what the Proxy passes on to the backend ----------------------------------------------------


class RecordingBackend:
    """A backend that remembers what each sync was told, and fails when asked to."""

    mode, interface, periods, failed_writes = "fake", "memory", (0.0, 30.0), 0

    def __init__(self) -> None:
        self.calls: list[tuple[bool, frozenset[ServiceName] | None]] = []
        self.fail = False
        self.needs_full = True

    def sync(
        self,
        state: ProxyState,
        *,
        full: bool = False,
        changed: frozenset[ServiceName] | None = None,
    ) -> SyncOutcome:
        self.calls.append((full, changed))
        if self.fail:
            self.needs_full = True
            raise SyncError("refused")
        self.needs_full = False
        return SyncOutcome(full=full, desired=self.render(state), wrote=True)

    def render(self, state: ProxyState) -> Any:
        class Nothing:
            def rule_counts(self) -> dict[str, int]:
                return {}

        return Nothing()


def test_the_proxy_tells_the_backend_what_changed_since_its_last_successful_sync() -> None:
    store, backend = cluster_store(), RecordingBackend()
    proxy = Proxy(backend=backend, identity=IDENTITY)  # type: ignore[arg-type]
    proxy.sync(store, full=False)
    store.upsert("Service", service("web", "10.96.0.11"))
    proxy.sync(store, full=False)
    proxy.sync(store, full=True)  # a periodic full sync is still told: nothing changed
    assert backend.calls == [(False, None), (False, {ServiceName("shop", "web")}), (True, set())]


def test_after_a_failed_sync_the_backend_is_told_nothing_and_changes_are_kept() -> None:
    store, backend = cluster_store(), RecordingBackend()
    proxy = Proxy(backend=backend, identity=IDENTITY)  # type: ignore[arg-type]
    proxy.sync(store, full=False)
    store.upsert("Service", service("web", "10.96.0.11"))
    backend.fail = True
    with pytest.raises(SyncError):
        proxy.sync(store, full=False)
    backend.fail = False
    proxy.sync(store, full=False)  # the backend needs a full sync: told nothing
    store.upsert("Service", service("api", "10.96.0.21"))
    proxy.sync(store, full=False)
    assert [changed for _, changed in backend.calls] == [
        None,
        {ServiceName("shop", "web")},
        None,
        {ServiceName("shop", "api")},
    ]


def test_changes_of_a_sync_that_crashed_before_the_backend_are_passed_on_next_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, backend = cluster_store(), RecordingBackend()
    proxy = Proxy(backend=backend, identity=IDENTITY)  # type: ignore[arg-type]
    proxy.sync(store, full=False)
    store.upsert("EndpointSlice", endpoint_slice("db-1", "db", ("10.244.1.4", "node-2")))
    monkeypatch.setattr(proxy, "program", lambda *a, **k: (_ for _ in ()).throw(RuntimeError()))
    with pytest.raises(RuntimeError):
        proxy.sync(store, full=False)
    monkeypatch.undo()
    store.upsert("Service", service("web", "10.96.0.11"))
    proxy.sync(store, full=False)
    assert backend.calls[-1] == (False, {ServiceName("shop", "db"), ServiceName("shop", "web")})


def test_a_change_of_this_node_makes_the_proxy_tell_the_backend_nothing() -> None:
    store, backend = cluster_store(), RecordingBackend()
    proxy = Proxy(backend=backend, identity=IDENTITY)  # type: ignore[arg-type]
    proxy.sync(store, full=False)
    store.upsert("Node", node(zone="zone-b"))
    store.upsert("Service", copy.deepcopy(service("web", "10.96.0.11")))
    proxy.sync(store, full=False)
    assert backend.calls[-1] == (False, None)
