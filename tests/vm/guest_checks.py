"""Every real-kernel check of IPVS mode, run in ONE qemu guest boot; a JSON report on stdout.

Run by tests/vm/test_ipvs_in_guest.py through run-in-kernel.sh as

    <venv>/bin/python tests/vm/guest_checks.py

inside the throw-away guest (root, stock Debian kernel, no network device but lo). Everything is
built in network namespaces made here. Checks run in order and share state (apply, then re-sync,
then drift, ...); each records "ok" or its error, so one failure does not hide the others. The
report is one JSON object on stdout: {"checks": {name: "ok" | error}, "seconds": {...}, ...};
logs go to stderr. No pytest in here: Python is ~15x slower in the guest.

Importing this module runs nothing (the host test reads `CHECK_NAMES` from it).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # the guest runs the file; make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    # Bytecode of what this imports (pyroute2: ~6 s to compile in the guest) lands in the guest's
    # throw-away overlay, where the pykubeproxy processes the daemon checks start find it.
    sys.dont_write_bytecode = False

K_NS = "pkp-k"  # kernel checks: apply, dump, drift, cleanup
NODE_NS, CLIENT_NS = "pkp-node", "pkp-client"
PODS = {"pod-a": "10.244.1.11", "pod-b": "10.244.1.12", "pod-c": "10.244.1.13"}
NODE_IP, CLIENT_IP, BRIDGE_IP = "192.0.2.10", "192.0.2.100", "10.244.1.1"
CLUSTER_IP, DNS_IP, SCTP_IP, IPV6_IP = "10.96.0.10", "10.96.0.11", "10.96.0.12", "fd00::10"
NODE_PORT = 30080
ECHO_PORT = 8080
CMD_TIMEOUT = 60.0
CONNECT_TIMEOUT = 5.0
CLONE_NEWNET = 0x40000000

CHECKS: list[tuple[str, Callable[[Ctx], None]]] = []


def check(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    CHECKS.append((fn.__name__, fn))
    return fn


def log(*parts: object) -> None:
    print("guest:", *parts, file=sys.stderr, flush=True)


def run(*argv: str, ns: str | None = None, check_rc: bool = True, stdin: str | None = None) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    result = subprocess.run(
        full, input=stdin, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False
    )
    if check_rc and result.returncode != 0:
        raise AssertionError(f"{' '.join(full)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def ip_batch(lines: list[str]) -> None:
    run("ip", "-batch", "-", stdin="\n".join(lines) + "\n")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def expect_equal(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}:\n  got:  {got!r}\n  want: {want!r}")


# --- network namespaces without subprocesses (for sockets) ---------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block (this thread) in netns `name`; sockets made here stay in it."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(f"/run/netns/{name}")
        yield
    finally:
        try:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home failed")
        finally:
            os.close(home)


# --- echo servers: one thread serves listening sockets made in the pod namespaces ----------------


class EchoServers:
    """Each accepted connection gets "<pod> <client ip>\\n"; each line after that "<pod>:<line>"."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def listen(self, ns: str, name: str, port: int) -> None:
        with in_netns(ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(64)
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, ("listen", name))

    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.2):
                kind, name = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if kind == "listen":
                    self._accept(sock, name)
                else:
                    self._answer(sock, name)

    def _accept(self, listener: socket.socket, name: str) -> None:
        try:
            conn, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        try:
            conn.sendall(f"{name} {peer[0]}\n".encode())
            conn.setblocking(False)
            self.sel.register(conn, selectors.EVENT_READ, ("conn", name))
        except OSError:
            conn.close()

    def _answer(self, conn: socket.socket, name: str) -> None:
        try:
            data = conn.recv(4096)
            if data:
                conn.sendall(f"{name}:{data.decode().strip()}\n".encode())
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.sel.unregister(conn)
        conn.close()


class Client:
    """A TCP connection from the client namespace (or another one)."""

    def __init__(self, address: str, port: int, ns: str = CLIENT_NS) -> None:
        with in_netns(ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(CONNECT_TIMEOUT)
        self.sock.connect((address, port))
        self.file = self.sock.makefile("r")
        greeting = self.file.readline().split()
        if len(greeting) != 2:
            raise AssertionError(f"no greeting through {address}:{port}: {greeting}")
        self.name, self.seen_source = greeting

    def say(self, text: str, timeout: float = CONNECT_TIMEOUT) -> str:
        self.sock.settimeout(timeout)
        self.sock.sendall(f"{text}\n".encode())
        return self.file.readline().strip()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def ask(address: str, port: int, ns: str = CLIENT_NS) -> tuple[str, str]:
    client = Client(address, port, ns)
    client.close()
    return client.name, client.seen_source


# --- plans ---------------------------------------------------------------------------------------


def kernel_plan() -> Any:
    from pykubeproxy.backends.ipvs.model import IPSet, IpvsPlan, RealServer, VirtualServer

    web = VirtualServer(
        "tcp",
        CLUSTER_IP,
        80,
        real_servers=(
            RealServer("10.244.1.11", 8080),
            RealServer("10.244.1.12", 8080),
            RealServer("10.244.1.13", 8080, weight=2),
        ),
    )
    dns = VirtualServer(
        "udp", DNS_IP, 53, "sh", 10800, (RealServer("10.244.1.13", 53),), comment="dns"
    )
    diameter = VirtualServer("sctp", SCTP_IP, 3868, real_servers=(RealServer("10.244.1.11", 3868),))
    node_port = VirtualServer(
        "tcp",
        NODE_IP,
        NODE_PORT,
        real_servers=(RealServer("10.244.1.11", 8080), RealServer("10.244.1.12", 8080)),
    )
    v6 = VirtualServer("tcp", IPV6_IP, 80, real_servers=(RealServer("fd00:10::5", 8080),))
    ipsets = (
        IPSet(
            "KUBE-CLUSTER-IP",
            "hash:ip,port",
            "cluster ips",
            (f"{CLUSTER_IP},tcp:80", f"{DNS_IP},udp:53", f"{SCTP_IP},sctp:3868"),
        ),
        IPSet("KUBE-NODE-PORT-TCP", "bitmap:port", "node ports", (str(NODE_PORT),)),
        IPSet(
            "KUBE-LOOP-BACK",
            "hash:ip,port,ip",
            "hairpin",
            ("10.244.1.11,tcp:8080,10.244.1.11", "10.244.1.12,tcp:8080,10.244.1.12"),
        ),
        IPSet(
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            "hash:ip,port,net",
            "lb source ranges",
            # written as a planner may write them; the kernel saves them without /32, lowercase
            ("203.0.113.5,tcp:80,10.0.0.0/8", "203.0.113.5,TCP:80,192.0.2.7/32"),
        ),
        IPSet("KUBE-IPVS-IPS", "hash:ip", "ipvs ips", (CLUSTER_IP, DNS_IP, SCTP_IP)),
    )
    return IpvsPlan(
        (web, dns, diameter, node_port, v6), (CLUSTER_IP, DNS_IP, SCTP_IP, IPV6_IP), ipsets
    )


def smaller_plan(plan: Any) -> Any:
    """No DNS, no NodePort, pod-c gone from web, KUBE-LOOP-BACK not wanted any more."""
    web, _dns, diameter, _node_port, v6 = plan.virtual_servers
    web = replace(web, real_servers=web.real_servers[:2])
    sets = tuple(
        replace(s, entries=()) if s.name == "KUBE-NODE-PORT-TCP" else s
        for s in plan.ipsets
        if s.name != "KUBE-LOOP-BACK"
    )
    addresses = tuple(a for a in plan.addresses if a != DNS_IP)
    return replace(plan, virtual_servers=(web, diameter, v6), addresses=addresses, ipsets=sets)


def traffic_plan(pods_for_cluster_ip: list[str], pods_for_node_port: list[str]) -> Any:
    from pykubeproxy.backends.ipvs.model import IPSet, IpvsPlan, RealServer, VirtualServer

    def servers(pods: list[str]) -> tuple[Any, ...]:
        return tuple(RealServer(PODS[p], ECHO_PORT) for p in pods)

    return IpvsPlan(
        (
            VirtualServer("tcp", CLUSTER_IP, 80, real_servers=servers(pods_for_cluster_ip)),
            VirtualServer("tcp", NODE_IP, NODE_PORT, real_servers=servers(pods_for_node_port)),
        ),
        (CLUSTER_IP,),
        (
            IPSet("KUBE-CLUSTER-IP", "hash:ip,port", "", (f"{CLUSTER_IP},tcp:80",)),
            IPSet("KUBE-NODE-PORT-TCP", "bitmap:port", "", (str(NODE_PORT),)),
        ),
    )


# --- reading the kernel with ipvsadm -------------------------------------------------------------


def _split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def ipvsadm_save(ns: str) -> list[str]:
    return sorted(run("ipvsadm", "-Sn", ns=ns).splitlines())


def parse_ipvsadm_save(lines: list[str]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """`ipvsadm -Sn` → {(proto, addr, port): {scheduler, persistence, real: {(a, p): (fwd, w)}}}."""
    protocols = {"-t": "tcp", "-u": "udp", "--sctp-service": "sctp"}
    services: dict[tuple[str, str, int], dict[str, Any]] = {}
    for line in lines:
        words = line.split()
        if len(words) < 3 or words[1] not in protocols:
            continue  # fwmark services (-f) are not ours
        address, port = _split_host_port(words[2])
        key = (protocols[words[1]], address, port)
        opts = dict(zip(words[3::2], words[4::2], strict=False))
        if words[0] == "-A":
            persistence = int(opts["-p"]) if "-p" in opts else None
            services[key] = {"scheduler": opts.get("-s"), "persistence": persistence, "real": {}}
        elif words[0] == "-a":
            real = _split_host_port(words[4])
            method = next(w for w in words[5:] if w in ("-m", "-g", "-i"))
            weight = int(words[words.index("-w") + 1])
            services[key]["real"][real] = (
                {"-m": "masq", "-g": "route", "-i": "tunnel"}[method],
                weight,
            )
    return services


def plan_as_ipvsadm(plan: Any) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {
        vs.key: {
            "scheduler": vs.scheduler,
            "persistence": vs.persistence,
            "real": {(rs.address, rs.port): ("masq", rs.weight) for rs in vs.real_servers},
        }
        for vs in plan.virtual_servers
    }


def kernel_view(handle: Any) -> Any:
    from pykubeproxy.backends.ipvs.apply import read_state

    state = read_state(handle)
    return state, sorted(vs.as_planned() for vs in state.virtual_servers)


def planned_view(plan: Any) -> list[Any]:
    return sorted(
        replace(vs, comment="", real_servers=tuple(sorted(vs.real_servers)))
        for vs in plan.virtual_servers
    )


def expect_kernel_is(ctx: Ctx, plan: Any, what: str) -> None:
    """The kernel holds exactly the plan (plus the foreign services), by pyroute2 and ipvsadm."""
    state, ours = kernel_view(ctx.handle)
    ours = [vs for vs in ours if vs.key not in FOREIGN_KEYS]
    expect_equal(ours, planned_view(plan), f"{what}: /proc/net/ip_vs listing vs plan")
    netlink = sorted(
        vs.as_planned()
        for vs in ctx.handle.list_virtual_servers_netlink()
        if vs.key not in FOREIGN_KEYS
    )
    expect_equal(netlink, planned_view(plan), f"{what}: pyroute2 netlink dump vs plan")
    expect_equal(sorted(state.addresses), sorted(plan.addresses), f"{what}: kube-ipvs0 addresses")
    dumped = parse_ipvsadm_save(ipvsadm_save(K_NS))
    for key in FOREIGN_KEYS:
        dumped.pop(key, None)
    expect_equal(dumped, plan_as_ipvsadm(plan), f"{what}: ipvsadm -Sn vs plan")


# --- shared state --------------------------------------------------------------------------------


@dataclass
class Ctx:
    handle: Any = None
    graceful: Any = None
    plan: Any = None
    node: Any = None
    node_graceful: Any = None
    clock: list[float] = field(default_factory=lambda: [0.0])
    echo: EchoServers | None = None
    open_conn: Client | None = None
    busy_conn: Client | None = None
    foreign_save: list[str] = field(default_factory=list)
    manifests: str = ""


FOREIGN_KEYS = {("tcp", "172.16.0.5", 80), ("tcp", NODE_IP, 443)}
FOREIGN_IPVSADM = [
    "-A -t 172.16.0.5:80 -s wlc",
    "-a -t 172.16.0.5:80 -r 172.16.0.6:80 -g -w 1",
    f"-A -t {NODE_IP}:443 -s rr",
    "-A -f 5 -s rr",
]


def foreign_lines(ns: str) -> list[str]:
    return [
        line
        for line in ipvsadm_save(ns)
        if "172.16.0.5" in line or ":443 " in line or "-f 5" in line
    ]


def sync(ctx: Ctx, plan: Any) -> Any:
    from pykubeproxy.backends.ipvs.apply import sync_ipvs

    result = sync_ipvs(ctx.handle, plan, graceful=ctx.graceful, node_addresses=[NODE_IP])
    log("sync:", len(result.operations), "operations,", result.ipset_lines, "ipset lines")
    for op in result.operations:
        log("   ", op)
    return result


# --- the checks, in order ------------------------------------------------------------------------


@check
def dummy_type_missing_is_a_clear_error(ctx: Ctx) -> None:
    """Before anything loads the dummy module, forbid it: the handle must say what is missing."""
    from pykubeproxy.backends.ipvs.errors import IpvsSetupError
    from pykubeproxy.backends.ipvs.kernel import PyrouteIpvs

    conf = "/etc/modprobe.d/pkp-no-dummy.conf"
    expect("dummy" not in run("cat", "/proc/modules"), "dummy is already loaded")
    with open(conf, "w") as f:
        f.write("install dummy /bin/false\n")
    run("ip", "netns", "add", "pkp-nodummy")
    try:
        with PyrouteIpvs(netns="pkp-nodummy") as handle:
            handle.ensure_dummy_interface()
        raise AssertionError("ensure_dummy_interface succeeded without the dummy module")
    except IpvsSetupError as exc:
        expect("no 'dummy' network device type" in str(exc), f"unclear error: {exc}")
    finally:
        os.unlink(conf)
        run("ip", "netns", "delete", "pkp-nodummy")


@check
def required_modules_are_loaded(ctx: Ctx) -> None:
    from pykubeproxy.backends.ipvs.node import check_kernel_modules
    from pykubeproxy.backends.ipvs.procfs import loaded_modules

    loaded_now = check_kernel_modules("rr")
    log("modules loaded now:", loaded_now)
    modules = loaded_modules(run("cat", "/proc/modules"))
    expect({"ip_vs", "ip_vs_rr", "nf_conntrack"} <= modules, f"not loaded: {modules}")
    check_kernel_modules("sh")


@check
def missing_scheduler_module_is_named(ctx: Ctx) -> None:
    from pykubeproxy.backends.ipvs.errors import IpvsSetupError
    from pykubeproxy.backends.ipvs.node import check_kernel_modules

    try:
        check_kernel_modules("nosuch")
    except IpvsSetupError as exc:
        expect("ip_vs_nosuch" in str(exc), f"error does not name the module: {exc}")
        return
    raise AssertionError("check_kernel_modules('nosuch') passed")


@check
def sysctls_are_set_in_the_namespace(ctx: Ctx) -> None:
    from pykubeproxy.backends.ipvs.node import ensure_ipvs_sysctls

    run("ip", "netns", "add", K_NS)
    run("ip", "-n", K_NS, "link", "set", "lo", "up")
    with in_netns(K_NS):
        changed = ensure_ipvs_sysctls(strict_arp=True)
        values = {
            name: Path(f"/proc/sys/{name}").read_text().strip()
            for name in (
                "net/ipv4/vs/conntrack",
                "net/ipv4/vs/expire_nodest_conn",
                "net/ipv4/vs/expire_quiescent_template",
                "net/ipv4/ip_forward",
                "net/ipv4/conf/all/arp_ignore",
                "net/ipv4/conf/all/arp_announce",
            )
        }
        again = ensure_ipvs_sysctls(strict_arp=True)
    log("sysctls changed:", changed)
    expect_equal(list(values.values()), ["1", "1", "1", "1", "1", "2"], "sysctl values")
    expect("net/ipv4/vs/conntrack" in changed, f"conntrack was already 1? {changed}")
    expect_equal(again, (), "second ensure_ipvs_sysctls")


@check
def plan_applied_equals_kernel_dump(ctx: Ctx) -> None:
    from pykubeproxy.backends.ipvs.graceful import GracefulTermination
    from pykubeproxy.backends.ipvs.kernel import PyrouteIpvs

    for line in FOREIGN_IPVSADM:
        run("ipvsadm", *line.split(), ns=K_NS)
    run("ipset", "create", "OTHER-SET", "hash:ip", ns=K_NS)
    ctx.foreign_save = foreign_lines(K_NS)
    ctx.handle = PyrouteIpvs(netns=K_NS)
    ctx.graceful = GracefulTermination(clock=lambda: ctx.clock[0])
    ctx.plan = kernel_plan()
    result = sync(ctx, ctx.plan)
    expect(len(result.operations) > 10, f"first sync planned only {result.operations}")
    expect_kernel_is(ctx, ctx.plan, "after the first sync")


@check
def forwarding_method_is_masquerade(ctx: Ctx) -> None:
    state, _ = kernel_view(ctx.handle)
    methods = {
        rs.forwarding
        for vs in state.virtual_servers
        if vs.key not in FOREIGN_KEYS
        for rs in vs.real_servers
    }
    expect_equal(methods, {"masq"}, "forwarding read through pyroute2")
    listing = run("ipvsadm", "-Ln", ns=K_NS)
    log(listing)
    ours = [
        line
        for line in listing.splitlines()
        if line.strip().startswith("->")
        and "172.16.0.6" not in line
        and "RemoteAddress" not in line
    ]
    expect(len(ours) == 8, f"expected 8 real servers in ipvsadm -Ln, got {ours}")
    expect(all(line.split()[2] == "Masq" for line in ours), f"not all Masq:\n{listing}")


@check
def proc_and_netlink_listings_agree(ctx: Ctx) -> None:
    """Everything, foreign services and counters included, reads the same both ways."""
    log(run("cat", "/proc/net/ip_vs", ns=K_NS))
    from_proc = sorted(ctx.handle.list_virtual_servers())
    from_netlink = sorted(ctx.handle.list_virtual_servers_netlink())
    expect_equal(from_proc, from_netlink, "/proc/net/ip_vs vs netlink")
    expect(len(from_proc) == 7, f"expected 5 planned + 2 foreign, got {len(from_proc)}")


@check
def dummy_interface_is_down_with_host_addresses(ctx: Ctx) -> None:
    details = json.loads(run("ip", "-j", "-d", "addr", "show", "kube-ipvs0", ns=K_NS))[0]
    expect_equal(details["linkinfo"]["info_kind"], "dummy", "kube-ipvs0 kind")
    expect("UP" not in details["flags"], f"kube-ipvs0 is up: {details['flags']}")
    got = sorted((a["local"], a["prefixlen"]) for a in details["addr_info"])
    want = sorted((a, 128 if ":" in a else 32) for a in ctx.plan.addresses)
    expect_equal(got, want, "kube-ipvs0 addresses")
    local = run("ip", "route", "show", "table", "local", "dev", "kube-ipvs0", ns=K_NS)
    expect(f"local {CLUSTER_IP}" in local, f"no local route for {CLUSTER_IP}: {local}")


@check
def ipsets_restored_and_equal(ctx: Ctx) -> None:
    from pykubeproxy.backends.ipvs.ipsets import normalize_ipset_entry, parse_ipset_save

    saved = {s.name: s for s in parse_ipset_save(run("ipset", "save", ns=K_NS))}
    for want in ctx.plan.ipsets:
        have = saved.get(want.name)
        expect(have is not None, f"set {want.name} missing")
        expect_equal(have.type, want.type, f"type of {want.name}")
        expect_equal(
            sorted(have.entries),
            sorted(normalize_ipset_entry(e) for e in want.entries),
            f"entries of {want.name} (ipset save vs normalized plan)",
        )
    expect("OTHER-SET" in run("ipset", "list", "-n", ns=K_NS), "foreign set gone")


@check
def resync_is_a_no_op(ctx: Ctx) -> None:
    result = sync(ctx, ctx.plan)
    expect_equal((result.operations, result.ipset_lines, result.removals), ((), 0, ()), "re-sync")


@check
def foreign_virtual_servers_are_untouched(ctx: Ctx) -> None:
    expect_equal(foreign_lines(K_NS), ctx.foreign_save, "foreign IPVS services")
    expect(any("-f 5" in line for line in ctx.foreign_save), "fwmark service not set up")


def _readd_with_pyroute2_defaults(ctx: Ctx, service: Any, address: str, port: int) -> None:
    """Direct routing, as a bare IPVSDest makes it (ipvsadm -g cannot keep a different port)."""
    from pyroute2 import IPVSDest

    ctx.handle.delete_real_server(service, address, port)
    ipvs = ctx.handle._ipvs()
    ipvs.dest("add", service=ctx.handle._service(service), dest=IPVSDest(addr=address, port=port))
    expect(f"-r {address}:{port} -g" in " ".join(ipvsadm_save(K_NS)), "no DR real server made")


@check
def ipvs_timeouts_are_set_and_zero_leaves_one_alone(ctx: Ctx) -> None:
    ctx.handle.set_timeouts(tcp=901, tcpfin=121, udp=301)
    expect_equal(_timeouts(), "901 121 301", "timeouts after set")
    ctx.handle.set_timeouts(tcp=0, tcpfin=0, udp=302)
    expect_equal(_timeouts(), "901 121 302", "timeouts after setting udp only")


def _timeouts() -> str:
    line = run("ipvsadm", "-L", "--timeout", ns=K_NS).strip()
    return line.rpartition(":")[2].strip()  # "Timeout (tcp tcpfin udp): 900 120 300"


@check
def hand_made_drift_is_repaired(ctx: Ctx) -> None:
    for line in (
        f"-d -t {CLUSTER_IP}:80 -r 10.244.1.12:8080",
        f"-D -u {DNS_IP}:53",
        f"-E -t {CLUSTER_IP}:80 -s wlc",
        f"-e -t {CLUSTER_IP}:80 -r 10.244.1.13:8080 -m -w 7",
        f"-A -t {CLUSTER_IP}:9999 -s rr",
        f"-a -t {CLUSTER_IP}:9999 -r 10.244.1.99:1 -m",
    ):
        run("ipvsadm", *line.split(), ns=K_NS)
    _readd_with_pyroute2_defaults(ctx, ("tcp", NODE_IP, NODE_PORT), "10.244.1.11", 8080)
    run("ip", "addr", "del", f"{SCTP_IP}/32", "dev", "kube-ipvs0", ns=K_NS)
    run("ipset", "del", "KUBE-CLUSTER-IP", f"{CLUSTER_IP},tcp:80", ns=K_NS)
    run("ipset", "add", "KUBE-CLUSTER-IP", "10.96.0.99,tcp:1", ns=K_NS)
    log("drifted:\n" + "\n".join(ipvsadm_save(K_NS)))
    result = sync(ctx, ctx.plan)
    kinds = sorted({type(op).__name__ for op in result.operations})
    expect_equal(
        kinds,
        sorted(
            {
                "AddAddress",
                "AddRealServer",
                "AddVirtualServer",
                "DeleteRealServer",
                "DeleteVirtualServer",
                "EditRealServer",
                "EditVirtualServer",
            }
        ),
        "kinds of repair",
    )
    expect_equal(result.ipset_lines, 2, "ipset repair lines")
    expect_kernel_is(ctx, ctx.plan, "after repairing drift")
    ipsets_restored_and_equal(ctx)
    again = sync(ctx, ctx.plan)
    expect_equal(again.operations, (), "re-sync after repair")
    expect_equal(foreign_lines(K_NS), ctx.foreign_save, "foreign IPVS services after repair")


@check
def stale_virtual_servers_and_addresses_disappear(ctx: Ctx) -> None:
    smaller = smaller_plan(ctx.plan)
    result = sync(ctx, smaller)
    expect_equal([r.ref.address for r in result.removals], ["10.244.1.13"], "drained and deleted")
    expect_kernel_is(ctx, smaller, "after removing services")
    expect_equal(foreign_lines(K_NS), ctx.foreign_save, "foreign IPVS services")
    expect("KUBE-LOOP-BACK" in run("ipset", "list", "-n", ns=K_NS), "set destroyed too early")
    ctx.plan = smaller


@check
def stale_ipsets_are_destroyed_after_the_iptables_sync(ctx: Ctx) -> None:
    from pykubeproxy.backends.ipvs.apply import destroy_stale_sets

    expect_equal(destroy_stale_sets(ctx.handle, ctx.plan.ipsets), ("KUBE-LOOP-BACK",), "destroyed")
    names = set(run("ipset", "list", "-n", ns=K_NS).split())
    expect_equal(names, {s.name for s in ctx.plan.ipsets} | {"OTHER-SET"}, "sets left")


@check
def cleanup_leaves_nothing_and_can_run_twice(ctx: Ctx) -> None:
    from pykubeproxy.backends.ipvs.apply import cleanup

    first = cleanup(ctx.handle)
    expect_equal(ipvsadm_save(K_NS), [], "ipvsadm -Sn after cleanup (kube-proxy flushes all)")
    links = run("ip", "-o", "link", "show", ns=K_NS)
    expect("kube-ipvs0" not in links, f"kube-ipvs0 still there: {links}")
    expect_equal(run("ipset", "list", "-n", ns=K_NS).split(), ["OTHER-SET"], "sets after cleanup")
    expect(first.virtual_servers == 6 and first.dummy_deleted, f"first cleanup: {first}")
    second = cleanup(ctx.handle)
    expect_equal(
        (second.virtual_servers, second.dummy_deleted, second.ipsets), (0, False, ()), "2nd"
    )
    ctx.handle.close()


# --- traffic -------------------------------------------------------------------------------------


HAND_MADE_MASQUERADE = (
    "POSTROUTING",
    *("-m", "ipvs", "--vaddr", f"{NODE_IP}/32", "--vport", str(NODE_PORT)),
    *("-j", "MASQUERADE"),
)


def build_topology() -> None:
    """node (bridge cbr0 with three pods, eth0 to the client), everything in namespaces."""
    names = [NODE_NS, CLIENT_NS, *(f"pkp-{p}" for p in PODS)]
    ip_batch([f"netns add {n}" for n in names])
    lines = [
        f"link add name eth0 netns {CLIENT_NS} type veth peer name eth0 netns {NODE_NS}",
    ]
    lines += [
        f"link add name eth0 netns pkp-{pod} type veth peer name veth-{pod} netns {NODE_NS}"
        for pod in PODS
    ]
    ip_batch(lines)
    node = [
        "link set lo up",
        "link add cbr0 type bridge",
        f"addr add {BRIDGE_IP}/24 dev cbr0",
        "link set cbr0 up",
        f"addr add {NODE_IP}/24 dev eth0",
        "link set eth0 up",
    ]
    node += [f"link set veth-{pod} master cbr0 up" for pod in PODS]
    run("ip", "-n", NODE_NS, "-batch", "-", stdin="\n".join(node) + "\n")
    client = [
        "link set lo up",
        f"addr add {CLIENT_IP}/24 dev eth0",
        "link set eth0 up",
        f"route add 10.96.0.0/16 via {NODE_IP}",
    ]
    run("ip", "-n", CLIENT_NS, "-batch", "-", stdin="\n".join(client) + "\n")
    for pod, address in PODS.items():
        cmds = [
            "link set lo up",
            f"addr add {address}/24 dev eth0",
            "link set eth0 up",
            f"route add default via {BRIDGE_IP}",
        ]
        run("ip", "-n", f"pkp-{pod}", "-batch", "-", stdin="\n".join(cmds) + "\n")


@check
def traffic_topology_is_up(ctx: Ctx) -> None:
    from pykubeproxy.backends.ipvs.apply import sync_ipvs
    from pykubeproxy.backends.ipvs.graceful import GracefulTermination
    from pykubeproxy.backends.ipvs.kernel import PyrouteIpvs
    from pykubeproxy.backends.ipvs.node import ensure_ipvs_sysctls

    build_topology()
    with in_netns(NODE_NS):
        ensure_ipvs_sysctls(strict_arp=True)
    # NodePort traffic is masqueraded, as kube-proxy does through KUBE-MARK-MASQ; here with the
    # minimal rule (the planner's iptables rules are tested elsewhere).
    run("iptables", "-w", "-t", "nat", "-A", *HAND_MADE_MASQUERADE, ns=NODE_NS)
    ctx.node = PyrouteIpvs(netns=NODE_NS)
    ctx.node_graceful = GracefulTermination(clock=lambda: ctx.clock[0])
    everyone = list(PODS)
    sync_ipvs(
        ctx.node,
        traffic_plan(everyone, everyone),
        graceful=ctx.node_graceful,
        node_addresses=[NODE_IP],
    )
    # Sockets are created before the echo thread starts: pyroute2 forks for netns sockets.
    ctx.echo = EchoServers()
    for pod in PODS:
        ctx.echo.listen(f"pkp-{pod}", pod, ECHO_PORT)
    ctx.echo.start()
    log(run("ipvsadm", "-Ln", ns=NODE_NS))


def _spread(
    address: str, port: int, n: int, ns: str = CLIENT_NS
) -> tuple[dict[str, int], set[str]]:
    seen: dict[str, int] = {}
    sources = set()
    for _ in range(n):
        name, source = ask(address, port, ns)
        seen[name] = seen.get(name, 0) + 1
        sources.add(source)
    return seen, sources


@check
def traffic_to_cluster_ip_reaches_every_backend(ctx: Ctx) -> None:
    seen, sources = _spread(CLUSTER_IP, 80, 6)
    expect_equal(seen, {p: 2 for p in PODS}, "round robin over the ClusterIP")
    expect_equal(sources, {CLIENT_IP}, "source seen by the pods (no masquerade for this client)")


@check
def traffic_to_node_port_reaches_every_backend_masqueraded(ctx: Ctx) -> None:
    seen, sources = _spread(NODE_IP, NODE_PORT, 6)
    expect_equal(seen, {p: 2 for p in PODS}, "round robin over the NodePort")
    expect_equal(sources, {BRIDGE_IP}, "source seen by the pods (masqueraded)")


def node_real_server(ctx: Ctx, vip: str, port: int, pod: str) -> Any:
    servers = ctx.node.list_real_servers(("tcp", vip, port))
    return next((rs for rs in servers if rs.address == PODS[pod]), None)


def node_sync(ctx: Ctx, plan: Any) -> Any:
    from pykubeproxy.backends.ipvs.apply import sync_ipvs

    result = sync_ipvs(ctx.node, plan, graceful=ctx.node_graceful, node_addresses=[NODE_IP])
    log("node sync:", [str(op) for op in result.operations], [str(r.ref) for r in result.removals])
    return result


@check
def removed_backend_keeps_its_open_connection_until_closed(ctx: Ctx) -> None:
    conn = ctx.open_conn = Client(CLUSTER_IP, 80)
    gone = conn.name
    rest = [p for p in PODS if p != gone]
    plan = traffic_plan(rest, list(PODS))
    result = node_sync(ctx, plan)
    expect_equal([type(op).__name__ for op in result.operations], ["DrainRealServer"], "ops")
    rs = node_real_server(ctx, CLUSTER_IP, 80, gone)
    expect(rs is not None and rs.weight == 0 and rs.active_connections >= 1, f"draining: {rs}")
    listed = {vs.key: vs for vs in ctx.node.list_virtual_servers()}[("tcp", CLUSTER_IP, 80)]
    expect(rs in listed.real_servers, f"/proc/net/ip_vs disagrees: {listed} vs {rs}")
    expect_equal(conn.say("ping"), f"{gone}:ping", "open connection to the drained backend")
    seen, _ = _spread(CLUSTER_IP, 80, 4)
    expect(gone not in seen, f"new connections reached the drained backend: {seen}")
    again = node_sync(ctx, plan)
    expect_equal((again.operations, again.removals), ((), ()), "re-sync while draining")
    expect_equal(conn.say("still there"), f"{gone}:still there", "connection after re-sync")
    conn.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rs = node_real_server(ctx, CLUSTER_IP, 80, gone)
        if rs is not None and rs.active_connections == 0:
            break
        time.sleep(0.2)
    result = node_sync(ctx, plan)
    expect_equal(
        [(r.ref.address, r.reason) for r in result.removals], [(PODS[gone], "idle")], "removal"
    )
    expect(node_real_server(ctx, CLUSTER_IP, 80, gone) is None, "drained backend not deleted")


@check
def busy_backend_is_deleted_when_the_grace_period_is_over(ctx: Ctx) -> None:
    conn = ctx.busy_conn = Client(NODE_IP, NODE_PORT)
    gone = conn.name
    cluster = [p for p, _ in PODS.items() if node_real_server(ctx, CLUSTER_IP, 80, p) is not None]
    plan = traffic_plan(cluster, [p for p in PODS if p != gone])
    node_sync(ctx, plan)
    expect_equal(conn.say("before"), f"{gone}:before", "busy connection while draining")
    ctx.clock[0] += ctx.node_graceful.grace_period - 1
    expect_equal(node_sync(ctx, plan).removals, (), "removals before the grace period is over")
    ctx.clock[0] += 1
    result = node_sync(ctx, plan)
    expect_equal([r.reason for r in result.removals], ["grace period over"], "removal")
    expect(node_real_server(ctx, NODE_IP, NODE_PORT, gone) is None, "busy backend not deleted")
    try:
        answer = conn.say("after", timeout=2.0)
    except OSError as exc:  # reset or timeout: expire_nodest_conn ended it
        answer = f"<{type(exc).__name__}>"
    expect(answer != f"{gone}:after", "connection to a deleted real server still answered")
    conn.close()


# --- the real daemon: `python -m pykubeproxy --proxy-mode ipvs --once` in the node namespace ------

POD_CIDR = "10.244.0.0/16"
DAEMON_BACKEND = "nft"  # iptables-nft: the guest's (Debian's) default iptables
DAEMON_TIMEOUT = 120.0


def daemon_manifests() -> list[dict[str, Any]]:
    """Node node-1 at NODE_IP; Service web (NodePort) at CLUSTER_IP:80 → the three echo pods."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "NodePort",
            "clusterIP": CLUSTER_IP,
            "clusterIPs": [CLUSTER_IP],
            "ipFamilies": ["IPv4"],
            "ports": [
                {
                    "name": "http",
                    "protocol": "TCP",
                    "port": 80,
                    "targetPort": ECHO_PORT,
                    "nodePort": NODE_PORT,
                }
            ],
        },
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abcde",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "nodeName": "node-1", "conditions": {"ready": True}}
            for ip in PODS.values()
        ],
        "ports": [{"name": "http", "protocol": "TCP", "port": ECHO_PORT}],
    }
    return [node, service, endpoints]


def daemon(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run pykubeproxy in the node namespace: exit status, its JSON log lines, its raw stderr."""
    argv = ["ip", "netns", "exec", NODE_NS, sys.executable, "-m", "pykubeproxy", *args]
    # Bytecode goes to the guest's throw-away overlay: the 2nd and 3rd runs start faster.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.monotonic()
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=DAEMON_TIMEOUT, check=False, env=env
    )
    log(
        f"pykubeproxy {' '.join(args)}: exit {proc.returncode} in",
        round(time.monotonic() - started, 1),
        "s",
    )
    lines = []
    for line in proc.stderr.splitlines():
        log("   ", line)
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                lines.append(parsed)
    return proc.returncode, lines, proc.stderr


def daemon_once(ctx: Ctx) -> tuple[int, list[dict[str, Any]], str]:
    return daemon(
        *("--proxy-mode", "ipvs", "--from-file", ctx.manifests, "--once"),
        *("--hostname-override", "node-1", "--cluster-cidr", POD_CIDR),
        *("--iptables-backend", DAEMON_BACKEND),
    )


def ipvs_sync_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == "ipvs sync"]


def node_ipvs_listing() -> dict[str, list[tuple[str, str]]]:
    """`ipvsadm -Ln` in the node namespace → {"TCP 10.96.0.10:80 rr": [(real, method)]}."""
    listing = run("ipvsadm", "-Ln", ns=NODE_NS)
    log(listing)
    services: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in listing.splitlines():
        words = line.split()
        if words[:1] in (["TCP"], ["UDP"], ["SCTP"]):
            current = " ".join(words[:3])
            services[current] = []
        elif words[:1] == ["->"] and current is not None and words[1] != "RemoteAddress:Port":
            services[current].append((words[1], words[2]))
    return services


def reset_node_namespace(ctx: Ctx) -> None:
    """Take back what the library checks put in the node namespace: no IPVS service, no
    kube-ipvs0, no KUBE- set, no hand-made rule, and the sysctls pykubeproxy must set itself."""
    if ctx.node is not None:
        ctx.node.close()
        ctx.node = None
    run("iptables", "-w", "-t", "nat", "-D", *HAND_MADE_MASQUERADE, ns=NODE_NS)
    run("ipvsadm", "-C", ns=NODE_NS)
    run("ip", "link", "del", "kube-ipvs0", ns=NODE_NS)
    for name in run("ipset", "list", "-n", ns=NODE_NS).split():
        if name.startswith("KUBE-"):
            run("ipset", "destroy", name, ns=NODE_NS)
    with in_netns(NODE_NS):
        for name in ("net/ipv4/vs/conntrack", "net/ipv4/ip_forward"):
            Path(f"/proc/sys/{name}").write_text("0\n")
    # As on a node with the bridge CNI (kubenet): bridged pod-to-pod replies cross netfilter,
    # where IPVS un-NATs them (br_netfilter, which kubeadm's preflight asks for), and a pod's
    # masqueraded hairpin reply may leave by the port it came in (CNI "hairpinMode": true).
    run("modprobe", "br_netfilter")
    with in_netns(NODE_NS):
        Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1\n")
    hairpin = [f"link set dev veth-{pod} type bridge_slave hairpin on" for pod in PODS]
    run("ip", "-n", NODE_NS, "-batch", "-", stdin="\n".join(hairpin) + "\n")
    expect_equal(ipvsadm_save(NODE_NS), [], "IPVS services before the daemon runs")
    rules = run("iptables-save", ns=NODE_NS)  # the checks before use `iptables` only
    expect("KUBE-" not in rules and "MASQUERADE" not in rules, f"iptables before:\n{rules}")


def expect_nothing_of_ours_left() -> None:
    expect_equal(ipvsadm_save(NODE_NS), [], "IPVS services after --cleanup")
    links = run("ip", "-o", "link", "show", ns=NODE_NS)
    expect("kube-ipvs0" not in links, f"kube-ipvs0 still there: {links}")
    sets = run("ipset", "list", "-n", ns=NODE_NS).split()
    expect_equal([s for s in sets if s.startswith("KUBE-")], [], "KUBE- ipsets after --cleanup")
    for save in ("iptables-nft-save", "iptables-legacy-save"):
        rules = run(save, ns=NODE_NS)
        expect("KUBE-" not in rules, f"KUBE- rules or chains left in {save}:\n{rules}")


@check
def daemon_once_programs_ipvs_and_carries_traffic(ctx: Ctx) -> None:
    """`pykubeproxy --proxy-mode ipvs --once` alone (no hand-made rule) makes the Service work."""
    reset_node_namespace(ctx)
    ctx.manifests = tempfile.mkdtemp(prefix="pkp-manifests-")
    for number, manifest in enumerate(daemon_manifests()):
        Path(ctx.manifests, f"{number}-{manifest['kind']}.json").write_text(json.dumps(manifest))
    status, lines, stderr = daemon_once(ctx)
    expect_equal(status, 0, f"exit status of pykubeproxy --once\n{stderr[-3000:]}")
    synced = ipvs_sync_lines(lines)
    expect(len(synced) == 1 and synced[0]["operations"] > 0, f"ipvs sync log lines: {synced}")

    reals = sorted((f"{ip}:{ECHO_PORT}", "Masq") for ip in PODS.values())
    services = {name: sorted(real) for name, real in node_ipvs_listing().items()}
    want = {f"TCP {CLUSTER_IP}:80 rr": reals, f"TCP {NODE_IP}:{NODE_PORT} rr": reals}
    expect_equal(services, want, "ipvsadm -Ln in the node namespace")
    addresses = json.loads(run("ip", "-j", "addr", "show", "kube-ipvs0", ns=NODE_NS))[0]
    expect_equal([a["local"] for a in addresses["addr_info"]], [CLUSTER_IP], "kube-ipvs0")
    members = run("ipset", "list", "KUBE-CLUSTER-IP", ns=NODE_NS)
    members = members.partition("Members:")[2].split()
    expect_equal(members, [f"{CLUSTER_IP},tcp:80"], "KUBE-CLUSTER-IP members")
    with in_netns(NODE_NS):
        for name in ("net/ipv4/vs/conntrack", "net/ipv4/ip_forward"):
            value = Path(f"/proc/sys/{name}").read_text().strip()
            expect_equal(value, "1", f"{name} after pykubeproxy --once")
    log(run(f"iptables-{DAEMON_BACKEND}-save", ns=NODE_NS))

    # The client is outside --cluster-cidr: masqueraded to a ClusterIP as to a NodePort.
    seen, sources = _spread(CLUSTER_IP, 80, 6)
    expect_equal(seen, {p: 2 for p in PODS}, "round robin over the ClusterIP")
    expect_equal(sources, {BRIDGE_IP}, "source seen by the pods (client outside the cluster CIDR)")
    seen, sources = _spread(NODE_IP, NODE_PORT, 6)
    expect_equal(seen, {p: 2 for p in PODS}, "round robin over the NodePort")
    expect_equal(sources, {BRIDGE_IP}, "source seen by the pods (NodePort, masqueraded)")
    # The node's own connections leave from the VIP (kube-ipvs0), outside the cluster CIDR.
    name, source = ask(CLUSTER_IP, 80, NODE_NS)
    expect_equal(source, BRIDGE_IP, f"source seen by {name} for the node's own connection")
    # Hairpin: pod-a sent to itself through the ClusterIP must be masqueraded (KUBE-LOOP-BACK),
    # or its own address comes back as the source; the other pods see pod-a's address.
    answers = []
    for _ in PODS:  # rr: one connection to each pod
        try:
            answers.append(ask(CLUSTER_IP, 80, "pkp-pod-a"))
        except OSError as exc:
            answers.append(("no answer", f"{type(exc).__name__}: {exc}"))
    hairpin = [("pod-a", BRIDGE_IP), ("pod-b", PODS["pod-a"]), ("pod-c", PODS["pod-a"])]
    expect_equal(sorted(answers), hairpin, "pod-a through the ClusterIP: (pod, source seen)")


@check
def daemon_resync_is_a_no_op_and_cleanup_removes_everything(ctx: Ctx) -> None:
    """A second `--once` changes nothing in IPVS; `--cleanup` leaves nothing of either mode."""
    expect(bool(ctx.manifests), "the first daemon check wrote no manifests")
    status, lines, stderr = daemon_once(ctx)
    expect_equal(status, 0, f"exit status of the second pykubeproxy --once\n{stderr[-3000:]}")
    synced = ipvs_sync_lines(lines)
    expect(len(synced) == 1, f"ipvs sync log lines: {synced}")
    got = {k: synced[0][k] for k in ("operations", "ipset_lines", "failures")}
    expect_equal(got, {"operations": 0, "ipset_lines": 0, "failures": 0}, "second --once")
    expect_equal(ask(CLUSTER_IP, 80)[1], BRIDGE_IP, "traffic after the second --once")

    status, _, stderr = daemon("--cleanup")
    expect_equal(status, 0, f"exit status of pykubeproxy --cleanup\n{stderr[-3000:]}")
    expect_nothing_of_ours_left()


# --- main ----------------------------------------------------------------------------------------

CHECK_NAMES = [name for name, _ in CHECKS]


def main() -> int:
    started = time.monotonic()
    from pykubeproxy.log import setup_logging

    setup_logging(json_lines=False)  # structlog to stderr: stdout carries only the report
    ctx = Ctx()
    checks: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, fn in CHECKS:
        t = time.monotonic()
        log(f"--- {name}")
        try:
            fn(ctx)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
        seconds[name] = round(time.monotonic() - t, 2)
        log(f"    {checks[name].splitlines()[0]} ({seconds[name]} s)")
    if ctx.echo is not None:
        ctx.echo.stop.set()
    report = {
        "checks": checks,
        "seconds": seconds,
        "total_seconds": round(time.monotonic() - started, 2),
        "kernel": os.uname().release,
    }
    print(json.dumps(report), flush=True)
    return 0 if all(v == "ok" for v in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
