"""IPVS mode's ipsets and iptables rules in a real kernel (this one has ipset, not IPVS).

Switching modes is a sync scenario too: it runs on the fake as well (without root).
"""

from __future__ import annotations

import pytest

from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.diff import normalize_rule
from pykubeproxy.backends.iptables.render import RenderOptions
from pykubeproxy.backends.iptables.ruleset import Ruleset
from pykubeproxy.backends.iptables.sync import IptablesSyncer
from pykubeproxy.backends.ipvs.ipsets import format_ipsets
from pykubeproxy.backends.ipvs.plan import IpvsOptions, plan_ipvs
from pykubeproxy.backends.ipvs.rules import render_ipvs_ruleset, render_ipvs_state
from tests.support.fakes import FakeIptables
from tests.support.kernels import (
    KERNELS,
    NamespacedIptables,
    TamperableIptables,
    tamperable_kernel,
)
from tests.support.needs import need_root_and
from tests.support.rendering import examples_state


def chains(ruleset: Ruleset) -> dict[tuple[str, str], list[str]]:
    return {
        (t.name, ch.name): [normalize_rule(r) for r in ch.rules]
        for t in ruleset
        for ch in t.chains
        if ch.name.startswith("KUBE-") or (ch.builtin and ch.rules)
    }


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> TamperableIptables:
    """iptables-legacy and iptables-nft in a fresh namespace with ipset (root), and the fake."""
    if request.param == "fake":
        return FakeIptables()
    need_root_and("ipset")
    return tamperable_kernel(request.param, request.getfixturevalue("netns"))


def load_sets(kernel: TamperableIptables, text: str) -> None:
    """The ipsets IPVS mode's rules name: the real kernel refuses a rule naming a missing set
    (the fake does not look at sets)."""
    if isinstance(kernel, NamespacedIptables):
        kernel.netns.exec("ipset", "restore", "-exist", input=text)


@pytest.mark.parametrize("kernel", ["legacy", "nft"], indirect=True)
def test_ipvs_rules_over_kube_proxys_ipsets_are_taken_by_the_kernel_exactly(
    kernel: NamespacedIptables,
) -> None:
    state = examples_state()
    opts = IpvsOptions(cluster_cidr="10.244.0.0/16", node_ips=state.node.ips)
    plan = plan_ipvs(state, opts)
    load_sets(kernel, format_ipsets(plan.ipsets))

    syncer = IptablesSyncer(kernel, render=lambda s: render_ipvs_state(s, opts))
    first = syncer.sync(state)
    second = syncer.sync(state)

    assert first.wrote and not second.wrote
    assert chains(kernel.save()) == chains(render_ipvs_ruleset(plan, opts))
    saved = kernel.netns.exec("ipset", "list", "KUBE-CLUSTER-IP").stdout
    assert "10.96.0.10,tcp:53" in saved


def test_switching_between_iptables_and_ipvs_modes_leaves_no_chain_of_the_other(
    kernel: TamperableIptables,
) -> None:
    state = examples_state()
    ipvs_opts = IpvsOptions(cluster_cidr="10.244.0.0/16", node_ips=state.node.ips)
    iptables_opts = RenderOptions(cluster_cidr="10.244.0.0/16", node_ips=state.node.ips)
    load_sets(kernel, format_ipsets(plan_ipvs(state, ipvs_opts).ipsets))

    IptablesSyncer(kernel, render=lambda s: render_ruleset(s, iptables_opts)).sync(state)
    IptablesSyncer(kernel, render=lambda s: render_ipvs_state(s, ipvs_opts)).sync(state)
    assert chains(kernel.save()) == chains(render_ipvs_state(state, ipvs_opts))

    IptablesSyncer(kernel, render=lambda s: render_ruleset(s, iptables_opts)).sync(state)
    assert chains(kernel.save()) == chains(render_ruleset(state, iptables_opts))
