"""The canary chains in the real kernel (legacy and nft, in a namespace of ours) and the fake."""

from __future__ import annotations

import pytest

from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.canary import CanaryMonitor
from pykubeproxy.backends.iptables.chains import CANARY_TABLES, KUBE_PROXY_CANARY
from pykubeproxy.backends.iptables.kernel import cleanup
from pykubeproxy.backends.iptables.render import RenderOptions
from pykubeproxy.backends.iptables.sync import IptablesSyncer
from tests.support.builders import endpoints, proxy_state, service_port
from tests.support.kernels import KERNELS, NamespacedIptables, TamperableIptables, tamperable_kernel
from tests.support.netns import Netns

OPTIONS = RenderOptions(cluster_cidr="10.244.0.0/16", node_ips=("192.0.2.10",))
STATE = proxy_state((service_port("web", "10.96.0.20"), endpoints("10.244.{}.20", 2)))


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> TamperableIptables:
    real = request.param != "fake"
    return tamperable_kernel(request.param, request.getfixturevalue("netns") if real else None)


def wipe_table(kernel: TamperableIptables, table: str, *, delete: bool) -> None:
    """What `iptables -t TABLE -F` does (every rule), and with `delete` `-X` (every own chain)."""
    chains = kernel.save().table(table).chains
    for chain in chains:
        kernel.flush_chain(table, chain.name)
    for chain in chains:
        if delete and not chain.builtin:
            kernel.delete_chain(table, chain.name)


def test_the_canaries_are_placed_and_their_loss_is_seen_once(kernel: TamperableIptables) -> None:
    monitor = CanaryMonitor(kernel, interval=1.0)
    assert monitor.check(0.0) is False
    assert all(kernel.chain_exists(t, KUBE_PROXY_CANARY) for t in CANARY_TABLES)
    assert monitor.check(1.0) is False

    kernel.delete_chain("mangle", KUBE_PROXY_CANARY)
    assert monitor.check(2.0) is True
    assert kernel.chain_exists("mangle", KUBE_PROXY_CANARY)
    assert monitor.check(3.0) is False


@pytest.mark.parametrize("delete", [False, True], ids=["flushed", "flushed-and-deleted"])
def test_a_wiped_nat_table_is_seen_and_a_full_sync_puts_every_rule_back(
    kernel: TamperableIptables, delete: bool
) -> None:
    syncer = IptablesSyncer(kernel, render=lambda state: render_ruleset(state, OPTIONS))
    monitor = CanaryMonitor(kernel, interval=1.0)
    monitor.check(0.0)
    syncer.sync(STATE)
    monitor.synced_once = True
    before = kernel.save().table("nat")
    assert monitor.check(1.0) is False

    wipe_table(kernel, "nat", delete=delete)
    assert monitor.check(2.0) is True
    syncer.sync(STATE, full=True)
    after = kernel.save().table("nat")
    assert {c.name: c.rules for c in after.chains} == {c.name: c.rules for c in before.chains}


def test_cleanup_removes_the_canaries_in_every_table_of_both_backends(netns: Netns) -> None:
    for backend in ("legacy", "nft"):
        CanaryMonitor(NamespacedIptables(backend, netns), interval=1.0).check(0.0)
    cleanup(netns.prefix)
    for backend in ("legacy", "nft"):
        kernel = NamespacedIptables(backend, netns)
        assert not any(kernel.chain_exists(t, KUBE_PROXY_CANARY) for t in CANARY_TABLES)
