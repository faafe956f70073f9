"""The kernel's floors at scale: what iptables itself costs for issue 11's payload.

Root only. Every measurement runs in a network namespace this script creates (`pkp-perf-XXXX`)
and deletes; the host's own tables are never read or written. iptables-legacy is given a lock
file of its own (XTABLES_LOCKFILE), so that a long restore here neither waits for nor blocks
anyone else's iptables on the machine.

For each backend and run, in a fresh namespace:
  full       the complete first-sync payload (what pykubeproxy writes: one
             `iptables-<b>-restore --noflush -w 5`; for nft also the 2 000-rule chunks the project
             uses, each chunk its own process, the sum reported)
  save       `iptables-<b>-save` of the loaded namespace (all tables, one call)
  one chain  `--noflush` rewrite of one KUBE-SVC chain (6 rules) into the loaded table: the floor
             of any partial write
  kp partial what an upstream kube-proxy partial sync writes for one changed Service: every
             top-level chain (filter chains, KUBE-SERVICES, KUBE-NODEPORTS, ...) plus the changed
             Service's SVC and SEP chains
  rewrite    (--rewrite) the complete payload again into the loaded table: today's full sync
  large-cluster comments (--large-cluster-comments RUNS) the full payload, in fresh namespaces,
             without the comments upstream leaves out above 1 000 endpoints (KUBE-SEP rules,
             SVC->SEP jumps), and its save

Times are wall seconds around the whole process (`ip netns exec` included), time.perf_counter.
Usage:
    sudo uv run python benchmarks/restore_floors.py [--services 10000] [--runs 3]
        [--backends legacy nft] [--nft-single] [--rewrite] [--keep-payloads DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster  # benchmarks/cluster.py, beside this file

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.diff import plan_restore
from pykubeproxy.backends.iptables.ruleset import Chain, Ruleset, Table, format_restore
from pykubeproxy.config import Config
from pykubeproxy.model import Protocol, ServicePortName
from pykubeproxy.pipeline import render_options
from pykubeproxy.translate import translate_cluster, translate_node

CHUNK_RULES = 2000
# kube-proxy's "large cluster mode" (more than 1 000 endpoints) leaves the comment out of every
# KUBE-SEP rule and of every KUBE-SVC/SVL rule that jumps to a KUBE-SEP chain.
_COMMENT = re.compile(r"-m comment --comment (?:\"[^\"]*\"|\S+) ")


def large_cluster_form(text: str) -> str:
    """The same payload with the comments kube-proxy drops above 1 000 endpoints dropped."""
    lines = []
    for line in text.split("\n"):
        if line.startswith("-A KUBE-SEP-") or (
            line.startswith(("-A KUBE-SVC-", "-A KUBE-SVL-")) and "-j KUBE-SEP-" in line
        ):
            line = _COMMENT.sub("", line, count=1)
        lines.append(line)
    return "\n".join(lines)


# Seconds for one iptables process (--timeout); nft's one big transaction can take many minutes.
LIMITS = {"timeout": 900.0}


def payloads(services: int) -> dict[str, list[str]]:
    """Each measured payload, as the list of restore inputs written one process each."""
    objects = cluster.generate(services)
    node = translate_node(objects[0])
    state = translate_cluster(
        services=[o for o in objects if o["kind"] == "Service"],
        endpoint_slices=[o for o in objects if o["kind"] == "EndpointSlice"],
        node=node,
    )
    ruleset = render_ruleset(state, render_options(Config(cluster_cidr=cluster.CLUSTER_CIDR), node))
    empty = Ruleset(())
    namespace, name = cluster.service_name(1)
    changed = ServicePortName(namespace, name, "http", Protocol.TCP)
    svc = c.service_chain(changed)
    nat = ruleset.table("nat")
    svc_chain = nat.chain(svc)
    assert svc_chain is not None
    service_chains = {svc, *(r.split()[-1] for r in svc_chain.rules if "KUBE-SEP-" in r)}
    top_level = [
        Table(
            table.name,
            tuple(
                ch
                for ch in table.chains
                if not ch.builtin and (not c.is_service_chain(ch.name) or ch.name in service_chains)
            ),
        )
        for table in ruleset
    ]
    full = list(plan_restore(ruleset, empty, full=True).payloads)
    chunks = list(plan_restore(ruleset, empty, full=True, chunk_rules=CHUNK_RULES).payloads)
    return {
        "full": full,
        "full, nft chunks": chunks,
        "full, large-cluster comments": [large_cluster_form(t) for t in full],
        "full, large-cluster comments, nft chunks": [large_cluster_form(t) for t in chunks],
        "one chain": [format_restore(Ruleset((Table("nat", (Chain(svc, svc_chain.rules),)),)))],
        "kp partial": [format_restore(Ruleset(tuple(top_level)))],
    }


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    name = f"pkp-perf-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def run(ns: str, argv: list[str], stdin: str | None = None) -> tuple[float, str]:
    env = dict(os.environ)
    env["XTABLES_LOCKFILE"] = LOCKFILE
    started = time.perf_counter()
    result = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=LIMITS["timeout"],
        env=env,
        check=False,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr[:500]}")
    return seconds, result.stdout


def restore(ns: str, backend: str, texts: list[str]) -> float:
    return sum(
        run(ns, [f"iptables-{backend}-restore", "--noflush", "-w", "5"], text)[0] for text in texts
    )


def count_rules(saved: str) -> int:
    return sum(1 for line in saved.splitlines() if line.startswith("-A "))


def measure(backend: str, loads: dict[str, list[str]], args: argparse.Namespace) -> list[dict]:
    rows = []
    first = "full, nft chunks" if backend == "nft" else "full"
    for number in range(1, args.runs + 1):
        row: dict[str, object] = {"backend": backend, "run": number}
        with namespace() as ns:
            row[first] = restore(ns, backend, loads[first])
            row["save"], saved = run(ns, [f"iptables-{backend}-save"])
            row["save -t nat"], _ = run(ns, [f"iptables-{backend}-save", "-t", "nat"])
            row["rules in kernel"] = count_rules(saved)
            row["one chain"] = restore(ns, backend, loads["one chain"])
            row["one chain (again)"] = restore(ns, backend, loads["one chain"])
            row["kp partial"] = restore(ns, backend, loads["kp partial"])
            if args.rewrite:
                row["rewrite " + first] = restore(ns, backend, loads[first])
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.large_cluster_comments:
        key = f"{first.replace('full', 'full, large-cluster comments')}"
        for number in range(1, args.large_cluster_comments + 1):
            with namespace() as ns:
                row = {"backend": backend, "run": f"lcm {number}"}
                row[key] = restore(ns, backend, loads[key])
                row["save (large-cluster comments)"], _ = run(ns, [f"iptables-{backend}-save"])
            print(json.dumps(row), flush=True)
            rows.append(row)
    if backend == "nft" and args.nft_single:
        for number in range(1, args.nft_single + 1):
            with namespace() as ns:
                row = {"backend": backend, "run": f"single {number}"}
                try:
                    row["full"] = restore(ns, backend, loads["full"])
                except subprocess.TimeoutExpired:
                    row["full (killed at the timeout)"] = LIMITS["timeout"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> None:
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("backend", "run")]
    print("| backend | figure | runs | min | median | max |")
    print("|---|---|---|---|---|---|")
    for backend in dict.fromkeys(r["backend"] for r in rows):
        for key in keys:
            values = [r[key] for r in rows if r["backend"] == backend and key in r]
            if not values:
                continue
            if key == "rules in kernel":
                print(f"| {backend} | {key} | {len(values)} | {values[0]} | | |")
                continue
            print(
                f"| {backend} | {key} | {len(values)} | {min(values):.3f} | "
                f"{statistics.median(values):.3f} | {max(values):.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", nargs="*", default=["legacy", "nft"])
    parser.add_argument(
        "--nft-single", type=int, default=0, metavar="RUNS", help="also one-transaction nft loads"
    )
    parser.add_argument("--rewrite", action="store_true", help="also rewrite the full payload")
    parser.add_argument(
        "--large-cluster-comments",
        type=int,
        default=0,
        metavar="RUNS",
        help="also load the payload without the comments kube-proxy drops above 1 000 endpoints",
    )
    parser.add_argument(
        "--timeout", type=float, default=LIMITS["timeout"], help="seconds for one iptables process"
    )
    parser.add_argument("--keep-payloads", type=Path, help="write the payloads here")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    LIMITS["timeout"] = args.timeout
    if os.geteuid() != 0:
        sys.exit("root is needed (network namespaces)")
    loads = payloads(args.services)
    for key, texts in loads.items():
        lines = sum(t.count("\n-A ") + t.count("\n-I ") for t in texts)
        print(f"# payload {key}: {len(texts)} restore call(s), {lines} rule lines", flush=True)
        if args.keep_payloads:
            args.keep_payloads.mkdir(parents=True, exist_ok=True)
            for i, text in enumerate(texts):
                name = f"{key.replace(' ', '-').replace(',', '')}-{i:03d}.txt"
                (args.keep_payloads / name).write_text(text, encoding="utf-8")
    rows = []
    try:
        for backend in args.backends:
            rows.extend(measure(backend, loads, args))
    finally:
        Path(LOCKFILE).unlink(missing_ok=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    table(rows)


LOCKFILE = str(Path(tempfile.gettempdir()) / f"pkp-perf-xtables-{os.getpid()}.lock")

if __name__ == "__main__":
    main()
