"""Packets traced through rendered rulesets reach the endpoints kube-proxy would send them to."""

from __future__ import annotations

from functools import cache

import pytest

from tests.support.rendering import render_golden_case
from tests.unit.tracer import Packet, Trace, Tracer, parse_rule

NODE_IP = "192.0.2.10"  # node-1, the node every golden case renders for
EXTERNAL_CLIENT = "203.0.113.7"  # outside the cluster, inside checkout's source range
OTHER_CLIENT = "198.51.100.99"  # outside the cluster and every source range
POD_ON_OTHER_NODE = "10.244.2.50"

WEB = {"10.244.1.11:8080", "10.244.1.12:8080"}  # examples: shop/web's ready endpoints


@cache
def tracer(case: str) -> Tracer:
    return Tracer(render_golden_case(case).ruleset(), local_addresses={NODE_IP})


def trace(case: str, src: str, dst: str, dport: int, proto: str = "tcp") -> Trace:
    return tracer(case).trace(Packet(src, dst, dport, proto))


# --- the scenarios of issue 2, on the examples/ cluster ------------------------------------


def test_cluster_ip_reaches_exactly_the_ready_endpoints() -> None:
    result = trace("examples", POD_ON_OTHER_NODE, "10.96.10.20", 80)
    assert result.destinations == WEB
    assert result.verdicts == {"ACCEPT"}
    assert result.never_masqueraded  # pod to pod keeps its source IP


def test_node_port_on_the_node_ip_reaches_the_endpoints_masqueraded() -> None:
    result = trace("examples", EXTERNAL_CLIENT, NODE_IP, 30080)
    assert result.destinations == WEB
    assert result.always_masqueraded


def test_cluster_ip_of_a_service_without_endpoints_is_rejected_in_filter() -> None:
    result = trace("examples", POD_ON_OTHER_NODE, "10.96.10.50", 80)
    assert result.destinations == set()
    assert {(p.verdict, p.verdict_chain) for p in result.paths} == {("REJECT", "KUBE-SERVICES")}


def test_node_port_of_a_service_without_endpoints_is_rejected_in_filter() -> None:
    result = trace("examples", EXTERNAL_CLIENT, NODE_IP, 30050)
    verdicts = {(p.verdict, p.verdict_chain) for p in result.paths}
    assert verdicts == {("REJECT", "KUBE-EXTERNAL-SERVICES")}


def test_load_balancer_ip_from_a_source_outside_the_ranges_is_dropped_by_the_firewall() -> None:
    result = trace("examples", OTHER_CLIENT, "198.51.100.10", 80)
    assert result.destinations == set()
    verdicts = {(p.verdict, p.verdict_chain) for p in result.paths}
    assert verdicts == {("DROP", "KUBE-PROXY-FIREWALL")}


def test_load_balancer_ip_from_an_allowed_source_reaches_only_local_endpoints() -> None:
    # shop/checkout has externalTrafficPolicy Local: 10.244.2.22 lives on node-2.
    result = trace("examples", EXTERNAL_CLIENT, "198.51.100.10", 80)
    assert result.destinations == {"10.244.1.21:8080"}
    assert result.never_masqueraded  # Local policy keeps the client's IP


def test_pod_reaching_its_own_service_is_masqueraded_only_when_it_lands_on_itself() -> None:
    result = trace("examples", "10.244.1.11", "10.96.10.20", 80)
    assert result.destinations == WEB
    assert result.path_to("10.244.1.11:8080").masqueraded  # hairpin: reply must come back
    assert not result.path_to("10.244.1.12:8080").masqueraded


# --- more of kube-proxy's traffic rules ---------------------------------------------------


def test_cluster_ip_from_outside_the_pod_network_is_masqueraded() -> None:
    result = trace("examples", "192.0.2.50", "10.96.10.20", 80)
    assert result.destinations == WEB
    assert result.always_masqueraded


def test_node_reaching_a_cluster_ip_goes_through_nat_output() -> None:
    result = trace("examples", NODE_IP, "10.96.0.10", 53, "udp")
    assert result.destinations == {"10.244.1.5:53", "10.244.2.7:53"}
    assert all(p.chains[0] == "nat/OUTPUT" for p in result.paths)


def test_the_right_protocol_reaches_the_right_port() -> None:
    assert trace("examples", POD_ON_OTHER_NODE, "10.96.0.10", 9153).destinations == {
        "10.244.1.5:9153",
        "10.244.2.7:9153",
    }
    assert trace("examples", POD_ON_OTHER_NODE, "10.96.0.10", 9153, "udp").destinations == set()


def test_duplicate_endpoint_across_slices_is_one_destination() -> None:
    result = trace("examples", POD_ON_OTHER_NODE, "10.96.10.60", 50051)
    assert result.destinations == {"10.244.1.41:50051", "10.244.2.42:50051", "10.244.3.43:50051"}
    assert len(result.paths) == 3


def test_external_ip_reaches_every_endpoint_masqueraded() -> None:
    result = trace("examples", OTHER_CLIENT, "198.51.100.20", 9200)
    assert result.destinations == {"10.244.1.31:9200", "10.244.2.32:9200"}
    assert result.always_masqueraded


def test_node_port_on_localhost_is_served_to_the_node_itself() -> None:
    result = trace("examples", "127.0.0.1", "127.0.0.1", 30080)
    assert result.destinations == WEB
    assert all(p.chains[0] == "nat/OUTPUT" for p in result.paths)
    assert result.always_masqueraded


@pytest.mark.parametrize("port", [30443, 80])
def test_external_traffic_of_a_local_policy_service_goes_to_local_endpoints(port: int) -> None:
    dst = NODE_IP if port == 30443 else "198.51.100.30"
    result = trace("external-traffic-policy-local", OTHER_CLIENT, dst, port)
    assert result.destinations == {"10.244.1.21:8080"}
    assert result.never_masqueraded


def test_pods_reaching_a_local_policy_load_balancer_ip_use_every_endpoint() -> None:
    result = trace("external-traffic-policy-local", POD_ON_OTHER_NODE, "198.51.100.10", 80)
    assert result.destinations == {"10.244.1.21:8080", "10.244.2.22:8080"}
    assert result.never_masqueraded


def test_the_node_reaching_a_local_policy_load_balancer_ip_is_masqueraded_to_any_endpoint() -> None:
    result = trace("external-traffic-policy-local", NODE_IP, "198.51.100.10", 80)
    assert result.destinations == {"10.244.1.21:8080", "10.244.2.22:8080"}
    assert result.always_masqueraded


@pytest.mark.parametrize(
    ("dst", "port"), [("198.51.100.11", 80), ("198.51.100.31", 80), (NODE_IP, 30444)]
)
def test_local_policy_without_local_endpoints_drops_external_traffic(dst: str, port: int) -> None:
    result = trace("external-traffic-policy-local", OTHER_CLIENT, dst, port)
    verdicts = {(p.verdict, p.verdict_chain) for p in result.paths}
    assert verdicts == {("DROP", "KUBE-EXTERNAL-SERVICES")}


def test_local_policy_without_local_endpoints_still_serves_pods() -> None:
    result = trace("external-traffic-policy-local", POD_ON_OTHER_NODE, "198.51.100.11", 80)
    assert result.destinations == {"10.244.2.23:8080"}


def test_health_check_node_port_is_accepted_before_any_other_input_rule() -> None:
    result = trace("external-traffic-policy-local", OTHER_CLIENT, NODE_IP, 32101)
    assert {(p.verdict, p.verdict_chain) for p in result.paths} == {("ACCEPT", "KUBE-NODEPORTS")}


def test_internal_local_policy_sends_cluster_ip_traffic_to_local_endpoints_only() -> None:
    result = trace("internal-traffic-policy-local", "10.244.1.99", "10.96.0.20", 53, "udp")
    assert result.destinations == {"10.244.1.71:53"}


def test_internal_local_policy_without_local_endpoints_drops_cluster_ip_traffic() -> None:
    result = trace("internal-traffic-policy-local", "10.244.1.99", "10.96.10.80", 80)
    assert {(p.verdict, p.verdict_chain) for p in result.paths} == {("DROP", "KUBE-SERVICES")}


def test_internal_local_policy_leaves_node_port_traffic_to_every_endpoint() -> None:
    result = trace("internal-traffic-policy-local", OTHER_CLIENT, NODE_IP, 30090)
    assert result.destinations == {"10.244.1.91:8080", "10.244.2.92:8080"}


def test_terminating_local_endpoint_serves_external_traffic_when_no_local_one_is_ready() -> None:
    external = trace("terminating-endpoints", OTHER_CLIENT, NODE_IP, 30004)
    assert external.destinations == {"10.244.1.67:8080"}
    internal = trace("terminating-endpoints", POD_ON_OTHER_NODE, "10.96.30.4", 80)
    assert internal.destinations == {"10.244.2.68:8080"}


def test_node_ports_are_served_only_on_addresses_inside_nodeport_addresses() -> None:
    cidr_tracer = Tracer(
        render_golden_case("nodeport-addresses").ruleset(),
        local_addresses={NODE_IP, "198.18.0.10"},
    )
    inside = cidr_tracer.trace(Packet(OTHER_CLIENT, NODE_IP, 30080))
    assert inside.destinations == {"10.244.1.11:8080"}
    outside = cidr_tracer.trace(Packet(OTHER_CLIENT, "198.18.0.10", 30080))
    assert outside.destinations == set()


def test_masquerade_all_marks_pod_traffic_to_a_cluster_ip_with_its_own_bit() -> None:
    result = trace("masquerade-all", POD_ON_OTHER_NODE, "10.96.10.20", 80)
    assert result.destinations == {"10.244.1.11:8080", "10.244.2.12:8080"}
    assert result.always_masqueraded


# --- the tracer itself --------------------------------------------------------------------


def test_tracer_refuses_match_syntax_it_does_not_understand() -> None:
    with pytest.raises(ValueError, match="--sport"):
        parse_rule("-p tcp -m tcp --sport 80 -j ACCEPT")
