"""Owns the churn-and-outage soak: the daemon against a fake API server that misbehaves.

The fake API server (TLS, in the node's namespace) serves thousands of Services. A driver
changes endpoints, adds and deletes Services at a steady rate; between stretches of churn the
server misbehaves in one of the ways a real one does (every watch dropped, 410 Gone, a watch
gone silent, LISTs failing with 500, the server away for a while). A watcher reads the node's
nat table all along and holds the daemon to its promises:

- never a partial view: a Service the kernel has shown never disappears while its object exists;
- convergence: after each disturbance (churn paused), the kernel holds exactly the API's
  Services and endpoints within a bound;
- flat memory: RSS after the warm-up does not grow;
- it keeps running, and stops cleanly (exit 0) on SIGTERM.

The run itself is tests/support/soak_run.py; tests/api/test_soak.py bounds it for CI and
benchmarks/soak.py runs it longer and prints figures.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import netns as pyroute2_netns

from tests.support.builders import endpoint_slice, service
from tests.support.fake_apiserver import FakeApiServer
from tests.support.netns import Netns

NODE_IP = "192.0.2.10"
CLUSTER_CIDR = "10.244.0.0/14"
SERVICE_BASE = int(ipaddress.IPv4Address("10.96.0.16"))
POD_BASE = int(ipaddress.IPv4Address("10.244.0.0"))
METRICS_PORT = 10249
DISTURBANCES = ("drop", "gone", "stall", "list-500", "outage")
RESOURCES = ("services", "endpointslices", "nodes")


@dataclass(frozen=True)
class SoakSettings:
    services: int = 2000
    duration: float = 150.0  # seconds of churn and disturbances after the first sync
    rate: float = 10.0  # API writes per second while churning
    min_sync_period: float = 1.0
    churn: tuple[float, float] = (5.0, 10.0)  # seconds of plain churn before each disturbance
    outage: tuple[float, float] = (5.0, 20.0)  # seconds the server is away
    stall: tuple[float, float] = (3.0, 8.0)  # seconds a watch stays silent
    warm_up: float = 20.0  # RSS is compared with its value this long after the first sync
    converge_timeout: float = 60.0
    backend: str = "legacy"
    seed: int = 12


# --- what the API holds -----------------------------------------------------------------------


def cluster_ip(index: int) -> str:
    return str(ipaddress.IPv4Address(SERVICE_BASE + index))


class ApiModel:
    """The Services the driver has put in the API: index -> endpoint addresses, and history."""

    def __init__(self, api: FakeApiServer, rng: random.Random) -> None:
        self.api, self.rng = api, rng
        self.endpoints: dict[int, tuple[str, ...]] = {}
        self.deleted_at: dict[str, float] = {}  # cluster IP -> when its delete was sent
        self.lock = threading.Lock()
        self._next_index = 0
        self._next_pod = 0
        self.writes: dict[str, int] = defaultdict(int)

    def _pods(self, count: int) -> tuple[str, ...]:
        first, self._next_pod = self._next_pod, self._next_pod + count
        return tuple(str(ipaddress.IPv4Address(POD_BASE + n)) for n in range(first, first + count))

    def _slice(self, index: int, pods: tuple[str, ...]) -> dict[str, Any]:
        return endpoint_slice(f"svc-{index}", *pods, name=f"svc-{index}-1", served=True)

    def add(self) -> None:
        index, self._next_index = self._next_index, self._next_index + 1
        pods = self._pods(self.rng.randint(1, 3))
        self.api.create(
            "services", service(f"svc-{index}", cluster_ip=cluster_ip(index), served=True)
        )
        with self.lock:
            self.endpoints[index] = pods
        self.api.create("endpointslices", self._slice(index, pods))
        self.writes["add"] += 1

    def delete(self) -> None:
        with self.lock:
            index = self.rng.choice(list(self.endpoints))
            del self.endpoints[index]
            self.deleted_at[cluster_ip(index)] = time.monotonic()
        self.api.delete("services", "default", f"svc-{index}")
        self.api.delete("endpointslices", "default", f"svc-{index}-1")
        self.writes["delete"] += 1

    def move_endpoint(self) -> None:
        with self.lock:
            index = self.rng.choice(list(self.endpoints))
            pods = self.endpoints[index]
            kept = tuple(p for p in pods if p != self.rng.choice(pods))
            pods = kept + self._pods(1)
            self.endpoints[index] = pods
        self.api.update("endpointslices", self._slice(index, pods))
        self.writes["endpoint"] += 1

    def step(self) -> None:
        """One write of the churn: mostly endpoint moves, some Services added and deleted."""
        roll = self.rng.random()
        if roll < 0.15:
            self.add()
        elif roll < 0.3 and len(self.endpoints) > 1:
            self.delete()
        else:
            self.move_endpoint()

    def expected(self) -> dict[str, frozenset[str]]:
        with self.lock:
            return {cluster_ip(i): frozenset(pods) for i, pods in self.endpoints.items()}

    def deleted_before(self, ip: str, moment: float) -> bool:
        with self.lock:
            at = self.deleted_at.get(ip)
        return at is not None and at <= moment


# --- what the kernel holds ----------------------------------------------------------------------

_SERVICE_JUMP = re.compile(r"-d (\S+)/32 .*-j (KUBE-SVC-\w+)")
_ENDPOINT_JUMP = re.compile(r"-j (KUBE-SEP-\w+)")
_DNAT = re.compile(r"--to-destination (\S+):\d+")


def kernel_view(saved: str) -> dict[str, frozenset[str]]:
    """Cluster IP -> the endpoint addresses its chains DNAT to, from `iptables-save -t nat`."""
    chains: dict[str, list[str]] = defaultdict(list)
    for line in saved.splitlines():
        if line.startswith("-A "):
            chain, _, rule = line[3:].partition(" ")
            chains[chain].append(rule)
    view = {}
    for rule in chains.get("KUBE-SERVICES", ()):
        jump = _SERVICE_JUMP.search(rule)
        if jump is None:
            continue
        addresses = set()
        for svc_rule in chains.get(jump.group(2), ()):
            sep = _ENDPOINT_JUMP.search(svc_rule)
            for sep_rule in chains.get(sep.group(1), ()) if sep else ():
                dnat = _DNAT.search(sep_rule)
                if dnat:
                    addresses.add(dnat.group(1))
        view[jump.group(1)] = frozenset(addresses)
    return view


@dataclass
class KernelWatch:
    """Reads the nat table in a loop; records every Service that vanished while it existed."""

    read: Callable[[], str]
    model: ApiModel
    first_seen: dict[str, float] = field(default_factory=dict)
    vanished: list[str] = field(default_factory=list)
    reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def look(self) -> dict[str, frozenset[str]]:
        """One read; the loop and the convergence timer both call it."""
        started = time.monotonic()
        view = kernel_view(self.read())
        with self.lock:
            self._account(view, started)
        return view

    def _account(self, view: dict[str, frozenset[str]], started: float) -> None:
        self.reads += 1
        for ip in view:
            self.first_seen.setdefault(ip, started)
        for ip, since in self.first_seen.items():
            gone = ip not in view and since < started
            if gone and not self.model.deleted_before(ip, started):
                self.vanished.append(f"{ip} missing at t={started:.2f}")

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            self.look()


# --- the daemon and its node ----------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def inside(ns: Netns) -> Iterator[None]:
    """Run this thread's next lines in `ns` (sockets opened here stay there)."""
    pyroute2_netns.pushns(ns.name)
    try:
        yield
    finally:
        pyroute2_netns.popns()


def fetch_metrics(ns: Netns) -> str:
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    with inside(ns), urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of one metric family: the label text (or "") -> value."""
    values = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            labels = head[len(name) :]
            if labels[:1] in ("", "{"):
                values[labels] = float(value)
    return values


def daemon_argv(kubeconfig: Path, settings: SoakSettings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pykubeproxy",
        "--kubeconfig",
        str(kubeconfig),
        "--hostname-override",
        "node-1",
        "--cluster-cidr",
        CLUSTER_CIDR,
        "--iptables-backend",
        settings.backend,
        "--iptables-min-sync-period",
        f"{int(settings.min_sync_period * 1000)}ms",
        "--metrics-bind-address",
        f"127.0.0.1:{METRICS_PORT}",
        "--healthz-bind-address",
        "127.0.0.1:10256",
    ]


def log_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events
