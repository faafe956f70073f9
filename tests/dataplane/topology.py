"""Owns the data-plane test topology: a node, three echo pods, a client pod and an external host.

Everything lives in network namespaces created here (names ``pkp-<6 hex>-<role>``) with
tests.support.netns and removed by :meth:`Topology.teardown`; nothing is added to, or run in,
the host's own namespace except ``ip netns add|delete|list|pids`` and ``ip -n <ours> ...`` /
``ip netns exec <ours> ...``.

Layout (all addresses are fixed; only namespace names vary)::

    pod-a 10.244.1.11 ─┐
    pod-b 10.244.1.12 ─┤ veth, node side enslaved to cbr0 (hairpin on)
    pod-c 10.244.1.13 ─┤
    client 10.244.1.20 ┘
                        node: cbr0 10.244.1.1/24, eth0 192.0.2.10/24, default via 192.0.2.100,
                              ip_forward=1, route_localnet=1, bridge-nf-call-iptables=1
    external 192.0.2.100 ── routes 198.51.100.0/24 (LB / external IPs) and 10.96.0.0/16
                            (Service CIDR) via the node's 192.0.2.10

Each pod runs ``echo_server.py`` on TCP+UDP 8080 and 9090, answering with its pod name.
Pods sit on a real Linux bridge, as with kubenet/bridge CNI, so the kube-proxy corner cases
that depend on it (br_netfilter un-DNAT of same-bridge replies, hairpin) behave as on a node.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.needs import missing_root_or
from tests.support.netns import (
    Netns,
    Processes,
    create,
    delete,
    names_with_prefix,
)
from tests.support.wait import wait_until

HERE = Path(__file__).resolve().parent
ECHO_SERVER = HERE / "echo_server.py"
CLIENT = HERE / "client.py"

# The shape of every prefix this module makes; cleanup refuses anything else.
PREFIX_RE = re.compile(r"^pkp-[0-9a-f]{6}-$")

POD_IPS: Mapping[str, str] = {
    "pod-a": "10.244.1.11",
    "pod-b": "10.244.1.12",
    "pod-c": "10.244.1.13",
}
ECHO_PORTS: tuple[int, ...] = (8080, 9090)

# -I: ignore PYTHON* env and user site; -S: skip site. The helper scripts are stdlib only and
# are started many times per test, so a lean interpreter start keeps the suite fast.
_PY = (sys.executable, "-I", "-S")

# How long to wait for echo servers to bind and for the wiring to carry a first connection.
_READY_TIMEOUT = 10.0
_CMD_TIMEOUT = 30.0
# What building a topology needs (tests.support.needs says why it cannot when it cannot).
REQUIREMENTS = ("ip",)


@dataclass(frozen=True)
class ClientResult:
    """Outcome counts of one ``client.py`` run."""

    replies: dict[str, int]
    refused: int
    timeout: int
    other: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.replies.values()) + self.refused + self.timeout + sum(self.other.values())


@dataclass(frozen=True)
class EchoRequest:
    """One request an echo server logged: which protocol/port, and the source it saw."""

    proto: str
    port: int
    source_ip: str
    source_port: int


@dataclass(frozen=True)
class Topology:
    """Names and addresses of one built topology, plus helpers to act inside it."""

    prefix: str
    workdir: Path
    bridge: str = "cbr0"
    node_uplink: str = "eth0"
    node_bridge_ip: str = "10.244.1.1"  # the pods' gateway
    node_ip: str = "192.0.2.10"  # the node's "InternalIP", on its uplink
    external_ip: str = "192.0.2.100"
    client_ip: str = "10.244.1.20"
    pod_cidr: str = "10.244.0.0/16"
    node_pod_cidr: str = "10.244.1.0/24"
    service_cidr: str = "10.96.0.0/16"
    lb_cidr: str = "198.51.100.0/24"
    echo_ports: tuple[int, ...] = ECHO_PORTS
    pod_ip: Mapping[str, str] = field(default_factory=lambda: dict(POD_IPS))
    # Mutable bookkeeping; the dataclass is frozen so the names above cannot drift.
    _processes: Processes = field(default_factory=Processes, repr=False, compare=False)

    # -- names -------------------------------------------------------------------------------

    @property
    def node_ns(self) -> str:
        return f"{self.prefix}node"

    @property
    def client_ns(self) -> str:
        return f"{self.prefix}client"

    @property
    def external_ns(self) -> str:
        return f"{self.prefix}external"

    @property
    def pod_ns(self) -> Mapping[str, str]:
        """Pod name -> namespace name."""
        return {pod: f"{self.prefix}{pod}" for pod in self.pod_ip}

    @property
    def pod_ns_ips(self) -> Mapping[str, str]:
        """Pod namespace name -> pod IP."""
        return {self.pod_ns[pod]: ip for pod, ip in self.pod_ip.items()}

    @property
    def pods(self) -> tuple[str, ...]:
        return tuple(self.pod_ip)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.node_ns, *self.pod_ns.values(), self.client_ns, self.external_ns)

    # -- acting inside the topology ----------------------------------------------------------

    def _netns(self, ns: str) -> Netns:
        # The one guard that keeps every command out of the host namespace.
        if ns not in self.namespaces:
            raise ValueError(f"{ns!r} is not a namespace of this topology")
        return Netns(ns)

    def exec(
        self,
        ns: str,
        *argv: str,
        check: bool = True,
        timeout: float = _CMD_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ip netns exec ns argv...`` and capture its output (bounded by ``timeout``)."""
        return self._netns(ns).exec(*argv, check=check, timeout=timeout, input=input)

    def run_client(
        self,
        ns: str,
        target_ip: str,
        port: int,
        proto: str = "tcp",
        count: int = 1,
        timeout: float = 1.0,
    ) -> ClientResult:
        """Send ``count`` independent requests from ``ns`` and count the outcomes."""
        out = self.exec(
            ns,
            *_PY,
            str(CLIENT),
            f"--target={target_ip}:{port}",
            f"--proto={proto}",
            f"--count={count}",
            f"--timeout={timeout}",
            # Each request is bounded; the slack covers interpreter start-up.
            timeout=count * timeout + 10.0,
        )
        data = json.loads(out.stdout.strip().splitlines()[-1])
        return ClientResult(
            replies=dict(data["replies"]),
            refused=int(data["refused"]),
            timeout=int(data["timeout"]),
            other=dict(data["other_errors"]),
        )

    def start_process(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        log_name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in ``ns``; teardown stops it by PID.

        stdout and stderr go to a log file in :attr:`workdir` (see :meth:`process_log`).
        """
        netns = self._netns(ns)
        name = log_name or f"{ns.removeprefix(self.prefix)}-{Path(argv[0]).name}"
        log = self.workdir / f"{name}-{len(self._processes)}.log"
        return self._processes.start(netns, argv, log=log, env=env, cwd=cwd)

    def process_log(self, proc: subprocess.Popen[bytes]) -> str:
        """Everything ``proc`` (started by :meth:`start_process`) has written so far."""
        return self._processes.log(proc)

    def stop_process(self, proc: subprocess.Popen[bytes]) -> int:
        """SIGTERM ``proc`` by PID, SIGKILL it if it lingers, reap it; return its exit code."""
        return self._processes.stop(proc)

    def echo_requests(self, pod: str) -> list[EchoRequest]:
        """The requests ``pod``'s echo server has answered so far, with the sources it saw."""
        proc = self._echo_proc(pod)
        seen = []
        for line in self.process_log(proc).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("tcp", "udp"):
                ip, _, sport = parts[2].rpartition(":")
                seen.append(EchoRequest(parts[0], int(parts[1]), ip, int(sport)))
        return seen

    def _echo_proc(self, pod: str) -> subprocess.Popen[bytes]:
        for proc, path in self._processes:
            if path.name.startswith(f"echo-{pod}-"):
                return proc
        raise KeyError(f"no echo server for {pod!r}")

    # -- lifecycle -----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop every tracked process, delete every namespace, remove the work directory.

        Safe to call twice and after a partial build. Raises if a namespace survives.
        """
        errors = self._processes.stop_all()
        existing = set(names_with_prefix(self.prefix))
        for ns in self.namespaces:
            if ns not in existing:
                continue
            try:
                # Stragglers (say, a child a tracked process left behind) are stopped first;
                # deleting a namespace also destroys the veths and the bridge inside it.
                delete(Netns(ns))
            except (AssertionError, OSError, subprocess.SubprocessError) as exc:
                errors.append(f"deleting {ns}: {exc}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        left = names_with_prefix(self.prefix)
        if left or errors:
            raise RuntimeError(f"topology teardown incomplete: left={left} errors={errors}")

    def bridge_netfilter(self) -> bool:
        """Whether bridged pod-to-pod frames traverse iptables in the node (br_netfilter).

        Without it, a pod calling a ClusterIP backed by a pod on the same bridge gets the reply
        straight over the bridge, un-DNATed, and the connection fails: a real kube-proxy node
        needs this too, so tests of that path should skip when it is False.
        """
        res = self.exec(
            self.node_ns, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables", check=False
        )
        return res.returncode == 0 and res.stdout.strip() == "1"


# -- building ------------------------------------------------------------------------------------


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = platform.release().split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def _new_prefix() -> str:
    for _ in range(10):
        prefix = f"pkp-{secrets.token_hex(3)}-"
        if not names_with_prefix(prefix):
            return prefix
    raise RuntimeError("could not find an unused namespace prefix")


def _sysctl(ns: str, *settings: str) -> None:
    # `ip netns exec` + sysctl: /proc/sys/net is per network namespace, so this changes ours only.
    Netns(ns).exec("sysctl", "-q", "-w", *settings)


def _veth(node_ns: str, node_if: str, peer_ns: str) -> None:
    # Created inside the node namespace with the peer (always "eth0") born in the other
    # namespace: the pair never exists in the host namespace, not even for a moment.
    Netns(node_ns).ip(
        "link", "add", node_if, "type", "veth", "peer", "name", "eth0", "netns", peer_ns
    )


def _wire(topo: Topology) -> None:
    # Loopback is up already: tests.support.netns.create brings it up in every namespace.
    ip_n = {ns: Netns(ns).ip for ns in topo.namespaces}
    node = topo.node_ns

    # Node: a router for the pod network, NAT-capable like a kube-proxy node.
    _sysctl(
        node,
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.route_localnet=1",  # NodePort on 127.0.0.1
        # REJECT answers with ICMP; the default 1/s per-peer limit would turn refusals into
        # timeouts in any test that sends a burst.
        "net.ipv4.icmp_ratelimit=0",
    )
    # br_netfilter's switches are per namespace since Linux 5.3; on older kernels they are
    # global, so leave them alone there rather than touch the host.
    if _kernel_at_least(5, 3) and Path("/proc/sys/net/bridge").exists():
        _sysctl(node, "net.bridge.bridge-nf-call-iptables=1")
    # STP is off, so ports forward as soon as they are up; forward_delay 0 keeps that true
    # even if someone turns STP on while debugging.
    ip_n[node]("link", "add", topo.bridge, "type", "bridge", "forward_delay", "0")
    ip_n[node]("addr", "add", f"{topo.node_bridge_ip}/24", "dev", topo.bridge)
    ip_n[node]("link", "set", topo.bridge, "up")

    pod_like = [(topo.pod_ns[p], p, ip) for p, ip in topo.pod_ip.items()]
    pod_like.append((topo.client_ns, "client", topo.client_ip))
    for ns, role, ip in pod_like:
        host_if = f"veth-{role}"
        _veth(node, host_if, ns)
        ip_n[node]("link", "set", host_if, "master", topo.bridge)
        # Hairpin: lets a pod reach itself through a Service VIP, as kubenet configures it.
        ip_n[node]("link", "set", host_if, "type", "bridge_slave", "hairpin", "on")
        ip_n[node]("link", "set", host_if, "up")
        ip_n[ns]("addr", "add", f"{ip}/24", "dev", "eth0")
        ip_n[ns]("link", "set", "eth0", "up")
        ip_n[ns]("route", "add", "default", "via", topo.node_bridge_ip)
        # Pods answer closed ports with ICMP too; no rate limit, for the same reason as above.
        _sysctl(ns, "net.ipv4.icmp_ratelimit=0")

    # Uplink to the "external" host (a client outside the cluster, and the node's gateway).
    ext = topo.external_ns
    _veth(node, topo.node_uplink, ext)
    ip_n[node]("addr", "add", f"{topo.node_ip}/24", "dev", topo.node_uplink)
    ip_n[node]("link", "set", topo.node_uplink, "up")
    ip_n[ext]("addr", "add", f"{topo.external_ip}/24", "dev", "eth0")
    ip_n[ext]("link", "set", "eth0", "up")
    for cidr in (topo.lb_cidr, topo.service_cidr):
        ip_n[ext]("route", "add", cidr, "via", topo.node_ip)
    # Service VIPs are assigned nowhere; the node's own OUTPUT path needs a route for them to
    # exist before DNAT rewrites the destination, which a real node's default route provides.
    ip_n[node]("route", "add", "default", "via", topo.external_ip)


def _wait_ready(topo: Topology, procs: Mapping[str, subprocess.Popen[bytes]]) -> None:
    pending = dict(procs)

    def all_ready() -> bool:
        for pod, proc in list(pending.items()):
            log = topo.process_log(proc)
            if "READY" in log.splitlines():
                del pending[pod]
            elif proc.poll() is not None:
                raise RuntimeError(f"echo server of {pod} exited {proc.returncode}: {log}")
        return not pending

    wait_until(
        all_ready,
        what="the echo servers to be ready",
        timeout=_READY_TIMEOUT,
        interval=0.02,
        detail=lambda: f"not ready: {sorted(pending)}",
    )
    # Listening is not the same as reachable: prove the wiring once, from the node, with
    # bounded retries (the first packets also wait for ARP).
    targets = [(ip, port) for ip in topo.pod_ip.values() for port in topo.echo_ports]
    probe = (
        "import socket,sys,time\n"
        f"deadline=time.monotonic()+{_READY_TIMEOUT}\n"
        f"for t in {targets!r}:\n"
        "    while True:\n"
        "        try:\n"
        "            socket.create_connection(t, timeout=0.5).close(); break\n"
        "        except OSError:\n"
        "            if time.monotonic()>deadline: sys.exit(f'unreachable: {t}')\n"
        "            time.sleep(0.05)\n"
    )
    topo.exec(topo.node_ns, *_PY, "-c", probe, timeout=_READY_TIMEOUT + 5)


def build_topology(prefix: str | None = None) -> Topology:
    """Create the namespaces, wire them, start the echo servers; wait until they answer.

    On any failure everything already created is torn down before the error propagates.
    The caller owns the result and must call :meth:`Topology.teardown`
    (or use :func:`topology_context`).
    """
    reason = missing_root_or(*REQUIREMENTS)
    if reason:
        raise PermissionError(reason)
    prefix = prefix or _new_prefix()
    topo = Topology(prefix=prefix, workdir=Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        for ns in topo.namespaces:
            create(ns)
        _wire(topo)
        ports = [f"--port={p}" for p in topo.echo_ports]
        echo = {
            pod: topo.start_process(
                topo.pod_ns[pod],
                [*_PY, str(ECHO_SERVER), f"--name={pod}", *ports],
                log_name=f"echo-{pod}",
            )
            for pod in topo.pods
        }
        _wait_ready(topo, echo)
    except BaseException:
        with contextlib.suppress(Exception):
            topo.teardown()
        raise
    return topo


@contextlib.contextmanager
def topology_context(prefix: str | None = None) -> Iterator[Topology]:
    """``with topology_context() as topo: ...`` - build, yield, always tear down."""
    topo = build_topology(prefix)
    try:
        yield topo
    finally:
        topo.teardown()


def remove_leftovers(prefix: str) -> list[str]:
    """Remove the namespaces and logs of a run that died before its teardown; return the names.

    Processes still inside them (echo servers, a proxy) were started by that run: they are
    stopped by PID first, since a namespace with a live process never really goes away.
    """
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"{prefix!r} is not a topology prefix (pkp-<6 hex>-)")
    removed = names_with_prefix(prefix)
    for ns in removed:
        delete(Netns(ns))
    # The dead run's logs: its work directory is mkdtemp(prefix=prefix) in the temp dir.
    for workdir in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        shutil.rmtree(workdir, ignore_errors=True)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    """``uv run python -m tests.dataplane.topology --list | --remove PREFIX | --hold``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--list", action="store_true", help="show topology namespaces")
    group.add_argument("--remove", metavar="PREFIX", help="remove a dead run's namespaces")
    group.add_argument("--hold", action="store_true", help="build one, wait for Enter, tear down")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(names_with_prefix("pkp-")))
    elif args.remove:
        print("\n".join(remove_leftovers(args.remove)))
    else:
        with topology_context() as topo:
            print(topo)
            input("topology up; press Enter to tear down ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
