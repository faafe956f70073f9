"""Prints how long iptables syncs take: full and no-op, for the examples and N generated Services.

Runs as root inside a network namespace it creates and deletes. Usage:
    uv run python benchmarks/iptables_sync.py [--services 1000 5000] [--endpoints 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import time

from pykubeproxy.backends.iptables.backend import IptablesBackend
from pykubeproxy.backends.iptables.kernel import IptablesBinaries, KernelIptables, count_rules
from pykubeproxy.config import Config
from pykubeproxy.model import Endpoint, ProxyState
from tests.support.builders import port_name, proxy_state, service_port
from tests.support.netns import namespace
from tests.support.rendering import examples_state

FIRST_ENDPOINT = ipaddress.IPv4Address("10.100.0.1")
CONFIG = Config(cluster_cidr="10.244.0.0/16")


def generated(services: int, endpoints: int) -> ProxyState:
    entries = []
    for i in range(services):
        name = port_name(f"svc{i}", namespace=f"ns{i % 50}")
        ip = f"10.96.{i // 250}.{i % 250 + 1}"
        node_port = 30000 + i if i % 10 == 0 else 0
        first = int(FIRST_ENDPOINT) + i * endpoints
        backends = [Endpoint(str(ipaddress.IPv4Address(first + j)), 8080) for j in range(endpoints)]
        entries.append((service_port(name, ip, node_port=node_port), backends))
    return proxy_state(*entries, sort=True)


def measure(label: str, backend: str, state: ProxyState) -> None:
    with namespace("bench") as ns:
        kernel = KernelIptables(IptablesBinaries(backend, ns.prefix))
        syncer = IptablesBackend(CONFIG, kernel)
        started = time.perf_counter()
        ruleset = syncer.render(state)
        render = time.perf_counter() - started
        started = time.perf_counter()
        first = syncer.sync(state)
        full = time.perf_counter() - started
        started = time.perf_counter()
        second = syncer.sync(state)
        noop = time.perf_counter() - started
        assert first.wrote and not second.wrote
        print(
            f"{label:>22} {backend:>6}: rules={count_rules(ruleset):>7} render={render:6.3f}s "
            f"full sync={full:7.3f}s no-op sync={noop:6.3f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, nargs="*", default=[1000])
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--backends", nargs="*", default=["legacy", "nft"])
    args = parser.parse_args()
    for backend in args.backends:
        measure("examples", backend, examples_state())
        for n in args.services:
            measure(f"{n} svc x {args.endpoints} ep", backend, generated(n, args.endpoints))


if __name__ == "__main__":
    main()
