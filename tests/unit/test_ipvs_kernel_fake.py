"""The IPVS kernel edge on a fake kernel: order, re-sync, drift, ownership, draining, ipsets."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import pytest

from pykubeproxy.backends.ipvs.apply import cleanup, destroy_stale_sets, read_state, sync_ipvs
from pykubeproxy.backends.ipvs.errors import IpvsSetupError, IpvsSyncError
from pykubeproxy.backends.ipvs.graceful import (
    ConnectionCounts,
    DrainState,
    GracefulTermination,
    RealServerRef,
    is_idle,
    plan_removals,
    start_draining,
    stop_draining,
)
from pykubeproxy.backends.ipvs.ipsets import (
    normalize_ipset_entry,
    parse_ipset_save,
    render_ipset_restore,
)
from pykubeproxy.backends.ipvs.kernel import PyrouteIpvs
from pykubeproxy.backends.ipvs.model import (
    IPSet,
    IpvsPlan,
    IpvsState,
    KernelRealServer,
    KernelVirtualServer,
    RealServer,
    VirtualServer,
)
from pykubeproxy.backends.ipvs.netlink import IPV6_NETMASK, _ipvs_command_message
from pykubeproxy.backends.ipvs.node import check_kernel_modules, ensure_ipvs_sysctls
from pykubeproxy.backends.ipvs.operations import (
    AddVirtualServer,
    DeleteAddress,
    DeleteRealServer,
    DeleteVirtualServer,
    DrainRealServer,
    EditRealServer,
    EditVirtualServer,
)
from pykubeproxy.backends.ipvs.procfs import parse_proc_ip_vs
from pykubeproxy.backends.ipvs.reconcile import plan_changes
from tests.support.fakes import FakeClock, FakeIpvs

NODE_IP = "192.0.2.10"
CLUSTER_IP = "10.96.0.10"
OTHER_IP = "10.96.0.20"
WEB = ("tcp", CLUSTER_IP, 80)
DNS = ("udp", OTHER_IP, 53)
NODE_PORT = ("tcp", NODE_IP, 30080)
PODS = (RealServer("10.244.1.11", 8080), RealServer("10.244.1.12", 8080))


def vs(key: tuple[str, str, int], *servers: RealServer, **kw: Any) -> VirtualServer:
    return VirtualServer(*key, real_servers=servers, **kw)


def make_plan(*servers: VirtualServer, ipsets: tuple[IPSet, ...] = ()) -> IpvsPlan:
    addresses = sorted({s.address for s in servers if s.address != NODE_IP})
    return IpvsPlan(tuple(servers), tuple(addresses), ipsets)


def full_plan() -> IpvsPlan:
    sets = (
        IPSet(
            "KUBE-CLUSTER-IP", "hash:ip,port", "", (f"{CLUSTER_IP},tcp:80", f"{OTHER_IP},udp:53")
        ),
        IPSet("KUBE-NODE-PORT-TCP", "bitmap:port", "", ("30080",)),
    )
    return make_plan(
        vs(WEB, *PODS),
        vs(DNS, RealServer("10.244.1.13", 53), persistence=10800),
        vs(NODE_PORT, *PODS),
        ipsets=sets,
    )


def synced(plan: IpvsPlan | None = None) -> tuple[FakeIpvs, GracefulTermination, FakeClock]:
    fake, clock = FakeIpvs(), FakeClock(1000.0)
    graceful = GracefulTermination(clock=clock)
    sync_ipvs(fake, plan or full_plan(), graceful=graceful, node_addresses=[NODE_IP])
    return fake, graceful, clock


def resync(
    fake: FakeIpvs, graceful: GracefulTermination, plan: IpvsPlan | None = None
) -> list[str]:
    result = sync_ipvs(fake, plan or full_plan(), graceful=graceful, node_addresses=[NODE_IP])
    return [str(op) for op in result.operations]


# --- order ---------------------------------------------------------------------------------------


def test_first_sync_creates_address_then_virtual_server_then_its_real_servers() -> None:
    ops = plan_changes(full_plan(), IpvsState(), node_addresses=[NODE_IP])
    assert [str(op) for op in ops] == [
        f"add address {CLUSTER_IP}",
        f"add address {OTHER_IP}",
        f"add virtual server TCP {CLUSTER_IP}:80 scheduler rr persistence None",
        f"add real server TCP {CLUSTER_IP}:80 -> 10.244.1.11:8080 weight 1",
        f"add real server TCP {CLUSTER_IP}:80 -> 10.244.1.12:8080 weight 1",
        f"add virtual server UDP {OTHER_IP}:53 scheduler rr persistence 10800",
        f"add real server UDP {OTHER_IP}:53 -> 10.244.1.13:53 weight 1",
        f"add virtual server TCP {NODE_IP}:30080 scheduler rr persistence None",
        f"add real server TCP {NODE_IP}:30080 -> 10.244.1.11:8080 weight 1",
        f"add real server TCP {NODE_IP}:30080 -> 10.244.1.12:8080 weight 1",
    ]
    assert all(
        op.virtual_server.real_servers == () for op in ops if isinstance(op, AddVirtualServer)
    )


def test_removed_service_deletes_real_servers_then_virtual_server_then_address() -> None:
    fake, graceful, _ = synced()
    fake.calls.clear()
    plan = make_plan(vs(DNS, RealServer("10.244.1.13", 53), persistence=10800))
    ops = plan_changes(plan, read_state(fake), node_addresses=[NODE_IP])
    assert ops == [
        DeleteRealServer(WEB, "10.244.1.11", 8080),
        DeleteRealServer(WEB, "10.244.1.12", 8080),
        DeleteVirtualServer(WEB),
        DeleteRealServer(NODE_PORT, "10.244.1.11", 8080),
        DeleteRealServer(NODE_PORT, "10.244.1.12", 8080),
        DeleteVirtualServer(NODE_PORT),
        DeleteAddress(CLUSTER_IP),
    ]
    resync(fake, graceful, plan)
    assert set(fake.services) == {DNS}
    assert fake.addresses == {OTHER_IP}


def test_first_sync_programs_the_fake_kernel_like_the_plan() -> None:
    fake, _, _ = synced()
    state = read_state(fake)
    got = sorted(s.as_planned() for s in state.virtual_servers)
    want = sorted(full_plan().virtual_servers)
    assert got == want
    assert state.addresses == (CLUSTER_IP, OTHER_IP)
    assert {s.name: s.entries for s in state.ipsets} == {
        "KUBE-CLUSTER-IP": (f"{CLUSTER_IP},tcp:80", f"{OTHER_IP},udp:53"),
        "KUBE-NODE-PORT-TCP": ("30080",),
    }
    assert all(rs.forwarding == "masq" for s in state.virtual_servers for rs in s.real_servers)


def test_resync_with_nothing_changed_plans_no_operations() -> None:
    fake, graceful, _ = synced()
    fake.calls.clear()
    result = sync_ipvs(fake, full_plan(), graceful=graceful, node_addresses=[NODE_IP])
    assert result.operations == ()
    assert result.ipset_lines == 0
    assert not result.changed
    assert fake.calls == []


# --- drift ---------------------------------------------------------------------------------------


def test_deleted_real_server_is_added_back() -> None:
    fake, graceful, _ = synced()
    fake.delete_real_server(WEB, "10.244.1.12", 8080)
    assert resync(fake, graceful) == [
        f"add real server TCP {CLUSTER_IP}:80 -> 10.244.1.12:8080 weight 1"
    ]
    assert fake.real_server(WEB, "10.244.1.12", 8080) is not None


def test_extra_virtual_server_on_our_address_is_deleted() -> None:
    fake, graceful, _ = synced()
    fake.put_virtual_server(
        KernelVirtualServer(
            "tcp", CLUSTER_IP, 8443, "rr", None, (KernelRealServer("10.1.1.1", 1, 1),)
        )
    )
    ops = plan_changes(full_plan(), read_state(fake), node_addresses=[NODE_IP])
    assert ops == [
        DeleteRealServer(("tcp", CLUSTER_IP, 8443), "10.1.1.1", 1),
        DeleteVirtualServer(("tcp", CLUSTER_IP, 8443)),
    ]
    resync(fake, graceful)
    assert ("tcp", CLUSTER_IP, 8443) not in fake.services


def test_wrong_scheduler_is_edited_back() -> None:
    fake, graceful, _ = synced()
    fake.services[WEB] = KernelVirtualServer(*WEB, scheduler="wlc")
    ops = plan_changes(full_plan(), read_state(fake), node_addresses=[NODE_IP])
    assert ops == [EditVirtualServer(vs(WEB))]
    resync(fake, graceful)
    assert fake.services[WEB].scheduler == "rr"


def test_lost_persistence_is_edited_back() -> None:
    fake, graceful, _ = synced()
    fake.services[DNS] = KernelVirtualServer(*DNS, scheduler="rr", persistence=None)
    resync(fake, graceful)
    assert fake.services[DNS].persistence == 10800


def test_direct_routing_real_server_is_switched_to_masquerade() -> None:
    fake, graceful, _ = synced()
    rs = fake.dests[WEB][("10.244.1.11", 8080)]
    fake.dests[WEB][("10.244.1.11", 8080)] = KernelRealServer(rs.address, rs.port, 1, "route")
    ops = plan_changes(full_plan(), read_state(fake), node_addresses=[NODE_IP])
    assert ops == [EditRealServer(WEB, PODS[0])]
    resync(fake, graceful)
    assert fake.dests[WEB][("10.244.1.11", 8080)].forwarding == "masq"


def test_removed_address_is_added_back_and_stray_address_removed() -> None:
    fake, graceful, _ = synced()
    fake.addresses.discard(OTHER_IP)
    fake.addresses.add("10.96.99.99")
    assert resync(fake, graceful) == [f"add address {OTHER_IP}", "delete address 10.96.99.99"]


def test_changed_weight_is_edited() -> None:
    fake, graceful, _ = synced()
    heavy = make_plan(
        vs(WEB, RealServer("10.244.1.11", 8080, 5), PODS[1]),
        *full_plan().virtual_servers[1:],
        ipsets=full_plan().ipsets,
    )
    assert resync(fake, graceful, heavy) == [
        f"edit real server TCP {CLUSTER_IP}:80 -> 10.244.1.11:8080 weight 5"
    ]


# --- ownership -----------------------------------------------------------------------------------


def test_foreign_virtual_servers_are_never_touched() -> None:
    fake, graceful, _ = synced()
    foreign = [
        KernelVirtualServer(
            "tcp", "172.16.0.5", 80, "wlc", None, (KernelRealServer("172.16.0.6", 80, 1, "route"),)
        ),
        # On the node IP, but not a port we plan or ever recorded as a NodePort.
        KernelVirtualServer(
            "tcp", NODE_IP, 443, "wlc", None, (KernelRealServer("172.16.0.7", 443, 1),)
        ),
    ]
    for server in foreign:
        fake.put_virtual_server(server)
    assert resync(fake, graceful) == []
    assert resync(fake, graceful, make_plan()) != []
    state = {s.key: s for s in read_state(fake).virtual_servers}
    assert state == {s.key: s for s in foreign}


def test_stale_node_port_recorded_in_our_ipset_is_deleted() -> None:
    fake, _, _ = synced()
    # kube-proxy (or our previous run) left NodePort 30999 behind and recorded it.
    fake.put_virtual_server(KernelVirtualServer("tcp", NODE_IP, 30999, "rr"))
    fake.sets["KUBE-NODE-PORT-TCP"].entries.add("30999")
    ops = plan_changes(full_plan(), read_state(fake), node_addresses=[NODE_IP])
    assert ops == [DeleteVirtualServer(("tcp", NODE_IP, 30999))]


def test_node_port_no_longer_planned_is_deleted_with_node_addresses_given() -> None:
    fake, graceful, _ = synced()
    plan = make_plan(*full_plan().virtual_servers[:2])  # no NodePort, empty ipsets
    resync(fake, graceful, plan)
    assert NODE_PORT not in fake.services


def test_excluded_cidrs_are_never_touched() -> None:
    fake, _, _ = synced()
    fake.put_virtual_server(KernelVirtualServer("tcp", CLUSTER_IP, 9999, "rr"))
    ops = plan_changes(
        full_plan(), read_state(fake), node_addresses=[NODE_IP], exclude_cidrs=["10.96.0.0/28"]
    )
    assert ops == []


# --- graceful termination through the sync -------------------------------------------------------


def without_pod_b() -> IpvsPlan:
    base = full_plan()
    return make_plan(vs(WEB, PODS[0]), *base.virtual_servers[1:], ipsets=base.ipsets)


def test_real_server_leaving_is_drained_not_deleted_while_connected() -> None:
    fake, graceful, _ = synced()
    fake.set_connections(WEB, "10.244.1.12", 8080, active=1)
    ops = resync(fake, graceful, without_pod_b())
    assert ops == [f"drain real server TCP {CLUSTER_IP}:80 -> 10.244.1.12:8080"]
    rs = fake.real_server(WEB, "10.244.1.12", 8080)
    assert rs is not None and rs.weight == 0
    assert RealServerRef(WEB, "10.244.1.12", 8080) in graceful.draining
    # A re-sync neither drains it again nor deletes it while the connection is open.
    assert resync(fake, graceful, without_pod_b()) == []
    assert fake.real_server(WEB, "10.244.1.12", 8080) is not None


def test_drained_real_server_is_deleted_once_its_connections_close() -> None:
    fake, graceful, _ = synced()
    fake.set_connections(WEB, "10.244.1.12", 8080, active=1)
    resync(fake, graceful, without_pod_b())
    fake.set_connections(WEB, "10.244.1.12", 8080, active=0, inactive=3)  # TIME_WAIT ones
    result = sync_ipvs(fake, without_pod_b(), graceful=graceful, node_addresses=[NODE_IP])
    assert [r.reason for r in result.removals] == ["idle"]
    assert fake.real_server(WEB, "10.244.1.12", 8080) is None
    assert graceful.draining == frozenset()


def test_idle_real_server_leaving_is_deleted_in_the_same_sync_after_weight_zero() -> None:
    fake, graceful, _ = synced()
    fake.calls.clear()
    resync(fake, graceful, without_pod_b())
    assert fake.calls == [
        f"edit-rs {WEB} 10.244.1.12:8080 w0",
        f"del-rs {WEB} 10.244.1.12:8080",
    ]


def test_drained_real_server_coming_back_gets_its_weight_back() -> None:
    fake, graceful, _ = synced()
    fake.set_connections(WEB, "10.244.1.12", 8080, active=2)
    resync(fake, graceful, without_pod_b())
    ops = resync(fake, graceful)
    assert ops == [f"edit real server TCP {CLUSTER_IP}:80 -> 10.244.1.12:8080 weight 1"]
    assert fake.real_server(WEB, "10.244.1.12", 8080) == KernelRealServer(
        "10.244.1.12", 8080, 1, "masq", 2, 0
    )
    assert graceful.draining == frozenset()


def test_busy_real_server_is_deleted_when_the_grace_period_is_over() -> None:
    fake, clock = FakeIpvs(), FakeClock(1000.0)
    graceful = GracefulTermination(grace_period=60, clock=clock)
    sync_ipvs(fake, full_plan(), graceful=graceful, node_addresses=[NODE_IP])
    fake.set_connections(WEB, "10.244.1.12", 8080, active=7)
    resync(fake, graceful, without_pod_b())
    clock.now += 59
    resync(fake, graceful, without_pod_b())
    assert fake.real_server(WEB, "10.244.1.12", 8080) is not None
    clock.now += 1
    result = sync_ipvs(fake, without_pod_b(), graceful=graceful, node_addresses=[NODE_IP])
    assert [(r.reason, r.draining_for) for r in result.removals] == [("grace period over", 60)]
    assert fake.real_server(WEB, "10.244.1.12", 8080) is None


def test_udp_real_server_waits_for_inactive_connections_too() -> None:
    plan = make_plan(vs(DNS, RealServer("10.244.1.13", 53), RealServer("10.244.1.14", 53)))
    fake, graceful, _ = synced(plan)
    fake.set_connections(DNS, "10.244.1.14", 53, active=0, inactive=1)
    resync(fake, graceful, make_plan(vs(DNS, RealServer("10.244.1.13", 53))))
    assert fake.real_server(DNS, "10.244.1.14", 53) is not None
    fake.set_connections(DNS, "10.244.1.14", 53, active=0, inactive=0)
    resync(fake, graceful, make_plan(vs(DNS, RealServer("10.244.1.13", 53))))
    assert fake.real_server(DNS, "10.244.1.14", 53) is None


def test_draining_real_server_deleted_by_someone_else_is_forgotten() -> None:
    fake, graceful, _ = synced()
    fake.set_connections(WEB, "10.244.1.12", 8080, active=1)
    resync(fake, graceful, without_pod_b())
    fake.delete_real_server(WEB, "10.244.1.12", 8080)
    assert resync(fake, graceful, without_pod_b()) == []
    assert graceful.draining == frozenset()


def test_draining_real_server_set_back_to_a_weight_by_hand_is_drained_again() -> None:
    fake, graceful, _ = synced()
    fake.set_connections(WEB, "10.244.1.12", 8080, active=1)
    resync(fake, graceful, without_pod_b())
    fake.edit_real_server(WEB, RealServer("10.244.1.12", 8080, 1))
    assert resync(fake, graceful, without_pod_b()) == [
        f"drain real server TCP {CLUSTER_IP}:80 -> 10.244.1.12:8080"
    ]
    assert DrainRealServer(WEB, "10.244.1.12", 8080).ref in graceful.draining


# --- graceful termination, the pure state machine -------------------------------------------------

REF_TCP = RealServerRef(WEB, "10.244.1.12", 8080)
REF_UDP = RealServerRef(DNS, "10.244.1.13", 53)


def test_draining_again_keeps_the_first_start_time() -> None:
    state = start_draining(DrainState(), [REF_TCP], now=10)
    state = start_draining(state, [REF_TCP, REF_UDP], now=50)
    assert dict(state.since) == {REF_TCP: 10, REF_UDP: 50}


def test_idle_means_no_active_connection_for_tcp_and_none_at_all_for_udp() -> None:
    assert is_idle("tcp", ConnectionCounts(0, 5))
    assert not is_idle("tcp", ConnectionCounts(1, 0))
    assert is_idle("sctp", ConnectionCounts(0, 2))
    assert not is_idle("udp", ConnectionCounts(0, 1))
    assert is_idle("udp", ConnectionCounts(0, 0))


def test_removals_wait_for_connections_or_the_grace_period() -> None:
    state = start_draining(DrainState(), [REF_TCP, REF_UDP], now=0)
    busy = {REF_TCP: ConnectionCounts(1, 0), REF_UDP: ConnectionCounts(0, 1)}
    state, due = plan_removals(state, busy, now=899, grace_period=900)
    assert due == ()
    state, due = plan_removals(state, busy, now=900, grace_period=900)
    assert [(r.ref, r.reason) for r in due] == [
        (REF_TCP, "grace period over"),
        (REF_UDP, "grace period over"),
    ]
    # Removals stay tracked until confirmed.
    assert state.draining == {REF_TCP, REF_UDP}
    assert stop_draining(state, [REF_TCP]).draining == {REF_UDP}


def test_removals_drop_real_servers_the_kernel_no_longer_has() -> None:
    state = start_draining(DrainState(), [REF_TCP, REF_UDP], now=0)
    state, due = plan_removals(state, {REF_UDP: ConnectionCounts(0, 0)}, now=1)
    assert [r.ref for r in due] == [REF_UDP]
    assert state.draining == {REF_UDP}


def test_driver_reads_its_clock_and_rejects_a_negative_grace_period() -> None:
    clock = FakeClock(1000.0)
    graceful = GracefulTermination(grace_period=5, clock=clock)
    graceful.drain([REF_TCP])
    assert graceful.draining_since(REF_TCP) == 1000.0
    clock.now += 5
    assert [r.reason for r in graceful.removals({REF_TCP: ConnectionCounts(3, 0)})] == [
        "grace period over"
    ]
    with pytest.raises(ValueError, match="negative"):
        GracefulTermination(grace_period=-1)


# --- ipsets --------------------------------------------------------------------------------------

# `ipset save` from the Debian 6.1 guest kernel with ipset 7.17.
IPSET_SAVE = """\
create KUBE-A hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x82e243a4
add KUBE-A 10.96.0.2,tcp:80
add KUBE-A 10.96.0.1,tcp:443
create KUBE-B bitmap:port range 0-65535
add KUBE-B 30080
create OTHER-SET hash:ip family inet hashsize 1024 maxelem 65536
add OTHER-SET 1.2.3.4
create KUBE-C hash:ip,port,net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1
add KUBE-C 10.1.1.1,tcp:53,10.0.0.5
add KUBE-C 10.1.1.1,udp:53,10.0.0.0/8
"""


def test_ipset_save_is_parsed_into_kube_sets_only() -> None:
    sets = parse_ipset_save(IPSET_SAVE)
    assert sets == [
        IPSet("KUBE-A", "hash:ip,port", "", ("10.96.0.1,tcp:443", "10.96.0.2,tcp:80")),
        IPSet("KUBE-B", "bitmap:port", "", ("30080",)),
        IPSet(
            "KUBE-C",
            "hash:ip,port,net",
            "",
            ("10.1.1.1,tcp:53,10.0.0.5", "10.1.1.1,udp:53,10.0.0.0/8"),
        ),
    ]


@pytest.mark.parametrize(
    ("written", "saved"),
    [
        ("10.96.0.2,80", "10.96.0.2,tcp:80"),
        ("10.1.1.1,TCP:53,10.0.0.5/32", "10.1.1.1,tcp:53,10.0.0.5"),
        ("10.1.1.1,udp:53,10.0.0.7/8", "10.1.1.1,udp:53,10.0.0.0/8"),
        ("fd00:0::1,tcp:80", "fd00::1,tcp:80"),
        ("030080", "30080"),
    ],
)
def test_entries_compare_in_ipset_saves_spelling(written: str, saved: str) -> None:
    assert normalize_ipset_entry(written) == saved


def test_ipset_restore_creates_adds_and_deletes_in_one_payload() -> None:
    actual = parse_ipset_save(IPSET_SAVE)
    desired = [
        IPSet("KUBE-A", "hash:ip,port", "", ("10.96.0.1,tcp:443", "10.96.0.3,tcp:80")),
        IPSet("KUBE-B", "bitmap:port", "", ("30080",)),
        IPSet("KUBE-C", "hash:ip,port,net", "", ("10.1.1.1,TCP:53,10.0.0.5/32",)),
        IPSet("KUBE-D", "hash:ip", "", ("10.96.0.1",)),
    ]
    assert render_ipset_restore(desired, actual).splitlines() == [
        "add KUBE-A 10.96.0.3,tcp:80",
        "del KUBE-A 10.96.0.2,tcp:80",
        "del KUBE-C 10.1.1.1,udp:53,10.0.0.0/8",
        "create KUBE-D hash:ip family inet hashsize 1024 maxelem 65536",
        "add KUBE-D 10.96.0.1",
    ]
    assert render_ipset_restore(actual, actual) == ""


def test_ipset_whose_type_changed_is_recreated_at_the_end() -> None:
    actual = [IPSet("KUBE-A", "hash:ip", "", ()), IPSet("KUBE-B", "hash:ip", "", ())]
    desired = [
        IPSet("KUBE-A", "bitmap:port", "", ("80",)),
        IPSet("KUBE-B", "hash:ip", "", ("1.1.1.1",)),
    ]
    assert render_ipset_restore(desired, actual).splitlines() == [
        "add KUBE-B 1.1.1.1",
        "destroy KUBE-A",
        "create KUBE-A bitmap:port range 0-65535",
        "add KUBE-A 80",
    ]


def test_stale_kube_sets_are_destroyed_only_on_request_and_others_kept() -> None:
    fake, graceful, _ = synced()
    fake.put_set("KUBE-OLD", "hash:ip", "1.1.1.1")
    fake.put_set("OTHER-SET", "hash:ip")
    resync(fake, graceful)
    assert "KUBE-OLD" in fake.sets  # the sync leaves it: iptables may still use it
    assert destroy_stale_sets(fake, full_plan().ipsets) == ("KUBE-OLD",)
    assert set(fake.sets) == {"KUBE-CLUSTER-IP", "KUBE-NODE-PORT-TCP", "OTHER-SET"}
    assert destroy_stale_sets(fake, full_plan().ipsets) == ()


# --- failures, cleanup, setup --------------------------------------------------------------------


def test_failed_virtual_server_does_not_block_the_others_and_is_reported() -> None:
    fake, clock = FakeIpvs(), FakeClock(1000.0)
    plan = make_plan(vs(WEB, *PODS, scheduler="bogus"), vs(DNS, RealServer("10.244.1.13", 53)))
    with pytest.raises(IpvsSyncError) as caught:
        sync_ipvs(fake, plan, graceful=GracefulTermination(clock=clock))
    assert len(caught.value.failures) == 1
    assert "bogus" in str(caught.value)
    assert set(fake.services) == {DNS}


def test_cleanup_flushes_all_ipvs_removes_dummy_and_kube_sets_and_can_run_twice() -> None:
    fake, _, _ = synced()
    fake.put_virtual_server(KernelVirtualServer("tcp", "172.16.0.5", 80, "wlc"))
    fake.put_set("OTHER-SET", "hash:ip")
    result = cleanup(fake)
    assert result.virtual_servers == 4  # kube-proxy's cleanup flushes every IPVS service too
    assert result.dummy_deleted
    assert set(result.ipsets) == {"KUBE-CLUSTER-IP", "KUBE-NODE-PORT-TCP"}
    assert (fake.services, fake.dummy, set(fake.sets)) == ({}, False, {"OTHER-SET"})
    again = cleanup(fake)
    assert (again.virtual_servers, again.dummy_deleted, again.ipsets) == (0, False, ())


def test_ipset_still_referenced_by_iptables_fails_cleanup_with_the_reason() -> None:
    fake, _, _ = synced()
    fake.referenced_sets.add("KUBE-CLUSTER-IP")
    with pytest.raises(Exception, match="in use"):
        cleanup(fake)


def test_missing_dummy_device_type_stops_the_sync_with_a_clear_error() -> None:
    with pytest.raises(IpvsSetupError, match="dummy"):
        sync_ipvs(FakeIpvs(dummy_supported=False), full_plan(), graceful=GracefulTermination())


def write_modules(tmp_path: Path, loaded: str, builtin: str) -> tuple[Path, Path]:
    (tmp_path / "modules").write_text(loaded)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "modules.builtin").write_text(builtin)
    return tmp_path / "modules", tmp_path / "lib"


def test_required_modules_count_when_loaded_or_built_in(tmp_path: Path) -> None:
    proc, lib = write_modules(
        tmp_path,
        "ip_vs_rr 12288 1 - Live 0x0\nip_vs 196608 3 ip_vs_rr, Live 0x0\n",
        "kernel/net/netfilter/nf_conntrack.ko\n",
    )
    assert check_kernel_modules("rr", proc_modules=proc, modules_dir=lib, modprobe=None) == ()


def test_missing_modules_are_named_in_the_error(tmp_path: Path) -> None:
    proc, lib = write_modules(tmp_path, "ip_vs 196608 0 - Live 0x0\n", "")
    with pytest.raises(IpvsSetupError, match="ip_vs_wlc, nf_conntrack"):
        check_kernel_modules("wlc", proc_modules=proc, modules_dir=lib, modprobe=None)


def test_failing_modprobe_is_quoted_in_the_error(tmp_path: Path) -> None:
    proc, lib = write_modules(tmp_path, "ip_vs 1 0 - Live 0x0\nnf_conntrack 1 0 - Live 0x0\n", "")
    with pytest.raises(IpvsSetupError, match="ip_vs_sh"):
        check_kernel_modules("sh", proc_modules=proc, modules_dir=lib, modprobe="false")


def make_sysctls(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("0\n")


def test_ipvs_sysctls_are_set_and_read_back(tmp_path: Path) -> None:
    names = [
        "net/ipv4/vs/conntrack",
        "net/ipv4/vs/expire_nodest_conn",
        "net/ipv4/vs/expire_quiescent_template",
        "net/ipv4/ip_forward",
        "net/ipv4/conf/all/arp_ignore",
        "net/ipv4/conf/all/arp_announce",
    ]
    make_sysctls(tmp_path, names)
    assert ensure_ipvs_sysctls(strict_arp=False, root=tmp_path) == tuple(names[:4])
    assert ensure_ipvs_sysctls(strict_arp=True, root=tmp_path) == tuple(names[4:])
    assert (tmp_path / "net/ipv4/conf/all/arp_announce").read_text().strip() == "2"
    assert ensure_ipvs_sysctls(strict_arp=True, root=tmp_path) == ()


def test_missing_ipvs_sysctl_is_an_error_naming_it(tmp_path: Path) -> None:
    make_sysctls(tmp_path, ["net/ipv4/ip_forward"])
    with pytest.raises(IpvsSetupError, match="net/ipv4/vs/conntrack=missing"):
        ensure_ipvs_sysctls(strict_arp=False, root=tmp_path)


# --- the pyroute2 handle against recorded netlink answers -----------------------------------------


class Attrs(dict[str, Any]):
    """Stands in for a pyroute2 nla: `.get(name)` on the raw attributes."""


class Message:
    def __init__(self, name: str, attrs: dict[str, Any]) -> None:
        self.name, self.attrs = name, Attrs(attrs)

    def get(self, name: str) -> Attrs | None:
        return self.attrs if name == self.name else None


class StubIpvsSocket:
    """Answers dumps with raw attributes as the guest kernel sent them; records requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def service(self, command: str, service: Any = None) -> list[Message]:
        self.requests.append(("service", command, service))
        if command == "get":
            return self._services()[:1]
        return self._services() if command == "dump" else []

    def _services(self) -> list[Message]:
        return [
            Message(
                "IPVS_CMD_ATTR_SERVICE",
                {
                    "IPVS_SVC_ATTR_AF": 2,
                    "IPVS_SVC_ATTR_PROTOCOL": 17,
                    "IPVS_SVC_ATTR_ADDR": "10.96.0.2",
                    "IPVS_SVC_ATTR_PORT": 53,
                    "IPVS_SVC_ATTR_SCHED_NAME": "sh",
                    "IPVS_SVC_ATTR_FLAGS": {"flags": 3, "mask": 0xFFFFFFFF},
                    "IPVS_SVC_ATTR_TIMEOUT": 10800,
                },
            ),
            Message(
                "IPVS_CMD_ATTR_SERVICE",
                {"IPVS_SVC_ATTR_AF": 2, "IPVS_SVC_ATTR_FWMARK": 7, "IPVS_SVC_ATTR_PROTOCOL": 0},
            ),
        ]

    def dest(self, command: str, service: Any, dest: Any = None) -> list[Message]:
        self.requests.append(("dest", command, dest))
        if command != "dump":
            return []
        return [
            Message(
                "IPVS_CMD_ATTR_DEST",
                {
                    "IPVS_DEST_ATTR_ADDR": "10.244.1.6",
                    "IPVS_DEST_ATTR_PORT": 53,
                    "IPVS_DEST_ATTR_FWD_METHOD": 3,
                    "IPVS_DEST_ATTR_WEIGHT": 1,
                    "IPVS_DEST_ATTR_ACTIVE_CONNS": 2,
                    "IPVS_DEST_ATTR_INACT_CONNS": 5,
                },
            )
        ]


def stub_handle() -> tuple[PyrouteIpvs, StubIpvsSocket]:
    handle = PyrouteIpvs()
    stub = StubIpvsSocket()
    handle._ipvs_socket = stub
    return handle, stub


def test_dump_reads_forwarding_and_persistence_from_the_raw_attributes() -> None:
    handle, _ = stub_handle()
    assert handle.list_virtual_servers_netlink() == [
        KernelVirtualServer(
            "udp",
            "10.96.0.2",
            53,
            "sh",
            10800,
            (KernelRealServer("10.244.1.6", 53, 1, "route", 2, 5),),
        )
    ]


def test_real_servers_are_written_with_masquerade_and_edits_use_set() -> None:
    handle, stub = stub_handle()
    handle.add_real_server(WEB, RealServer("10.244.1.11", 8080, 3))
    handle.edit_real_server(WEB, RealServer("10.244.1.11", 8080, 0))
    handle.edit_virtual_server(vs(WEB, persistence=60))
    (_, add, dest), (_, edit, dest2), (_, edit_vs, service) = stub.requests
    assert (add, edit, edit_vs) == ("add", "set", "set")
    assert dest["fwd_method"] == 0 and dest["weight"] == 3
    assert dest2["fwd_method"] == 0 and dest2["weight"] == 0
    assert service["timeout"] == 60 and service["flags"]["flags"] & 1


def test_ipv6_services_carry_a_netmask_the_kernel_accepts() -> None:
    handle, stub = stub_handle()
    handle.delete_virtual_server(("tcp", "fd00::10", 80))
    ((_, command, service),) = stub.requests
    assert command == "del"
    assert service["netmask"] == IPV6_NETMASK  # 128.0.0.0 on little-endian hosts


class StubIpRoute:
    def link_lookup(self, ifname: str) -> list[int]:
        return []

    def link(self, command: str, **kw: Any) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")


def test_kernel_without_dummy_type_gives_a_clear_setup_error() -> None:
    handle = PyrouteIpvs()
    handle._iproute_socket = StubIpRoute()
    with pytest.raises(IpvsSetupError, match="no 'dummy' network device type"):
        handle.ensure_dummy_interface()


# /proc/net/ip_vs of the Debian 6.1 guest (HZ=250) after tests/vm's first sync.
PROC_IP_VS = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  AC100005:0050 wlc
  -> AC100006:0050      Route   1      0          0
TCP  0A60000A:0050 rr
  -> 0AF4010D:1F90      Masq    2      3          1
  -> 0AF4010C:1F90      Masq    1      0          0
TCP  [fd00:0000:0000:0000:0000:0000:0000:0010]:0050 rr
  -> [fd00:0010:0000:0000:0000:0000:0000:0005]:1F90      Masq    1      0          0
UDP  0A60000B:0035 sh  persistent 2700000 FFFFFFFF
  -> 0AF4010D:0035      Masq    1      0          0
SCTP  0A60000C:0F1C rr
  -> 0AF4010B:0F1C      Masq    1      0          0
FWM  00000005 rr
  -> 0AF4010B:0000      Masq    1      0          0
"""


def test_proc_ip_vs_table_is_read_like_the_netlink_dump() -> None:
    masq = "masq"
    assert parse_proc_ip_vs(PROC_IP_VS) == [
        KernelVirtualServer(
            "tcp", "172.16.0.5", 80, "wlc", None, (KernelRealServer("172.16.0.6", 80, 1, "route"),)
        ),
        KernelVirtualServer(
            "tcp",
            "10.96.0.10",
            80,
            "rr",
            None,
            (
                KernelRealServer("10.244.1.12", 8080, 1, masq),
                KernelRealServer("10.244.1.13", 8080, 2, masq, 3, 1),
            ),
        ),
        KernelVirtualServer(
            "tcp", "fd00::10", 80, "rr", None, (KernelRealServer("fd00:10::5", 8080, 1, masq),)
        ),
        KernelVirtualServer(
            "udp", "10.96.0.11", 53, "sh", 2700000, (KernelRealServer("10.244.1.13", 53, 1, masq),)
        ),
        KernelVirtualServer(
            "sctp",
            "10.96.0.12",
            3868,
            "rr",
            None,
            (KernelRealServer("10.244.1.11", 3868, 1, masq),),
        ),
    ]


def test_persistence_in_jiffies_is_converted_with_hz_asked_once_over_netlink(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle, stub = stub_handle()
    # The stub's netlink answer for 10.96.0.2:53 says 10800 s; /proc says 2700000 jiffies.
    table = PROC_IP_VS.replace("0A60000B:0035", "0A600002:0035")
    monkeypatch.setattr(handle, "_read_proc_ip_vs", lambda: table)
    for _ in range(2):
        listed = {vs.key: vs.persistence for vs in handle.list_virtual_servers()}
        assert listed[("udp", "10.96.0.2", 53)] == 10800
    assert [command for _, command, _ in stub.requests] == ["get"]


def test_timeouts_are_encoded_as_u32_even_after_pyroute2_compiled_its_own_ipvs_message() -> None:
    from pyroute2.netlink.generic import ipvs

    ipvs.ipvsmsg()  # a dump compiles pyroute2's table (timeouts typed hex) first
    msg = _ipvs_command_message()
    msg["cmd"], msg["version"] = 12, 1
    msg["attrs"] = [("IPVS_CMD_ATTR_TIMEOUT_TCP", 901)]
    msg.encode()
    assert bytes(msg.data).endswith((901).to_bytes(4, sys.byteorder))
