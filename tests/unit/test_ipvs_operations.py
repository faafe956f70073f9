"""IPVS operations print themselves in ipvsadm's restore syntax; a Transaction checks and prints."""

from __future__ import annotations

import ast

import pytest

from pykubeproxy.backends.ipvs.errors import IpvsPlanError
from pykubeproxy.backends.ipvs.ipvsadm import format_ipvs
from pykubeproxy.backends.ipvs.model import IpvsPlan, IpvsState, RealServer, VirtualServer
from pykubeproxy.backends.ipvs.operations import (
    AddAddress,
    AddRealServer,
    AddVirtualServer,
    DeleteAddress,
    DeleteRealServer,
    DeleteVirtualServer,
    DrainRealServer,
    EditRealServer,
    EditVirtualServer,
    Operation,
    Transaction,
)
from pykubeproxy.backends.ipvs.reconcile import plan_changes
from tests.support.paths import REPO

API = ("tcp", "10.96.0.1", 443)
DNS = ("udp", "10.96.0.10", 53)
V6 = ("tcp", "fd00::10", 80)


def test_each_operation_prints_one_ipvsadm_restore_line() -> None:
    pod = RealServer("10.244.1.5", 8443)
    assert [
        op.command()
        for op in (
            AddVirtualServer(VirtualServer(*API)),
            AddVirtualServer(VirtualServer(*DNS, scheduler="sh", persistence=10800)),
            EditVirtualServer(VirtualServer(*API, scheduler="wlc")),
            AddRealServer(API, pod),
            EditRealServer(API, RealServer("10.244.1.5", 8443, 3)),
            DrainRealServer(API, "10.244.1.5", 8443),
            DeleteRealServer(API, "10.244.1.5", 8443),
            DeleteVirtualServer(API),
            AddRealServer(("sctp", "10.96.0.12", 3868), RealServer("10.244.1.11", 3868)),
        )
    ] == [
        "-A -t 10.96.0.1:443 -s rr",
        "-A -u 10.96.0.10:53 -s sh -p 10800",
        "-E -t 10.96.0.1:443 -s wlc",
        "-a -t 10.96.0.1:443 -r 10.244.1.5:8443 -m -w 1",
        "-e -t 10.96.0.1:443 -r 10.244.1.5:8443 -m -w 3",
        "-e -t 10.96.0.1:443 -r 10.244.1.5:8443 -m -w 0",
        "-d -t 10.96.0.1:443 -r 10.244.1.5:8443",
        "-D -t 10.96.0.1:443",
        "-a --sctp-service 10.96.0.12:3868 -r 10.244.1.11:3868 -m -w 1",
    ]


def test_ipv6_operations_bracket_their_addresses_as_ipvsadm_does() -> None:
    assert AddRealServer(V6, RealServer("fd00:10::5", 8080)).command() == (
        "-a -t [fd00::10]:80 -r [fd00:10::5]:8080 -m -w 1"
    )
    assert DeleteRealServer(V6, "fd00:10::5", 8080).command() == (
        "-d -t [fd00::10]:80 -r [fd00:10::5]:8080"
    )


def test_address_operations_print_as_ip_address_commands_on_kube_ipvs0() -> None:
    assert AddAddress("10.96.0.1").command() == "ip address add 10.96.0.1/32 dev kube-ipvs0"
    assert DeleteAddress("fd00::10").command() == "ip address del fd00::10/128 dev kube-ipvs0"


def test_operations_keep_their_log_texts() -> None:
    assert str(DrainRealServer(API, "10.244.1.5", 8443)) == (
        "drain real server TCP 10.96.0.1:443 -> 10.244.1.5:8443"
    )
    assert str(DeleteVirtualServer(V6)) == "delete virtual server TCP [fd00::10]:80"


def test_a_transaction_prints_one_line_per_operation_in_order() -> None:
    plan = IpvsPlan(
        (VirtualServer(*API, real_servers=(RealServer("10.244.1.5", 8443),)),),
        ("10.96.0.1",),
        (),
    )
    transaction = plan_changes(plan, IpvsState())
    assert isinstance(transaction, Transaction)
    assert str(transaction) == (
        "ip address add 10.96.0.1/32 dev kube-ipvs0\n"
        "-A -t 10.96.0.1:443 -s rr\n"
        "-a -t 10.96.0.1:443 -r 10.244.1.5:8443 -m -w 1\n"
    )
    assert str(Transaction()) == ""


def test_a_first_sync_writes_the_virtual_servers_dry_run_shows() -> None:
    plan = IpvsPlan(
        (
            VirtualServer(*API, real_servers=(RealServer("10.244.1.5", 8443),), comment="api"),
            VirtualServer(*DNS, persistence=60, real_servers=(RealServer("10.244.1.6", 53),)),
        ),
        ("10.96.0.1", "10.96.0.10"),
        (),
    )
    written = [op.command() for op in plan_changes(plan, IpvsState())]
    shown = [line for line in format_ipvs(plan).splitlines() if not line.startswith("#")]
    assert [line for line in written if not line.startswith("ip ")] == shown


def test_a_transaction_compares_equal_to_a_list_of_the_same_operations() -> None:
    ops = [AddAddress("10.96.0.1"), DeleteVirtualServer(API)]
    assert Transaction(ops) == ops
    assert Transaction(ops) == tuple(ops)
    assert Transaction(ops) != ops[:1]
    assert Transaction(ops)[1] == DeleteVirtualServer(API)
    assert len(Transaction(ops)) == 2


@pytest.mark.parametrize(
    ("op", "why"),
    [
        (AddVirtualServer(VirtualServer("icmp", "10.96.0.1", 0)), "no protocol 'icmp'"),
        (DeleteVirtualServer(("tcp", "10.96.0.1", 70000)), "out of range"),
        (AddRealServer(API, RealServer("10.244.1.5", 80, -1)), "negative"),
        (DeleteRealServer(API, "", 80), "without an address"),
    ],
)
def test_a_transaction_refuses_an_operation_no_kernel_could_take(op: Operation, why: str) -> None:
    transaction = Transaction()
    with pytest.raises(IpvsPlanError, match=why):
        transaction.add(op)
    assert len(transaction) == 0


def test_schedulers_are_left_for_the_kernel_to_refuse() -> None:
    Transaction([AddVirtualServer(VirtualServer(*API, scheduler="bogus"))])


def test_netlink_is_the_only_module_that_imports_pyroute2() -> None:
    importers = set()
    for path in (REPO / "pykubeproxy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "pyroute2" for name in names):
                importers.add(path.relative_to(REPO).as_posix())
    assert importers == {"pykubeproxy/backends/ipvs/netlink.py"}
