"""Topology hints as kube-proxy follows them (pkg/proxy/topology.go): which endpoints this node's
cluster traffic may use, read from the slices' hints, with every fallback."""

from __future__ import annotations

from typing import Any

from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.backend import render_options
from pykubeproxy.backends.iptables.ruleset import format_restore
from pykubeproxy.backends.ipvs.plan import IpvsOptions, plan_ipvs
from pykubeproxy.config import Config
from pykubeproxy.model import Endpoint, Node, TrafficPolicy
from pykubeproxy.pipeline import NodeIdentity, Translator
from pykubeproxy.selection import (
    SAME_NODE,
    SAME_ZONE,
    ZONE_LABEL,
    Place,
    categorize_endpoints,
    topology_mode,
)
from pykubeproxy.sources.lean import slim
from pykubeproxy.store import Store
from pykubeproxy.translate import translate_endpoint_slice
from tests.support.builders import proxy_state, service_port

HERE = Place("node-1", "zone-a")
CLUSTER = service_port("web", "10.96.0.10")


def ep(last: int, *zones: str, nodes: tuple[str, ...] = (), **conditions: Any) -> Endpoint:
    """An endpoint 10.244.0.<last>:8080 hinted for `zones` (and `nodes`)."""
    return Endpoint(f"10.244.0.{last}", 8080, zone_hints=zones, node_hints=nodes, **conditions)


def ips(endpoints: tuple[Endpoint, ...]) -> list[int]:
    return [int(e.ip.rsplit(".", 1)[1]) for e in endpoints]


def cluster_ips(endpoints: list[Endpoint], place: Place = HERE) -> list[int]:
    return ips(categorize_endpoints(CLUSTER, endpoints, place=place).cluster)


# --- choosing the mode ---------------------------------------------------------------------


def test_endpoints_without_hints_use_no_topology() -> None:
    assert topology_mode([ep(1), ep(2)], HERE) is None
    assert cluster_ips([ep(1), ep(2)]) == [1, 2]


def test_zone_hints_on_every_ready_endpoint_keep_traffic_in_this_zone() -> None:
    endpoints = [ep(1, "zone-a"), ep(2, "zone-b"), ep(3, "zone-a"), ep(4, "zone-c")]
    assert topology_mode(endpoints, HERE) == SAME_ZONE
    assert cluster_ips(endpoints) == [1, 3]


def test_an_endpoint_may_be_hinted_for_several_zones() -> None:
    assert cluster_ips([ep(1, "zone-b", "zone-a"), ep(2, "zone-b")]) == [1]


def test_one_ready_endpoint_without_a_hint_turns_topology_off() -> None:
    assert cluster_ips([ep(1, "zone-a"), ep(2, "zone-b"), ep(3)]) == [1, 2, 3]


def test_endpoints_that_are_not_ready_need_no_hint() -> None:
    endpoints = [ep(1, "zone-a"), ep(2, "zone-b"), ep(3, ready=False, serving=False)]
    assert cluster_ips(endpoints) == [1]


def test_no_endpoint_hinted_for_this_zone_means_every_endpoint() -> None:
    assert topology_mode([ep(1, "zone-b"), ep(2, "zone-c")], HERE) is None
    assert cluster_ips([ep(1, "zone-b"), ep(2, "zone-c")]) == [1, 2]


def test_a_node_without_a_zone_label_uses_every_endpoint() -> None:
    endpoints = [ep(1, "zone-a"), ep(2, "zone-b")]
    assert cluster_ips(endpoints, Place("node-1", "")) == [1, 2]


def test_node_hints_naming_this_node_win_over_zone_hints() -> None:
    endpoints = [
        ep(1, "zone-a", nodes=("node-1",)),
        ep(2, "zone-a", nodes=("node-2",)),
        ep(3, "zone-b", nodes=("node-3",)),
    ]
    assert topology_mode(endpoints, HERE) == SAME_NODE
    assert cluster_ips(endpoints) == [1]


def test_node_hints_for_other_nodes_fall_back_to_zone_hints() -> None:
    endpoints = [ep(1, "zone-a", nodes=("node-2",)), ep(2, "zone-b", nodes=("node-3",))]
    assert topology_mode(endpoints, HERE) == SAME_ZONE
    assert cluster_ips(endpoints) == [1]


def test_node_hints_missing_on_one_endpoint_fall_back_to_zone_hints() -> None:
    endpoints = [ep(1, "zone-a", nodes=("node-1",)), ep(2, "zone-a"), ep(3, "zone-b")]
    assert cluster_ips(endpoints) == [1, 2]


def test_node_hints_without_zone_hints_fall_back_to_every_endpoint() -> None:
    endpoints = [ep(1, nodes=("node-2",)), ep(2, nodes=("node-3",))]
    assert cluster_ips(endpoints) == [1, 2]


def test_without_a_place_no_hint_matches() -> None:
    endpoints = [ep(1, "zone-a"), ep(2, "zone-b")]
    assert ips(categorize_endpoints(CLUSTER, endpoints).cluster) == [1, 2]


# --- fallbacks and traffic policies --------------------------------------------------------


def test_terminating_fallback_ignores_topology() -> None:
    gone = {"ready": False, "serving": True, "terminating": True}
    endpoints = [ep(1, "zone-b", **gone), ep(2, "zone-c", **gone), ep(3, "zone-a", ready=False)]
    selection = categorize_endpoints(CLUSTER, endpoints, place=HERE)
    assert ips(selection.cluster) == [1, 2]
    assert selection.has_any


def test_ready_endpoints_elsewhere_are_preferred_to_terminating_ones_here() -> None:
    gone = {"ready": False, "serving": True, "terminating": True}
    # The only ready endpoint is hinted for zone-b: no topology, so it is used.
    assert cluster_ips([ep(1, "zone-a", **gone), ep(2, "zone-b")]) == [2]


def test_internal_local_policy_ignores_hints() -> None:
    port = service_port("web", "10.96.0.10", internal_traffic_policy=TrafficPolicy.LOCAL)
    here = Endpoint("10.244.0.1", 8080, is_local=True, zone_hints=("zone-b",))
    there = Endpoint("10.244.0.2", 8080, zone_hints=("zone-a",))
    selection = categorize_endpoints(port, [here, there], place=HERE)
    assert (selection.cluster, ips(selection.local), ips(selection.reachable)) == ((), [1], [1])


def test_external_local_policy_keeps_local_endpoints_the_hints_send_elsewhere() -> None:
    port = service_port(
        "web", "10.96.0.10", node_port=30080, external_traffic_policy=TrafficPolicy.LOCAL
    )
    here = Endpoint("10.244.0.1", 8080, is_local=True, zone_hints=("zone-b",))
    there = Endpoint("10.244.0.2", 8080, zone_hints=("zone-a",))
    selection = categorize_endpoints(port, [here, there], place=HERE)
    assert ips(selection.cluster) == [2]  # pod traffic to the NodePort follows the hints
    assert ips(selection.local) == [1]
    assert ips(selection.reachable) == [1, 2]  # both need endpoint chains


# --- from the API to the rules -------------------------------------------------------------


def slice_json(*endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": list(endpoints),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def hinted(ip: str, zone: str, node: str | None = None) -> dict[str, Any]:
    hints: dict[str, Any] = {"forZones": [{"name": zone}]}
    if node:
        hints["forNodes"] = [{"name": node}]
    return {"addresses": [ip], "zone": zone, "hints": hints}


def test_zone_and_node_hints_are_read_and_survive_slimming() -> None:
    raw = slice_json(hinted("10.244.0.1", "zone-a", "node-1"), {"addresses": ["10.244.0.2"]})
    for obj in (raw, slim("EndpointSlice", raw)):
        result, _ = translate_endpoint_slice(obj, node_name="node-1")
        assert result is not None
        first, second = next(iter(result.by_port.values()))
        assert (first.zone_hints, first.node_hints) == (("zone-a",), ("node-1",))
        assert (second.zone_hints, second.node_hints) == ((), ())


def test_the_node_zone_label_survives_slimming() -> None:
    obj = {"kind": "Node", "metadata": {"name": "node-1", "labels": {ZONE_LABEL: "zone-a"}}}
    assert slim("Node", obj)["metadata"]["labels"] == {ZONE_LABEL: "zone-a"}  # type: ignore[index]


def _node_json(zone: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": {ZONE_LABEL: zone}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]},
    }


def test_a_new_zone_label_on_this_node_reprograms_the_service() -> None:
    store, translator = Store(), Translator(NodeIdentity("node-1", True))
    service = {
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
    }
    store.replace("Service", [service])
    store.replace(
        "EndpointSlice",
        [slice_json(hinted("10.244.0.1", "zone-a"), hinted("10.244.0.2", "zone-b"))],
    )
    config = Config()

    def programmed(zone: str) -> str:
        store.upsert("Node", _node_json(zone))
        result = translator.translate(store.snapshot())
        assert result.changed is None  # every Service may change: all are rendered again
        state = result.state
        return format_restore(render_ruleset(state, render_options(config, state.node)))

    in_a, in_b = programmed("zone-a"), programmed("zone-b")
    assert "10.244.0.1:8080" in in_a and "10.244.0.2:8080" not in in_a
    assert "10.244.0.2:8080" in in_b and "10.244.0.1:8080" not in in_b


def test_ipvs_real_servers_follow_the_hints() -> None:
    node = Node("node-1", ("192.0.2.10",), {ZONE_LABEL: "zone-a"})
    state = proxy_state((CLUSTER, [ep(1, "zone-a"), ep(2, "zone-b")]), node=node)
    plan = plan_ipvs(state, IpvsOptions(node_ips=node.ips))
    (server,) = plan.virtual_servers
    assert [r.address for r in server.real_servers] == ["10.244.0.1"]
    assert "10.244.0.2,tcp:8080,10.244.0.2" not in {
        entry for s in plan.ipsets if s.name == "KUBE-LOOP-BACK" for entry in s.entries
    }
