"""The HTTP listeners: /metrics and /rules on the metrics address, /healthz and /livez."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pykubeproxy.backends import Programmed
from pykubeproxy.health import ProxyHealth
from pykubeproxy.log import get_logger
from pykubeproxy.metrics import ProxyMetrics

log = get_logger("pykubeproxy.servers")


@dataclass(frozen=True, slots=True)
class LastSync:
    """What the last sync programmed, and how it went."""

    desired: Programmed
    finished: str  # RFC 3339
    ok: bool
    message: str


class RulesView:
    """The rules as last programmed, for /rules and SIGUSR1."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: LastSync | None = None

    def record(self, last: LastSync) -> None:
        with self._lock:
            self._last = last

    @property
    def last(self) -> LastSync | None:
        with self._lock:
            return self._last

    def text(self) -> str:
        last = self.last
        if last is None:
            return "# no sync has run yet\n"
        outcome = "ok" if last.ok else f"failed: {last.message}"
        return f"# last sync {last.finished}: {outcome}\n" + last.desired.text()

    def json(self) -> str:
        last = self.last
        if last is None:
            return json.dumps({"lastSync": None})
        body = {
            "lastSync": {"finished": last.finished, "ok": last.ok, "message": last.message},
            **last.desired.to_json(),
        }
        return json.dumps(body, indent=2)


class ListenError(Exception):
    """A listener could not bind its address."""


Route = Callable[[dict[str, list[str]]], tuple[int, str, bytes]]


def _handler(routes: dict[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            route = routes.get(url.path)
            if route is None:
                code, ctype, body = 404, "text/plain", b"404 page not found\n"
            else:
                code, ctype, body = route(parse_qs(url.query))
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per sync is the log's budget, not one per scrape

    return Handler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Listener:
    """A threaded HTTP server on its own thread; `stop()` closes it."""

    def __init__(self, address: str, routes: dict[str, Route], name: str) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        try:
            self.server = server_class((host, int(port)), _handler(routes))
        except OSError as exc:
            hint = " (is kube-proxy still running on this node?)" if exc.errno == 98 else ""
            raise ListenError(
                f"cannot listen on {address} for {name}: {exc.strerror}{hint}"
            ) from exc
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> Listener:
        self.thread.start()
        log.info("listening", server=self.thread.name, port=self.port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def metrics_routes(registry: CollectorRegistry, rules: RulesView) -> dict[str, Route]:
    def metrics(_: dict[str, list[str]]) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)

    def rules_page(query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        if query.get("format", ["text"])[0] == "json":
            return 200, "application/json", rules.json().encode()
        return 200, "text/plain; charset=utf-8", rules.text().encode()

    return {"/metrics": metrics, "/rules": rules_page}


def health_routes(health: ProxyHealth, metrics: ProxyMetrics) -> dict[str, Route]:
    def endpoint(include_node: bool, counter: str) -> Route:
        def route(_: dict[str, list[str]]) -> tuple[int, str, bytes]:
            report = health.report(include_node=include_node)
            getattr(metrics, counter).labels(str(report.code)).inc()
            return report.code, "application/json", report.body.encode()

        return route

    return {"/healthz": endpoint(True, "healthz"), "/livez": endpoint(False, "livez")}
