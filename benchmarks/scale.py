"""Issue 11's benchmark: pykubeproxy at N Services x 5 endpoints, as a user runs it, vs the kernel.

Root only. One command from a fresh clone:

    sudo uv run python benchmarks/scale.py --services 1000 5000 10000 --backends legacy nft
    sudo uv run python benchmarks/scale.py --quick            # N = 1000, fewer changes, shorter

The product is looked at only from outside: its command line (`.venv/bin/pykubeproxy`), its JSON
log lines (event `synced`: `seconds`, `chains_written`, and the phase fields `seconds_*` when a
version logs them), the kernel (`iptables-<b>-save`, `iptables-<b> -S`) and /proc. Every rule is
written in a network namespace made for the measurement (`pkp-scale-XXXXXX`) and deleted after
it; legacy iptables runs with private xtables lock files, so that nothing here waits for, or
blocks, anyone else's iptables; the host's own tables and interfaces are never touched.

For each N and backend (payload: `benchmarks/cluster.py`, the manifests as one JSON List):

  first full sync   `pykubeproxy --from-file DIR --once` in a fresh namespace: the process's
                    wall time and its `synced` line (`seconds`, phases when logged)
  floor             bare `iptables-<b>-restore --noflush` of the payload `--dry-run` prints, in a
                    fresh namespace (nft: cut in chunks of 2 000 rules, one process each, as
                    pykubeproxy cuts it); runs alternate with the first sync (ABBA)
  restart           `--once` again on the namespace holding the rules: wall, `chains_written`;
                    floor: `iptables-<b>-save` of that namespace
  one-chain floor   `--noflush` restore of one KUBE-SVC chain into that loaded table
  daemon (files)    the daemon with `--from-file`: the manifest rewritten (atomic rename) with one
                    endpoint changed, one Service added, that Service deleted; time from the
                    rename to the kernel showing it, the file-poll detection delay (from
                    /proc/PID/io: when the daemon read the file), the sync's own `seconds`;
                    a quiet window (CPU from /proc/PID/stat, periodic syncs and what they wrote);
                    RSS (VmRSS steady, VmHWM peak)
  daemon (API)      the daemon with `--kubeconfig` to the tests' fake API server (plain HTTP)
                    running in the same namespace (benchmarks/scale_api.py): the same three
                    changes from the API write to the kernel, then a stream of endpoint changes
                    at a fixed rate (default 200 at 10/s): median and p99 event -> kernel; RSS

Results: a table per backend on stdout, `benchmarks/results/scale-<date>.json`, and a section
(by --label) of `benchmarks/RESULTS.md` with the machine description.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import math
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
import scale_report  # noqa: E402
from scale_support import (  # noqa: E402
    Daemon,
    Env,
    Namespaces,
    Probe,
    Seen,
    count_rules,
    cpu_seconds,
    is_sync_line,
    log_lines,
    machine,
    memory_mib,
    nft_chunks,
    one_chain_payload,
    product,
    read_chars,
    restore,
    rule_lines,
    run_in,
    save,
    sep_chain,
    svc_chain,
    wait_idle,
    wait_written,
    written_by,
)

JSONDict = dict[str, Any]
COMMON_FLAGS = ["--cluster-cidr", cluster.CLUSTER_CIDR, "--hostname-override", cluster.NODE_NAME]
# The fresh endpoint addresses the changes use: inside the cluster CIDR, above every generated
# pod address (those stay below 10.24x.123.x up to N = 20 000).
FRESH_BASE = (10, 247, 200)


def log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def fresh_ip(generation: int) -> str:
    a, b, c = FRESH_BASE
    return f"{a}.{b}.{c + generation // 250}.{generation % 250 + 1}"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


# --- what the kernel must show ----------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A condition on the nat table: read one chain when `chain` is set, else the whole table."""

    describe: str
    chain: str | None
    holds: Callable[[str], bool]

    def read(self, probe: Probe) -> tuple[float, bool]:
        if self.chain is not None:
            started, text = probe.chain(self.chain)
        else:
            started, text = probe.table()
        return started, text is not None and self.holds(text)


class Names:
    """Which chain and rule show a change: kube-proxy's chain names when the payload uses them
    (checked against the payload once), else a whole-table read for the DNAT address."""

    def __init__(self, payload: str) -> None:
        namespace, name = cluster.service_name(1)
        svc = svc_chain(namespace, name, "http")
        ips = [cluster.endpoint_placement(1, n)[1] for n in range(cluster.ENDPOINTS)]
        seps = [sep_chain(namespace, name, "http", f"{ip}:8080") for ip in ips]
        self.hashed = f"-A {svc} " in payload and all(f"-j {sep}" in payload for sep in seps)

    def endpoint(self, index: int, ip: str) -> Check:
        namespace, name = cluster.service_name(index)
        if self.hashed:
            jump = f"-j {sep_chain(namespace, name, 'http', f'{ip}:8080')}"
            chain = svc_chain(namespace, name, "http")
            return Check(f"{chain} {jump}", chain, lambda text: jump in text)
        needle = f"--to-destination {ip}:8080"
        return Check(needle, None, lambda text: needle in text)

    @staticmethod
    def service_present(index: int, present: bool) -> Check:
        """KUBE-SERVICES jumps for the Service's cluster IP (present) or no longer (deleted)."""
        needle = f"-d {cluster.service(index)['spec']['clusterIP']}/32 "  # type: ignore[index]
        if present:
            return Check(f"KUBE-SERVICES has {needle}", "KUBE-SERVICES", lambda t: needle in t)
        return Check(f"KUBE-SERVICES lacks {needle}", "KUBE-SERVICES", lambda t: needle not in t)


def added_index(services: int) -> int:
    """A one-port ClusterIP Service beyond the generated ones (the 'one Service added')."""
    index = services
    while index % 4 == 0 or index % 10 == 0:
        index += 1
    return index


def with_endpoint(index: int, ip: str) -> JSONDict:
    """Service `index`'s EndpointSlice with its first endpoint moved to `ip`."""
    body = cluster.endpoint_slice(index)
    body["endpoints"][0]["addresses"] = [ip]  # type: ignore[index]
    return body


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    env: Env
    namespaces: Namespaces
    binary: str
    workdir: Path
    started: list[Any]  # every Daemon / Popen this run started (stopped by pid at the end)

    @property
    def timeout(self) -> float:
        return float(self.args.timeout)


def once(ctx: Context, ns: str, manifests: Path, backend: str) -> JSONDict:
    argv = [ctx.binary, "--from-file", str(manifests), "--once", "--iptables-backend", backend]
    seconds, result = run_in(ns, [*argv, *COMMON_FLAGS], ctx.env.writer(), timeout=ctx.timeout)
    lines = log_lines(result.stderr)
    syncs = [obj for obj in lines if is_sync_line(obj)]
    sync = syncs[-1] if syncs else {}
    phases = {k: v for obj in lines for k, v in obj.items() if k.startswith("seconds_")}
    return {
        "wall": seconds,
        "seconds": sync.get("seconds"),
        "chains_written": sync.get("chains_written"),
        "chains_deleted": sync.get("chains_deleted"),
        "rules": sync.get("rules"),
        "phases": phases,
        "event": sync.get("event"),
    }


def first_sync_and_floors(
    ctx: Context, manifests: Path, backend: str, payload: str, floor_payloads: list[str]
) -> JSONDict:
    namespace, name = cluster.service_name(1)
    one_chain = one_chain_payload(payload, svc_chain(namespace, name, "http"))
    out: JSONDict = {"first": [], "floor_full": [], "restart": [], "save": [], "one_chain": []}
    for run in range(ctx.args.runs):
        order = ("product", "floor") if run % 2 == 0 else ("floor", "product")
        for what in order:
            with ctx.namespaces.fresh() as ns:
                if what == "floor":
                    seconds = restore(ns, backend, floor_payloads, ctx.env, ctx.timeout)
                    out["floor_full"].append(seconds)
                    log(f"  floor: bare restore {seconds:.2f} s ({len(floor_payloads)} call(s))")
                    continue
                first = once(ctx, ns, manifests, backend)
                _, saved = save(ns, backend, ctx.env, ctx.timeout)
                first["rules_in_kernel"] = count_rules(saved)
                out["first"].append(first)
                log(f"  first sync: wall {first['wall']:.2f} s, log seconds {first['seconds']}")
                again = once(ctx, ns, manifests, backend)
                out["restart"].append(again)
                log(
                    f"  restart: wall {again['wall']:.2f} s, "
                    f"chains_written {again['chains_written']}"
                )
                for _ in range(ctx.args.floor_repeats):
                    out["save"].append(save(ns, backend, ctx.env, ctx.timeout)[0])
                for _ in range(ctx.args.floor_repeats):
                    out["one_chain"].append(restore(ns, backend, [one_chain], ctx.env, ctx.timeout))
                log(
                    f"  floors: save {median(out['save']):.2f} s, "
                    f"one chain {median(out['one_chain']):.3f} s"
                )
    return out


# --- daemon helpers -------------------------------------------------------------------------------


def start_daemon(ctx: Context, ns: str, source: list[str], backend: str, tag: str) -> Daemon:
    argv = [
        ctx.binary,
        *source,
        "--iptables-backend",
        backend,
        "--iptables-min-sync-period",
        ctx.args.min_sync_period,
        *COMMON_FLAGS,
    ]
    daemon = Daemon(ns, argv, ctx.env.writer(), ctx.workdir / f"daemon-{tag}.log")
    ctx.started.append(daemon)
    return daemon


def first_daemon_sync(ctx: Context, daemon: Daemon) -> JSONDict:
    got = daemon.next_sync(0.0, ctx.timeout)
    if got is None:
        raise RuntimeError(f"the daemon never synced; its log: {daemon.log_path}")
    if not daemon.is_ours():
        raise RuntimeError(f"pid {daemon.pid} is not pykubeproxy (ip netns exec did not exec?)")
    at, line = got
    return {"start_to_synced": at - daemon.started, "seconds": line.get("seconds")}


class ReadWatch:
    """Samples /proc/PID/io rchar (every 2 ms) to see when the daemon reads the manifest again."""

    def __init__(self, pid: int, size: int, deadline: float) -> None:
        self.pid, self.size, self.deadline = pid, size, deadline
        self.base = read_chars(pid)
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReadWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            with contextlib.suppress(OSError):
                if read_chars(self.pid) - self.base >= self.size // 2:
                    self.at = time.monotonic()
                    return
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def settle(ctx: Context, daemon: Daemon) -> None:
    """Wait (bounded) until the daemon is idle, so that a change does not queue behind a sync.

    A daemon whose periodic syncs last longer than its sync period is never idle: then the
    change goes in right after the next sync ends (what it meets then is the product's doing).
    """
    since = time.monotonic()
    idle = wait_idle(
        daemon.pid,
        timeout=min(ctx.timeout, ctx.args.settle_timeout),
        give_up=lambda: bool(daemon.syncs(since)),
    )
    if not idle:
        log("  note: the daemon was not idle; the change goes in after its last sync")


def measured_change(
    ctx: Context,
    daemon: Daemon,
    probe: Probe,
    check: Check,
    apply: Callable[[], float],
    *,
    manifest_size: int = 0,
) -> JSONDict:
    """Apply a change (returns its monotonic time), wait for the kernel to show it, bounded."""
    settle(ctx, daemon)
    if manifest_size:
        # The daemon looks at its files about once a second, in step with its loop; a random
        # pause puts the write at a random point of that cycle (the raw figure's poll delay).
        time.sleep(random.uniform(0.0, 1.0))
    deadline = time.monotonic() + ctx.args.change_timeout
    watch = ReadWatch(daemon.pid, manifest_size, deadline).start() if manifest_size else None
    at = apply()
    seen: Seen = wait_written(daemon, lambda: check.read(probe), at, deadline)
    if watch is not None:
        watch.stop()
    result: JSONDict = {"check": check.describe, "reads": seen.reads}
    if seen.at is None or seen.line is None:
        result["error"] = "not seen in the kernel before the timeout"
        return result
    result["latency"] = seen.at - at
    if watch is not None and watch.at is not None:
        result["detection"] = watch.at - at
        result["net"] = seen.at - watch.at
    line = seen.line
    result["sync"] = {
        k: line.get(k) for k in ("event", "seconds", "full", "chains_written", "chains_deleted")
    } | {k: v for k, v in line.items() if k.startswith("seconds_")}
    return result


def quiet(ctx: Context, daemon: Daemon) -> JSONDict:
    """A window with nothing changing: CPU, the syncs that ran and what they wrote, RSS."""
    settle(ctx, daemon)
    window = float(ctx.args.quiet_seconds)
    start = time.monotonic()
    cpu0 = cpu_seconds(daemon.pid)
    rss = []
    while time.monotonic() - start < window:
        time.sleep(min(1.0, max(0.0, window - (time.monotonic() - start))))
        rss.append(memory_mib(daemon.pid)["VmRSS"])
    cpu1 = cpu_seconds(daemon.pid)
    elapsed = time.monotonic() - start
    syncs = [line for t, line in daemon.syncs(start) if t <= start + elapsed]
    own, children = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    scale = 60.0 / elapsed
    return {
        "window": elapsed,
        "cpu_self": own,
        "cpu_children": children,
        "cpu_per_minute_self": own * scale,
        "cpu_per_minute_total": (own + children) * scale,
        "syncs": [
            {k: s.get(k) for k in ("event", "seconds", "full", "chains_written", "chains_deleted")}
            for s in syncs
        ],
        "rss_steady_mib": statistics.median(rss) if rss else None,
    }


def memory(daemon: Daemon) -> JSONDict:
    mem = memory_mib(daemon.pid)
    return {"rss_mib": mem.get("VmRSS"), "peak_mib": mem.get("VmHWM")}


def stop_daemon(ctx: Context, daemon: Daemon) -> None:
    # A sync in progress finishes before the loop sees the stop: give it that long.
    daemon.stop(grace=max(60.0, ctx.timeout / 4))
    with contextlib.suppress(ValueError):
        ctx.started.remove(daemon)


# --- the daemon fed by files ---------------------------------------------------------------


def write_list(path: Path, items: list[JSONDict]) -> float:
    """Write the manifest beside it, rename it in (atomic); the monotonic time of the rename."""
    tmp = path.with_suffix(".partial")  # not a manifest suffix: the daemon never reads it
    tmp.write_text(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, separators=(",", ":"))
        + "\n",
        encoding="utf-8",
    )
    at = time.monotonic()
    os.replace(tmp, path)
    return at


def daemon_files(ctx: Context, manifest: Path, backend: str, names: Names) -> JSONDict:
    services = ctx.args.current_services
    # One directory per N: the daemon reads every manifest in it.
    directory = ctx.workdir / f"daemon-files-{backend}-{services}"
    directory.mkdir(exist_ok=True)
    path = directory / manifest.name
    shutil.copyfile(manifest, path)
    items = cluster.generate(services)
    slice_at = 1 + services + 1  # Node, N Services, then slice 0, slice 1, ...
    out: JSONDict = {"changes": []}
    with ctx.namespaces.fresh() as ns:
        daemon = start_daemon(ctx, ns, ["--from-file", str(directory)], backend, f"files-{backend}")
        try:
            out["start"] = first_daemon_sync(ctx, daemon)
            log(f"  daemon (files): first sync after {out['start']['start_to_synced']:.2f} s")
            probe = Probe(ns, backend, ctx.env, ctx.timeout)
            size = path.stat().st_size
            for g in range(ctx.args.single_changes):
                ip = fresh_ip(g)
                items[slice_at] = with_endpoint(1, ip)
                result = measured_change(
                    ctx,
                    daemon,
                    probe,
                    names.endpoint(1, ip),
                    lambda: write_list(path, items),
                    manifest_size=size,
                )
                out["changes"].append({"what": "endpoint", **result})
                log(f"  daemon (files): endpoint change {scale_report.brief(result)}")
            index = added_index(services)
            items.extend([cluster.service(index), cluster.endpoint_slice(index)])
            result = measured_change(
                ctx,
                daemon,
                probe,
                names.service_present(index, True),
                lambda: write_list(path, items),
                manifest_size=size,
            )
            out["changes"].append({"what": "add", **result})
            log(f"  daemon (files): Service added {scale_report.brief(result)}")
            del items[-2:]
            result = measured_change(
                ctx,
                daemon,
                probe,
                names.service_present(index, False),
                lambda: write_list(path, items),
                manifest_size=size,
            )
            out["changes"].append({"what": "delete", **result})
            log(f"  daemon (files): Service deleted {scale_report.brief(result)}")
            if ctx.args.quiet_on in ("files", "both") and ctx.args.quiet_seconds > 0:
                out["quiet"] = quiet(ctx, daemon)
                log(f"  daemon (files): quiet window {scale_report.brief_quiet(out['quiet'])}")
            out["memory"] = memory(daemon)
        finally:
            stop_daemon(ctx, daemon)
    return out


# --- the daemon fed by the (fake) API server -----------------------------------------------


class ApiServer:
    """benchmarks/scale_api.py in the namespace; commands over its stdin, answers on its stdout.

    Commands are pipelined: `send` does not wait, answers come back in order (`answer`).
    """

    def __init__(self, ctx: Context, ns: str, services: int) -> None:
        self.kubeconfig = ctx.workdir / f"kubeconfig-{ns}"
        argv = [
            sys.executable,
            str(HERE / "scale_api.py"),
            "--services",
            str(services),
            "--kubeconfig",
            str(self.kubeconfig),
        ]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(ctx.workdir / f"apiserver-{ns}.log").open("w"),
            text=True,
        )
        ctx.started.append(self)
        self.answers: queue.Queue[JSONDict | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="apiserver-answers", daemon=True)
        self._reader.start()
        ready = self.answer(timeout=ctx.timeout)
        if not ready.get("ready"):
            raise RuntimeError(f"the fake API server did not start: {ready}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.answers.put(dict(json.loads(line)))
        self.answers.put(None)  # the server is gone

    def answer(self, timeout: float) -> JSONDict:
        try:
            got = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError("no answer from the fake API server") from None
        if got is None:
            self.answers.put(None)
            raise RuntimeError("the fake API server exited")
        return got

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def applied_at(self, timeout: float = 60.0) -> float:
        """The next answer: the server's monotonic time just before it applied that write."""
        answer = self.answer(timeout)
        if not answer.get("ok"):
            raise RuntimeError(f"the fake API server refused a write: {answer}")
        return float(answer["t"])

    def command(self, **command: Any) -> float:
        self.send(**command)
        return self.applied_at()

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(30)


def stream(
    ctx: Context,
    api: ApiServer,
    daemon: Daemon,
    probe: Probe,
    names: Names,
    first_generation: int,
) -> JSONDict:
    """Endpoint changes at a fixed rate, each to its own Service; event -> kernel for each.

    The writes are sent on schedule without waiting for the server's answers; each change's
    time is the server's own (just before it applied the write). After each sync the daemon
    logs, a watcher reads the kernel once: each pending change's chain (`-S CHAIN`) when that
    is cheaper than one whole-table save for all of them, else the save; a change it finds is
    timed at the line of the last sync that ended before that read began.
    """
    services = ctx.args.current_services
    changes = min(ctx.args.changes, services - 2)
    # Distinct Services spread over the cluster (never Service 1, the single-change one).
    indices = sorted({2 + (k * (services - 2)) // changes for k in range(changes)})
    checks = {
        index: names.endpoint(index, fresh_ip(first_generation + k))
        for k, index in enumerate(indices)
    }
    applied: dict[int, float] = {}
    seen: dict[int, float] = {}
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()
    deadline = time.monotonic() + ctx.args.change_timeout + len(indices) / ctx.args.rate

    # Calibrate: a one-chain read and a whole-table read, to pick the cheaper way each round.
    probe.chain("KUBE-MARK-MASQ")
    cost_chain = [probe.durations[-1]]
    probe.table()
    cost_table = [probe.durations[-1]]

    def watcher() -> None:
        # After each sync line, one look at the kernel for every change not seen yet (a change
        # may be written before its API answer is collected: all are looked for).
        since = time.monotonic()
        while time.monotonic() < deadline:
            with lock:
                waiting = [(k, c) for k, c in checks.items() if k not in seen]
                done = not sending.is_set() and len(applied) == len(indices)
            if not waiting:
                return
            got = daemon.next_sync(since, min(1.0, max(0.0, deadline - time.monotonic())))
            if got is None:
                if done and daemon.proc.poll() is not None:
                    return
                continue
            since = got[0] + 1e-6
            by_chain = all(c.chain is not None for _, c in waiting)
            cheaper = len(waiting) * statistics.median(cost_chain) <= statistics.median(cost_table)
            found: list[tuple[int, float]] = []
            if by_chain and cheaper:
                for key, check in waiting:
                    started, holds = check.read(probe)
                    cost_chain.append(probe.durations[-1])
                    if holds:
                        found.append((key, started))
            else:
                started, text = probe.table()
                cost_table.append(probe.durations[-1])
                if text is not None:
                    # An endpoint's KUBE-SEP name is its own: finding the jump anywhere will do.
                    found = [(key, started) for key, check in waiting if check.holds(text)]
            lines = daemon.syncs(t0)
            with lock:
                for key, started in found:
                    n = written_by(lines, started)
                    seen.setdefault(key, lines[n][0] if n is not None else got[0])

    def collector() -> None:
        for index in indices:
            try:
                at = api.applied_at(timeout=max(1.0, deadline - time.monotonic()))
            except RuntimeError as exc:
                log(f"  stream: {exc}")
                return
            with lock:
                applied[index] = at

    threads = [
        threading.Thread(target=watcher, name="kernel-watch", daemon=True),
        threading.Thread(target=collector, name="api-answers", daemon=True),
    ]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        for k, index in enumerate(indices):
            time.sleep(max(0.0, t0 + k / ctx.args.rate - time.monotonic()))
            ip = fresh_ip(first_generation + k)
            api.send(op="update", resource="endpointslices", obj=with_endpoint(index, ip))
    finally:
        sent = time.monotonic() - t0
        sending.clear()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 5)
    times = sorted(applied.values())
    latencies = [seen[k] - at for k, at in applied.items() if k in seen]
    return {
        "changes": len(indices),
        "applied": len(applied),
        "rate_asked": ctx.args.rate,
        "rate_sent": len(indices) / sent if sent > 0 else None,
        "rate_applied": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None,
        "seen": len(latencies),
        "median": median(latencies),
        "p99": p99(latencies),
        "max": max(latencies) if latencies else None,
        "min": min(latencies) if latencies else None,
        "read_chain_median": statistics.median(cost_chain),
        "read_table_median": statistics.median(cost_table),
        "latencies": latencies,
    }


def daemon_api(ctx: Context, backend: str, names: Names) -> JSONDict:
    services = ctx.args.current_services
    out: JSONDict = {"changes": []}
    with ctx.namespaces.fresh() as ns:
        api = ApiServer(ctx, ns, services)
        daemon = None
        try:
            source = ["--kubeconfig", str(api.kubeconfig)]
            daemon = start_daemon(ctx, ns, source, backend, f"api-{backend}")
            out["start"] = first_daemon_sync(ctx, daemon)
            log(f"  daemon (API): first sync after {out['start']['start_to_synced']:.2f} s")
            probe = Probe(ns, backend, ctx.env, ctx.timeout)
            for g in range(ctx.args.single_changes):
                ip = fresh_ip(100 + g)
                result = measured_change(
                    ctx,
                    daemon,
                    probe,
                    names.endpoint(1, ip),
                    functools.partial(
                        api.command,
                        op="update",
                        resource="endpointslices",
                        obj=with_endpoint(1, ip),
                    ),
                )
                out["changes"].append({"what": "endpoint", **result})
                log(f"  daemon (API): endpoint change {scale_report.brief(result)}")
            index = added_index(services)

            def add() -> float:
                at = api.command(op="create", resource="services", obj=cluster.service(index))
                api.command(
                    op="create", resource="endpointslices", obj=cluster.endpoint_slice(index)
                )
                return at

            result = measured_change(ctx, daemon, probe, names.service_present(index, True), add)
            out["changes"].append({"what": "add", **result})
            log(f"  daemon (API): Service added {scale_report.brief(result)}")
            namespace, name = cluster.service_name(index)
            slice_name = cluster.endpoint_slice(index)["metadata"]["name"]  # type: ignore[index]

            def delete() -> float:
                at = api.command(op="delete", resource="services", namespace=namespace, name=name)
                api.command(
                    op="delete", resource="endpointslices", namespace=namespace, name=slice_name
                )
                return at

            result = measured_change(
                ctx, daemon, probe, names.service_present(index, False), delete
            )
            out["changes"].append({"what": "delete", **result})
            log(f"  daemon (API): Service deleted {scale_report.brief(result)}")
            if ctx.args.changes > 0:
                settle(ctx, daemon)
                out["stream"] = stream(
                    ctx, api, daemon, Probe(ns, backend, ctx.env, ctx.timeout), names, 1000
                )
                s = out["stream"]
                log(
                    f"  daemon (API): {s['seen']}/{s['changes']} changes seen, median "
                    f"{scale_report.num(s['median'])} s, p99 {scale_report.num(s['p99'])} s"
                )
            if ctx.args.quiet_on in ("api", "both") and ctx.args.quiet_seconds > 0:
                out["quiet"] = quiet(ctx, daemon)
                log(f"  daemon (API): quiet window {scale_report.brief_quiet(out['quiet'])}")
            out["memory"] = memory(daemon)
        finally:
            if daemon is not None:
                stop_daemon(ctx, daemon)
            api.stop()
            with contextlib.suppress(ValueError):
                ctx.started.remove(api)
    return out


# --- one N, one backend -------------------------------------------------------------------------


def dry_run(ctx: Context, manifests: Path) -> tuple[float, str]:
    """The payload the first sync writes, as `--dry-run` prints it (run in a namespace too)."""
    with ctx.namespaces.fresh() as ns:
        argv = [ctx.binary, "--dry-run", "--from-file", str(manifests), *COMMON_FLAGS]
        seconds, result = run_in(ns, argv, ctx.env.writer(), timeout=ctx.timeout)
    return seconds, result.stdout


def measure(ctx: Context, services: int, backend: str, manifest: Path, payload: str) -> JSONDict:
    ctx.args.current_services = services
    floor_payloads = nft_chunks(payload) if backend == "nft" else [payload]
    names = Names(payload)
    result: JSONDict = {
        "services": services,
        "backend": backend,
        "payload": {
            "bytes": len(payload.encode()),
            "rule_lines": rule_lines(payload),
            "restore_calls": len(floor_payloads),
            "chunking": "2 000-rule chunks, whole chains, one process each"
            if backend == "nft"
            else "one transaction",
        },
        "kernel_names": "kube-proxy chain hashes" if names.hashed else "whole-table DNAT search",
    }
    log(f"N={services} {backend}: first sync, restart and floors ({ctx.args.runs} run(s))")
    result["once"] = first_sync_and_floors(ctx, manifest.parent, backend, payload, floor_payloads)
    if not ctx.args.no_files:
        log(f"N={services} {backend}: daemon fed by --from-file")
        result["files"] = guarded(lambda: daemon_files(ctx, manifest, backend, names))
    if not ctx.args.no_api:
        log(f"N={services} {backend}: daemon fed by the fake API server")
        result["api"] = guarded(lambda: daemon_api(ctx, backend, names))
    return result


def guarded(step: Callable[[], JSONDict]) -> JSONDict:
    """A failed daemon phase is recorded (and the run goes on); an interrupt is not swallowed."""
    try:
        return step()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log(f"  failed: {exc}")
        return {"error": str(exc)}


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, nargs="+", help="N (default 1000 5000 10000)")
    parser.add_argument(
        "--backends", nargs="+", default=["legacy", "nft"], choices=["legacy", "nft"]
    )
    parser.add_argument(
        "--quick", action="store_true", help="N=1000, 20 changes, 1 run, short quiet"
    )
    parser.add_argument("--runs", type=int, help="first-sync / floor pairs (default 2; quick 1)")
    parser.add_argument("--floor-repeats", type=int, default=3, help="save / one-chain repeats")
    parser.add_argument(
        "--single-changes", type=int, help="one-endpoint changes (default 3; quick 1)"
    )
    parser.add_argument(
        "--changes", type=int, help="streamed endpoint changes (default 200; quick 20)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="streamed changes per second")
    parser.add_argument("--quiet-seconds", type=float, help="quiet window (default 60; quick 35)")
    parser.add_argument(
        "--quiet-on",
        choices=["files", "api", "both", "none"],
        default="both",
        help="which daemon gets the quiet window (default both)",
    )
    parser.add_argument(
        "--min-sync-period", default="1s", help="the daemon's --iptables-min-sync-period"
    )
    parser.add_argument("--no-files", action="store_true", help="skip the --from-file daemon")
    parser.add_argument("--no-api", action="store_true", help="skip the API-server daemon")
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound on any one wait (s)")
    parser.add_argument(
        "--change-timeout",
        type=float,
        default=600.0,
        help="bound on one change reaching the kernel",
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=300.0, help="bound on waiting for an idle daemon"
    )
    parser.add_argument("--label", help="RESULTS.md section (default: date and commit)")
    parser.add_argument(
        "--json", type=Path, help="JSON path (default benchmarks/results/scale-DATE.json)"
    )
    parser.add_argument("--no-markdown", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--note", help="a sentence for the RESULTS.md section (what was measured)")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: print the tables of a saved JSON and update RESULTS.md from it",
    )
    parser.add_argument("--keep-logs", type=Path, help="copy the daemons' logs here")
    args = parser.parse_args()
    quick = args.quick
    args.services = args.services or ([1000] if quick else [1000, 5000, 10000])
    args.runs = args.runs or (1 if quick else 2)
    args.single_changes = (
        args.single_changes if args.single_changes is not None else (1 if quick else 3)
    )
    args.changes = args.changes if args.changes is not None else (20 if quick else 200)
    args.quiet_seconds = (
        args.quiet_seconds if args.quiet_seconds is not None else (35 if quick else 60)
    )
    if args.single_changes > 99:
        parser.error("--single-changes must stay below 100 (each gets a fresh address)")
    return args


def pykubeproxy_binary() -> str:
    beside = Path(sys.executable).parent / "pykubeproxy"
    found = str(beside) if beside.exists() else shutil.which("pykubeproxy")
    if not found:
        sys.exit("pykubeproxy is not installed: run `uv sync` (or use `uv run`)")
    return found


def results_path(args: argparse.Namespace, today: str) -> Path:
    if args.json:
        return Path(args.json)
    directory = HERE / "results"
    directory.mkdir(exist_ok=True)
    path = directory / f"scale-{today}.json"
    number = 2
    while path.exists() and number < 1000:
        path = directory / f"scale-{today}-{number}.json"
        number += 1
    return path


@contextlib.contextmanager
def interrupts_unwind() -> Iterator[None]:
    """SIGTERM / SIGHUP unwind like Ctrl-C, so that every `finally` cleans up."""

    def raise_interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def publish(report: JSONDict, out_path: Path, args: argparse.Namespace) -> None:
    for backend in report["settings"]["backends"]:
        rows = [r for r in report["results"] if r["backend"] == backend]
        print(f"\n## {backend}\n")
        print(scale_report.text_table(rows))
    if not args.no_markdown:
        shown = out_path.relative_to(REPO) if out_path.is_relative_to(REPO) else out_path
        scale_report.update_markdown(HERE / "RESULTS.md", report, shown)
        log(f"wrote {HERE / 'RESULTS.md'} (section {report['label']!r})")


def render(args: argparse.Namespace) -> None:
    path = args.render.resolve()
    report = json.loads(path.read_text(encoding="utf-8"))
    if args.label or args.note:
        # Kept in the JSON, the source of the section, so that a later render keeps them.
        report["label"] = args.label or report["label"]
        report["note"] = args.note or report.get("note")
        path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    publish(report, path, args)


def main() -> None:
    args = parse_args()
    if args.render:
        render(args)
        return
    if os.geteuid() != 0:
        sys.exit("root is needed (network namespaces, iptables)")
    today = datetime.date.today().isoformat()
    workdir = Path(tempfile.mkdtemp(prefix="pkp-scale-"))
    env = Env(str(workdir / "xtables-write.lock"), str(workdir / "xtables-read.lock"))
    ctx = Context(args, env, Namespaces(), pykubeproxy_binary(), workdir, [])
    report: JSONDict = {
        "date": today,
        "machine": machine(),
        "product": product(REPO),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k != "current_services"
        },
        "results": [],
    }
    report["label"] = args.label or f"{today} {report['product']['commit'][:7]}"
    report["note"] = args.note
    out_path = results_path(args, today)
    log(f"pykubeproxy {ctx.binary}; work directory {workdir}; results {out_path}")
    try:
        with interrupts_unwind():
            for services in args.services:
                manifest = cluster.write(services, workdir / f"manifests-{services}")
                dry_seconds, payload = dry_run(ctx, manifest.parent)
                log(
                    f"N={services}: payload {rule_lines(payload)} rules, "
                    f"dry run {dry_seconds:.2f} s"
                )
                for backend in args.backends:
                    result = measure(ctx, services, backend, manifest, payload)
                    result["dry_run_wall"] = dry_seconds
                    report["results"].append(result)
                    out_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
                    print(scale_report.text_table([result]), flush=True)
    finally:
        for started in list(ctx.started):
            with contextlib.suppress(Exception):
                started.stop(10.0 if isinstance(started, ApiServer) else 60.0)
        ctx.namespaces.delete_all()
        env.remove()
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for path in workdir.glob("*.log"):
                shutil.copy(path, args.keep_logs / path.name)
        shutil.rmtree(workdir, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    out_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    publish(report, out_path, args)
    log(f"wrote {out_path}")


if __name__ == "__main__":
    main()
