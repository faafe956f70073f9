"""Where the pure iptables path spends its time and memory at scale (issue 11's payload).

Phases, one fresh process per N (so that each N's peak RSS is its own), one run each:
    uv run python benchmarks/profile_render.py phases 1000 5000 10000
cProfile of translate + render + format_restore, top functions by tottime and by cumtime:
    uv run python benchmarks/profile_render.py profile 10000 [--top 25] [--save out.prof]

Phases timed (in-process, time.perf_counter), after the parent wrote the JSON List
(benchmarks/cluster.py): read_manifests (JSON decode), Store.replace + snapshot,
translate_cluster, render_ruleset, format_restore, plan_restore against an empty kernel and
against an identical one (parse_save of the same rules as iptables-save would print them; the
no-op diff). With --save-text DIR
the restore text is kept (restore-N.txt) for the kernel floors.
No kernel, no root: everything here is the pure core.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster  # benchmarks/cluster.py, beside this file

from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.backend import render_options
from pykubeproxy.backends.iptables.diff import plan_restore
from pykubeproxy.backends.iptables.render import RenderOptions
from pykubeproxy.backends.iptables.ruleset import Ruleset, format_restore, parse_save
from pykubeproxy.config import Config
from pykubeproxy.model import ProxyState
from pykubeproxy.pipeline import NodeIdentity, resolve_node
from pykubeproxy.sources.files import read_manifests
from pykubeproxy.store import Snapshot, Store
from pykubeproxy.translate import translate_cluster

T = TypeVar("T")
IDENTITY = NodeIdentity(cluster.NODE_NAME, True)
CONFIG = Config(cluster_cidr=cluster.CLUSTER_CIDR)


def rss_mib() -> float:
    """Resident memory now (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_text(ruleset: Ruleset) -> str:
    """The ruleset as `iptables-save` prints it (what a full sync parses), all chains appended."""
    lines = []
    for table in ruleset:
        lines.append(f"*{table.name}")
        lines.extend(f":{ch.name} {'ACCEPT' if ch.builtin else '-'} [0:0]" for ch in table.chains)
        lines.extend(f"-A {ch.name} {rule}" for ch in table.chains for rule in ch.rules)
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


class Phases:
    """Times each phase as the daemon would run them: back to back, the collector left alone.

    The cyclic garbage collector's pauses are counted inside the phase they fall in, and also
    reported on their own (gc_s), because at 10 000 Services they are a large share.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []
        self._gc_seconds = 0.0
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_seconds += time.perf_counter() - self._gc_started

    def run(self, name: str, action: Callable[[], T]) -> T:
        gc_before = self._gc_seconds
        started = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - started
        self.rows.append(
            {
                "phase": name,
                "seconds": round(seconds, 3),
                "gc_s": round(self._gc_seconds - gc_before, 3),
                "rss_mib": rss_mib(),
            }
        )
        return result


def snapshot_of(path: Path) -> Snapshot:
    manifests = read_manifests([path])
    store = Store()
    for kind, objects in manifests.objects.items():
        store.replace(kind, objects)
    return store.snapshot()


def translate(snapshot: Snapshot) -> tuple[ProxyState, RenderOptions]:
    node, _ = resolve_node(IDENTITY, snapshot.nodes)
    state = translate_cluster(
        services=snapshot.services, endpoint_slices=snapshot.endpoint_slices, node=node
    )
    return state, render_options(CONFIG, node)


def phases(services: int, path: Path, keep_text: Path | None) -> dict[str, object]:
    p = Phases()
    start_rss = rss_mib()
    manifests = p.run("read_manifests (JSON decode)", lambda: read_manifests([path]))

    def fill() -> Snapshot:
        store = Store()
        for kind, objects in manifests.objects.items():
            store.replace(kind, objects)
        return store.snapshot()

    snapshot = p.run("Store.replace + snapshot", fill)
    state, opts = p.run("translate_cluster", lambda: translate(snapshot))
    ruleset = p.run("render_ruleset", lambda: render_ruleset(state, opts))
    text = p.run("format_restore", lambda: format_restore(ruleset))
    empty = Ruleset(())
    p.run("plan_restore vs empty", lambda: plan_restore(ruleset, empty))
    p.run(
        "plan_restore vs empty, nft chunks",
        lambda: plan_restore(ruleset, empty, chunk_rules=2000),
    )
    saved = save_text(ruleset)
    actual = p.run("parse_save (same rules)", lambda: parse_save(saved))
    noop = p.run("plan_restore vs identical", lambda: plan_restore(ruleset, actual))
    assert not noop.payloads, "the no-op diff wrote something"
    if keep_text is not None:
        keep_text.mkdir(parents=True, exist_ok=True)
        (keep_text / f"restore-{services}.txt").write_text(text, encoding="utf-8")
    nat = ruleset.table("nat")
    return {
        "services": services,
        "service_ports": len(state.services),
        "nat_rules": nat.rule_count,
        "nat_chains": len(nat.chains),
        "expected_nat_rules": cluster.expected(services).nat_rules,
        "restore_bytes": len(text),
        "json_bytes": path.stat().st_size,
        "start_rss_mib": round(start_rss, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "phases": p.rows,
    }


def run_phases(args: argparse.Namespace) -> None:
    if args.child is not None:
        print(json.dumps(phases(args.services[0], args.child, args.save_text)))
        return
    results = []
    for n in args.services:
        with tempfile.TemporaryDirectory(prefix="pkp-bench-") as tmp:
            # Written here, so that the child's peak RSS is the proxy's path alone.
            started = time.perf_counter()
            path = cluster.write(n, Path(tmp))
            generated = time.perf_counter() - started
            argv = [sys.executable, __file__, "phases", str(n), "--child", str(path)]
            if args.save_text:
                argv += ["--save-text", str(args.save_text)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.splitlines()[-1])
        result["generate_seconds"] = round(generated, 3)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_phases(results)


def print_phases(results: list[dict[str, object]]) -> None:
    names = [row["phase"] for row in results[0]["phases"]]  # type: ignore[index]
    title = "phase: seconds (of which GC) RSS after"
    width = max(len(title), *(len(str(n)) for n in names))
    head = " | ".join(f"{r['services']:>19} svc" for r in results)
    print(f"| {title:<{width}} | {head} |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 25 for _ in results) + "|")
    for i, name in enumerate(names):
        cells = []
        for r in results:
            row = r["phases"][i]  # type: ignore[index]
            cells.append(f"{row['seconds']:>6.3f} ({row['gc_s']:.2f}) {row['rss_mib']:>4.0f}M")
        print(f"| {name:<{width}} | " + " | ".join(cells) + " |")
    for key in (
        "service_ports",
        "nat_rules",
        "expected_nat_rules",
        "nat_chains",
        "restore_bytes",
        "json_bytes",
        "full_rewrite_chains",
        "start_rss_mib",
        "peak_rss_mib",
        "generate_seconds",
    ):
        print(f"| {key:<{width}} | " + " | ".join(f"{r[key]:>23}" for r in results) + " |")


def run_profile(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pkp-bench-") as tmp:
        snapshot = snapshot_of(cluster.write(args.services, Path(tmp)))
    gc.collect()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    state, opts = translate(snapshot)
    text = format_restore(render_ruleset(state, opts))
    profiler.disable()
    wall = time.perf_counter() - started
    print(
        f"translate + render + format_restore of {args.services} Services under cProfile: "
        f"{wall:.2f} s, {len(text)} bytes"
    )
    if args.save:
        profiler.dump_stats(args.save)
    stats = pstats.Stats(profiler)
    for key in ("tottime", "cumtime"):
        print(f"\ntop {args.top} by {key}")
        print(f"| {'function':<58} | {'calls':>9} | {'tottime':>7} | {'cumtime':>7} |")
        print(f"|{'-' * 60}|{'-' * 11}|{'-' * 9}|{'-' * 9}|")
        entries = sorted(
            stats.stats.items(),  # type: ignore[attr-defined]
            key=lambda item: item[1][2] if key == "tottime" else item[1][3],
            reverse=True,
        )
        for (filename, line, func), (_, calls, tottime, cumtime, _) in entries[: args.top]:
            where = f"{short(filename)}:{line}:{func}"[-58:]
            print(f"| {where:<58} | {calls:>9} | {tottime:>7.3f} | {cumtime:>7.3f} |")


def short(filename: str) -> str:
    if "pykubeproxy/" in filename:
        return filename[filename.index("pykubeproxy/") + len("pykubeproxy/") :]
    return os.path.basename(filename) or filename


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ph = sub.add_parser("phases", help="time each phase, one process per N")
    ph.add_argument("services", type=int, nargs="*", default=[1000, 5000, 10000])
    ph.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # the JSON List to read
    ph.add_argument("--json", type=Path, help="also write the figures here")
    ph.add_argument("--save-text", type=Path, help="keep restore-N.txt here (for kernel floors)")
    pr = sub.add_parser("profile", help="cProfile translate + render + format_restore")
    pr.add_argument("services", type=int, nargs="?", default=10_000)
    pr.add_argument("--top", type=int, default=25)
    pr.add_argument("--save", type=Path, help="write the raw profile (pstats) here")
    args = parser.parse_args()
    if args.command == "phases":
        run_phases(args)
    else:
        run_profile(args)


if __name__ == "__main__":
    main()
