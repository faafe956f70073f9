"""IPVS mode's planner: virtual servers, addresses, ipsets and rules for every Service shape."""

from __future__ import annotations

import os

import pytest

from pykubeproxy.backends.iptables.ruleset import format_restore
from pykubeproxy.backends.ipvs.ipsets import format_ipsets
from pykubeproxy.backends.ipvs.ipvsadm import format_ipvs
from pykubeproxy.backends.ipvs.model import RealServer
from pykubeproxy.backends.ipvs.plan import IpvsOptions, plan_ipvs
from pykubeproxy.backends.ipvs.rules import render_ipvs_ruleset
from pykubeproxy.model import (
    Endpoint,
    Protocol,
    TrafficPolicy,
)
from tests.support.builders import port_name, proxy_state, service_port
from tests.support.paths import GOLDEN_IPVS
from tests.support.rendering import examples_state

OPTS = IpvsOptions(cluster_cidr="10.244.0.0/16", node_ips=("192.0.2.10",))


LOCAL = Endpoint("10.244.1.11", 8080, is_local=True, node_name="node-1")
REMOTE = Endpoint("10.244.2.12", 8080, node_name="node-2")
NOT_READY = Endpoint("10.244.2.13", 8080, ready=False, serving=False)


def servers(plan):  # type: ignore[no-untyped-def]
    return {(v.protocol, v.address, v.port): v for v in plan.virtual_servers}


def sets(plan):  # type: ignore[no-untyped-def]
    return {s.name: s.entries for s in plan.ipsets}


def test_the_examples_plan_matches_the_reviewed_golden() -> None:
    state = examples_state()
    opts = IpvsOptions(cluster_cidr="10.244.0.0/16", node_ips=state.node.ips)
    plan = plan_ipvs(state, opts)
    text = (
        format_ipvs(plan)
        + "# addresses: "
        + " ".join(plan.addresses)
        + "\n"
        + format_ipsets(plan.ipsets)
        + format_restore(render_ipvs_ruleset(plan, opts))
    )
    if os.environ.get("PYKUBEPROXY_UPDATE_GOLDEN") == "1":
        GOLDEN_IPVS.write_text(text)
    assert text == GOLDEN_IPVS.read_text()


def test_a_cluster_ip_service_gets_one_virtual_server_with_its_ready_endpoints() -> None:
    port = service_port("web", "10.96.0.20")
    plan = plan_ipvs(proxy_state((port, (LOCAL, REMOTE, NOT_READY))), OPTS)

    (server,) = plan.virtual_servers
    assert server.key == ("tcp", "10.96.0.20", 80)
    assert server.scheduler == "rr" and server.persistence is None
    assert server.real_servers == (RealServer("10.244.1.11", 8080), RealServer("10.244.2.12", 8080))
    assert plan.addresses == ("10.96.0.20",)
    assert sets(plan)["KUBE-CLUSTER-IP"] == ("10.96.0.20,tcp:80",)
    assert sets(plan)["KUBE-IPVS-IPS"] == ("10.96.0.20",)
    assert set(sets(plan)["KUBE-LOOP-BACK"]) == {
        "10.244.1.11,tcp:8080,10.244.1.11",
        "10.244.2.12,tcp:8080,10.244.2.12",
    }


def test_a_node_port_gets_a_virtual_server_on_each_node_address_and_its_port_set() -> None:
    port = service_port("np", "10.96.0.30", node_port=30080)
    opts = IpvsOptions(node_ips=("192.0.2.10", "198.18.0.10"))
    plan = plan_ipvs(proxy_state((port, (REMOTE,))), opts)

    assert set(servers(plan)) == {
        ("tcp", "10.96.0.30", 80),
        ("tcp", "192.0.2.10", 30080),
        ("tcp", "198.18.0.10", 30080),
    }
    assert "192.0.2.10" not in plan.addresses  # node addresses are already the node's
    assert sets(plan)["KUBE-NODE-PORT-TCP"] == ("30080",)
    assert sets(plan)["KUBE-NODE-PORT-LOCAL-TCP"] == ()


def test_external_traffic_policy_local_sends_external_addresses_to_local_endpoints_only() -> None:
    port = service_port(
        "lb",
        "10.96.0.40",
        node_port=30443,
        load_balancer_ips=("198.51.100.10",),
        external_traffic_policy=TrafficPolicy.LOCAL,
        health_check_node_port=32100,
    )
    plan = plan_ipvs(proxy_state((port, (LOCAL, REMOTE))), OPTS)
    by_key = servers(plan)

    assert len(by_key[("tcp", "10.96.0.40", 80)].real_servers) == 2
    assert by_key[("tcp", "198.51.100.10", 80)].real_servers == (RealServer("10.244.1.11", 8080),)
    assert by_key[("tcp", "192.0.2.10", 30443)].real_servers == (RealServer("10.244.1.11", 8080),)
    assert sets(plan)["KUBE-LOAD-BALANCER-LOCAL"] == ("198.51.100.10,tcp:80",)
    assert sets(plan)["KUBE-NODE-PORT-LOCAL-TCP"] == ("30443",)
    assert sets(plan)["KUBE-HEALTH-CHECK-NODE-PORT"] == ("32100",)


def test_client_ip_affinity_becomes_persistence_and_the_scheduler_is_the_configured_one() -> None:
    port = service_port("sticky", "10.96.0.50", affinity_timeout=600)
    plan = plan_ipvs(proxy_state((port, (REMOTE,))), IpvsOptions(scheduler="wlc"))

    (server,) = plan.virtual_servers
    assert server.persistence == 600 and server.scheduler == "wlc"


def test_source_ranges_fill_the_firewall_sets() -> None:
    port = service_port(
        "fw",
        "10.96.0.60",
        port=443,
        load_balancer_ips=("198.51.100.30",),
        load_balancer_source_ranges=("203.0.113.0/24", "192.0.2.0/24"),
    )
    plan = plan_ipvs(proxy_state((port, (REMOTE,))), OPTS)

    assert sets(plan)["KUBE-LOAD-BALANCER-FW"] == ("198.51.100.30,tcp:443",)
    assert set(sets(plan)["KUBE-LOAD-BALANCER-SOURCE-CIDR"]) == {
        "198.51.100.30,tcp:443,203.0.113.0/24",
        "198.51.100.30,tcp:443,192.0.2.0/24",
    }
    # The node (192.0.2.10) is inside a source range: its own loops through the LB IP pass.
    assert sets(plan)["KUBE-LOAD-BALANCER-SOURCE-IP"] == ("198.51.100.30,tcp:443,198.51.100.30",)


def test_a_service_without_endpoints_keeps_its_virtual_server_with_no_real_servers() -> None:
    port = service_port(port_name("empty", protocol=Protocol.UDP), "10.96.0.70", port=53)
    plan = plan_ipvs(proxy_state((port, ())), OPTS)

    (server,) = plan.virtual_servers
    assert server.key == ("udp", "10.96.0.70", 53) and server.real_servers == ()


@pytest.mark.parametrize("masquerade_all", [True, False])
def test_cluster_ip_masquerade_follows_masquerade_all_or_the_cluster_cidr(
    masquerade_all: bool,
) -> None:
    opts = IpvsOptions(masquerade_all=masquerade_all, cluster_cidr="10.244.0.0/16")
    ruleset = render_ipvs_ruleset(plan_ipvs(proxy_state(), opts), opts)
    services = ruleset.table("nat").chain("KUBE-SERVICES")
    assert services is not None
    masq = [r for r in services.rules if "KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ" in r]
    assert len(masq) == 1
    assert masq[0].startswith("! -s 10.244.0.0/16") != masquerade_all


def test_without_a_cluster_cidr_node_traffic_from_a_cluster_ip_is_masqueraded() -> None:
    """kube-proxy's rule for VIP-sourced node connections (VIP:port → VIP:service port)."""
    opts = IpvsOptions()
    ruleset = render_ipvs_ruleset(plan_ipvs(proxy_state(), opts), opts)
    services = ruleset.table("nat").chain("KUBE-SERVICES")
    assert services is not None
    masq = [r for r in services.rules if "KUBE-CLUSTER-IP" in r and "KUBE-MARK-MASQ" in r]
    assert len(masq) == 1
    assert "--match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ" in masq[0]
    assert " -s " not in masq[0]
