"""translate.py: every Kubernetes semantic kube-proxy applies, and untrusted input skipped alone."""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest

from pykubeproxy.model import Endpoint, Protocol, ServicePort, ServicePortName, TrafficPolicy
from pykubeproxy.selection import categorize_endpoints
from pykubeproxy.translate import (
    InvalidObject,
    merge_endpoints,
    translate_cluster,
    translate_endpoint_slice,
    translate_node,
    translate_service,
)
from tests.support.builders import NODE, endpoint, endpoint_slice, service

WEB_HTTP = ServicePortName("shop", "web", "http", Protocol.TCP)


# Every object here is about shop/web: a ClusterIP Service with one port "http" (80) and its
# EndpointSlice web-abcde (port "http", 8080/TCP); a test replaces fields to make its case.
web_service = functools.partial(
    service,
    "web",
    namespace="shop",
    cluster_ip="10.96.10.20",
    ports=[{"name": "http", "port": 80}],
)
web_slice = functools.partial(
    endpoint_slice,
    "web",
    namespace="shop",
    ports=[{"name": "http", "port": 8080, "protocol": "TCP"}],
)
# An endpoint is on another node unless a test says where.
OTHER_NODE = "node-2"


def only_port(obj: object) -> ServicePort:
    ports, _ = translate_service(obj)
    (port,) = ports
    return port


def slice_endpoints(obj: object, node_name: str = "node-1") -> tuple[Endpoint, ...]:
    result, notes = translate_endpoint_slice(obj, node_name=node_name)
    assert result is not None, notes
    return result.by_port[WEB_HTTP]


def invalid_reason(obj: object) -> str:
    with pytest.raises(InvalidObject) as exc:
        translate_service(obj)
    return str(exc.value)


# --- Services that are not ours to program ---------------------------------------------------


@pytest.mark.parametrize(
    "label",
    [
        {"service.kubernetes.io/service-proxy-name": "other-proxy"},
        {"service.kubernetes.io/headless": ""},
    ],
)
def test_services_labelled_for_another_proxy_or_headless_are_skipped_as_not_invalid(
    label: dict[str, str],
) -> None:
    obj = web_service()
    obj["metadata"]["labels"] = label
    ports, notes = translate_service(obj)
    assert ports == []
    (note,) = notes
    assert not note.invalid
    assert "labelled" in note.reason
    assert (note.namespace, note.name) == ("shop", "web")


def test_external_name_service_is_skipped_as_not_invalid() -> None:
    obj = web_service(type="ExternalName", externalName="db.example.com")
    del obj["spec"]["clusterIP"]
    ports, notes = translate_service(obj)
    assert ports == []
    assert [(n.invalid, "ExternalName" in n.reason) for n in notes] == [(False, True)]


@pytest.mark.parametrize("spec", [{"clusterIP": "None"}, {"clusterIPs": ["None"]}])
def test_headless_service_is_skipped_as_not_invalid(spec: dict[str, Any]) -> None:
    ports, notes = translate_service(web_service(**spec))
    assert ports == []
    assert [(n.invalid, "headless" in n.reason) for n in notes] == [(False, True)]


def test_ipv6_only_service_is_skipped_as_invalid_with_the_reason() -> None:
    obj = web_service(clusterIP="fd00::10", clusterIPs=["fd00::10"])
    state = translate_cluster(services=[obj], endpoint_slices=[], node=NODE)
    assert state.services == ()
    (note,) = state.skipped
    assert note.invalid
    assert "no IPv4 cluster IP" in note.reason
    assert "IPv4 only" in note.reason


def test_dual_stack_service_is_programmed_with_its_ipv4_cluster_ip() -> None:
    port = only_port(web_service(clusterIP="fd00::10", clusterIPs=["fd00::10", "10.96.10.20"]))
    assert port.cluster_ip == "10.96.10.20"


def test_cluster_ips_take_precedence_over_cluster_ip() -> None:
    assert only_port(web_service(clusterIPs=["10.96.10.21"])).cluster_ip == "10.96.10.21"


# --- addresses of the other IP family, and load balancer ingress -----------------------------


def test_ipv6_external_ips_are_left_out_with_a_note() -> None:
    ports, notes = translate_service(web_service(externalIPs=["198.51.100.20", "2001:db8::20"]))
    assert ports[0].external_ips == ("198.51.100.20",)
    assert [n.reason for n in notes] == ["externalIP 2001:db8::20 is IPv6; ignored in this cluster"]


def test_ipv6_source_ranges_are_left_out_with_a_note_and_padding_is_trimmed() -> None:
    obj = web_service(
        type="LoadBalancer", loadBalancerSourceRanges=[" 203.0.113.0/24 ", "2001:db8::/64"]
    )
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.10"}]}}
    ports, notes = translate_service(obj)
    assert ports[0].load_balancer_source_ranges == ("203.0.113.0/24",)
    assert len(notes) == 1
    assert "2001:db8::/64" in notes[0].reason


def test_source_range_with_host_bits_is_normalised_to_its_network() -> None:
    obj = web_service(type="LoadBalancer", loadBalancerSourceRanges=["203.0.113.7/24"])
    assert only_port(obj).load_balancer_source_ranges == ("203.0.113.0/24",)


def test_load_balancer_ingress_in_proxy_ip_mode_is_not_captured() -> None:
    obj = web_service(type="LoadBalancer")
    obj["status"] = {
        "loadBalancer": {
            "ingress": [
                {"ip": "198.51.100.10"},
                {"ip": "198.51.100.11", "ipMode": "Proxy"},
                {"ip": "198.51.100.12", "ipMode": "VIP"},
                {"hostname": "lb.example.com"},
            ]
        }
    }
    assert only_port(obj).load_balancer_ips == ("198.51.100.10", "198.51.100.12")


def test_load_balancer_ingress_of_a_service_that_is_not_a_load_balancer_is_ignored() -> None:
    obj = web_service(type="NodePort")
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.10"}]}}
    assert only_port(obj).load_balancer_ips == ()


def test_node_port_of_a_cluster_ip_service_is_ignored() -> None:
    obj = web_service(ports=[{"name": "http", "port": 80, "nodePort": 30080}])
    assert only_port(obj).node_port == 0


# --- ports -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "reason"),
    [
        ({"name": "http", "port": 0}, "ports[0].port 0 is out of range"),
        ({"name": "http"}, "ports[0].port 0 is out of range"),
        ({"name": "http", "port": 70000}, "ports[0].port 70000 is out of range"),
        ({"name": "http", "port": -1}, "out of range"),
        ({"name": "http", "port": True}, "port must be int, got bool"),
        ({"name": "http", "port": "80"}, "port must be int, got str"),
        ({"name": "http", "port": 80.0}, "port must be int, got float"),
        ({"name": "http", "port": 80, "protocol": "ICMP"}, "unknown protocol 'ICMP'"),
        ({"name": "http", "port": 80, "protocol": "tcp"}, "unknown protocol 'tcp'"),
        ({"name": 7, "port": 80}, "name must be str"),
    ],
)
def test_invalid_port_makes_the_service_invalid_with_a_reason(
    port: dict[str, Any], reason: str
) -> None:
    obj = web_service(type="NodePort", ports=[port])
    assert reason in invalid_reason(obj)


def test_node_port_out_of_range_makes_the_service_invalid() -> None:
    obj = web_service(type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 70000}])
    assert "nodePort 70000 is out of range" in invalid_reason(obj)


def test_duplicate_port_names_make_the_service_invalid() -> None:
    ports = [{"name": "http", "port": 80}, {"name": "http", "port": 81, "protocol": "UDP"}]
    assert "duplicate port name 'http'" in invalid_reason(web_service(ports=ports))


@pytest.mark.parametrize("ports", [[], None])
def test_service_without_ports_is_invalid(ports: list[object] | None) -> None:
    assert "has no ports" in invalid_reason(web_service(ports=ports))


def test_port_entry_that_is_not_an_object_makes_the_service_invalid() -> None:
    assert "ports[0] is not an object" in invalid_reason(web_service(ports=[80]))


def test_every_protocol_kube_proxy_knows_is_accepted() -> None:
    ports = [
        {"name": "a", "port": 80, "protocol": "TCP"},
        {"name": "b", "port": 80, "protocol": "UDP"},
        {"name": "c", "port": 80, "protocol": "SCTP"},
        {"name": "d", "port": 81},
    ]
    result, _ = translate_service(web_service(ports=ports))
    assert [p.name.protocol for p in result] == [
        Protocol.TCP,
        Protocol.UDP,
        Protocol.SCTP,
        Protocol.TCP,
    ]


# --- missing fields and wrong types ------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ("a string", "Service document is a str, not an object"),
        (["a", "list"], "Service document is a list, not an object"),
        (None, "Service document is a NoneType, not an object"),
        (42, "Service document is a int, not an object"),
        ({"kind": "Service"}, "Service has no metadata.name"),
        ({"kind": "Service", "metadata": "web"}, "metadata must be dict, got str"),
        ({"metadata": {"name": "web"}}, "has no cluster IP"),
        ({"metadata": {"name": "web"}, "spec": []}, "spec must be dict, got list"),
    ],
)
def test_malformed_documents_are_invalid_with_a_reason(doc: object, reason: str) -> None:
    assert reason in invalid_reason(doc)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("name", "Web"),
        ("name", 'we"b'),
        ("name", "web\n-A INPUT -j DROP"),
        ("name", "x" * 64),
        ("namespace", "shop floor"),
        ("namespace", "-shop"),
        ("port", "http\n"),
        ("port", "h'ttp"),
    ],
)
def test_names_that_are_not_dns_labels_make_the_service_invalid(where: str, value: str) -> None:
    # They would land in rule comments, and one bad comment makes iptables-restore refuse all.
    obj = web_service()
    if where == "port":
        obj["spec"]["ports"][0]["name"] = value
    else:
        obj["metadata"][where] = value
    assert "is not a DNS label" in invalid_reason(obj)


def test_longest_valid_names_are_accepted() -> None:
    obj = web_service(ports=[{"name": "p" * 63, "port": 80}])
    obj["metadata"] = {"name": "n" * 63, "namespace": "s" * 63}
    assert str(only_port(obj).name) == f"{'s' * 63}/{'n' * 63}:{'p' * 63}"


def test_missing_namespace_means_default() -> None:
    obj = web_service()
    del obj["metadata"]["namespace"]
    assert only_port(obj).name.namespace == "default"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"type": "NodePrt"}, "unknown type 'NodePrt'"),
        ({"type": 3}, "type must be str"),
        ({"clusterIP": "10.96.10.300", "clusterIPs": None}, "is not an IP address"),
        ({"clusterIP": 7}, "clusterIP must be str"),
        ({"externalIPs": ["not-an-ip"]}, "externalIP 'not-an-ip' is not an IP address"),
        ({"externalIPs": "198.51.100.20"}, "externalIPs must be list"),
        ({"externalTrafficPolicy": "Nearby"}, "neither Cluster nor Local"),
        ({"internalTrafficPolicy": "Nearby"}, "neither Cluster nor Local"),
        ({"sessionAffinity": "Cookie"}, "neither None nor ClientIP"),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}},
            },
            "out of range (1-86400)",
        ),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": True}},
            },
            "timeoutSeconds must be int, got bool",
        ),
        (
            {"type": "LoadBalancer", "loadBalancerSourceRanges": ["everywhere"]},
            "'everywhere' is not a CIDR",
        ),
    ],
)
def test_wrong_field_values_make_the_service_invalid_with_a_reason(
    spec: dict[str, Any], reason: str
) -> None:
    assert reason in invalid_reason(web_service(**spec))


def test_global_is_the_old_spelling_of_cluster_traffic_policy() -> None:
    port = only_port(web_service(type="NodePort", externalTrafficPolicy="Global"))
    assert port.external_traffic_policy is TrafficPolicy.CLUSTER


def test_client_ip_affinity_defaults_to_three_hours() -> None:
    assert only_port(web_service(sessionAffinity="ClientIP")).affinity_timeout == 10800
    assert only_port(web_service()).affinity_timeout is None
    config = {"clientIP": {"timeoutSeconds": 600}}
    port = only_port(web_service(sessionAffinity="ClientIP", sessionAffinityConfig=config))
    assert port.affinity_timeout == 600


def test_health_check_node_port_belongs_to_local_policy_load_balancers_only() -> None:
    local_lb = web_service(
        type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=32100
    )
    assert only_port(local_lb).health_check_node_port == 32100
    cluster_lb = web_service(type="LoadBalancer", healthCheckNodePort=32100)
    assert only_port(cluster_lb).health_check_node_port == 0
    local_np = web_service(
        type="NodePort", externalTrafficPolicy="Local", healthCheckNodePort=32100
    )
    assert only_port(local_np).health_check_node_port == 0


def test_external_traffic_policy_counts_only_for_externally_reachable_services() -> None:
    assert not only_port(web_service(externalTrafficPolicy="Local")).external_policy_local
    port = only_port(web_service(externalTrafficPolicy="Local", externalIPs=["198.51.100.20"]))
    assert port.external_policy_local


# --- EndpointSlices ------------------------------------------------------------------------


def test_unset_conditions_mean_ready_serving_and_not_terminating() -> None:
    (translated,) = slice_endpoints(web_slice(endpoint("10.244.1.11", OTHER_NODE)))
    assert (translated.ready, translated.serving, translated.terminating) == (True, True, False)


def test_conditions_are_read_as_given() -> None:
    raw = endpoint("10.244.1.11", OTHER_NODE, ready=False, serving=True, terminating=True)
    (translated,) = slice_endpoints(web_slice(raw))
    assert (translated.ready, translated.serving, translated.terminating) == (False, True, True)


def test_a_condition_that_is_not_a_boolean_makes_the_slice_invalid() -> None:
    raw = {"addresses": ["10.244.1.11"], "conditions": {"ready": "yes"}}
    with pytest.raises(InvalidObject, match=r"conditions\.ready must be a boolean"):
        translate_endpoint_slice(web_slice(raw), node_name="node-1")


@pytest.mark.parametrize("address_type", ["FQDN", "IPv6", None])
def test_slices_of_other_address_types_are_skipped_as_not_invalid(address_type: str | None) -> None:
    obj = web_slice(endpoint("10.244.1.11", OTHER_NODE), addressType=address_type)
    result, notes = translate_endpoint_slice(obj, node_name="node-1")
    assert result is None
    assert [n.invalid for n in notes] == [False]
    assert "addressType" in notes[0].reason


def test_slice_without_a_service_name_label_is_skipped() -> None:
    obj = web_slice(endpoint("10.244.1.11", OTHER_NODE))
    obj["metadata"]["labels"] = {}
    result, notes = translate_endpoint_slice(obj, node_name="node-1")
    assert result is None
    assert "kubernetes.io/service-name" in notes[0].reason


def test_slice_labelled_for_another_proxy_is_skipped() -> None:
    obj = web_slice(endpoint("10.244.1.11", OTHER_NODE))
    obj["metadata"]["labels"]["service.kubernetes.io/service-proxy-name"] = "other"
    result, notes = translate_endpoint_slice(obj, node_name="node-1")
    assert result is None
    assert not notes[0].invalid


def test_endpoint_ports_are_matched_to_service_ports_by_name_and_protocol() -> None:
    obj = web_slice(
        endpoint("10.244.1.11", OTHER_NODE),
        ports=[
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "http", "port": 8081, "protocol": "UDP"},
            {"name": "metrics", "port": 9090},
        ],
    )
    result, _ = translate_endpoint_slice(obj, node_name="node-1")
    assert result is not None
    by_port = {name: [e.port for e in eps] for name, eps in result.by_port.items()}
    assert by_port == {
        WEB_HTTP: [8080],
        ServicePortName("shop", "web", "http", Protocol.UDP): [8081],
        ServicePortName("shop", "web", "metrics", Protocol.TCP): [9090],
    }


def test_slice_port_without_a_number_is_ignored() -> None:
    obj = web_slice(
        endpoint("10.244.1.11", OTHER_NODE), ports=[{"name": "http"}, {"name": "x", "port": 0}]
    )
    result, _ = translate_endpoint_slice(obj, node_name="node-1")
    assert result is not None
    assert result.by_port == {}


def test_slice_port_out_of_range_makes_the_slice_invalid() -> None:
    obj = web_slice(endpoint("10.244.1.11", OTHER_NODE), ports=[{"name": "http", "port": 70000}])
    with pytest.raises(InvalidObject, match="out of range"):
        translate_endpoint_slice(obj, node_name="node-1")


def test_endpoint_without_addresses_is_ignored() -> None:
    obj = web_slice({"addresses": []}, {"nodeName": "node-1"}, endpoint("10.244.1.11", OTHER_NODE))
    assert [e.ip for e in slice_endpoints(obj)] == ["10.244.1.11"]


def test_endpoint_with_a_bad_address_makes_the_slice_invalid() -> None:
    with pytest.raises(InvalidObject, match="not an IP address"):
        translate_endpoint_slice(
            web_slice(endpoint("10.244.1.300", OTHER_NODE)), node_name="node-1"
        )


def test_endpoints_on_this_node_are_local() -> None:
    obj = web_slice(
        endpoint("10.244.1.11", "node-1"),
        endpoint("10.244.2.12", "node-2"),
        endpoint("10.244.3.1", None),
    )
    local = {e.ip: e.is_local for e in slice_endpoints(obj)}
    assert local == {"10.244.1.11": True, "10.244.2.12": False, "10.244.3.1": False}


def test_no_endpoint_is_local_when_the_node_has_no_name() -> None:
    obj = web_slice({"addresses": ["10.244.1.11"], "nodeName": ""})
    assert not slice_endpoints(obj, node_name="")[0].is_local


def test_zone_and_hints_are_kept() -> None:
    raw = endpoint("10.244.1.11", OTHER_NODE)
    raw["zone"] = "zone-a"
    raw["hints"] = {"forZones": [{"name": "zone-b"}, {"name": "zone-a"}]}
    (translated,) = slice_endpoints(web_slice(raw))
    assert (translated.zone, translated.zone_hints) == ("zone-a", ("zone-a", "zone-b"))


# --- merging slices ---------------------------------------------------------------------------


def slices_of(*endpoint_lists: list[dict[str, Any]]) -> tuple[Endpoint, ...]:
    parsed = []
    for endpoints in endpoint_lists:
        result, _ = translate_endpoint_slice(web_slice(*endpoints), node_name="node-1")
        assert result is not None
        parsed.append(result)
    return merge_endpoints(parsed)[WEB_HTTP]


def test_endpoint_listed_by_two_slices_is_counted_once() -> None:
    merged = slices_of(
        [endpoint("10.244.1.11", OTHER_NODE), endpoint("10.244.2.12", OTHER_NODE)],
        [endpoint("10.244.2.12", OTHER_NODE)],
    )
    assert [str(e) for e in merged] == ["10.244.1.11:8080", "10.244.2.12:8080"]


@pytest.mark.parametrize("local_first", [True, False])
def test_duplicate_endpoint_prefers_the_copy_on_this_node(local_first: bool) -> None:
    local, remote = [endpoint("10.244.1.11", "node-1")], [endpoint("10.244.1.11", None)]
    merged = slices_of(local, remote) if local_first else slices_of(remote, local)
    assert [e.is_local for e in merged] == [True]


def test_endpoints_are_ordered_by_their_ip_port_string_as_kube_proxy_does() -> None:
    merged = slices_of(
        [endpoint("10.244.2.12", OTHER_NODE), endpoint("10.244.10.5", OTHER_NODE)],
        [endpoint("10.244.1.11", OTHER_NODE)],
    )
    assert [e.ip for e in merged] == ["10.244.1.11", "10.244.10.5", "10.244.2.12"]


# --- the whole cluster -----------------------------------------------------------------------


def test_one_invalid_service_never_prevents_the_others_from_being_programmed() -> None:
    bad = web_service(type="NodePrt")
    bad["metadata"]["name"] = "broken"
    other = copy.deepcopy(web_service(clusterIP="10.96.10.21"))
    other["metadata"]["name"] = "api"
    bad_slice = web_slice(endpoint("10.244.1.12", OTHER_NODE), endpoints="oops")
    bad_slice["metadata"]["name"] = "web-broken"
    state = translate_cluster(
        services=[web_service(), "garbage", bad, None, other, {"metadata": {}}],
        endpoint_slices=[web_slice(endpoint("10.244.1.11", OTHER_NODE)), 17, bad_slice],
        node=NODE,
    )
    assert [str(p.name) for p in state.services] == ["shop/api:http", "shop/web:http"]
    assert [str(e) for e in state.endpoints_of(WEB_HTTP)] == ["10.244.1.11:8080"]
    invalid = [(s.kind, s.namespace, s.name) for s in state.skipped if s.invalid]
    assert ("Service", "shop", "broken") in invalid
    assert invalid.count(("Service", "", "(unnamed)")) == 3
    assert ("EndpointSlice", "", "(unnamed)") in invalid
    assert ("EndpointSlice", "shop", "web-broken") in invalid


def test_skipped_services_are_reported_with_their_namespace_and_name() -> None:
    bad = web_service(type="NodePrt")
    state = translate_cluster(services=[bad], endpoint_slices=[], node=NODE)
    assert [str(s) for s in state.skipped] == ["Service shop/web: unknown type 'NodePrt'"]


def test_service_ports_are_in_a_stable_order_whatever_the_input_order() -> None:
    a = web_service(ports=[{"name": "b", "port": 81}, {"name": "a", "port": 80}])
    b = web_service(clusterIP="10.96.0.5")
    b["metadata"] = {"name": "api", "namespace": "default"}
    one = translate_cluster(services=[a, b], endpoint_slices=[], node=NODE)
    two = translate_cluster(services=[b, a], endpoint_slices=[], node=NODE)
    assert one.services == two.services
    assert [str(p.name) for p in one.services] == ["default/api:http", "shop/web:a", "shop/web:b"]


def test_translating_does_not_modify_the_input() -> None:
    objects = [web_service(externalIPs=["198.51.100.20", "2001:db8::1"])]
    before = copy.deepcopy(objects)
    translate_cluster(services=objects, endpoint_slices=[], node=NODE)
    assert objects == before


# --- nodes ------------------------------------------------------------------------------------


def test_node_addresses_are_internal_first_of_our_family_without_duplicates() -> None:
    node = translate_node(
        {
            "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "a"}},
            "status": {
                "addresses": [
                    {"type": "ExternalIP", "address": "198.18.0.10"},
                    {"type": "Hostname", "address": "node-1"},
                    {"type": "InternalIP", "address": "fd00::10"},
                    {"type": "InternalIP", "address": "192.0.2.10"},
                    {"type": "InternalIP", "address": "not-an-ip"},
                    {"type": "ExternalIP", "address": "192.0.2.10"},
                    "garbage",
                ]
            },
        }
    )
    assert node.ips == ("192.0.2.10", "198.18.0.10")
    assert node.labels == {"topology.kubernetes.io/zone": "a"}


# --- which endpoints each kind of traffic may use (kube-proxy's CategorizeEndpoints) ----------


def port_with(**fields: Any) -> ServicePort:
    return ServicePort(name=WEB_HTTP, cluster_ip="10.96.10.20", port=80, **fields)


READY_LOCAL = Endpoint("10.244.1.1", 80, is_local=True)
READY_REMOTE = Endpoint("10.244.2.1", 80)
TERMINATING_LOCAL = Endpoint("10.244.1.2", 80, ready=False, terminating=True, is_local=True)
TERMINATING_REMOTE = Endpoint("10.244.2.2", 80, ready=False, terminating=True)
GONE = Endpoint("10.244.2.3", 80, ready=False, serving=False, terminating=True)
NOT_READY = Endpoint("10.244.2.4", 80, ready=False, serving=False)


def test_cluster_policy_uses_every_ready_endpoint_and_nothing_else() -> None:
    eps = [READY_LOCAL, READY_REMOTE, TERMINATING_REMOTE, GONE, NOT_READY]
    selection = categorize_endpoints(port_with(), eps)
    assert selection.cluster == (READY_LOCAL, READY_REMOTE)
    assert selection.local == ()
    assert selection.reachable == selection.cluster
    assert selection.has_any


def test_serving_terminating_endpoints_are_used_only_when_none_is_ready() -> None:
    selection = categorize_endpoints(port_with(), [TERMINATING_REMOTE, GONE, NOT_READY])
    assert selection.cluster == (TERMINATING_REMOTE,)
    assert selection.has_any


def test_terminating_endpoints_that_no_longer_serve_are_never_used() -> None:
    selection = categorize_endpoints(port_with(), [GONE, NOT_READY])
    assert selection.cluster == ()
    assert not selection.has_any


def test_external_local_policy_uses_local_ready_endpoints_and_keeps_cluster_ones() -> None:
    port = port_with(node_port=30080, external_traffic_policy=TrafficPolicy.LOCAL)
    selection = categorize_endpoints(port, [READY_LOCAL, READY_REMOTE, TERMINATING_LOCAL])
    assert selection.local == (READY_LOCAL,)
    assert selection.cluster == (READY_LOCAL, READY_REMOTE)
    assert selection.reachable == (READY_LOCAL, READY_REMOTE)


def test_local_policy_falls_back_to_local_serving_terminating_endpoints() -> None:
    port = port_with(node_port=30080, external_traffic_policy=TrafficPolicy.LOCAL)
    selection = categorize_endpoints(port, [TERMINATING_LOCAL, READY_REMOTE])
    assert selection.local == (TERMINATING_LOCAL,)
    assert selection.cluster == (READY_REMOTE,)
    assert selection.reachable == (TERMINATING_LOCAL, READY_REMOTE)


def test_internal_local_policy_without_external_access_uses_no_cluster_endpoints() -> None:
    port = port_with(internal_traffic_policy=TrafficPolicy.LOCAL)
    selection = categorize_endpoints(port, [READY_LOCAL, READY_REMOTE])
    assert selection.cluster == ()
    assert selection.local == (READY_LOCAL,)
    assert selection.reachable == (READY_LOCAL,)


def test_local_policy_knows_endpoints_exist_elsewhere_when_none_is_local() -> None:
    port = port_with(internal_traffic_policy=TrafficPolicy.LOCAL)
    selection = categorize_endpoints(port, [READY_REMOTE])
    assert selection.local == ()
    assert selection.has_any  # so the cluster IP DROPs ("no local endpoints"), not REJECTs
    only_terminating = categorize_endpoints(port, [TERMINATING_REMOTE])
    assert only_terminating.has_any
    assert not categorize_endpoints(port, [GONE]).has_any


def test_external_local_policy_on_an_unreachable_service_is_ignored() -> None:
    port = port_with(external_traffic_policy=TrafficPolicy.LOCAL)
    selection = categorize_endpoints(port, [READY_LOCAL, READY_REMOTE])
    assert selection.local == ()
    assert selection.cluster == (READY_LOCAL, READY_REMOTE)
