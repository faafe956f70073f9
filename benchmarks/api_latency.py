"""Prints how long a change takes from the API server's watch event to the kernel's rules.

A fake API server (tests/support/fake_apiserver.py) holds N Services with one EndpointSlice
each; the real reflector, store, sync loop and iptables syncer program a network namespace made
for the run (tests/support/netns.py). Each of the changes moves one Service's endpoint; the
time until the sync that carries it has written the kernel is recorded. Root needed. Usage:
    uv run python benchmarks/api_latency.py [--services 1000] [--changes 100] [--min-sync 1s]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from pykubeproxy.backends.iptables.backend import IptablesBackend
from pykubeproxy.backends.iptables.kernel import IptablesBinaries, KernelIptables
from pykubeproxy.config import Config, parse_duration
from pykubeproxy.loop import run_sync_loop
from pykubeproxy.pipeline import NodeIdentity
from pykubeproxy.proxy import Proxy, SyncReport
from pykubeproxy.sources.clients import api_client, requesters
from pykubeproxy.sources.kube import KubeSource
from pykubeproxy.store import Store
from tests.support.builders import endpoint_slice, node, service
from tests.support.fake_apiserver import FakeApiServer
from tests.support.netns import namespace


def endpoint_ip(service: int, generation: int) -> str:
    """A fresh address per change (generation < 150), so each one can be told apart."""
    return f"10.{100 + generation}.{service // 250}.{service % 250 + 1}"


def populate(server: FakeApiServer, services: int) -> None:
    server.create("nodes", node("node-1", "192.0.2.10", served=True))
    for i in range(services):
        cluster_ip = f"10.96.{i // 250}.{i % 250 + 1}"
        server.create("services", service(f"svc-{i}", cluster_ip=cluster_ip, served=True))
        server.create(
            "endpointslices",
            endpoint_slice(f"svc-{i}", endpoint_ip(i, 0), name=f"svc-{i}-1", served=True),
        )


def measure(services: int, changes: int, min_sync: float, backend: str) -> list[float]:
    stop = threading.Event()
    with (
        namespace("lat") as ns,
        FakeApiServer(bookmark_interval=5.0) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        try:
            populate(server, services)
            api = api_client(str(server.write_kubeconfig(Path(tmp) / "kubeconfig")), "")
            store = Store()
            kernel = KernelIptables(IptablesBinaries(backend, ns.prefix))
            config = Config(min_sync_period=min_sync, sync_period=3600.0)
            proxy = Proxy(
                backend=IptablesBackend(config, kernel), identity=NodeIdentity("node-1", True)
            )
            landed: dict[str, float] = {}
            landed_event = threading.Condition()

            class Recorder:
                def synced(self, report: SyncReport) -> None:
                    if report.outcome is not None:
                        record(report)

            def record(report: SyncReport) -> None:
                now = time.monotonic()
                with landed_event:
                    for eps in report.state.endpoints.values():
                        for ep in eps:
                            landed.setdefault(ep.ip, now)
                    landed_event.notify_all()

            proxy.observer = Recorder()
            source = KubeSource(request_by_kind=requesters(api, "node-1"), store=store)
            source.start()
            loop = threading.Thread(
                target=run_sync_loop, args=(proxy, store, source), kwargs={"stop": stop}
            )
            loop.start()
            with landed_event:
                landed_event.wait_for(lambda: endpoint_ip(services - 1, 0) in landed, timeout=300)
            latencies = []
            for n in range(1, changes + 1):
                target = (n * 7919) % services
                ip = endpoint_ip(target, n)
                started = time.monotonic()
                server.update(
                    "endpointslices",
                    endpoint_slice(f"svc-{target}", ip, name=f"svc-{target}-1", served=True),
                )
                with landed_event:
                    assert landed_event.wait_for(lambda ip=ip: ip in landed, timeout=60), ip
                    latencies.append(landed[ip] - started)
            return latencies
        finally:
            stop.set()
            try:
                source.stop()
                loop.join(10)
            except NameError:
                pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--min-sync", default="1s", help="--iptables-min-sync-period")
    parser.add_argument("--backend", default="nft")
    args = parser.parse_args()
    if args.changes >= 150:
        parser.error("--changes must stay below 150 (each change gets its own address)")
    latencies = measure(args.services, args.changes, parse_duration(args.min_sync), args.backend)
    print(
        f"{args.services} Services, {args.changes} changes, min-sync-period {args.min_sync}, "
        f"{args.backend}: median {statistics.median(latencies):.3f}s, "
        f"worst {max(latencies):.3f}s, best {min(latencies):.3f}s"
    )


if __name__ == "__main__":
    main()
