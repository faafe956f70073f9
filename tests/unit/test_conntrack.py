"""Which conntrack entries are stale after endpoints change (pure), and how they are parsed."""

from __future__ import annotations

from pykubeproxy.conntrack import Flow, parse_conntrack, stale_flows
from pykubeproxy.model import Endpoint, Protocol, ProxyState, ServicePortName
from tests.support.builders import proxy_state, service_port

LISTING = """\
udp      17 29 src=10.244.1.20 dst=10.96.0.10 sport=40000 dport=53 src=10.244.1.11 dst=10.244.1.20 sport=8080 dport=40000 mark=0 use=1
udp      17 25 src=10.244.1.20 dst=10.96.0.10 sport=40001 dport=53 [UNREPLIED] src=10.96.0.10 dst=10.244.1.20 sport=53 dport=40001 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.
"""  # noqa: E501

DNS = ServicePortName("kube-system", "dns", "dns", Protocol.UDP)
WEB = ServicePortName("default", "web", "http", Protocol.TCP)


def state(*endpoints: str, node_port: int = 0) -> ProxyState:
    """kube-system/dns (53/UDP, to `endpoints` on 8080) and default/web (one endpoint)."""
    return proxy_state(
        (
            service_port(DNS, "10.96.0.10", port=53, node_port=node_port),
            tuple(Endpoint(ip, 8080) for ip in endpoints),
        ),
        (service_port(WEB, "10.96.0.20"), (Endpoint("10.244.9.9", 80),)),
    )


def flow(reply: str, *, dst: str = "10.96.0.10", dport: int = 53, proto: str = "udp") -> Flow:
    return Flow(proto, "10.244.1.20", 40000, dst, dport, reply, 8080 if reply != dst else dport)


def test_conntrack_listings_parse_into_original_and_reply_directions() -> None:
    flows = parse_conntrack(LISTING)

    assert flows == [
        Flow("udp", "10.244.1.20", 40000, "10.96.0.10", 53, "10.244.1.11", 8080),
        Flow("udp", "10.244.1.20", 40001, "10.96.0.10", 53, "10.96.0.10", 53),
    ]


def test_a_flow_pinned_to_an_endpoint_that_left_is_stale() -> None:
    gone, kept = flow("10.244.1.11"), flow("10.244.1.12")

    assert stale_flows([gone, kept], state("10.244.1.12")) == [gone]


def test_a_flow_that_began_before_the_service_had_endpoints_is_stale_once_it_has_some() -> None:
    never_natted = flow("10.96.0.10")

    assert stale_flows([never_natted], state("10.244.1.12")) == [never_natted]
    assert stale_flows([never_natted], state()) == []  # still nowhere better to send it


def test_node_port_flows_on_node_addresses_are_checked_too() -> None:
    via_node_port = flow("10.244.1.11", dst="192.0.2.10", dport=30053)
    elsewhere = flow("10.244.1.11", dst="198.18.0.1", dport=30053)

    stale = stale_flows([via_node_port, elsewhere], state("10.244.1.12", node_port=30053))

    assert stale == [via_node_port]


def test_tcp_flows_are_left_alone() -> None:
    tcp = flow("10.244.1.11", dst="10.96.0.20", dport=80, proto="tcp")

    assert stale_flows([tcp], state("10.244.1.12")) == []
