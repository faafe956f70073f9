"""LIST of a large cluster from the fake API server (TLS): wall time and memory of decoding it.

Root only (a network namespace of its own, `pkp-list-XXXXXXXX`, deleted afterwards):

    uv run python benchmarks/list_bench.py --services 10000 --runs 3

The fake API server (benchmarks/scale_api.py: the tests' FakeApiServer over TLS with client
certificates) holds the Node, N Services and N EndpointSlices of benchmarks/cluster.py. A fresh
Python process in the same namespace connects as the daemon does (`connect()`: kubeconfig,
urllib3) and LISTs every kind once through the reflectors' own code (pages of 500, slimmed as
each page is decoded, into the store). It reports the LIST's wall time, RSS before it (after
the imports), the peak RSS during it (VmHWM) and RSS after it. The store must not hold two
copies of the cluster: the peak stays close to what is kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kubeconfig: str) -> None:
    """Inside the namespace: connect, LIST once, print the figures as one JSON line."""
    started = time.monotonic()
    from pykubeproxy.sources.clients import connect
    from pykubeproxy.sources.listing import list_once
    from pykubeproxy.store import Store

    imported = time.monotonic()
    connection = connect(kubeconfig, "", "node-1")
    store = Store()
    before = _status_mib("VmRSS")
    began = time.monotonic()
    list_once(connection.request_by_kind, store, server=connection.server)
    wall = time.monotonic() - began
    snapshot = store.snapshot()
    print(
        json.dumps(
            {
                "import_seconds": imported - started,
                "list_seconds": wall,
                "services": len(snapshot.services),
                "endpoint_slices": len(snapshot.endpoint_slices),
                "rss_before_mib": before,
                "rss_peak_mib": _status_mib("VmHWM"),
                "rss_after_mib": _status_mib("VmRSS"),
            }
        )
    )


def measure(services: int, runs: int) -> list[dict[str, float]]:
    from tests.support.netns import namespace

    results = []
    with namespace("list") as ns, tempfile.TemporaryDirectory(prefix="pkp-list-") as workdir:
        kubeconfig = Path(workdir) / "kubeconfig"
        api = subprocess.Popen(
            [
                *ns.prefix,
                sys.executable,
                str(HERE / "scale_api.py"),
                "--services",
                str(services),
                "--kubeconfig",
                str(kubeconfig),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert api.stdout is not None
            ready = json.loads(api.stdout.readline())
            assert ready.get("ready"), ready
            for _ in range(runs):
                out = ns.exec(sys.executable, __file__, "--child", str(kubeconfig), timeout=600)
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        finally:
            assert api.stdin is not None
            api.stdin.close()
            api.wait(30)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, nargs="+", default=[10000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    print("N       objects  LIST (median)  RSS before  peak during  after   (MiB; median of runs)")
    for n in args.services:
        runs = measure(n, args.runs)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{n:<7} {int(med['services'] + med['endpoint_slices']):>7}  "
            f"{med['list_seconds']:>10.2f} s  {med['rss_before_mib']:>10.1f}  "
            f"{med['rss_peak_mib']:>11.1f}  {med['rss_after_mib']:>5.1f}"
        )
        print("  runs:", json.dumps(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
