"""Owns one soak run: set the node up, churn and disturb, measure, stop; a SoakReport of figures.

See tests/support/soak.py for what is promised and how the kernel is read.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support.builders import node
from tests.support.fake_apiserver import FakeApiServer
from tests.support.netns import Netns, Processes, namespace
from tests.support.paths import REPO
from tests.support.soak import (
    DISTURBANCES,
    NODE_IP,
    RESOURCES,
    ApiModel,
    KernelWatch,
    SoakSettings,
    daemon_argv,
    fetch_metrics,
    inside,
    log_events,
    metric_values,
    rss_mib,
)


@dataclass
class Disturbance:
    kind: str
    lasted: float  # seconds the server misbehaved
    reconnected_after: float | None  # from its end: every watch open again
    converged_after: float | None  # from its end: the kernel holds exactly the API's state
    writes: int  # API writes the driver made meanwhile


@dataclass
class SoakReport:
    settings: dict[str, Any]
    first_sync: float | None = None
    disturbances: list[Disturbance] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    rss_warm: float | None = None  # MiB, median over 10 s after the warm-up
    rss_end: float | None = None  # MiB, median over the last 10 s
    rss_peak: float | None = None
    writes: dict[str, int] = field(default_factory=dict)
    kernel_reads: int = 0
    syncs: float | None = None
    requests_by_code: dict[str, float] = field(default_factory=dict)
    lists: dict[str, int] = field(default_factory=dict)
    stop_seconds: float | None = None
    exit_code: int | None = None
    alive_throughout: bool = True
    log_tail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Churn:
    """API writes at a steady rate on a thread of its own; paused while convergence is timed."""

    def __init__(self, model: ApiModel, rate: float) -> None:
        self.model, self.rate = model, rate
        self.running = threading.Event()
        self._step = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        due = time.monotonic()
        while not stop.is_set():
            if not self.running.wait(0.1):
                due = time.monotonic()
                continue
            with self._step:
                self.model.step()
            due += 1.0 / self.rate
            stop.wait(max(0.0, due - time.monotonic()))

    def pause(self) -> None:
        self.running.clear()
        with self._step:  # the write in progress, if any, has ended
            pass

    def resume(self) -> None:
        self.running.set()


def _bounded_wait(condition: Callable[[], bool], timeout: float, pause: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(pause)
    return condition()


def _relist(api: FakeApiServer, resources: tuple[str, ...]) -> None:
    """Cut the watches and answer their successors 410 Gone: the history is lost, list again."""
    for resource in resources:
        api.gone_next_watch(resource)
        api.drop_watch(resource)


def disturb(api: FakeApiServer, kind: str, settings: SoakSettings, rng: random.Random) -> None:
    """Make the server misbehave in one way; returns when the misbehaviour is over."""
    if kind == "drop":
        for resource in RESOURCES:
            api.drop_watch(resource)
    elif kind == "gone":
        _relist(api, RESOURCES)
    elif kind == "stall":
        api.stall_watch("endpointslices")
        time.sleep(rng.uniform(*settings.stall))
        api.release_stalls()
    elif kind == "list-500":
        kinds = ("services", "endpointslices")
        for resource in kinds:
            api.fail_next(resource, 500, count=rng.randint(1, 3), verb="list")
        _relist(api, kinds)
        _bounded_wait(lambda: api.faults_pending() == 0, settings.converge_timeout)
    elif kind == "outage":
        api.go_away(rng.uniform(*settings.outage))
    else:
        raise ValueError(f"unknown disturbance {kind!r}")


def converge(watch: KernelWatch, settings: SoakSettings) -> float | None:
    """Seconds until a kernel read (timed at its start) shows exactly the API's state."""
    began = time.monotonic()
    deadline = began + settings.converge_timeout
    while time.monotonic() < deadline:
        started = time.monotonic()
        if watch.look() == watch.model.expected():
            return started - began
    return None


class Soak:
    """One run on a fresh node namespace; `run()` returns the report (never raises on a
    broken promise: the test decides what fails)."""

    def __init__(self, settings: SoakSettings, workdir: Path) -> None:
        self.settings, self.workdir = settings, workdir
        self.rng = random.Random(settings.seed)
        self.report = SoakReport(settings=asdict(settings))
        self.stop = threading.Event()
        self.rss: list[tuple[float, float]] = []

    def run(self) -> SoakReport:
        with namespace("soak") as ns:
            with inside(ns):
                api = FakeApiServer(bookmark_interval=1.0).start()
            try:
                self._with_api(ns, api)
            finally:
                api.stop()
        return self.report

    def _with_api(self, ns: Netns, api: FakeApiServer) -> None:
        model = ApiModel(api, self.rng)
        api.create("nodes", node("node-1", NODE_IP, served=True))
        for _ in range(self.settings.services):
            model.add()
        model.writes.clear()
        kubeconfig = api.write_kubeconfig(self.workdir / "kubeconfig")
        processes = Processes()
        log = self.workdir / "pykubeproxy.log"
        proc = processes.start(ns, daemon_argv(kubeconfig, self.settings), log=log, cwd=REPO)
        try:
            read = lambda: ns.exec(f"iptables-{self.settings.backend}-save", "-t", "nat").stdout  # noqa: E731
            watch = KernelWatch(read, model)
            self._measure(ns, api, model, watch, proc.pid, proc.poll)
            self._stop(proc)
        finally:
            self.stop.set()
            processes.stop_all()
            self._summarize_log(log.read_text(errors="replace"))

    def _measure(
        self,
        ns: Netns,
        api: FakeApiServer,
        model: ApiModel,
        watch: KernelWatch,
        pid: int,
        poll: Callable[[], int | None],
    ) -> None:
        self.report.first_sync = converge(watch, self.settings)
        if self.report.first_sync is None:
            return
        started = time.monotonic()
        churn = Churn(model, self.settings.rate)
        threads = [
            threading.Thread(target=churn.run, args=(self.stop,), daemon=True),
            threading.Thread(target=watch.run, args=(self.stop,), daemon=True),
            threading.Thread(target=self._sample_rss, args=(pid, poll), daemon=True),
        ]
        for thread in threads:
            thread.start()
        # Every kind of disturbance once, in a random order, then more until the time is up.
        kinds = self.rng.sample(DISTURBANCES, len(DISTURBANCES))
        while poll() is None and (kinds or time.monotonic() - started < self.settings.duration):
            kinds = kinds or self.rng.sample(DISTURBANCES, len(DISTURBANCES))
            churn.resume()
            self.stop.wait(self.rng.uniform(*self.settings.churn))
            self.report.disturbances.append(
                self._disturbance(api, model, watch, churn, kinds.pop())
            )
        churn.pause()
        self.report.alive_throughout = poll() is None
        self.report.vanished = list(watch.vanished)
        self.report.kernel_reads = watch.reads
        self.report.writes = dict(model.writes)
        if self.report.alive_throughout:
            self._read_metrics(ns)
        self.stop.set()
        self._rss_figures(started)

    def _disturbance(
        self, api: FakeApiServer, model: ApiModel, watch: KernelWatch, churn: Churn, kind: str
    ) -> Disturbance:
        writes_before = sum(model.writes.values())
        began = time.monotonic()
        disturb(api, kind, self.settings, self.rng)
        ended = time.monotonic()
        churn.pause()
        writes = sum(model.writes.values()) - writes_before
        reconnected = _bounded_wait(
            lambda: all(api.open_watches(r) >= 1 for r in RESOURCES), self.settings.converge_timeout
        )
        back = time.monotonic() - ended if reconnected else None
        since_end = time.monotonic() - ended
        converged = converge(watch, self.settings)
        total = None if converged is None else since_end + converged
        return Disturbance(kind, ended - began, back, total, writes)

    def _sample_rss(self, pid: int, poll: Callable[[], int | None]) -> None:
        while not self.stop.wait(1.0) and poll() is None:
            try:
                self.rss.append((time.monotonic(), rss_mib(pid)))
            except (OSError, RuntimeError):
                return

    def _rss_figures(self, started: float) -> None:
        warm_from = started + self.settings.warm_up
        warm = [v for t, v in self.rss if warm_from <= t < warm_from + 10]
        last = self.rss[-1][0] if self.rss else started
        end = [v for t, v in self.rss if t >= last - 10]
        self.report.rss_warm = statistics.median(warm) if warm else None
        self.report.rss_end = statistics.median(end) if end else None
        self.report.rss_peak = max((v for _, v in self.rss), default=None)

    def _read_metrics(self, ns: Netns) -> None:
        text = fetch_metrics(ns)
        syncs = metric_values(text, "kubeproxy_sync_proxy_rules_duration_seconds_count")
        self.report.syncs = sum(syncs.values()) if syncs else None
        self.report.requests_by_code = metric_values(text, "rest_client_requests_total")

    def _stop(self, proc: Any) -> None:
        began = time.monotonic()
        proc.terminate()
        try:
            self.report.exit_code = proc.wait(timeout=30)
            self.report.stop_seconds = time.monotonic() - began
        except subprocess.TimeoutExpired:  # outlived SIGTERM: recorded; stop_all kills it
            self.report.exit_code = None

    def _summarize_log(self, text: str) -> None:
        lists: dict[str, int] = {}
        for event in log_events(text):
            if event.get("event") == "listed":
                kind = str(event.get("kind"))
                lists[kind] = lists.get(kind, 0) + 1
        self.report.lists = lists
        self.report.log_tail = "\n".join(text.splitlines()[-40:])


def broken_promises(report: SoakReport, settings: SoakSettings) -> list[str]:
    """Every promise the run broke, in words (empty: all kept)."""
    broken = []
    if report.first_sync is None:
        return ["the first sync never made the kernel match the API"]
    if not report.alive_throughout:
        broken.append("the daemon exited during the soak")
    broken += [f"a Service vanished while its object existed: {v}" for v in report.vanished]
    bound = 2 * settings.min_sync_period
    for d in report.disturbances:
        if d.converged_after is None or d.reconnected_after is None:
            broken.append(f"no convergence after {d.kind}")
        elif d.converged_after - d.reconnected_after > bound:
            late = d.converged_after - d.reconnected_after
            broken.append(f"{d.kind}: converged {late:.2f} s after reconnecting (> {bound} s)")
    missing = set(DISTURBANCES) - {d.kind for d in report.disturbances}
    if missing:
        broken.append(f"disturbances never tried: {sorted(missing)}")
    if report.rss_warm and report.rss_end and report.rss_end > 1.1 * report.rss_warm:
        broken.append(f"RSS grew from {report.rss_warm:.1f} to {report.rss_end:.1f} MiB")
    if report.exit_code != 0 or (report.stop_seconds or 99) > 2.0:
        broken.append(f"SIGTERM: exit {report.exit_code} after {report.stop_seconds} s")
    return broken
