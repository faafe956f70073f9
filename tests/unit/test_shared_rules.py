"""The rules kube-proxy writes alike in both modes come out alike from both renderers."""

from __future__ import annotations

import pytest

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.render import RenderOptions
from pykubeproxy.backends.iptables.ruleset import Ruleset
from pykubeproxy.backends.ipvs.plan import IpvsOptions, plan_ipvs
from pykubeproxy.backends.ipvs.rules import render_ipvs_ruleset
from tests.support.builders import proxy_state

SHARED = [
    ("filter", c.KUBE_FORWARD),
    ("nat", c.KUBE_MARK_MASQ),
    ("nat", "PREROUTING"),
    ("nat", "OUTPUT"),
    ("nat", "POSTROUTING"),
]


def rules(ruleset: Ruleset, table: str, chain: str) -> tuple[str, ...]:
    found = next(t for t in ruleset if t.name == table).chain(chain)
    assert found is not None, f"{table} {chain} missing"
    return found.rules


@pytest.mark.parametrize("bit", [14, 0, 31])
def test_both_modes_write_forward_masquerade_and_mark_rules_alike(bit: int) -> None:
    state = proxy_state()
    iptables = render_ruleset(state, RenderOptions(masquerade_bit=bit))
    ipvs_opts = IpvsOptions(masquerade_bit=bit)
    ipvs = render_ipvs_ruleset(plan_ipvs(state, ipvs_opts), ipvs_opts)
    for table, chain in SHARED:
        assert rules(ipvs, table, chain) == rules(iptables, table, chain), (table, chain)
    # IPVS mode's KUBE-POSTROUTING starts with its hairpin rule, then the shared three.
    assert rules(ipvs, "nat", c.KUBE_POSTROUTING)[1:] == rules(iptables, "nat", c.KUBE_POSTROUTING)
