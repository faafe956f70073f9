"""From API objects to ProxyState at scale (issue 11): decode, translate and memory, in-process.

    uv run python benchmarks/translate_bench.py                 # N = 1 000, 5 000, 10 000
    uv run python benchmarks/translate_bench.py 10000 --gc      # also compare GC policies
    uv run python benchmarks/translate_bench.py --json out.json

Each N runs in fresh processes (so resident memory is that N's own), on benchmarks/cluster.py's
payload (N Services x 5 endpoints, one EndpointSlice each). No kernel, no root.

decode      LIST pages of 500 items as JSON bytes, through the real reflector into a Store:
            `raw` keeps whole objects (as before lean objects), `lean` slims them per page;
            CPU seconds, the collector off as the daemon has it until its first sync.
            `store MiB` is the resident memory the store's objects added (VmRSS after - before).
translate   `reference`: translate as it was before (tests/support/reference_translate.py);
            `cluster`: today's translate_cluster from scratch; `first`: Translator's first sync;
            `change`: Translator after one endpoint of one slice changed (median of 50);
            `noop`: Translator with nothing changed. Times are CPU seconds, best of --repeat,
            with the collector paused as the proxy pauses it during a sync (the GC policy).
            `kept MiB`: resident memory the Translator holds after its first sync.
--gc        decode, first sync and 200 one-endpoint changes under each GC policy (POLICIES),
            with the time spent in collections.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference translate

import cluster  # benchmarks/cluster.py, beside this file

from pykubeproxy.pipeline import NodeIdentity, Translator, resolve_node
from pykubeproxy.proxy import collector_paused
from pykubeproxy.sources.kube import Reflector, Timing
from pykubeproxy.store import Store
from pykubeproxy.translate import translate_cluster

IDENTITY = NodeIdentity(cluster.NODE_NAME, True)
KINDS = ("Node", "Service", "EndpointSlice")
PAGE = 500


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu() -> float:
    return time.process_time()


def best(repeat: int, run: Callable[[], object]) -> float:
    """Best CPU time of `repeat` runs, the collector paused as during a sync."""
    times = []
    for _ in range(repeat):
        with collector_paused():
            started = cpu()
            run()
            times.append(cpu() - started)
        gc.collect()
    return min(times)


# --- the payload as the API server sends it ----------------------------------------------------


def pages(services: int) -> dict[str, list[bytes]]:
    """Each kind's LIST response pages (JSON bytes), as the reflector reads them."""
    by_kind: dict[str, list[dict[str, object]]] = {kind: [] for kind in KINDS}
    for obj in cluster.generate(services):
        item = dict(obj)
        by_kind[str(item.pop("kind"))].append(item)  # LIST items carry no kind
        item.pop("apiVersion")
    encoded: dict[str, list[bytes]] = {}
    for kind, items in by_kind.items():
        chunks = [items[i : i + PAGE] for i in range(0, max(len(items), 1), PAGE)]
        encoded[kind] = [
            json.dumps(
                {
                    "metadata": {
                        "resourceVersion": "5000000",
                        "continue": str(n + 1) if n + 1 < len(chunks) else "",
                    },
                    "items": chunk,
                },
                separators=(",", ":"),
            ).encode()
            for n, chunk in enumerate(chunks)
        ]
    return encoded


class _Page:
    status = 200

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


def list_into(store: Store, kind: str, kind_pages: list[bytes], *, lean: bool) -> None:
    """One LIST through the real reflector (lean), or decoded whole as before (raw)."""
    if not lean:
        items: list[Any] = []
        for data in kind_pages:
            items.extend(json.loads(data)["items"])
        store.replace(kind, items)
        return

    def request(**query: Any) -> _Page:
        return _Page(kind_pages[int(query.get("_continue") or 0)])

    reflector = Reflector(
        kind=kind, request=request, store=store, stop=threading.Event(), timing=Timing(PAGE)
    )
    reflector._list()


def decode(services: int, *, lean: bool, collect: bool = True) -> tuple[Store, float, float]:
    """A store holding the cluster; (store, CPU seconds, MiB of resident memory it added)."""
    encoded = pages(services)
    if collect:
        gc.collect()
    before = rss_mib()
    store = Store()
    started = cpu()
    for kind in KINDS:
        list_into(store, kind, encoded[kind], lean=lean)
    seconds = cpu() - started
    del encoded
    if collect:
        gc.collect()
    return store, seconds, rss_mib() - before


# --- translation ------------------------------------------------------------------------------


def one_endpoint_changed(store: Store, index: int) -> None:
    """The store as after a WATCH event: one endpoint of one slice flips readiness."""
    slices = store.snapshot().endpoint_slices
    obj: Any = copy.deepcopy(slices[index % len(slices)])
    conditions = obj["endpoints"][0]["conditions"]
    conditions["ready"] = not conditions["ready"]
    store.upsert("EndpointSlice", obj)


def translate_figures(store: Store, repeat: int, *, reference: bool) -> dict[str, float]:
    snapshot = store.snapshot()
    node, _ = resolve_node(IDENTITY, snapshot.nodes)
    figures: dict[str, float] = {}

    def fresh(translate: Callable[..., object]) -> Callable[[], object]:
        return lambda: translate(
            services=snapshot.services, endpoint_slices=snapshot.endpoint_slices, node=node
        )

    if reference:
        from support import reference_translate

        figures["reference"] = best(1, fresh(reference_translate.translate_cluster))
    figures["cluster"] = best(repeat, fresh(translate_cluster))
    figures["first"] = best(repeat, lambda: Translator(IDENTITY).translate(snapshot))
    gc.collect()
    before = rss_mib()
    translator = Translator(IDENTITY)
    translator.translate(snapshot)
    gc.collect()
    figures["translator_mib"] = rss_mib() - before  # what it keeps: translations, the state
    changes = []
    for n in range(50):
        one_endpoint_changed(store, n * 37)
        changed = store.snapshot()
        with collector_paused():
            started = cpu()
            translator.translate(changed)
            changes.append(cpu() - started)
        assert translator.translated == 1, translator.translated
    figures["change"] = statistics.median(changes)
    still = store.snapshot()
    figures["noop"] = best(repeat, lambda: translator.translate(still))
    return figures


# --- GC policies ------------------------------------------------------------------------------

# default: the collector left alone. pause: off during each sync only (Proxy does this).
# daemon: what `pykubeproxy` does: off from start through the LIST and the first sync, then one
# collection and gc.freeze() (app._settle_heap), then off during each sync.
POLICIES = ("default", "pause", "daemon")


class GcClock:
    """Time spent in the cyclic collector, and full (generation 2) collections."""

    def __init__(self) -> None:
        self.seconds, self.full, self._started = 0.0, 0, 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.full += info["generation"] == 2

    def take(self) -> tuple[float, int]:
        taken = (self.seconds, self.full)
        self.seconds, self.full = 0.0, 0
        return taken


def gc_policy_run(services: int, policy: str) -> dict[str, float]:
    """Decode, first sync and 200 one-endpoint changes with the collector on, under one policy."""
    clock = GcClock()
    if policy == "daemon":
        gc.disable()
    store, decode_seconds, _ = decode(services, lean=True, collect=False)
    decode_gc, _ = clock.take()
    translator = Translator(IDENTITY)

    def sync() -> None:
        if policy == "default":
            translator.translate(store.snapshot())
            return
        with collector_paused():
            translator.translate(store.snapshot())

    started = cpu()
    sync()
    first = cpu() - started
    first_gc, first_full = clock.take()
    started = cpu()
    if policy == "daemon":
        gc.collect()
        gc.freeze()
        gc.enable()
    settle = cpu() - started
    clock.take()
    latencies = []
    started = cpu()
    for n in range(200):
        one_endpoint_changed(store, n * 37)
        began = time.perf_counter()
        sync()
        latencies.append(time.perf_counter() - began)
    changes_cpu = cpu() - started
    changes_gc, changes_full = clock.take()
    latencies.sort()
    return {
        "decode": decode_seconds,
        "decode_gc": decode_gc,
        "first": first,
        "first_gc": first_gc,
        "first_full": first_full,
        "settle": settle,
        "changes_cpu": changes_cpu,
        "changes_gc": changes_gc,
        "changes_full": changes_full,
        "change_median_ms": 1000 * latencies[100],
        "change_p99_ms": 1000 * latencies[197],
    }


# --- driver -----------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    services, what = args.child
    if what.startswith("gc:"):
        result: dict[str, Any] = gc_policy_run(int(services), what[3:])
    else:
        with collector_paused():  # as the daemon lists: the collector off until it has synced
            store, seconds, mib = decode(int(services), lean=what == "lean")
        result = {"decode": seconds, "store_mib": mib}
        if what == "lean":
            result.update(translate_figures(store, args.repeat, reference=args.reference))
    print(json.dumps(result))


def run_child(services: int, what: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(services), what, "--repeat"]
    command += [str(args.repeat)] + ([] if args.reference else ["--no-reference"])
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("services", nargs="*", type=int, default=[1000, 5000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gc", action="store_true", help="compare GC policies too")
    parser.add_argument("--no-reference", dest="reference", action="store_false")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results: dict[str, Any] = {}
    print(
        f"{'N':>6} | {'decode raw':>10} {'lean':>6} | {'store MiB raw':>13} {'lean':>6} | "
        f"{'translate ref':>13} {'cluster':>8} {'first':>7} {'change':>9} {'noop':>9} | "
        f"{'kept MiB':>8}"
    )
    for services in args.services:
        raw, lean = run_child(services, "raw", args), run_child(services, "lean", args)
        results[str(services)] = {"raw": raw, "lean": lean}
        ref = f"{lean['reference']:13.3f}" if "reference" in lean else f"{'-':>13}"
        print(
            f"{services:>6} | {raw['decode']:10.3f} {lean['decode']:6.3f} | "
            f"{raw['store_mib']:13.1f} {lean['store_mib']:6.1f} | {ref} {lean['cluster']:8.3f} "
            f"{lean['first']:7.3f} {1000 * lean['change']:7.2f}ms {1000 * lean['noop']:7.2f}ms | "
            f"{lean['translator_mib']:8.1f}"
        )
    if args.gc:
        print("\nGC policies (collector on; CPU s; gc = time in collections, full = gen-2 runs)")
        for services in args.services:
            for policy in POLICIES:
                r = run_child(services, f"gc:{policy}", args)
                results.setdefault("gc", {})[f"{services}/{policy}"] = r
                print(
                    f"{services:>6} {policy:>13}: decode {r['decode']:.2f} "
                    f"(gc {r['decode_gc']:.2f}) | first sync {r['first']:.3f} "
                    f"(gc {r['first_gc']:.3f}, "
                    f"{r['first_full']} full) | settle {r['settle']:.3f} | "
                    f"200 changes {r['changes_cpu']:.2f} "
                    f"(gc {r['changes_gc']:.3f}, {r['changes_full']} full), median "
                    f"{r['change_median_ms']:.1f} ms, p99 {r['change_p99_ms']:.1f} ms"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
