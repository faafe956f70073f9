"""Runs pykubeproxy (and Prometheus) in a throw-away network namespace and talks to them there.

The namespace comes from tests.support.netns, so nothing here touches the host's own namespace
beyond ``ip netns add|delete|pids`` and ``ip netns exec <ours> ...``: every listener binds
127.0.0.1 inside the namespace, and every request to it is made from inside (by ``fetch.py``).
A fake API server for the daemon binds 127.0.0.1 inside the namespace too: its socket is opened
there (pyroute2's pushns, for this thread only) and served by threads of the test process.
Processes are stopped by PID.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import netns as pyroute2_netns

from tests.support.fake_apiserver import FakeApiServer
from tests.support.netns import Netns, Processes, namespace
from tests.support.paths import EXAMPLES, REPO
from tests.support.wait import wait_until

FETCH = Path(__file__).with_name("fetch.py")

METRICS_ADDRESS = "127.0.0.1:10249"
HEALTHZ_ADDRESS = "127.0.0.1:10256"
METRICS_URL = f"http://{METRICS_ADDRESS}"
HEALTHZ_URL = f"http://{HEALTHZ_ADDRESS}"
SYNC_PERIOD = "2s"  # short, so that periodic (partial) syncs happen within a test

_PY = (sys.executable, "-I", "-S")  # the fetch helper is stdlib only: start it lean
_CMD_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0


def rfc3339_now() -> str:
    """Now, as the EndpointSlice controller writes its trigger-time annotation (UTC, with Z)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer fetched inside the namespace (`status` None when nothing answered)."""

    url: str
    status: int | None
    body: str = ""
    content_type: str | None = None
    error: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


class Namespace:
    """A namespace of ours (tests.support.netns), the processes started in it, and its removal."""

    def __init__(self, netns: Netns, workdir: Path) -> None:
        self.netns = netns
        self.name = netns.name
        self.workdir = workdir
        self._processes = Processes()

    @classmethod
    @contextlib.contextmanager
    def created(cls, workdir: Path) -> Iterator[Namespace]:
        """A fresh `pkp-obs-<hex>`; what we started is stopped, then the rest, then it goes."""
        with namespace("obs") as netns:
            ns = cls(netns, workdir)
            try:
                yield ns
            finally:
                ns._processes.stop_all()

    def run(
        self,
        *argv: str,
        input: str | None = None,
        timeout: float = _CMD_TIMEOUT,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace; fail the test if it fails."""
        return self.netns.exec(*argv, input=input, timeout=timeout, cwd=cwd)

    def start(
        self, argv: Sequence[str], *, log_name: str, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process inside; its output goes to a log file nobody must drain."""
        return self._processes.start(
            self.netns, argv, log=self.workdir / f"{log_name}.log", cwd=cwd
        )

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return self._processes.log(proc)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = _STOP_TIMEOUT) -> int:
        """SIGTERM by PID, SIGKILL if it lingers; the exit code (negative: killed by a signal)."""
        return self._processes.stop(proc, timeout)

    def fetch(self, *urls: str) -> list[Answer]:
        """GET each URL from inside the namespace."""
        out = self.run(*_PY, str(FETCH), input=json.dumps(urls), timeout=10.0 + 5.0 * len(urls))
        return [
            Answer(
                url=item["url"],
                status=item["status"],
                body=item.get("body", ""),
                content_type=item.get("type"),
                error=item.get("error", ""),
            )
            for item in json.loads(out.stdout)
        ]

    def get(self, url: str) -> Answer:
        return self.fetch(url)[0]


class Scrape:
    """One /metrics page: the declared types, and every sample by name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))

    def value(self, name: str, **labels: str) -> float | None:
        for have, value in self.samples.get(name, ()):
            if all(have.get(k) == v for k, v in labels.items()):
                return value
        return None

    def buckets(self, histogram: str) -> list[float]:
        """The upper bounds of a histogram's buckets, +Inf included, in order."""
        return [float(labels["le"]) for labels, _ in self.samples.get(f"{histogram}_bucket", ())]


def sync_counts(scrape: Scrape) -> tuple[float, float, float]:
    """(all, full, partial) syncs counted so far."""
    family = {"ip_family": "IPv4"}
    return (
        scrape.value("kubeproxy_sync_proxy_rules_duration_seconds_count", **family) or 0.0,
        scrape.value("kubeproxy_sync_full_proxy_rules_duration_seconds_count", **family) or 0.0,
        scrape.value("kubeproxy_sync_partial_proxy_rules_duration_seconds_count", **family) or 0.0,
    )


class ProxyProcess:
    """pykubeproxy inside a namespace, logging JSON lines: from manifest files, or from an API
    server when given a kubeconfig."""

    def __init__(self, ns: Namespace, manifests: Path, *, kubeconfig: Path | None = None) -> None:
        self.ns = ns
        self.manifests = manifests
        self.proc = ns.start(
            [sys.executable, "-m", "pykubeproxy", *self.arguments(manifests, kubeconfig)],
            log_name="pykubeproxy",
            cwd=REPO,
        )

    @staticmethod
    def arguments(manifests: Path, kubeconfig: Path | None = None) -> list[str]:
        source = (
            ["--kubeconfig", str(kubeconfig)] if kubeconfig else ["--from-file", str(manifests)]
        )
        return [
            *source,
            "--hostname-override",
            "node-1",
            "--iptables-min-sync-period",
            "100ms",
            "--iptables-sync-period",
            SYNC_PERIOD,
            "--metrics-bind-address",
            METRICS_ADDRESS,
            "--healthz-bind-address",
            HEALTHZ_ADDRESS,
        ]

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.ns.log(self.proc).splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    lines.append(parsed)
        return lines

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == event]

    def scrape(self) -> Scrape | None:
        """The metrics page, or None while the daemon does not answer (yet)."""
        self.assert_running()
        answer = self.ns.get(f"{METRICS_URL}/metrics")
        return Scrape(answer.body) if answer.status == 200 else None

    def wait_for_syncs(
        self, *, total: float = 1, partial: float = 0, timeout: float = 10.0
    ) -> Scrape:
        def enough() -> Scrape | None:
            scrape = self.scrape()
            if scrape is None:
                return None
            done, _, partials = sync_counts(scrape)
            return scrape if done >= total and partials >= partial else None

        what = f"{total:g} syncs ({partial:g} partial) in /metrics"
        scrape = wait_until(enough, what=what, timeout=timeout)
        assert scrape is not None  # wait_until hands back only what is truthy
        return scrape

    def assert_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"pykubeproxy exited {self.proc.returncode}:\n{self.ns.log(self.proc)}"
            )

    def stop(self) -> int:
        return self.ns.stop(self.proc)

    def dry_run(self, *extra: str) -> str:
        """What `--dry-run` prints for the same manifests (run in the namespace, like the rest)."""
        argv = [sys.executable, "-m", "pykubeproxy", "--dry-run", *extra]
        argv += ["--from-file", str(self.manifests), "--hostname-override", "node-1"]
        return self.ns.run(*argv, cwd=REPO).stdout

    def edit_after_the_full_sync(self, edit: Callable[[], None], *, timeout: float = 10.0) -> None:
        """Make `edit` once the first (full) sync is done, so that the sync it causes is partial.

        Only the first sync, a retry after a failure, and one an hour are full; the periodic
        syncs every SYNC_PERIOD in between are partial.
        """
        first = self.wait_for_syncs(timeout=timeout)
        assert sync_counts(first)[1] >= 1, "the first sync is a full one"
        edit()


# -- the cluster the daemon reads ---------------------------------------------------------------


def copy_examples(directory: Path) -> Path:
    """The example cluster, in a directory of its own that a test may edit."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in EXAMPLES.glob("*.yaml"):
        shutil.copy(path, directory / path.name)
    return directory


def edit_endpoint_slice(manifests: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite one EndpointSlice of endpointslices.yaml in place (the daemon polls the file)."""
    path = manifests / "endpointslices.yaml"
    documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    found = [d for d in documents if d and d["metadata"]["name"] == name]
    assert found, f"no EndpointSlice {name} in {path}"
    edit(found[0])
    # Atomically: the daemon may read the file at any moment, and half a file is another cluster.
    # (It reads only manifest suffixes, so it never sees the staged copy.)
    staged = path.with_suffix(".staged")
    staged.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    os.replace(staged, path)


def add_endpoint(manifests: Path, slice_name: str, address: str, *, trigger_time: str) -> None:
    """A new ready endpoint on node-1, annotated with the time the change was triggered."""

    def edit(slice_: dict[str, Any]) -> None:
        slice_["endpoints"].append(
            {"addresses": [address], "nodeName": "node-1", "conditions": {"ready": True}}
        )
        annotations = slice_["metadata"].setdefault("annotations", {})
        annotations["endpoints.kubernetes.io/last-change-trigger-time"] = trigger_time

    edit_endpoint_slice(manifests, slice_name, edit)


@contextlib.contextmanager
def api_server_in(ns: Namespace) -> Iterator[FakeApiServer]:
    """A fake API server listening on 127.0.0.1 inside the namespace only, stopped after."""
    pyroute2_netns.pushns(ns.name)  # this thread only; the listening socket stays in there
    try:
        server = FakeApiServer(bookmark_interval=1.0).start()
    finally:
        pyroute2_netns.popns()
    try:
        yield server
    finally:
        server.stop()


RESOURCES = {"Service": "services", "EndpointSlice": "endpointslices", "Node": "nodes"}


def publish(server: FakeApiServer, manifests: Path) -> None:
    """Create every object of the manifest directory in the API server, as kubectl apply would."""
    for path in sorted(manifests.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                server.create(RESOURCES[document["kind"]], document)


def add_endpoint_through_api(
    server: FakeApiServer, slice_name: str, address: str, *, trigger_time: str
) -> None:
    """add_endpoint, written to the API server: one EndpointSlice update (one MODIFIED event)."""
    found = [s for s in server.objects("endpointslices") if s["metadata"]["name"] == slice_name]
    assert found, f"no EndpointSlice {slice_name} in the API server"
    slice_ = found[0]
    slice_["endpoints"].append(
        {"addresses": [address], "nodeName": "node-1", "conditions": {"ready": True}}
    )
    annotations = slice_["metadata"].setdefault("annotations", {})
    annotations["endpoints.kubernetes.io/last-change-trigger-time"] = trigger_time
    server.update("endpointslices", slice_)


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
