"""Helpers of `scale.py`: namespaces, timed commands, payload chunks, kernel probes, /proc.

Nothing here imports pykubeproxy: the benchmark looks at the product only through its command
line, its log lines, the kernel and /proc, so that it keeps working while the package changes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path

BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
# The rules per iptables-nft-restore call pykubeproxy uses (PYKUBEPROXY_NFT_CHUNK_RULES, default
# 2 000): the nft floor is the same payload cut the same way, one process per chunk.
NFT_CHUNK_RULES = 2000
CLK_TCK = os.sysconf("SC_CLK_TCK")
NS_PREFIX = "pkp-scale-"


# --- network namespaces and timed commands --------------------------------------------------


class Namespaces:
    """Every namespace this run made, so that each is deleted however the run ends."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def fresh(self) -> Iterator[str]:
        name = NS_PREFIX + secrets.token_hex(3)
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        with self._lock:
            self.live.add(name)
        try:
            # The namespace's own loopback (down when created): the daemon's metrics/healthz
            # listeners and the fake API server bind there. The host's interfaces are not touched.
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
            yield name
        finally:
            self.delete(name)

    def delete(self, name: str) -> None:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)
        with self._lock:
            self.live.discard(name)

    def delete_all(self) -> None:
        for name in list(self.live):
            self.delete(name)


@dataclass
class Env:
    """Environment of every command: legacy iptables gets private xtables lock files.

    `write_lock` is shared by pykubeproxy and the floors (they take it as on a node); `read_lock`
    is the probes' own, so that a probe never waits for a restore (a legacy read is a consistent
    kernel snapshot without the lock) and nobody else's iptables on the machine waits for us.
    """

    write_lock: str
    read_lock: str

    def writer(self) -> dict[str, str]:
        return {**os.environ, "XTABLES_LOCKFILE": self.write_lock}

    def reader(self) -> dict[str, str]:
        return {**os.environ, "XTABLES_LOCKFILE": self.read_lock}

    def remove(self) -> None:
        for path in (self.write_lock, self.read_lock):
            Path(path).unlink(missing_ok=True)


class CommandFailed(RuntimeError):
    pass


def run_in(
    ns: str,
    argv: Sequence[str],
    env: dict[str, str],
    *,
    stdin: str | None = None,
    timeout: float,
    check: bool = True,
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run argv in the namespace; wall seconds of the whole process (`ip netns exec` included)."""
    started = time.perf_counter()
    result = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - started
    if check and result.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv[:3])}... exited {result.returncode}: {result.stderr[-800:]}"
        )
    return seconds, result


def restore(ns: str, backend: str, payloads: Sequence[str], env: Env, timeout: float) -> float:
    """Bare `iptables-<backend>-restore --noflush -w 5`, one process per payload; summed seconds."""
    total = 0.0
    for text in payloads:
        argv = [f"iptables-{backend}-restore", "--noflush", "-w", "5"]
        seconds, _ = run_in(ns, argv, env.writer(), stdin=text, timeout=timeout)
        total += seconds
    return total


def save(ns: str, backend: str, env: Env, timeout: float) -> tuple[float, str]:
    seconds, result = run_in(ns, [f"iptables-{backend}-save"], env.reader(), timeout=timeout)
    return seconds, result.stdout


def count_rules(saved: str) -> int:
    return sum(1 for line in saved.splitlines() if line.startswith("-A "))


# --- JSON log lines ---------------------------------------------------------------------------


def log_lines(text: str) -> list[dict[str, object]]:
    """The JSON objects among a process's log lines (anything else is skipped)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    found.append(obj)
    return found


def is_sync_line(obj: dict[str, object]) -> bool:
    """The line a sync ends with: event `synced` (or `synced, nothing to change`)."""
    return str(obj.get("event", "")).startswith("synced") and "seconds" in obj


# --- the payload, as pykubeproxy prints it with --dry-run --------------------------------------


@dataclass
class TableText:
    name: str
    chains: dict[str, list[str]] = field(default_factory=dict)  # declared chain -> its rule lines
    builtin: list[str] = field(default_factory=list)  # -I/-A lines of the built-in chains


_RULE = re.compile(r"^-[AI] (\S+)")
_JUMP = re.compile(r" -[jg] (\S+)")


def parse_restore(text: str) -> list[TableText]:
    tables: list[TableText] = []
    for line in text.splitlines():
        if line.startswith("*"):
            tables.append(TableText(line[1:].strip()))
        elif line.startswith(":") and tables:
            name = line[1:].split()[0]
            if name not in BUILTIN_CHAINS:
                tables[-1].chains.setdefault(name, [])
        elif (match := _RULE.match(line)) and tables:
            chain = match.group(1)
            if chain in BUILTIN_CHAINS:
                tables[-1].builtin.append(line)
            else:
                tables[-1].chains.setdefault(chain, []).append(line)
    return tables


def nft_chunks(text: str, chunk_rules: int = NFT_CHUNK_RULES) -> list[str]:
    """The payload cut as pykubeproxy cuts it for iptables-nft (see NFT_CHUNK_RULES).

    Per table: chains in dependency order (a chain after every chain it jumps to), a new chunk
    when the next chain would take it past `chunk_rules` rules, whole chains only; the jumps from
    the built-in chains go last, in a chunk of their own.
    """
    chunks = []
    for table in parse_restore(text):
        sorter: TopologicalSorter[str] = TopologicalSorter()
        for name, rules in table.chains.items():
            targets = {m.group(1) for r in rules for m in [_JUMP.search(r)] if m}
            sorter.add(name, *(t for t in targets if t in table.chains and t != name))
        current: list[str] = []
        declared: list[str] = []

        def flush(current: list[str], declared: list[str], table: TableText = table) -> None:
            if current or declared:
                lines = [f"*{table.name}", *(f":{c} - [0:0]" for c in declared), *current]
                chunks.append("\n".join([*lines, "COMMIT"]) + "\n")

        for name in sorter.static_order():
            rules = table.chains[name]
            if current and len(current) + len(rules) > chunk_rules:
                flush(current, declared)
                current, declared = [], []
            declared.append(name)
            current.extend(rules)
        flush(current, declared)
        if table.builtin:
            flush(table.builtin, [])
    return chunks


def one_chain_payload(text: str, chain: str) -> str:
    """`chain` (of the nat table) with its rules, as one `--noflush` restore: the partial floor."""
    for table in parse_restore(text):
        if table.name == "nat" and chain in table.chains:
            rules = table.chains[chain]
            return "\n".join(["*nat", f":{chain} - [0:0]", *rules, "COMMIT"]) + "\n"
    raise KeyError(f"{chain} is not in the nat table of the payload")


def rule_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith(("-A ", "-I ")))


# --- kube-proxy's chain names (the kernel contract of DESIGN.md) ------------------------------


def chain_hash(text: str) -> str:
    """First 16 characters of base32(sha256(text)): kube-proxy's per-Service chain suffix."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode()


def svc_chain(namespace: str, name: str, port: str, protocol: str = "tcp") -> str:
    return "KUBE-SVC-" + chain_hash(f"{namespace}/{name}:{port}{protocol}")


def sep_chain(namespace: str, name: str, port: str, endpoint: str, protocol: str = "tcp") -> str:
    return "KUBE-SEP-" + chain_hash(f"{namespace}/{name}:{port}{protocol}{endpoint}")


assert svc_chain("default", "kubernetes", "https") == "KUBE-SVC-NPX46M4PTMTKRN6Y"
assert svc_chain("kube-system", "kube-dns", "dns", "udp") == "KUBE-SVC-TCOU7JCQXEZGVUNU"


# --- reading the kernel while the daemon writes it ----------------------------------------------


class Probe:
    """Looks at one namespace's nat table, cheaply: one chain (`-S CHAIN`) or the whole table.

    Each read reports the time its process started (time.monotonic): the kernel snapshot it shows
    is taken right after that (legacy: one getsockopt of the table; nft: one netlink dump), which
    is what `written_by` relies on to name the sync that wrote what a read shows.
    """

    def __init__(self, ns: str, backend: str, env: Env, timeout: float) -> None:
        self.ns, self.backend, self.env, self.timeout = ns, backend, env, timeout
        self.durations: list[float] = []

    def _read(self, argv: list[str]) -> tuple[float, str | None]:
        started = time.monotonic()
        seconds, result = run_in(
            self.ns, argv, self.env.reader(), timeout=self.timeout, check=False
        )
        self.durations.append(seconds)
        return started, (result.stdout if result.returncode == 0 else None)

    def chain(self, chain: str) -> tuple[float, str | None]:
        """`iptables-<b> -t nat -S CHAIN`; None when the chain does not exist."""
        return self._read([f"iptables-{self.backend}", "-w", "5", "-t", "nat", "-S", chain])

    def table(self) -> tuple[float, str | None]:
        return self._read([f"iptables-{self.backend}-save", "-t", "nat"])


# A kernel read's snapshot is taken within milliseconds of its start (legacy: one getsockopt of
# the table; nft: one netlink dump), before the printing that takes the rest of its time.
SNAPSHOT_DELAY = 0.05


@dataclass
class Seen:
    at: float | None  # monotonic arrival of the sync line that wrote it; None: never (timed out)
    line: dict[str, object] | None  # that sync line
    reads: int


def written_by(lines: list[tuple[float, dict[str, object]]], read_started: float) -> int | None:
    """Which of `lines` (sync lines in arrival order) wrote what a read started then shows: the
    last that arrived before the read's snapshot (a sync's line follows its write by a few ms)."""
    found = None
    for n, (t, _) in enumerate(lines):
        if t <= read_started + SNAPSHOT_DELAY:
            found = n
    return found


def wait_written(
    daemon: Daemon, read: Callable[[], tuple[float, bool]], after: float, deadline: float
) -> Seen:
    """Wait for the sync that puts a change made at `after` into the kernel (bounded).

    The kernel is read once after each sync line the daemon logs, never while a sync may be
    writing for lack of news: a read competes with the sync for the kernel's table lock (legacy:
    a whole-table copy, ~1 s at 10 000 Services) and would slow the very write being timed. The
    change's time in the kernel is the arrival of the line of the sync that wrote it.
    """
    reads = 0
    since = after
    while time.monotonic() < deadline:
        got = daemon.next_sync(since, deadline - time.monotonic())
        if got is None:
            break
        since = got[0] + 1e-6
        started, holds = read()
        reads += 1
        if holds:
            lines = daemon.syncs(after)
            n = written_by(lines, started)
            t, line = lines[n] if n is not None else got
            return Seen(t, line, reads)
    return Seen(None, None, reads)


# --- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) of the process, seconds: itself, and its reaped children."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def memory_mib(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def read_chars(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def has_children(pid: int) -> bool:
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            if (task / "children").read_text().strip():
                return True
    return False


def wait_idle(
    pid: int,
    timeout: float,
    window: float = 1.0,
    threshold: float = 0.05,
    give_up: Callable[[], bool] = lambda: False,
) -> bool:
    """Until the process has no child and used under `threshold` CPU seconds over `window`.

    False when `give_up()` turns true first (or the timeout passes).
    """
    deadline = time.monotonic() + timeout
    last = sum(cpu_seconds(pid))
    while time.monotonic() < deadline:
        time.sleep(window)
        now = sum(cpu_seconds(pid))
        if now - last < threshold and not has_children(pid):
            return True
        if give_up():
            return False
        last = now
    return False


# --- the daemon, as a user runs it -------------------------------------------------------------


class Daemon:
    """`pykubeproxy` running in a namespace; its JSON log lines read as they come, timestamped."""

    def __init__(self, ns: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.lines: list[tuple[float, dict[str, object]]] = []
        self.cond = threading.Condition()
        self.started = time.monotonic()
        # `ip netns exec` execs the command: this pid is pykubeproxy's own (checked below).
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, name="daemon-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.log_path.open("w", encoding="utf-8") as out:
            for line in self.proc.stderr:
                now = time.monotonic()
                out.write(f"{now:.6f} {line}")
                out.flush()
                for obj in log_lines(line):
                    with self.cond:
                        self.lines.append((now, obj))
                        self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def is_ours(self) -> bool:
        with contextlib.suppress(OSError):
            return "pykubeproxy" in Path(f"/proc/{self.pid}/cmdline").read_text()
        return False

    def syncs(self, after: float = 0.0) -> list[tuple[float, dict[str, object]]]:
        with self.cond:
            return [(t, o) for t, o in self.lines if t >= after and is_sync_line(o)]

    def next_sync(self, after: float, timeout: float) -> tuple[float, dict[str, object]] | None:
        """The first sync line that arrived at or after `after` (waits, bounded)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, obj in self.lines:
                    if t >= after and is_sync_line(obj):
                        return t, obj
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 1.0))

    def stop(self, grace: float) -> int | None:
        """SIGTERM (this pid only), wait up to `grace` seconds, then SIGKILL; the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(30)
        self._reader.join(10)
        return self.proc.returncode


# --- the machine ------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    """The first line a command prints ("unknown" when it cannot run or fails)."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "unknown"
    lines = result.stdout.strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else "unknown"


def machine() -> dict[str, object]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "iptables_legacy": _first_line(["iptables-legacy", "--version"]),
        "iptables_nft": _first_line(["iptables-nft", "--version"]),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def product(repo: Path) -> dict[str, object]:
    """Which pykubeproxy was measured: the commit of the checkout, and whether it was edited."""
    head = _first_line(["git", "-C", str(repo), "rev-parse", "HEAD"])
    branch = _first_line(["git", "-C", str(repo), "rev-parse", "--abbrev-ref", "HEAD"])
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--", "pykubeproxy"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    # The last commit that changed the package or its dependencies: what was measured.
    package = _first_line(
        [
            "git",
            "-C",
            str(repo),
            "log",
            "-1",
            "--format=%H",
            "--",
            "pykubeproxy",
            "pyproject.toml",
            "uv.lock",
        ]
    )
    return {
        "commit": head,
        "branch": branch,
        "package_commit": package,
        "package_edited": bool(status.strip()),
    }
