"""store.py: each snapshot names the Services that changed since the previous one, folded as
kube-proxy's change trackers fold them (previous → current per object, dropped when equal)."""

from __future__ import annotations

import copy
from typing import Any

from pykubeproxy.model import ServiceName
from pykubeproxy.store import Store

WEB = ServiceName("shop", "web")
API = ServiceName("shop", "api")


def service(name: str = "web", ip: str = "10.96.0.10", **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1", **meta},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
    }


def endpoint_slice(
    name: str = "web-1", service: str = "web", ip: str = "10.244.1.1", **meta: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "resourceVersion": "1",
            "labels": {"kubernetes.io/service-name": service},
            **meta,
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip]}],
        "ports": [{"name": "http", "port": 8080}],
    }


def node(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "node-1", "labels": labels}}


def settled(*objects: tuple[str, dict[str, Any]]) -> Store:
    """A store holding the objects, with their arrival already handed out in a snapshot."""
    store = Store()
    for kind, obj in objects:
        store.upsert(kind, obj)
    store.snapshot()
    return store


def test_an_update_and_its_revert_before_the_snapshot_fold_to_no_change() -> None:
    store = settled(("Service", service()), ("EndpointSlice", endpoint_slice()))
    store.upsert("Service", service(ip="10.96.0.99", resourceVersion="2"))
    store.upsert("Service", service(resourceVersion="3"))
    store.upsert("EndpointSlice", endpoint_slice(ip="10.244.9.9", resourceVersion="2"))
    store.upsert("EndpointSlice", endpoint_slice(resourceVersion="3"))
    snapshot = store.snapshot()
    assert snapshot.changed == frozenset()
    # The writes still count, as kube-proxy's change counters count them.
    assert (snapshot.service_changes, snapshot.endpoint_changes) == (2, 2)


def test_a_write_that_only_moves_the_resource_version_or_annotations_is_no_change() -> None:
    store = settled(("EndpointSlice", endpoint_slice()))
    trigger = {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"}
    store.upsert("EndpointSlice", endpoint_slice(resourceVersion="7", annotations=trigger))
    snapshot = store.snapshot()
    assert snapshot.changed == frozenset()
    assert snapshot.trigger_times == ("2026-01-01T00:00:00Z",)


def test_a_service_change_marks_that_service() -> None:
    store = settled(("Service", service()), ("Service", service("api", "10.96.0.20")))
    store.upsert("Service", service(ip="10.96.0.11"))
    assert store.snapshot().changed == {WEB}


def test_a_slice_change_marks_the_service_named_by_its_label() -> None:
    store = settled(("EndpointSlice", endpoint_slice()))
    store.upsert("EndpointSlice", endpoint_slice(ip="10.244.1.2"))
    assert store.snapshot().changed == {WEB}


def test_a_slice_whose_service_label_changes_marks_the_old_and_the_new_service() -> None:
    store = settled(("EndpointSlice", endpoint_slice()))
    store.upsert("EndpointSlice", endpoint_slice(service="api"))
    assert store.snapshot().changed == {WEB, API}


def test_deleting_a_service_or_a_slice_marks_its_service() -> None:
    store = settled(("Service", service()), ("EndpointSlice", endpoint_slice(service="api")))
    store.delete("Service", service())
    store.delete("EndpointSlice", endpoint_slice(service="api"))
    assert store.snapshot().changed == {WEB, API}


def test_an_object_added_and_deleted_before_the_snapshot_is_no_change() -> None:
    store = settled()
    store.upsert("Service", service())
    store.delete("Service", service())
    assert store.snapshot().changed == frozenset()


def test_a_change_is_handed_out_once() -> None:
    store = settled(("Service", service()))
    store.upsert("Service", service(ip="10.96.0.11"))
    assert store.snapshot().changed == {WEB}
    assert store.snapshot().changed == frozenset()


def test_a_replace_marks_what_it_adds_changes_and_removes_and_keeps_equal_objects() -> None:
    kept = service("api", "10.96.0.20")
    store = settled(("Service", service()), ("Service", kept))
    store.replace("Service", [copy.deepcopy(kept), service("db", "10.96.0.30")])
    snapshot = store.snapshot()
    assert snapshot.changed == {WEB, ServiceName("shop", "db")}
    # The object already held stays: its translation is kept by identity.
    assert any(obj is kept for obj in snapshot.services)


def test_a_service_without_a_namespace_is_marked_as_default_as_translate_names_it() -> None:
    store = settled()
    bare = service()
    del bare["metadata"]["namespace"]
    store.upsert("Service", bare)
    assert store.snapshot().changed == {ServiceName("default", "web")}


def test_a_node_change_is_reported_and_a_reverted_one_is_not() -> None:
    store = settled(("Node", node(zone="a")))
    store.upsert("Node", node(zone="b"))
    snapshot = store.snapshot()
    assert snapshot.nodes_changed
    assert snapshot.changed == frozenset()
    store.upsert("Node", node(zone="c"))
    store.upsert("Node", node(zone="b"))
    assert not store.snapshot().nodes_changed


def test_snapshots_stay_in_key_order_through_updates_additions_and_deletions() -> None:
    store = settled(*(("Service", service(name)) for name in ("b", "d", "a")))
    store.upsert("Service", service("c"))
    store.upsert("Service", service("b", "10.96.0.99"))
    store.delete("Service", service("d"))
    names = [obj["metadata"]["name"] for obj in store.snapshot().services]  # type: ignore[index]
    assert names == ["a", "b", "c"]


def test_an_unchanged_kind_is_handed_out_as_the_same_tuple() -> None:
    store = settled(("Service", service()), ("EndpointSlice", endpoint_slice()))
    before = store.snapshot()
    store.upsert("EndpointSlice", endpoint_slice(ip="10.244.1.2"))
    after = store.snapshot()
    assert after.services is before.services
    assert after.endpoint_slices is not before.endpoint_slices
