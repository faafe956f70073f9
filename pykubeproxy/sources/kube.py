"""The Kubernetes API source: a reflector per kind (LIST, then WATCH with bookmarks) into the store.

`connect` reads the configuration and makes the requests with urllib3 (transport.py) in the
common cases, and with the `kubernetes` client, imported only then, in the others (exec
plugins, auth providers). Either way responses are decoded as plain JSON, never into the
client's model classes, which cost more than the rest of a sync at 10k objects.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol, cast

from pykubeproxy.api import (
    LABEL_HEADLESS,
    LABEL_SERVICE_PROXY_NAME,
    ListJSON,
    ListMeta,
    ObjectJSON,
    WatchEventJSON,
)
from pykubeproxy.log import get_logger
from pykubeproxy.sources.lean import slim
from pykubeproxy.store import Store

log = get_logger("pykubeproxy.sources.kube")

# kube-proxy's informers ignore objects meant for another proxy and headless Services.
PROXY_LABEL_SELECTOR = f"!{LABEL_SERVICE_PROXY_NAME},!{LABEL_HEADLESS}"


def proxy_label_selector(proxy_name: str = "") -> str:
    """The Services (and slices) a proxy follows: kube-proxy's, or with --service-proxy-name
    only those labelled with that name, so two proxies split a cluster's Services between them."""
    if not proxy_name:
        return PROXY_LABEL_SELECTOR
    return f"{LABEL_SERVICE_PROXY_NAME}={proxy_name},!{LABEL_HEADLESS}"


class WatchExpired(Exception):
    """The server no longer has the history we asked for (410 Gone): list again."""


class SourceError(Exception):
    """A request failed in a way that retrying later may fix.

    `status` is the HTTP status when the server answered (0 when it did not), `message` the
    message of the Status object it sent back (what a user is told: RBAC names the verb and
    the resource refused).
    """

    def __init__(self, text: str, *, status: int = 0, message: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.message = message


class Response(Protocol):
    """What we need of the client's urllib3 response."""

    status: int
    data: bytes

    def __iter__(self) -> Iterator[bytes]: ...

    def release_conn(self) -> None: ...

    def close(self) -> None: ...


# Calls one list/watch endpoint with the given query parameters; returns the raw response.
Requester = Callable[..., Response]


class RequestObserver(Protocol):
    """Told of every request a reflector makes (client-go's rest_client_* metrics count them)."""

    def answered(self, status: int | None) -> None:
        """A request got this HTTP status, or None: no response came (refused, reset, timeout)."""

    def listed(self, seconds: float) -> None:
        """A LIST page took this long, from the rate limiter's wait to the end of its body."""


@dataclass(frozen=True, slots=True)
class Timing:
    """How long to wait for the API server, and how to back off when it fails."""

    page_size: int = 500
    watch_timeout: int = 300  # server-side timeoutSeconds of a watch (a random share is added)
    read_timeout: float = 60.0  # no byte for this long (bookmarks come every minute): reconnect
    connect_timeout: float = 10.0
    backoff_base: float = 0.8
    backoff_max: float = 30.0


class RateLimiter:
    """A token bucket: `qps` requests per second on average, bursts of `burst` (client-go's)."""

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.qps, self.burst = qps, max(burst, 1)
        self.clock, self.sleep = clock, sleep
        self._tokens = float(self.burst)
        self._last = clock()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1
            delay = -self._tokens / self.qps if self._tokens < 0 and self.qps > 0 else 0.0
        if delay > 0:
            self.sleep(delay)


def _status_error(status: int, body: bytes) -> Exception:
    if status == 410:
        return WatchExpired(f"HTTP 410: {body[:200]!r}")
    return SourceError(
        f"HTTP {status}: {body[:300]!r}", status=status, message=status_message(body)
    )


def status_message(body: bytes) -> str:
    """The message of the Status object an error response carries, else the body's start."""
    try:
        status = json.loads(body)
    except ValueError:
        status = None
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return body[:300].decode("utf-8", "replace").strip()


def _socket_of(response: Response) -> socket.socket | None:
    """The socket a urllib3 response reads from, if it can be found.

    urllib3 v2 keeps the connection on the response until it is released; failing that (an
    older urllib3, a response of another kind), the socket under http.client's file object.
    """
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    file = getattr(getattr(response, "_fp", None), "fp", None)
    sock = getattr(getattr(file, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _cut(response: Response) -> None:
    """Make a reader blocked on `response` in another thread return at once.

    Closing the response here would wait for the reader: http.client's buffered file takes a
    lock that the reader holds while it waits for data (and over TLS the SSL object is busy
    too). Shutting the socket down does not wait: the reader's recv returns, it sees a broken
    stream, and closes the response itself. socket.shutdown is called directly, not
    SSLSocket's override, which would drop the TLS object under the reader's feet.
    """
    sock = _socket_of(response)
    if sock is None:
        # Nothing to shut down: close from a thread of its own, so that stopping never waits.
        threading.Thread(target=response.close, name="close-watch", daemon=True).start()
        return
    with suppress(OSError):  # already closed: the reader is not blocked on it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _lines(response: Response) -> Iterator[bytes]:
    """The newline-separated JSON documents of a watch stream, as they arrive.

    urllib3 splits the body into lines itself. One iterator must serve the whole response:
    a second one finds the connection closed and ends silently, as if the watch had ended.
    """
    for line in response:
        if line.strip():
            yield line


class Reflector:
    """Keeps one kind of object in the store in step with the API server.

    LIST (in pages) replaces the kind's contents; WATCH from the list's resourceVersion applies
    each event; bookmarks and events advance the resourceVersion, so a reconnect resumes where
    the stream stopped. `410 Gone` means that history is lost: list again, which also applies
    deletions that happened while disconnected. Other failures back off and retry.
    """

    def __init__(
        self,
        *,
        kind: str,
        request: Requester,
        store: Store,
        stop: threading.Event,
        timing: Timing = Timing(),
        limiter: RateLimiter | None = None,
        rng: random.Random | None = None,
        observer: RequestObserver | None = None,
        on_listed: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.on_listed = on_listed  # after every LIST: must return at once
        self.request = request
        self.store = store
        self.stop = stop
        self.timing = timing
        self.limiter = limiter
        self.rng = rng or random.Random()
        self.observer = observer
        self.synced = threading.Event()
        self._active: Response | None = None  # the response being read, for interrupt()
        self._active_lock = threading.Lock()
        self.resource_version = ""
        self.failures = 0
        self.lists = 0

    def run(self) -> None:
        must_list = True
        while not self.stop.is_set():
            try:
                if must_list:
                    self._list()
                    must_list = False
                # A watch that ends (timeoutSeconds, a dropped connection) resumes from the
                # newest resourceVersion seen; only a 410 costs a new LIST.
                self._watch()
                self.failures = 0
            except WatchExpired as exc:
                log.info("resource version expired; listing again", kind=self.kind, error=str(exc))
                must_list = True
            except Exception as exc:  # any other failure: back off and retry, keep serving
                if self.stop.is_set():
                    break  # the error is our own doing: stop() closed the connection
                self._back_off(exc)

    def _call(self, **query: Any) -> Response:
        if self.limiter:
            self.limiter.wait()
        try:
            response = self.request(
                _preload_content=False,
                _request_timeout=(self.timing.connect_timeout, self.timing.read_timeout),
                **query,
            )
        except Exception as exc:
            status = getattr(exc, "status", None)
            if isinstance(status, int) and status:
                self._answered(status)
                raise _status_error(status, str(getattr(exc, "body", "")).encode()) from exc
            self._answered(None)
            raise SourceError(f"{type(exc).__name__}: {exc}") from exc
        self._answered(response.status)
        if response.status >= 400:
            body = response.data
            response.release_conn()
            raise _status_error(response.status, body)
        return response

    def _answered(self, status: int | None) -> None:
        if self.observer is not None:
            self.observer.answered(status)

    def _page(self, token: str) -> bytes:
        """The body of one LIST page; the observer learns how long it took, failed or not."""
        started = time.monotonic()
        try:
            response = self._call(limit=self.timing.page_size, _continue=token or None)
            try:
                with self._reading(response):
                    return response.data
            finally:
                response.release_conn()
        finally:
            if self.observer is not None:
                self.observer.listed(time.monotonic() - started)

    def _list(self) -> None:
        items: list[ObjectJSON] = []
        token = ""
        while True:
            page: ListJSON = json.loads(self._page(token))
            # Slimmed as each page is decoded, so the full objects never pile up; on a re-LIST
            # an unchanged object is the one already held (one copy, and its translation kept).
            items.extend(
                cast(ObjectJSON, self.store.known(self.kind, self._slim(item)))
                for item in page.get("items") or []
            )
            metadata = page.get("metadata") or ListMeta()
            token = metadata.get("continue") or ""
            if not token:
                break
        self.store.replace(self.kind, items)
        self.resource_version = str(metadata.get("resourceVersion", ""))
        self.lists += 1
        self.failures = 0
        self.synced.set()
        log.info(
            "listed", kind=self.kind, objects=len(items), resource_version=self.resource_version
        )
        if self.on_listed is not None:
            self.on_listed()

    def _watch(self) -> None:
        # Spread reconnects of many nodes over time, as client-go does.
        timeout = int(self.timing.watch_timeout * (1 + self.rng.random()))
        response = self._call(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
        )
        # The server answered: the failures before were someone else's. A stream cut later
        # backs off from the start, not from where an outage long over left the delay.
        self.failures = 0
        try:
            with self._reading(response):
                for line in _lines(response):
                    if self.stop.is_set():
                        return
                    self._apply(json.loads(line))
        finally:
            response.close()

    @contextmanager
    def _reading(self, response: Response) -> Iterator[None]:
        """While the body is read, interrupt() can cut it short."""
        with self._active_lock:
            self._active = response
        try:
            # A stop that came before interrupt() could see this response would go unnoticed.
            if self.stop.is_set():
                _cut(response)
            yield
        finally:
            with self._active_lock:
                self._active = None

    def interrupt(self) -> None:
        """Make a read of the API server return at once (used when stopping), from any thread."""
        with self._active_lock:
            active = self._active
        if active is not None:
            _cut(active)

    def _apply(self, event: WatchEventJSON) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise WatchExpired(str(obj.get("message", "")))
            raise SourceError(f"watch error {code}: {obj.get('message', '')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self.store.upsert(self.kind, self._slim(obj))
        elif kind == "DELETED":
            self.store.delete(self.kind, self._slim(obj))
        elif kind != "BOOKMARK":
            raise SourceError(f"unknown watch event type {kind!r}")
        if version:
            self.resource_version = str(version)

    def _slim(self, obj: object) -> Mapping[str, object]:
        return cast(Mapping[str, object], slim(self.kind, obj))

    def _back_off(self, exc: Exception) -> None:
        self.failures += 1
        ceiling = min(self.timing.backoff_max, self.timing.backoff_base * 2 ** (self.failures - 1))
        delay = ceiling * (0.5 + self.rng.random() / 2)  # jitter: half to all of the ceiling
        log.warning(
            "api request failed; retrying",
            kind=self.kind,
            error=str(exc),
            failures=self.failures,
            retry_in=round(delay, 2),
        )
        self.stop.wait(delay)


class KubeSource:
    """One reflector thread per kind, feeding the store; synced once every kind has listed."""

    def __init__(
        self,
        *,
        request_by_kind: Mapping[str, Requester],
        store: Store,
        timing: Timing = Timing(),
        limiter: RateLimiter | None = None,
        observer: RequestObserver | None = None,
        on_listed: Mapping[str, Callable[[], None]] | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self.reflectors = [
            Reflector(
                kind=kind,
                request=request,
                store=store,
                stop=self.stop_event,
                timing=timing,
                limiter=limiter,
                observer=observer,
                on_listed=(on_listed or {}).get(kind),
            )
            for kind, request in request_by_kind.items()
        ]
        self._threads: list[threading.Thread] = []

    @property
    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    def poll(self) -> None:
        """Nothing to do: the reflector threads push changes into the store themselves."""

    def start(self) -> None:
        for reflector in self.reflectors:
            thread = threading.Thread(
                target=reflector.run, name=f"reflector-{reflector.kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching, waiting at most `timeout` for the threads to end.

        A read in progress is cut short. A request still waiting for its response headers
        (an API server that stalls a LIST) is not: its thread ends at the read timeout, and
        being a daemon thread, never holds up the process's exit.
        """
        self.stop_event.set()
        for reflector in self.reflectors:
            reflector.interrupt()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
