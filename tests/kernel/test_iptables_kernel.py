"""iptables sync scenarios against the real kernel and against the fake, and the real edge's CLI.

Each scenario runs three times: on iptables-legacy and iptables-nft in a network namespace the
test creates and deletes (root), and on FakeIptables (no root). The same scenarios cover the
pure diff (plan_restore, parse_save) without root, and keep the fake as strict as the kernel.
Tampering goes through the kernel's own tamper interface (tests/support/kernels.py).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.diff import normalize_rule, plan_restore
from pykubeproxy.backends.iptables.kernel import (
    Iptables,
    IptablesError,
    detect_backend,
)
from pykubeproxy.backends.iptables.render import RenderOptions
from pykubeproxy.backends.iptables.ruleset import Ruleset
from pykubeproxy.backends.iptables.sync import IptablesSyncer
from tests.support.builders import Entry, endpoints, proxy_state, service_port
from tests.support.kernels import (
    KERNELS,
    NamespacedIptables,
    TamperableIptables,
    tamperable_kernel,
)
from tests.support.netns import Netns
from tests.support.paths import REPO

OPTIONS = RenderOptions(cluster_cidr="10.244.0.0/16", node_ips=("192.0.2.10",))


def syncer_for(kernel: Iptables) -> IptablesSyncer:
    """iptables mode's syncer over this kernel, rendering with OPTIONS."""
    return IptablesSyncer(kernel, render=lambda state: render_ruleset(state, OPTIONS))


def backed(name: str, ip: str, *, count: int = 2, **fields: int) -> Entry:
    """default/<name>:http at `ip`:80, with `count` endpoints 10.244.<i>.<ip's last byte>:8080."""
    host = ip.rsplit(".", 1)[1]
    return service_port(name, ip, **fields), endpoints(f"10.244.{{}}.{host}", count)


BASE = proxy_state(
    backed("web", "10.96.0.20", node_port=30080),
    backed("api", "10.96.0.30", count=3),
    backed("empty", "10.96.0.40", count=0),
    sort=True,
)


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> TamperableIptables:
    """iptables-legacy and iptables-nft in a fresh namespace (root), and the fake (no root)."""
    real = request.param != "fake"
    return tamperable_kernel(request.param, request.getfixturevalue("netns") if real else None)


def owned(ruleset: Ruleset) -> dict[tuple[str, str], list[str]]:
    """Every KUBE- chain and every jump in a built-in chain, rules normalized."""
    result = {}
    for table in ruleset:
        for chain in table.chains:
            if chain.name.startswith("KUBE-") or (chain.builtin and chain.rules):
                result[(table.name, chain.name)] = [normalize_rule(r) for r in chain.rules]
    return result


def test_tampering_leaves_the_same_rules_in_the_fake_as_in_the_kernel(
    kernel: TamperableIptables,
) -> None:
    kernel.new_chain("nat", "KUBE-TAMPERED")
    kernel.append_rule(
        "nat", "KUBE-TAMPERED", '-s 10.0.0.1/32 -m comment --comment "a b" -j RETURN'
    )
    kernel.append_rule("nat", "KUBE-TAMPERED", "-s 10.0.0.2/32 -j RETURN")
    kernel.append_rule("nat", "PREROUTING", "-j KUBE-TAMPERED")

    assert owned(kernel.save()) == {
        ("nat", "PREROUTING"): ["-j KUBE-TAMPERED"],
        ("nat", "KUBE-TAMPERED"): [
            '-s 10.0.0.1/32 -m comment --comment "a b" -j RETURN',
            "-s 10.0.0.2/32 -j RETURN",
        ],
    }

    kernel.delete_rule("nat", "KUBE-TAMPERED", 1)
    assert owned(kernel.save())[("nat", "KUBE-TAMPERED")] == ["-s 10.0.0.2/32 -j RETURN"]
    kernel.flush_chain("nat", "KUBE-TAMPERED")
    assert owned(kernel.save())[("nat", "KUBE-TAMPERED")] == []


def test_kernel_holds_exactly_the_rendered_rules_after_a_sync(kernel: TamperableIptables) -> None:
    syncer_for(kernel).sync(BASE)

    assert owned(kernel.save()) == owned(render_ruleset(BASE, OPTIONS))


def test_a_second_sync_with_nothing_changed_writes_nothing(kernel: TamperableIptables) -> None:
    syncer = syncer_for(kernel)
    first = syncer.sync(BASE)
    second = syncer.sync(BASE)

    assert first.wrote and first.full
    assert not second.wrote and not second.full


def test_a_hand_deleted_rule_and_jump_are_left_by_a_partial_sync_and_repaired_by_a_full_one(
    kernel: TamperableIptables,
) -> None:
    syncer = syncer_for(kernel)
    syncer.sync(BASE)
    want = owned(kernel.save())
    svc_chain = next(name for (table, name) in want if name.startswith("KUBE-SVC-"))
    kernel.delete_rule("nat", svc_chain, 1)
    kernel.delete_rule("nat", "PREROUTING", 1)
    kernel.flush_chain("filter", "KUBE-FORWARD")
    tampered = owned(kernel.save())

    # Partial syncs write what changed since the last write, without reading the kernel.
    partial = syncer.sync(BASE)
    assert not partial.full and not partial.wrote
    assert owned(kernel.save()) == tampered

    repair = syncer.sync(BASE, full=True)

    assert repair.full
    assert repair.plan.chains_written == 2
    assert repair.plan.jumps_fixed == 1
    assert owned(kernel.save()) == want


def test_a_duplicated_jump_is_removed_by_the_next_full_sync(kernel: TamperableIptables) -> None:
    syncer = syncer_for(kernel)
    syncer.sync(BASE)
    want = owned(kernel.save())
    jump = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    kernel.append_rule("nat", "OUTPUT", jump)

    syncer.sync(BASE, full=True)

    assert owned(kernel.save()) == want


def test_a_removed_service_leaves_no_chain_behind(kernel: TamperableIptables) -> None:
    syncer = syncer_for(kernel)
    syncer.sync(BASE)
    smaller = replace(BASE, services=tuple(p for p in BASE.services if p.name.name != "api"))

    result = syncer.sync(smaller)

    assert result.plan.chains_deleted == 4  # KUBE-SVC and three KUBE-SEP
    assert owned(kernel.save()) == owned(render_ruleset(smaller, OPTIONS))


def test_a_refused_restore_leaves_the_table_exactly_as_it_was(kernel: TamperableIptables) -> None:
    syncer_for(kernel).sync(BASE)
    before = owned(kernel.save())
    # A valid flush of two chains, then a bad line: nothing of the transaction may land.
    payload = (
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n"
        "-A KUBE-SERVICES -j KUBE-NO-SUCH-CHAIN\nCOMMIT\n"
    )

    with pytest.raises(IptablesError) as refused:
        kernel.restore(payload)

    # legacy names the bad rule; nft (and the fake) find a missing jump target only at COMMIT
    # and name that.
    named = {"legacy": 4, "nft": 5, "fake": 5}[kernel.backend]
    assert refused.value.line == named
    assert refused.value.text == payload.splitlines()[named - 1]
    assert owned(kernel.save()) == before


class RejectingKernel:
    """A kernel that, like one missing a match module, refuses rules for one address."""

    def __init__(self, real: Iptables, poison: str) -> None:
        self.real, self.poison, self.backend = real, poison, real.backend

    def save(self) -> Ruleset:
        return self.real.save()

    def save_text(self) -> str:
        return self.real.save_text()

    def restore(self, payload: str, *, test: bool = False) -> None:
        for number, line in enumerate(payload.splitlines(), start=1):
            if self.poison in line:
                raise IptablesError(f"line {number} failed", line=number, text=line)
        self.real.restore(payload, test=test)


def test_a_service_the_kernel_refuses_is_skipped_and_the_others_are_programmed(
    kernel: TamperableIptables,
) -> None:
    syncer = syncer_for(kernel)
    syncer.sync(BASE)
    with_bad = proxy_state(
        backed("web", "10.96.0.20", node_port=30080),
        backed("api", "10.96.0.30", count=3),
        backed("bad", "10.96.0.66"),
        backed("new", "10.96.0.50"),
        sort=True,
    )
    syncer.kernel = RejectingKernel(kernel, "10.96.0.66")

    result = syncer.sync(with_bad)

    assert [s.name for s in result.rejected] == ["bad"]
    without_bad = replace(
        with_bad, services=tuple(p for p in with_bad.services if p.name.name != "bad")
    )
    assert owned(kernel.save()) == owned(render_ruleset(without_bad, OPTIONS))
    assert syncer.needs_full  # the refused Service is tried again at the next sync


def test_takeover_replaces_kube_proxy_rules_and_removes_its_stale_chains(
    kernel: TamperableIptables,
) -> None:
    # What a node running kube-proxy holds: its own argument order, and a Service since deleted.
    kube_proxy_rules = (
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n"
        ":KUBE-SVC-OLDOLDOLDOLDOLD1 - [0:0]\n"
        ":KUBE-SEP-OLDOLDOLDOLDOLD1 - [0:0]\n:KUBE-XLB-OLDOLDOLDOLDOLD1 - [0:0]\n"
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n"
        '-A KUBE-SERVICES -m comment --comment "gone/old cluster IP" -m tcp -p tcp -d 10.96.9.9 '
        "--dport 80 -j KUBE-SVC-OLDOLDOLDOLDOLD1\n"
        "-A KUBE-SVC-OLDOLDOLDOLDOLD1 -j KUBE-SEP-OLDOLDOLDOLDOLD1\n"
        "-A KUBE-XLB-OLDOLDOLDOLDOLD1 -j KUBE-SVC-OLDOLDOLDOLDOLD1\n"
        "-A KUBE-SEP-OLDOLDOLDOLDOLD1 -m tcp -p tcp -j DNAT --to-destination 10.244.9.9:80\n"
        "COMMIT\n"
    )
    kernel.restore(kube_proxy_rules)

    result = syncer_for(kernel).sync(BASE)

    assert result.plan.chains_deleted == 3
    assert owned(kernel.save()) == owned(render_ruleset(BASE, OPTIONS))


def run_cli(netns: Netns, *args: str) -> subprocess.CompletedProcess[str]:
    return netns.exec(
        sys.executable, "-m", "pykubeproxy", *args, check=False, timeout=120, cwd=REPO
    )


def kube_chains(netns: Netns) -> list[str]:
    found = []
    for backend in ("legacy", "nft"):
        for table in ("filter", "nat"):
            out = netns.exec(f"iptables-{backend}-save", "-t", table).stdout
            found += [f"{backend}/{line}" for line in out.splitlines() if "KUBE-" in line]
    return found


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_once_programs_the_examples_and_cleanup_removes_every_trace_twice_over(
    netns: Netns, backend: str
) -> None:
    synced = run_cli(netns, "--from-file", "examples/", "--once", "--iptables-backend", backend)
    assert synced.returncode == 0, synced.stderr
    assert any("KUBE-SVC-NPX46M4PTMTKRN6Y" in line for line in kube_chains(netns))

    for _ in range(2):
        cleaned = run_cli(netns, "--cleanup")
        assert cleaned.returncode == 0, cleaned.stderr
        assert kube_chains(netns) == []


def test_backend_detection_follows_the_backend_holding_kube_chains(netns: Netns) -> None:
    prefix = netns.prefix
    assert detect_backend(prefix).backend == "nft"  # nothing anywhere: today's default

    NamespacedIptables("legacy", netns).new_chain("nat", "KUBE-KUBELET-CANARY")

    choice = detect_backend(prefix)
    assert choice.backend == "legacy"
    assert "KUBE-" in choice.reason


def test_plan_against_an_empty_kernel_declares_every_chain() -> None:
    desired = render_ruleset(BASE, OPTIONS)
    plan = plan_restore(desired, Ruleset(()))

    declared = sum(1 for t in desired for c in t.chains if not c.builtin)
    assert plan.chains_written == declared
    assert plan.payload is not None


def test_a_chunked_write_ends_in_the_same_rules_and_each_chunk_is_self_consistent(
    kernel: TamperableIptables,
) -> None:
    desired = render_ruleset(BASE, OPTIONS)
    want = owned(desired)
    plan = plan_restore(desired, kernel.save(), chunk_rules=3)
    assert len(plan.payloads) > 4

    for payload in plan.payloads:
        kernel.restore(payload)
        # After every chunk, a chain already holding its final rules only jumps to chains that
        # hold theirs too: no packet is sent into a chain that is still empty.
        now = owned(kernel.save())
        complete = {key for key, rules in now.items() if want.get(key) == rules and rules}
        for table, name in complete:
            for rule in now[(table, name)]:
                target = rule.split(" -j ")[-1].split()[0] if " -j " in rule else ""
                if target.startswith("KUBE-") and (table, target) in want:
                    assert (table, target) in complete or not want[(table, target)], (name, rule)

    assert owned(kernel.save()) == want
    assert plan_restore(desired, kernel.save()).payloads == ()
