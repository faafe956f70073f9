"""sources/lean.py: the proxy keeps only the fields it reads, and translates the slim objects
exactly as it translated the whole ones (the same ports, endpoints and skip reasons)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given, settings

from pykubeproxy.health import node_eligible
from pykubeproxy.model import Node
from pykubeproxy.pipeline import NodeIdentity, translate_snapshot
from pykubeproxy.sources.files import read_manifests
from pykubeproxy.sources.lean import slim
from pykubeproxy.store import Store
from pykubeproxy.translate import translate_cluster
from tests.property.test_property import clusters

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import cluster  # noqa: E402  benchmarks/cluster.py: issue 11's payload

NODE = Node(name="node-1", ips=("192.0.2.10",))
IDENTITY = NodeIdentity("node-1", True)


def store_of(objects: list[Any], *, lean: bool) -> Store:
    store = Store()
    for kind in ("Service", "EndpointSlice", "Node"):
        of_kind = [obj for obj in objects if obj.get("kind") == kind]
        store.replace(kind, [slim(kind, obj) if lean else obj for obj in of_kind])  # type: ignore[misc]
    return store


def same_translation(objects: list[Any]) -> None:
    whole = translate_snapshot(store_of(objects, lean=False).snapshot(), IDENTITY)
    lean = translate_snapshot(store_of(objects, lean=True).snapshot(), IDENTITY)
    assert lean == whole


def test_the_examples_translate_the_same_slim_or_whole() -> None:
    objects = [
        doc
        for path in sorted((REPO / "examples").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    same_translation(objects)


def test_the_generated_cluster_translates_the_same_slim_or_whole() -> None:
    same_translation(cluster.generate(300))


EMPTY_WHERE_A_LIST_BELONGS: dict[str, list[Any]] = {
    "services": [{"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.1", "ports": {}}}],
    "endpoint_slices": [
        {
            "metadata": {"name": "web-a", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": {},
            "ports": [{"port": 1}],
        }
    ],
}


@settings(max_examples=600, deadline=None)
@given(generated=clusters())
@example(generated=EMPTY_WHERE_A_LIST_BELONGS)
def test_any_input_translates_the_same_slim_or_whole(generated: dict[str, list[Any]]) -> None:
    # Malformed objects and documents that are not objects at all included.
    services, slices = generated["services"], generated["endpoint_slices"]
    before = copy.deepcopy(generated)
    whole = translate_cluster(services=services, endpoint_slices=slices, node=NODE)
    lean = translate_cluster(
        services=[slim("Service", obj) for obj in services],
        endpoint_slices=[slim("EndpointSlice", obj) for obj in slices],
        node=NODE,
    )
    assert lean == whole
    assert generated == before  # slimming copies, never edits


def test_what_the_proxy_never_reads_is_dropped() -> None:
    svc, endpoint_slice = cluster.service(0), cluster.endpoint_slice(0)
    svc["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]  # type: ignore[index]
    lean_service: Any = slim("Service", svc)
    # Only the proxy's own labels are kept; none left, none at all.
    assert set(lean_service["metadata"]) == {"name", "namespace", "resourceVersion"}
    assert "status" not in lean_service  # {"loadBalancer": {}} says nothing
    assert "selector" not in lean_service["spec"] and "ipFamilies" not in lean_service["spec"]
    assert "targetPort" not in lean_service["spec"]["ports"][0]
    lean_slice: Any = slim("EndpointSlice", endpoint_slice)
    assert set(lean_slice["metadata"]["labels"]) == {"kubernetes.io/service-name"}
    assert set(lean_slice["metadata"]["annotations"]) == {
        "endpoints.kubernetes.io/last-change-trigger-time"
    }
    assert set(lean_slice["endpoints"][0]) == {"addresses", "conditions", "nodeName", "zone"}


def test_a_malformed_field_is_kept_as_it_is_to_be_rejected_with_the_same_reason() -> None:
    obj = cluster.service(1)
    obj["spec"]["ports"] = "http"  # type: ignore[index]
    obj["metadata"]["labels"] = ["not", "a", "map"]  # type: ignore[index]
    lean: Any = slim("Service", obj)
    assert lean["spec"]["ports"] == "http"
    assert lean["metadata"]["labels"] == ["not", "a", "map"]
    assert slim("Service", "not an object") == "not an object"


def test_the_node_keeps_what_health_and_topology_read() -> None:
    node = cluster.node()
    node["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # type: ignore[index]
    node["spec"]["taints"] = [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]  # type: ignore[index]
    node["status"]["images"] = [{"names": ["registry/app:1"], "sizeBytes": 1}]  # type: ignore[index]
    lean: Any = slim("Node", node)
    assert lean["metadata"]["labels"] == node["metadata"]["labels"]  # type: ignore[index]
    assert lean["spec"]["podCIDRs"] == ["10.244.0.0/16"]
    assert "images" not in lean["status"]
    assert not node_eligible(lean)


def test_strings_and_conditions_many_objects_repeat_are_held_once() -> None:
    one: Any = slim("EndpointSlice", json.loads(json.dumps(cluster.endpoint_slice(4))))
    two: Any = slim("EndpointSlice", json.loads(json.dumps(cluster.endpoint_slice(8))))
    assert one["endpoints"][0]["nodeName"] is two["endpoints"][0]["nodeName"]
    assert one["ports"][0]["protocol"] is two["ports"][0]["protocol"]
    assert one["endpoints"][0]["conditions"] is two["endpoints"][1]["conditions"]
    odd: Any = slim("EndpointSlice", {"endpoints": [{"conditions": {"ready": "yes"}}]})
    assert odd["endpoints"][0]["conditions"] == {"ready": "yes"}  # kept, to be rejected


def test_the_manifest_reader_keeps_slim_objects(tmp_path: Path) -> None:
    objects = cluster.generate(3)
    (tmp_path / "cluster.json").write_text(json.dumps({"kind": "List", "items": objects}))
    manifests = read_manifests([tmp_path])
    assert manifests.objects["Service"] == [slim("Service", cluster.service(i)) for i in range(3)]
    assert manifests.objects["Node"] == [slim("Node", cluster.node())]
