"""Wiring: builds the backend, source, proxy and servers for what was asked, and runs it.

Every way of running (the daemon, `--once`, `--dry-run`, `--cleanup`) goes through here; the
proxy mode is never looked at: `backends.open_backend` picks it.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pykubeproxy.backends import BackendError, SetupError, SyncError, cleanup_all, open_backend
from pykubeproxy.config import Config
from pykubeproxy.conntrack import Conntrack
from pykubeproxy.log import get_logger
from pykubeproxy.loop import run_sync_loop
from pykubeproxy.model import Skipped
from pykubeproxy.pipeline import NodeIdentity
from pykubeproxy.proxy import Proxy, collector_paused
from pykubeproxy.sources import Source
from pykubeproxy.sources.files import FileSource, load_files
from pykubeproxy.store import Store

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from pykubeproxy.client_metrics import RequestMetrics
    from pykubeproxy.servers import Listener
    from pykubeproxy.sources.clients import Connection
    from pykubeproxy.sources.kube import Requester

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

log = get_logger("pykubeproxy")


@dataclass(frozen=True, slots=True)
class Run:
    """What the command line asked for besides the Config."""

    from_file: tuple[Path, ...] = ()
    node_ips: tuple[str, ...] = ()
    output: str = "text"


def node_identity(config: Config, node_ips: tuple[str, ...] = ()) -> NodeIdentity:
    """--hostname-override, else NODE_NAME, else the hostname (lowercased, as kubelet does)."""
    proxy_name = config.service_proxy_name
    if config.hostname_override:
        name = config.hostname_override.strip().lower()
        return NodeIdentity(name, True, node_ips, proxy_name=proxy_name)
    if env_name := os.environ.get("NODE_NAME", "").strip():
        return NodeIdentity(env_name.lower(), True, node_ips, proxy_name=proxy_name)
    return NodeIdentity(socket.gethostname().lower(), False, node_ips, proxy_name=proxy_name)


def _files_store(run: Run) -> Store:
    store = Store()
    manifests = load_files(store, run.from_file)
    for skipped in manifests.skipped:
        log.warning("skipped document", document=skipped.name, reason=skipped.reason)
    return store


def run_dry_run(config: Config, run: Run) -> int:
    """Sync once against the mode's kernel kept in memory, then print what it now holds.

    The objects come from the manifests (--from-file) or from one LIST of the cluster."""
    identity = node_identity(config, run.node_ips)
    # One pass that allocates the whole cluster and keeps most of it: collections would only
    # walk what survives anyway (about a quarter of the time at 10 000 Services).
    with collector_paused():
        store = Store()
        if run.from_file:
            skipped: Sequence[Skipped] = load_files(store, run.from_file).skipped
        else:
            # Here, not above: the API client's modules are no business of the other commands.
            from pykubeproxy.sources.listing import ListingError

            try:
                _list_cluster(config, identity.name, store)
            except ListingError as exc:
                log.error("dry run: cannot read the cluster", error=str(exc))
                return EXIT_USAGE
            skipped = ()
        return _dry_run(config, run, identity, store, skipped)


def _list_cluster(config: Config, node_name: str, store: Store) -> None:
    """One LIST of Services, EndpointSlices and this Node, as the daemon's reflectors make it."""
    from pykubeproxy.sources.listing import ListingError, list_once

    where = f"kubeconfig {config.kubeconfig}" if config.kubeconfig else "in-cluster configuration"
    if config.kubeconfig and not Path(config.kubeconfig).is_file():
        raise ListingError(f"kubeconfig {config.kubeconfig} does not exist or is not a file")
    try:
        request_by_kind, server, close = _connect(config, node_name)
    except Exception as exc:  # the client raises several kinds for a bad or missing config
        hint = "" if config.kubeconfig else " (not in a Pod? pass --kubeconfig, or --from-file)"
        raise ListingError(f"cannot use the {where}{hint}: {_one_line(exc)}") from exc
    try:
        list_once(request_by_kind, store, server=server)
    finally:
        close()


def _connect(
    config: Config, node_name: str
) -> tuple[Mapping[str, Requester], str, Callable[[], None]]:
    """The daemon's list/watch calls for this node, the server's URL, and how to let go."""
    from pykubeproxy.sources.clients import connect

    connection = connect(
        config.kubeconfig, config.master, node_name, proxy_name=config.service_proxy_name
    )
    return connection.request_by_kind, connection.server, connection.close


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _dry_run(
    config: Config, run: Run, identity: NodeIdentity, store: Store, skipped_input: Sequence[Skipped]
) -> int:
    proxy = Proxy(backend=open_backend(config, dry_run=True), identity=identity)
    snapshot, translated = proxy.translate(store)
    log.info("rendering for " + translated.note)
    skipped = (*skipped_input, *translated.state.skipped)
    for each in skipped:
        report = log.warning if each.invalid else log.info
        report("skipped", object=f"{each.kind} {each.namespace}/{each.name}", reason=each.reason)
    outcome = proxy.program(snapshot, translated.state, full=True)
    if run.output == "json":
        body = outcome.desired.to_json()
        body["skipped"] = [str(s) for s in skipped]
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        sys.stdout.write(outcome.desired.text())
    return EXIT_OK


def run_cleanup() -> int:
    """Remove what every proxy mode (ours or kube-proxy's) left: rules, IPVS, sets, kube-ipvs0."""
    try:
        removed = cleanup_all()
    except BackendError as exc:
        log.error("cleanup failed", error=str(exc))
        return EXIT_FAILURE
    log.info("cleanup done", removed=removed)
    return EXIT_OK


def _open_proxy(config: Config, run: Run) -> Proxy:
    backend = open_backend(config)
    conntrack = Conntrack() if shutil.which("conntrack") else None
    if conntrack is None:
        log.warning("conntrack is not installed: stale UDP flows will not be cleared")
    return Proxy(backend=backend, identity=node_identity(config, run.node_ips), conntrack=conntrack)


def run_once(config: Config, run: Run) -> int:
    """Sync the manifests into the kernel once."""
    if not run.from_file:
        log.error("--once needs --from-file")
        return EXIT_USAGE
    try:
        proxy = _open_proxy(config, run)
    except SetupError as exc:
        log.error("cannot start", error=str(exc))
        return EXIT_FAILURE
    try:
        with collector_paused():
            proxy.sync(_files_store(run), full=True)
    except SyncError as exc:
        log.error("the kernel refused the rules", error=str(exc))
        return EXIT_FAILURE
    return EXIT_OK


def _source(
    config: Config, run: Run, node_name: str, *, store: Store, registry: CollectorRegistry
) -> Source:
    if run.from_file:
        return FileSource(store, run.from_file)
    from pykubeproxy.client_metrics import RequestMetrics, api_host
    from pykubeproxy.metrics import ClientMetrics
    from pykubeproxy.sources.clients import connect
    from pykubeproxy.sources.kube import KubeSource, RateLimiter

    connection = connect(
        config.kubeconfig, config.master, node_name, proxy_name=config.service_proxy_name
    )
    log.info("api client", client=connection.client)
    observer = RequestMetrics(ClientMetrics(registry), api_host(connection.server))
    return KubeSource(
        request_by_kind=connection.request_by_kind,
        store=store,
        limiter=RateLimiter(config.api_qps, config.api_burst),
        observer=observer,
        on_listed=_starting_event(connection, node_name, observer),
    )


def _starting_event(
    connection: Connection, node_name: str, observer: RequestMetrics
) -> dict[str, Callable[[], None]]:
    """kube-proxy's Starting event, posted once the Node's first LIST is in (the daemon only)."""
    from pykubeproxy.sources.events import StartingEvent

    if connection.transport is None:
        log.debug("the Starting event is not posted through the kubernetes client")
        return {}
    observer.expect_posts()
    event = StartingEvent(connection.transport, node_name, observer=observer)
    return {"Node": event.announce}


def _serve(
    config: Config, proxy: Proxy, store: Store, *, registry: CollectorRegistry
) -> list[Listener]:
    """Metrics, /rules, /healthz and /livez, fed by every change and sync; SIGUSR1 logs rules."""
    # Only the daemon serves: prometheus_client and http.server stay out of the one-shot commands.
    from pykubeproxy.health import ProxyHealth
    from pykubeproxy.metrics import ProxyMetrics
    from pykubeproxy.observe import Observer
    from pykubeproxy.servers import Listener, ListenError, RulesView, health_routes, metrics_routes

    metrics = ProxyMetrics(registry, started=time.time())
    metrics.backend.info({"mode": proxy.backend.mode, "backend": proxy.backend.interface})
    health = ProxyHealth(timeout=2 * proxy.backend.periods[1])
    rules = RulesView()
    observer = Observer(store, metrics=metrics, health=health, rules=rules)
    store.on_change(observer.changed)
    proxy.observer = observer
    signal.signal(signal.SIGUSR1, lambda *_: log.info("rules", rules=rules.text()))
    metrics_listener = Listener(
        config.metrics_bind_address, metrics_routes(registry, rules), "metrics"
    )
    try:
        health_listener = Listener(
            config.healthz_bind_address, health_routes(health, metrics), "healthz"
        )
    except ListenError:
        metrics_listener.server.server_close()
        raise
    return [metrics_listener.start(), health_listener.start()]


def _settle_heap() -> None:
    """After the first sync (run_sync_loop's after_start): the cluster as listed and translated,
    and the backend's state, live as long as the process. Collect once, then freeze what is
    left: later collections walk only what came after, not the hundreds of thousands of objects
    a big cluster holds."""
    gc.collect()
    gc.freeze()
    gc.enable()
    _trim_malloc()


def _trim_malloc() -> None:
    """Give the first sync's freed text (rendered rules, the kernel's listing) back to the
    system: glibc keeps freed memory in its heaps otherwise, and RSS never comes down."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to trim this way
    libc.malloc_trim(0)


def _until_signalled(proxy: Proxy, store: Store, source: Source) -> None:
    stop, wake = threading.Event(), threading.Event()

    def stopping(*_: object) -> None:
        stop.set()
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopping)
    run_sync_loop(proxy, store, source, stop=stop, wake=wake, after_start=_settle_heap)


def _stop_all(listeners: list[Listener]) -> None:
    """Stop the listeners side by side: each waits up to its server's poll interval."""
    threads = [threading.Thread(target=listener.stop) for listener in listeners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_proxy(config: Config, run: Run) -> int:
    """The daemon: sync until SIGTERM or SIGINT, then leave the rules in place."""
    try:
        proxy = _open_proxy(config, run)
    except SetupError as exc:
        log.error("cannot start", error=str(exc))
        return EXIT_FAILURE
    store = Store()
    from pykubeproxy.metrics import standard_registry

    # Made before the source, whose first requests the API client metrics count.
    registry = standard_registry()
    try:
        source = _source(config, run, proxy.identity.name, store=store, registry=registry)
    except Exception as exc:  # the client raises several kinds for a bad or missing config
        log.error("cannot configure the Kubernetes API client", error=str(exc))
        return EXIT_FAILURE
    # Until the first sync the proxy lists and translates the cluster: everything allocated
    # survives, so collections would be wasted work; _settle_heap turns the collector back on.
    gc.disable()
    try:
        return _serve_until_stopped(config, run, proxy, store, source, registry=registry)
    finally:
        gc.enable()


def _serve_until_stopped(
    config: Config,
    run: Run,
    proxy: Proxy,
    store: Store,
    source: Source,
    *,
    registry: CollectorRegistry,
) -> int:
    from pykubeproxy.servers import ListenError

    source.start()
    try:
        listeners = _serve(config, proxy, store, registry=registry)
    except ListenError as exc:
        log.error("cannot start", error=str(exc))
        source.stop(timeout=2.0)
        return EXIT_FAILURE
    log.info("running", node=proxy.identity.name, source="files" if run.from_file else "api")
    try:
        _until_signalled(proxy, store, source)
    finally:
        source.stop(timeout=1.0)
        _stop_all(listeners)
    # Rules stay in place: traffic keeps flowing while the proxy restarts, as with kube-proxy.
    log.info("stopped; rules left in place")
    return EXIT_OK
