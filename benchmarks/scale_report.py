"""Tables of `scale.py`: figures next to their kernel floors, ratios and issue 11's targets."""
# ruff: noqa: RUF001  (the multiplication sign of the ratios is meant)

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSONDict = dict[str, Any]
KUBE_PROXY_START_TO_RULES = 12.1  # seconds, upstream at 10 000 Services, legacy (issue 11)
RSS_TARGET_MIB = 150.0
CPU_TARGET = 1.0


def num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} s" if value < 1 else f"{value:.2f} s"


def med(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def brief(change: JSONDict) -> str:
    if "error" in change:
        return str(change["error"])
    parts = [f"-> kernel {secs(change.get('latency'))}"]
    if "detection" in change:
        parts.append(f"(file noticed after {secs(change['detection'])}, net {secs(change['net'])})")
    sync = change.get("sync") or {}
    parts.append(f"sync {secs(sync.get('seconds'))}, chains_written {sync.get('chains_written')}")
    return " ".join(parts)


def written_note(sync: JSONDict) -> str:
    """Chains a sync wrote, marked when it was a full sync (a periodic one the change met)."""
    written = str(sync.get("chains_written"))
    return written + (" (full sync)" if sync.get("full") else "")


def brief_quiet(q: JSONDict) -> str:
    written = [s.get("chains_written") for s in q["syncs"]]
    return (
        f"{q['window']:.0f} s: CPU {q['cpu_self']:.2f} s self + {q['cpu_children']:.2f} s "
        f"children; {len(q['syncs'])} sync(s) writing {written} chains"
    )


@dataclass
class Row:
    services: int
    figure: str
    value: str
    floor: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


def ratio(value: float | None, floor: float | None) -> str:
    if value is None or not floor:
        return ""
    return f"{value / floor:.2f}×"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "**not met**")


def _changes(result: JSONDict, source: str, what: str) -> list[JSONDict]:
    return [c for c in (result.get(source) or {}).get("changes", []) if c["what"] == what]


def rows(result: JSONDict) -> list[Row]:
    n = result["services"]
    backend = result["backend"]
    once = result["once"]
    out: list[Row] = []
    floor_full = med(once["floor_full"])
    floor_save = med(once["save"])
    floor_chain = med(once["one_chain"])
    first = once["first"]
    wall = med([f["wall"] for f in first])
    sync = med([f["seconds"] for f in first])
    chunking = "" if backend == "legacy" else f", {result['payload']['restore_calls']} chunks"
    floor_label = f"{secs(floor_full)} bare restore{chunking}"

    # Issue 11: process start → all rules ≤ kube-proxy's 12.1 s, measured from the API server at
    # 10 000 Services on iptables-legacy: checked on the daemon fed by the (fake) API server.
    start_target = ""
    if backend == "legacy" and n >= 10_000:
        start_target = f"≤ {KUBE_PROXY_START_TO_RULES} s (kube-proxy)"
    out.append(
        Row(
            n,
            "start → all rules (`--once` wall)",
            secs(wall),
            floor_label,
            ratio(wall, floor_full),
        )
    )
    ok = None if sync is None or floor_full is None else sync <= 1.1 * floor_full
    out.append(
        Row(
            n,
            "first full sync (its log `seconds`)",
            secs(sync),
            floor_label,
            ratio(sync, floor_full),
            "≤ 1.1× floor",
            verdict(ok),
        )
    )
    phases: dict[str, list[float]] = {}
    for f in first:
        for key, value in (f.get("phases") or {}).items():
            phases.setdefault(key, []).append(value)
    wanted = [
        "seconds_decode",
        "seconds_translate",
        "seconds_render",
        "seconds_read",
        "seconds_write",
    ]
    shown = [*wanted, *sorted(k for k in phases if k not in wanted)]
    split = ", ".join(f"{k.removeprefix('seconds_')} {num(med(phases.get(k, [])))}" for k in shown)
    out.append(Row(n, "  phases of that sync (s)", split))

    restart = once["restart"]
    r_wall = med([r["wall"] for r in restart])
    written = [r["chains_written"] for r in restart]
    out.append(
        Row(
            n,
            "restart on a programmed node (`--once` wall)",
            secs(r_wall),
            f"{secs(floor_save)} iptables-{backend}-save",
            ratio(r_wall, floor_save),
            "≈ kernel read + diff",
        )
    )
    ok = None if not written or None in written else all(w == 0 for w in written)
    out.append(
        Row(
            n,
            "  chains written by that restart",
            ", ".join(map(str, written)),
            target="0",
            met=verdict(ok),
        )
    )

    chain_label = f"{secs(floor_chain)} one-chain restore"
    for source, title in (("api", "API"), ("files", "files")):
        part = result.get(source)
        if part is None:
            continue
        if "error" in part:
            out.append(Row(n, f"daemon ({title})", f"failed: {part['error'][:80]}"))
            continue
        start = part.get("start") or {}
        started = start.get("start_to_synced")
        start_ok = None
        if start_target and source == "api" and isinstance(started, float):
            start_ok = started <= KUBE_PROXY_START_TO_RULES
        out.append(
            Row(
                n,
                f"daemon ({title}): start → first sync done",
                secs(started),
                target=start_target if start_ok is not None else "",
                met=verdict(start_ok),
            )
        )
        for what, label in (
            ("endpoint", "one endpoint changed"),
            ("add", "one Service added"),
            ("delete", "one Service deleted"),
        ):
            changes = _changes(result, source, what)
            if not changes:
                continue
            failed = [c for c in changes if "latency" not in c]
            if failed:
                out.append(Row(n, f"daemon ({title}): {label}", failed[0].get("error", "failed")))
                continue
            key = "net" if source == "files" and all("net" in c for c in changes) else "latency"
            value = med([c[key] for c in changes])
            ok = None if value is None or not floor_chain else value <= 1.2 * floor_chain
            note = " → kernel" + (" (after the file was read)" if key == "net" else "")
            runs = f" (median of {len(changes)})" if len(changes) > 1 else ""
            out.append(
                Row(
                    n,
                    f"daemon ({title}): {label}{note}{runs}",
                    secs(value),
                    chain_label,
                    ratio(value, floor_chain),
                    "≤ 1.2× floor",
                    verdict(ok),
                )
            )
            if key == "net":
                out.append(
                    Row(
                        n,
                        "  from the rename (file poll included)",
                        secs(med([c["latency"] for c in changes])),
                        f"poll delay {secs(med([c['detection'] for c in changes]))}",
                    )
                )
            s_sec = med([(c.get("sync") or {}).get("seconds") for c in changes])
            s_written = [written_note(c.get("sync") or {}) for c in changes]
            out.append(
                Row(
                    n,
                    "  its sync (log `seconds`; chains written)",
                    f"{secs(s_sec)}; {', '.join(s_written)}",
                    chain_label,
                    ratio(s_sec, floor_chain),
                )
            )
        stream = part.get("stream")
        if stream:
            label = (
                f"daemon ({title}): {stream['changes']} endpoint changes at "
                f"{stream['rate_asked']:g}/s (applied at {num(stream.get('rate_applied'), 1)}/s), "
                "event → kernel"
            )
            out.append(
                Row(
                    n,
                    label + " median",
                    secs(stream["median"]),
                    chain_label,
                    ratio(stream["median"], floor_chain),
                )
            )
            out.append(
                Row(
                    n,
                    "  p99 (seen " + f"{stream['seen']}/{stream['changes']})",
                    secs(stream["p99"]),
                    chain_label,
                    ratio(stream["p99"], floor_chain),
                )
            )
        q = part.get("quiet")
        if q:
            writes = [s.get("chains_written") for s in q["syncs"]]
            ok = all(w == 0 for w in writes)  # no sync at all wrote nothing either
            value = (
                f"{len(writes)} sync(s), chains written {writes}"
                if writes
                else f"no sync in {q['window']:.0f} s"
            )
            out.append(
                Row(
                    n,
                    f"daemon ({title}): periodic syncs, nothing changed",
                    value,
                    target="write nothing",
                    met=verdict(ok),
                )
            )
            total = q["cpu_per_minute_total"]
            scaled = (
                ""
                if abs(q["window"] - 60) < 1
                else f", {q['window']:.0f} s window ×{60 / q['window']:.2f}"
            )
            out.append(
                Row(
                    n,
                    f"daemon ({title}): CPU over a quiet minute",
                    f"{total:.2f} s ({q['cpu_per_minute_self']:.2f} daemon + "
                    f"{total - q['cpu_per_minute_self']:.2f} its children{scaled})",
                    target=f"≤ {CPU_TARGET:g} s",
                    met=verdict(total <= CPU_TARGET),
                )
            )
        mem = part.get("memory") or {}
        steady = (q or {}).get("rss_steady_mib") or mem.get("rss_mib")
        peak = mem.get("peak_mib")
        if steady is not None:
            out.append(
                Row(
                    n,
                    f"daemon ({title}): RSS steady / peak",
                    f"{steady:.0f} / {num(peak, 0)} MiB",
                    target=f"≤ {RSS_TARGET_MIB:g} MiB",
                    met=verdict(max(steady, peak or 0) <= RSS_TARGET_MIB),
                )
            )
    return out


HEADER = "| N | figure | pykubeproxy | floor | ratio | target | met |"
RULE = "|---:|---|---|---|---|---|---|"


def text_table(results: list[JSONDict]) -> str:
    lines = [HEADER, RULE]
    for result in results:
        if results and len({r["backend"] for r in results}) > 1:
            lines.append(f"| | **{result['backend']}** | | | | | |")
        for row in rows(result):
            lines.append(
                f"| {row.services} | {row.figure} | {row.value} | {row.floor} | {row.ratio} | "
                f"{row.target} | {row.met} |"
            )
    return "\n".join(lines)


INTRO = """# Scale benchmark results (issue 11)

Written by `benchmarks/scale.py` (`sudo uv run python benchmarks/scale.py --services 1000 5000
--backends legacy nft`); each run adds or replaces its own section (by `--label`), with the raw
figures in `benchmarks/results/`. What is measured:

- **start → all rules**: wall time of `pykubeproxy --from-file DIR --once` in a fresh network
  namespace (Python start, decode, translate, render, restore). **first full sync**: that
  process's own `synced` log line (`seconds`); its phases are the line's `seconds_*` fields
  ("n/a" while the product does not log them).
- **floor**: bare `iptables-<b>-restore --noflush -w 5` of exactly the payload `--dry-run`
  prints, in a fresh namespace, alternating with the first sync (ABBA); for nft cut as
  pykubeproxy cuts it (whole chains, about 2 000 rules per call, one process per chunk).
- **restart**: `--once` again on the namespace that holds the rules; floor: `iptables-<b>-save`
  of it. **one-chain floor**: `--noflush` restore of one KUBE-SVC chain into that loaded table.
- **daemon (API)**: `pykubeproxy --kubeconfig` against the tests' fake API server (plain HTTP;
  TLS comes with another issue) in the same namespace; its start figure includes importing the
  Kubernetes client and the LIST. A change is timed from the API write to the log line of
  the sync that wrote it: after each `synced` line the kernel is read once (`iptables-<b> -t
  nat -S CHAIN`, or `iptables-<b>-save -t nat` when that is cheaper), and the first read that
  shows the change names the last sync that ended before the read began. Reading only between
  syncs keeps the measurement out of the write it measures (a legacy read copies the whole
  table under the kernel's table lock: ~1 s at 10 000 Services; before 2026-12-03 the
  benchmark read in a loop and its reads slowed legacy writes about twofold).
- **the changes**: *one endpoint*: Service 1's first endpoint moves to a fresh address, seen
  when its KUBE-SVC chain jumps to the new endpoint's KUBE-SEP chain (kube-proxy's chain names,
  checked against the payload first); *Service added*: a one-port ClusterIP Service and its
  EndpointSlice (two API writes back to back, timed from the first), seen when nat
  KUBE-SERVICES has its cluster IP; *deleted*: the same two objects removed, seen when it no
  longer has it; *stream*: endpoint changes of distinct Services at a fixed rate, each timed
  alone. Before each single change the benchmark waits (bounded) for the daemon to be idle; a
  daemon whose periodic full syncs outlast its sync period is never idle, and then the change
  goes in right after a sync and may meet the next one ("(full sync)" marks it).
- **daemon (files)**: `--from-file` with the manifest rewritten by an atomic rename. The daemon
  looks at the file about once a second; the time it read the file again is taken from
  /proc/PID/io, and the figure is from that read to the kernel ("net"), the raw figure from the
  rename is shown below it.
- **CPU over a quiet minute**: utime+stime of the daemon plus its reaped children (the iptables
  processes) from /proc/PID/stat, scaled to 60 s when the window is shorter. **RSS**: VmRSS
  median over the quiet window (or at the end), VmHWM as the peak.

Caveats: the machine is shared (other sessions' tests run at the same time; load averages are
given), single runs have a real spread (see benchmarks/SCALE_PROBE.md), and the kernel reads
compete with the daemon for the two cores while they poll (a legacy read at 10 000 Services
keeps a core busy for ~0.6 s). `--render JSON` rewrites a section from its saved figures.
"""


def markdown_section(report: JSONDict, json_path: Path | str) -> str:
    m = report["machine"]
    p = report["product"]
    s = report["settings"]
    label = report["label"]
    command = (
        f"--services {' '.join(map(str, s['services']))} --backends {' '.join(s['backends'])}"
        + (" --quick" if s.get("quick") else "")
    )
    lines = [
        f"<!-- scale-begin: {label} -->",
        f"## {label}",
        "",
        f"Measured {report['date']} with `scale.py {command}` (runs {s['runs']}, "
        f"{s['single_changes']} single change(s), {s['changes']} streamed at {s['rate']:g}/s, "
        f"quiet window {s['quiet_seconds']:g} s, "
        f"`--iptables-min-sync-period {s['min_sync_period']}`, "
        "default sync period) on the pykubeproxy package of "
        f"`{(p.get('package_commit') or p['commit'])[:10]}` (checkout `{p['commit'][:10]}`, "
        f"{p['branch']}"
        + (", package edited" if p.get("package_edited") else "")
        + f"). Raw figures: `{json_path}`.",
        "",
        *([report["note"], ""] if report.get("note") else []),
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel {m['kernel']}, "
        f"{m['iptables_legacy']} / {m['iptables_nft']}, Python {m['python']}; load average "
        f"{' '.join(f'{x:.2f}' for x in m['loadavg_start'])} at the start, "
        f"{' '.join(f'{x:.2f}' for x in m.get('loadavg_end', ()))} at the end.",
        "",
    ]
    for backend in s["backends"]:
        results = [r for r in report["results"] if r["backend"] == backend]
        if not results:
            continue
        lines += [f"### {backend}", "", text_table(results), ""]
    lines.append(f"<!-- scale-end: {label} -->")
    return "\n".join(lines) + "\n"


def update_markdown(path: Path, report: JSONDict, json_path: Path | str) -> None:
    section = markdown_section(report, json_path)
    text = path.read_text(encoding="utf-8") if path.exists() else INTRO
    # The explanation above the sections is this version's: what the figures below mean.
    first = text.find("<!-- scale-begin: ")
    text = INTRO + ("\n" + text[first:] if first >= 0 else "")
    label = re.escape(report["label"])
    pattern = re.compile(
        rf"<!-- scale-begin: {label} -->.*?<!-- scale-end: {label} -->\n", re.DOTALL
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")
