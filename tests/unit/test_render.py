"""render.py details that the golden files show only by example."""

from __future__ import annotations

import pytest

from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.render import RenderOptions, probability
from pykubeproxy.backends.iptables.ruleset import format_restore, quote, ruleset_to_json
from pykubeproxy.model import Protocol, ProxyState, ServicePortName
from tests.support.builders import NODE, endpoints, proxy_state, service_port
from tests.support.rendering import orphan_chains, unknown_targets

NAME = ServicePortName("shop", "web", "http", Protocol.TCP)


def state_with(count: int, **port: object) -> ProxyState:
    """shop/web:http at 10.96.10.20:80 with `count` endpoints 10.244.1.1.. on 8080."""
    service = service_port(NAME, "10.96.10.20", **port)
    return proxy_state((service, endpoints("10.244.1.{}", count)))


def nat_rules(state: ProxyState, opts: RenderOptions | None = None) -> dict[str, list[str]]:
    ruleset = render_ruleset(state, opts or RenderOptions(cluster_cidr="10.244.0.0/16"))
    return ruleset_to_json(ruleset)["tables"]["nat"]["chains"]


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [(2, "0.5000000000"), (3, "0.3333333333"), (4, "0.2500000000"), (7, "0.1428571429")],
)
def test_probability_has_kube_proxys_ten_decimals(remaining: int, expected: str) -> None:
    assert probability(remaining) == expected


def test_each_endpoint_gets_one_over_the_remaining_count_and_the_last_is_unconditional() -> None:
    chains = nat_rules(state_with(5))
    (svc,) = (name for name in chains if name.startswith("KUBE-SVC-"))
    picks = [rule for rule in chains[svc] if "KUBE-SEP-" in rule]
    assert [r.split("--probability ")[1].split()[0] for r in picks[:-1]] == [
        "0.2000000000",
        "0.2500000000",
        "0.3333333333",
        "0.5000000000",
    ]
    assert "statistic" not in picks[-1]


def test_a_single_endpoint_is_picked_without_statistic() -> None:
    chains = nat_rules(state_with(1))
    assert not any("statistic" in rule for rules in chains.values() for rule in rules)


@pytest.mark.parametrize("nodeport_addresses", [(), ("0.0.0.0/0",), ("192.0.2.0/24", "0.0.0.0/0")])
def test_no_nodeport_addresses_or_a_zero_cidr_mean_every_local_address(
    nodeport_addresses: tuple[str, ...],
) -> None:
    opts = RenderOptions(nodeport_addresses=nodeport_addresses, node_ips=NODE.ips)
    services = nat_rules(state_with(1, node_port=30080), opts)["KUBE-SERVICES"]
    assert services[-1] == (
        '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in '
        'this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    )


def test_localhost_node_ports_can_be_turned_off() -> None:
    opts = RenderOptions(localhost_nodeports=False)
    services = nat_rules(state_with(1, node_port=30080), opts)["KUBE-SERVICES"]
    assert services[-1].startswith("! -d 127.0.0.0/8 -m comment")


def test_loopback_in_nodeport_addresses_is_skipped_without_localhost_node_ports() -> None:
    opts = RenderOptions(
        nodeport_addresses=("192.0.2.0/24", "127.0.0.0/8"),
        localhost_nodeports=False,
        node_ips=NODE.ips,
    )
    services = nat_rules(state_with(1, node_port=30080), opts)["KUBE-SERVICES"]
    assert [r.split(" -m comment")[0] for r in services if "KUBE-NODEPORTS" in r] == [
        "-d 192.0.2.10/32"
    ]


@pytest.mark.parametrize(("bit", "mark"), [(0, "0x1"), (14, "0x4000"), (31, "0x80000000")])
def test_the_masquerade_mark_follows_the_masquerade_bit(bit: int, mark: str) -> None:
    text = format_restore(render_ruleset(state_with(1), RenderOptions(masquerade_bit=bit)))
    assert f"-A KUBE-MARK-MASQ -j MARK --set-xmark {mark}/{mark}\n" in text
    assert f"-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN\n" in text
    assert f"-A KUBE-POSTROUTING -j MARK --set-xmark {mark}/0x0\n" in text


def test_without_a_cluster_cidr_cluster_ip_traffic_is_not_masqueraded() -> None:
    chains = nat_rules(state_with(2), RenderOptions())
    (svc,) = (name for name in chains if name.startswith("KUBE-SVC-"))
    assert not any(rule.endswith("-j KUBE-MARK-MASQ") for rule in chains[svc])


def test_an_empty_state_renders_the_base_chains_only() -> None:
    ruleset = render_ruleset(proxy_state(), RenderOptions())
    assert unknown_targets(ruleset) == []
    # kube-proxy declares these even with nothing to mark or no node port to serve.
    assert orphan_chains(ruleset) == ["nat/KUBE-MARK-MASQ"]


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("KUBE-SVC-X", "KUBE-SVC-X"),
        ("shop/web:http cluster IP", '"shop/web:http cluster IP"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
    ],
)
def test_arguments_are_quoted_as_iptables_save_prints_them(value: str, quoted: str) -> None:
    assert quote(value) == quoted


def test_restore_text_declares_user_chains_and_inserts_into_builtin_ones() -> None:
    text = format_restore(render_ruleset(state_with(1), RenderOptions()))
    lines = text.splitlines()
    assert lines[0] == "*filter" and lines[-1] == "COMMIT" and text.endswith("\n")
    assert ":INPUT - [0:0]" not in lines
    assert [line.split(" ")[2] for line in lines if line.startswith("-I FORWARD ")] == [
        "1",
        "2",
        "3",
        "4",
    ]


def test_a_source_range_of_everything_is_written_as_iptables_save_prints_it() -> None:
    chains = nat_rules(
        state_with(
            1,
            load_balancer_ips=("198.51.100.10",),
            load_balancer_source_ranges=("0.0.0.0/0", "203.0.113.0/24"),
        )
    )
    (fw,) = (name for name in chains if name.startswith("KUBE-FW-"))
    ext = fw.replace("KUBE-FW-", "KUBE-EXT-")
    assert chains[fw][:2] == [
        f'-m comment --comment "shop/web:http loadbalancer IP" -j {ext}',
        f'-s 203.0.113.0/24 -m comment --comment "shop/web:http loadbalancer IP" -j {ext}',
    ]
