"""Owns a fake kube-apiserver for tests: list/watch of Services, EndpointSlices, Nodes, Events.

It keeps state like the real one (objects, one global resourceVersion, event history, list
snapshots for `continue`) and lets a test inject the faults a reflector must survive.

It speaks TLS and authenticates clients by certificate, as every real kube-apiserver does: the
tests' CA signs the server's certificate (127.0.0.1, localhost) and each client's (the user is
the certificate's CN, its groups the O fields). Unlike the real server, which only asks for a
client certificate and answers 401 to a client without a valid one, the fake requires one: a
client without a certificate, or with one from an unknown CA, fails the TLS handshake. A test
makes a known user unauthorized (401) with `unauthorize(user)` and forbids it a resource (403,
as RBAC does) with `forbid(user, resource)`. `FakeApiServer(tls=False)` serves plain HTTP, with
no authentication, for the tests that need it.
"""

from __future__ import annotations

import base64
import bisect
import copy
import ctypes
import json
import os
import re
import select
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import trustme
import yaml

from tests.support.wait import wait_until

JSON = dict[str, Any]

# How often an idle watch wakes to notice a closed client, a new fault or a stopping server.
POLL_SECONDS = 0.05
# The spellings Go's strconv.ParseBool accepts, so `watch=1` and `watch=true` both work.
TRUE_VALUES = frozenset({"1", "t", "T", "TRUE", "true", "True"})
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter."
)


# --- resources and routes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    resource: str
    kind: str
    api_version: str
    prefix: str
    namespaced: bool

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


KINDS = {
    k.resource: k
    for k in (
        Kind("services", "Service", "v1", "/api/v1", namespaced=True),
        Kind(
            "endpointslices",
            "EndpointSlice",
            "discovery.k8s.io/v1",
            "/apis/discovery.k8s.io/v1",
            namespaced=True,
        ),
        Kind("nodes", "Node", "v1", "/api/v1", namespaced=False),
        Kind("events", "Event", "events.k8s.io/v1", "/apis/events.k8s.io/v1", namespaced=True),
    )
}
# What a client may POST (the Starting event); everything else is the test's to write.
CREATABLE = frozenset({"events"})


class Route(NamedTuple):
    kind: Kind
    namespace: str | None  # None: all namespaces
    name: str | None  # None: the collection


def route(path: str) -> Route | None:
    """Map `/api/v1/[namespaces/NS/]services[/NAME]` (and the other kinds) to what it names."""
    for kind in KINDS.values():
        if not path.startswith(kind.prefix + "/"):
            continue
        parts = path[len(kind.prefix) + 1 :].split("/")
        namespace = None
        if kind.namespaced and len(parts) >= 3 and parts[0] == "namespaces" and parts[1]:
            namespace, parts = parts[1], parts[2:]
        if parts[0] == kind.resource and len(parts) == 1:
            return Route(kind, namespace, None)
        if parts[0] == kind.resource and len(parts) == 2 and parts[1]:
            return Route(kind, namespace, parts[1])
    return None


def _kind(resource: str) -> Kind:
    try:
        return KINDS[resource]
    except KeyError:
        raise KeyError(f"unknown resource {resource!r}; known: {sorted(KINDS)}") from None


# --- selectors -----------------------------------------------------------------------------


class SelectorError(ValueError):
    """A label or field selector the real server would reject with 400 BadRequest."""


class Requirement(NamedTuple):
    key: str
    op: str  # "exists", "!", "=", "!=", "in", "notin"
    values: frozenset[str] = frozenset()

    def matches(self, values: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in values
        if self.op == "!":
            return self.key not in values
        if self.op in ("=", "in"):
            return self.key in values and values[self.key] in self.values
        # As in Kubernetes, "!=" and "notin" also select objects that lack the key.
        return values.get(self.key) not in self.values


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_SET = re.compile(rf"(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")
_EQUALITY = re.compile(rf"(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})")
_EXISTS = re.compile(rf"(?P<op>!?)\s*(?P<key>{_KEY})")
# Commas separate requirements, except inside the parentheses of `key in (a,b)`.
_SPLIT = re.compile(r",(?![^()]*\))")
FIELDS = ("metadata.name", "metadata.namespace")


def parse_label_selector(text: str) -> tuple[Requirement, ...]:
    """Parse `a,!b,c=d,e!=f,g in (h,i),j notin (k)` as the API server does."""
    terms = (term.strip() for term in _SPLIT.split(text))
    return tuple(_parse_requirement(term) for term in terms if term)


def _parse_requirement(term: str) -> Requirement:
    if m := _SET.fullmatch(term):
        values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
        return Requirement(m["key"], m["op"], values)
    if m := _EQUALITY.fullmatch(term):
        op = "=" if m["op"] == "==" else m["op"]
        return Requirement(m["key"], op, frozenset({m["value"]}))
    if m := _EXISTS.fullmatch(term):
        return Requirement(m["key"], m["op"] or "exists")
    raise SelectorError(f"unable to parse requirement: {term!r}")


def parse_field_selector(text: str) -> tuple[Requirement, ...]:
    """Parse `metadata.name=x,metadata.namespace!=y`; other fields are a 400, as for Services."""
    requirements = parse_label_selector(text)
    for req in requirements:
        if req.key not in FIELDS:
            raise SelectorError(f'field label not supported: "{req.key}"')
        if req.op not in ("=", "!="):
            raise SelectorError(f"invalid field selector: {text!r}")
    return requirements


@dataclass(frozen=True, slots=True)
class Filter:
    """What one request selects: a namespace (None for all) and label and field selectors."""

    namespace: str | None = None
    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    @property
    def selects(self) -> bool:
        return bool(self.labels or self.fields)

    def matches(self, obj: JSON) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        fields = {
            "metadata.name": meta.get("name", ""),
            "metadata.namespace": meta.get("namespace", ""),
        }
        return all(r.matches(labels) for r in self.labels) and all(
            r.matches(fields) for r in self.fields
        )


def request_filter(found: Route, query: Mapping[str, str]) -> Filter:
    return Filter(
        namespace=found.namespace,
        labels=parse_label_selector(query.get("labelSelector", "")),
        fields=parse_field_selector(query.get("fieldSelector", "")),
    )


# --- state ---------------------------------------------------------------------------------


class Expired(Exception):
    """The request asks for history the server no longer has: HTTP 410 or an ERROR 410 event."""


class Event(NamedTuple):
    rv: int
    type: str  # ADDED, MODIFIED or DELETED
    obj: JSON  # after the write; for DELETED the last state stamped with the deletion RV
    prev: JSON | None  # before the write, so a selector can turn MODIFIED into ADDED/DELETED


def visible_event(event: Event, flt: Filter) -> tuple[str, JSON] | None:
    """What a watcher with this filter sees of an event (the watch cache's convertToWatchEvent)."""
    now = event.type != "DELETED" and flt.matches(event.obj)
    before = event.prev is not None and flt.matches(event.prev)
    if now:
        return ("MODIFIED" if before else "ADDED"), event.obj
    if before and event.prev is not None:
        return "DELETED", _with_rv(event.prev, event.rv)
    return None


@dataclass(eq=False, slots=True)
class Subscription:
    """One open watch's inbox: writes are queued here the moment they happen."""

    resource: str
    queue: list[Event]
    bookmark_requested: bool = False


def _key(namespace: str | None, name: str) -> str:
    # Sorts like the etcd keys /registry/<resource>/<namespace>/<name>.
    return f"{namespace}/{name}" if namespace else name


def _with_rv(obj: JSON, rv: int) -> JSON:
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = str(rv)
    return out


def _without_rv(obj: JSON) -> JSON:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """Objects, the revision counter, history, list snapshots and watch inboxes.

    Callers hold the server's lock. Stored dicts are replaced on write, never mutated, so a
    snapshot is just a list of references.
    """

    def __init__(self) -> None:
        self.rv = 1
        self.horizon = 0  # a watch from an RV below this gets 410: its events were compacted
        self.objects: dict[str, dict[str, JSON]] = {name: {} for name in KINDS}
        self.history: dict[str, list[Event]] = {name: [] for name in KINDS}
        self.snapshots: dict[tuple[str, int], list[tuple[str, JSON]]] = {}
        self.watches: list[Subscription] = []

    def write(self, kind: Kind, obj: JSON, *, must_exist: bool | None) -> JSON:
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            raise ValueError("metadata.name is required")
        namespace = (meta.get("namespace") or "default") if kind.namespaced else None
        key = _key(namespace, meta["name"])
        prev = self.objects[kind.resource].get(key)
        if must_exist is True and prev is None:
            raise KeyError(f'{kind.resource} "{key}" not found')
        if must_exist is False and prev is not None:
            raise KeyError(f'{kind.resource} "{key}" already exists')
        new = _stamped(kind, obj, namespace, prev)
        # Like etcd's GuaranteedUpdate, an update that changes nothing is not a write.
        if prev is not None and _without_rv(prev) == new:
            return copy.deepcopy(prev)
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[kind.resource][key] = new
        self._record(kind, Event(self.rv, "MODIFIED" if prev else "ADDED", new, prev))
        return copy.deepcopy(new)

    def remove(self, kind: Kind, namespace: str | None, name: str) -> JSON:
        key = _key((namespace or "default") if kind.namespaced else None, name)
        prev = self.objects[kind.resource].pop(key, None)
        if prev is None:
            raise KeyError(f'{kind.resource} "{key}" not found')
        self.rv += 1
        last = _with_rv(prev, self.rv)
        self._record(kind, Event(self.rv, "DELETED", last, prev))
        return copy.deepcopy(last)

    def _record(self, kind: Kind, event: Event) -> None:
        self.history[kind.resource].append(event)
        for sub in self.watches:
            if sub.resource == kind.resource:
                sub.queue.append(event)

    def items(self, kind: Kind) -> list[tuple[str, JSON]]:
        return sorted(self.objects[kind.resource].items())

    def list_page(self, kind: Kind, flt: Filter, *, limit: int, token: str) -> JSON:
        if token:
            rv, start = _decode_continue(token)
            snapshot = self.snapshots.get((kind.resource, rv))
            if snapshot is None:
                raise Expired(CONTINUE_EXPIRED)
        else:
            rv, start, snapshot = self.rv, "", self.items(kind)
        matching = [(k, obj) for k, obj in snapshot if k >= start and flt.matches(obj)]
        page = matching[:limit] if limit > 0 else matching
        meta: JSON = {"resourceVersion": str(rv)}
        if len(page) < len(matching):
            # Later pages are read from this snapshot: the list stays consistent at `rv`.
            self.snapshots.setdefault((kind.resource, rv), snapshot)
            meta["continue"] = _encode_continue(rv, page[-1][0])
            if not flt.selects:
                meta["remainingItemCount"] = len(matching) - len(page)
        return {
            "kind": kind.list_kind,
            "apiVersion": kind.api_version,
            "metadata": meta,
            "items": [_list_item(obj) for _, obj in page],
        }

    def subscribe(self, kind: Kind, resource_version: str) -> Subscription:
        if resource_version in ("", "0"):
            # "Start at most recent": synthetic ADDED events for what exists now.
            queue = [Event(self.rv, "ADDED", obj, None) for _, obj in self.items(kind)]
        else:
            since = int(resource_version)
            if since < self.horizon:
                raise Expired(f"too old resource version: {since} ({self.horizon})")
            history = self.history[kind.resource]
            queue = history[bisect.bisect_right(history, since, key=lambda e: e.rv) :]
        sub = Subscription(kind.resource, queue)
        self.watches.append(sub)
        return sub

    def compact(self) -> None:
        # Open watches keep their inboxes, as the watch cache's watchers keep their buffers.
        self.horizon = self.rv
        self.history = {name: [] for name in KINDS}
        self.snapshots.clear()


def _stamped(kind: Kind, obj: JSON, namespace: str | None, prev: JSON | None) -> JSON:
    """A copy of obj as the server would store it; uid and creationTimestamp are server-owned."""
    new = copy.deepcopy(obj)
    new["kind"], new["apiVersion"] = kind.kind, kind.api_version
    meta = new["metadata"]
    meta.pop("resourceVersion", None)
    if namespace is None:
        meta.pop("namespace", None)
    else:
        meta["namespace"] = namespace
    old = prev["metadata"] if prev else {}
    meta["uid"] = old.get("uid") or meta.get("uid") or str(uuid.uuid4())
    created = old.get("creationTimestamp") or meta.get("creationTimestamp")
    meta["creationTimestamp"] = created or _now()
    return new


def _list_item(obj: JSON) -> JSON:
    # The real server leaves kind and apiVersion out of list items (they are on the list).
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _encode_continue(rv: int, last_key: str) -> str:
    # The real token's shape: base64 of {"v", "rv", "start"}; "start" is the next key to read.
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": last_key + "\x00"}
    data = json.dumps(token, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(decoded["rv"]), str(decoded["start"])
    except (ValueError, KeyError, TypeError):
        raise Expired(CONTINUE_EXPIRED) from None


# --- faults --------------------------------------------------------------------------------


@dataclass(slots=True)
class Fault:
    name: str  # "fail", "gone", "drop" or "stall"
    resource: str | None  # None: any resource
    verb: str | None  # "list", "watch", "get" or "create"; None: any
    arg: Any

    def applies(self, name: str, resource: str, verb: str) -> bool:
        return self.name == name and self.resource in (None, resource) and self.verb in (None, verb)


@dataclass(slots=True)
class Faults:
    """Faults waiting for the next matching request. Callers hold the server's lock."""

    pending: list[Fault] = field(default_factory=list)
    delays: dict[str | None, float] = field(default_factory=dict)
    releases: int = 0  # release_stalls() calls so far: a stalled watch waits for the next

    def take(self, name: str, resource: str, verb: str) -> Fault | None:
        for i, fault in enumerate(self.pending):
            if fault.applies(name, resource, verb):
                return self.pending.pop(i)
        return None

    def waiting_for_watch(self, resource: str) -> bool:
        return any(
            f.applies(name, resource, "watch") for f in self.pending for name in ("drop", "stall")
        )

    def delay(self, resource: str) -> float:
        return max(self.delays.get(resource, 0.0), self.delays.get(None, 0.0))


# --- certificates ----------------------------------------------------------------------------

# The user of the kubeconfig that write_kubeconfig() writes unless told otherwise: kube-proxy's.
DEFAULT_USER = "system:kube-proxy"
# A client that opens a connection and says nothing must not hold a server thread for long.
HANDSHAKE_SECONDS = 5.0


@cache
def tests_ca() -> trustme.CA:
    """The CA of this test process: it signs the fake's certificate and its clients'."""
    return trustme.CA(organization_name="pykubeproxy tests")


@cache
def stranger_ca() -> trustme.CA:
    """A CA the fake does not trust, for clients that must be turned away."""
    return trustme.CA(organization_name="pykubeproxy tests (untrusted)")


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What a client needs to talk to the fake: the CA to trust, and its certificate and key."""

    user: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files only
            cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert.write_bytes(self.cert_pem)
            key.write_bytes(self.key_pem)
            context.load_cert_chain(cert, key)
        return context


@cache
def client_credentials(user: str = DEFAULT_USER, *, trusted: bool = True) -> ClientCredentials:
    """A client certificate for `user` (its CN), from the tests' CA or else from a stranger's."""
    leaf = (tests_ca() if trusted else stranger_ca()).issue_cert(common_name=user)
    return ClientCredentials(
        user=user,
        ca_pem=tests_ca().cert_pem.bytes(),
        cert_pem=leaf.cert_chain_pems[0].bytes(),
        key_pem=leaf.private_key_pem.bytes(),
    )


@cache
def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tests_ca().issue_cert("127.0.0.1", "localhost", common_name="kube-apiserver").configure_cert(
        context
    )
    tests_ca().configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _peer_user(connection: socket.socket) -> str:
    """The CN of a verified client certificate ("" on plain HTTP)."""
    if not isinstance(connection, ssl.SSLSocket):
        return ""
    cert = connection.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return ""


def _cut(connection: socket.socket) -> None:
    """Shut a connection down from any thread. socket.shutdown itself, not SSLSocket's: that
    one drops the TLS object, which the connection's own thread may be using this moment."""
    with suppress(OSError):
        socket.socket.shutdown(connection, socket.SHUT_RDWR)


# --- the server ----------------------------------------------------------------------------


class Request(NamedTuple):
    method: str
    path: str
    query: dict[str, str]

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", "") in TRUE_VALUES

    @property
    def resource(self) -> str | None:
        found = route(self.path)
        return found.kind.resource if found else None


class FakeApiServer:
    """A kube-apiserver on 127.0.0.1 for one test: `with FakeApiServer() as api: ...`."""

    def __init__(self, *, bookmark_interval: float = 1.0, tls: bool = True) -> None:
        self.bookmark_interval = bookmark_interval
        self.tls = tls
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []  # handler crashes; a test should see none
        self._cond = threading.Condition()
        self._store = Store()
        self._faults = Faults()
        self._unauthorized: set[str] = set()
        self._forbidden: set[tuple[str, str | None]] = set()
        self._held: set[str] = set()  # resources whose POSTs wait for release_creates()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._netns: int | None = None

    # --- lifecycle

    def start(self, port: int = 0) -> FakeApiServer:
        # The namespace we listen in, to listen there again after go_away() from anywhere.
        if self._netns is None:
            self._netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._httpd = _HTTPServer(self, _server_context() if self.tls else None, port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": POLL_SECONDS},
            name="fake-apiserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, end every watch and connection, and join the threads (bounded)."""
        if self._httpd is None or self._thread is None:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._halt(timeout)
        if self._netns is not None:
            os.close(self._netns)
            self._netns = None

    def _halt(self, timeout: float) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections(timeout)
        self._thread.join(timeout)
        self._httpd = self._thread = None

    def go_away(self, seconds: float) -> None:
        """Be away for `seconds`, as a restarting API server is, then serve again.

        Every connection is cut (watches end without their final chunk) and nothing listens, so
        connecting is refused; then the server listens on the same port again, in the same
        network namespace, with the same objects and history. Returns when it is back.
        """
        if self._httpd is None or self._netns is None:
            raise RuntimeError("the server is not running")
        port = self.port
        self._halt(5.0)
        time.sleep(seconds)
        netns, failure = self._netns, []

        def listen_there() -> None:  # setns() moves only the calling thread: a thread of its own
            try:
                _enter_netns(netns)
                self.start(port)
            except BaseException as exc:  # raised again below, in the caller
                failure.append(exc)

        thread = threading.Thread(target=listen_there, name="fake-apiserver-back")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def resource_version(self) -> str:
        with self._cond:
            return str(self._store.rv)

    def write_kubeconfig(
        self, path: str | Path, *, user: str = DEFAULT_USER, trusted: bool = True
    ) -> Path:
        """Write a kubeconfig for this server and return its path.

        Over TLS: the tests' CA and a client certificate for `user`, inline as kubectl writes
        them (from a CA the server does not trust unless `trusted`). Plain HTTP: a dummy token.
        """
        cluster: dict[str, str] = {"server": self.url}
        credentials: dict[str, str] = {"token": "fake-token"}
        if self.tls:
            client = client_credentials(user, trusted=trusted)
            cluster["certificate-authority-data"] = _b64(client.ca_pem)
            credentials = {
                "client-certificate-data": _b64(client.cert_pem),
                "client-key-data": _b64(client.key_pem),
            }
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": credentials}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config))
        return path

    def client_context(self, user: str = DEFAULT_USER) -> ssl.SSLContext | None:
        """An SSL context that trusts the server and presents `user`'s certificate (None: HTTP)."""
        return client_credentials(user).ssl_context() if self.tls else None

    # --- users

    def unauthorize(self, user: str) -> None:
        """Answer every request of `user` with 401, as for a revoked or unknown credential."""
        with self._cond:
            self._unauthorized.add(user)

    def forbid(self, user: str, resource: str | None = None) -> None:
        """Answer `user`'s requests for `resource` (None: any) with 403, as RBAC would."""
        with self._cond:
            self._forbidden.add((user, resource))

    def permit(self, user: str) -> None:
        """Undo unauthorize() and every forbid() of `user`."""
        with self._cond:
            self._unauthorized.discard(user)
            self._forbidden = {(u, r) for u, r in self._forbidden if u != user}

    def _refusal(self, user: str, verb: str, kind: Kind | None) -> tuple[int, str] | None:
        """The 401 or 403 the real server would answer this request with, if any."""
        if not self.tls:
            return None
        with self._cond:
            if user in self._unauthorized:
                return 401, "Unauthorized"
            resource = kind.resource if kind else None
            if (user, None) in self._forbidden or (user, resource) in self._forbidden:
                group = kind.api_version.rpartition("/")[0] if kind else ""
                what = f'resource "{resource}"' if kind else "path"
                return 403, (
                    f'{resource or "the path"} is forbidden: User "{user}" cannot {verb} '
                    f'{what} in API group "{group}" at the cluster scope'
                )
        return None

    # --- objects

    def create(self, resource: str, obj: JSON) -> JSON:
        return self._write(resource, obj, must_exist=False)

    def update(self, resource: str, obj: JSON) -> JSON:
        return self._write(resource, obj, must_exist=True)

    def apply(self, resource: str, obj: JSON) -> JSON:
        return self._write(resource, obj, must_exist=None)

    def delete(self, resource: str, namespace: str | None, name: str) -> JSON:
        with self._cond:
            last = self._store.remove(_kind(resource), namespace, name)
            self._cond.notify_all()
            return last

    def get(self, resource: str, namespace: str | None, name: str) -> JSON | None:
        kind = _kind(resource)
        key = _key((namespace or "default") if kind.namespaced else None, name)
        with self._cond:
            obj = self._store.objects[resource].get(key)
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, resource: str) -> list[JSON]:
        with self._cond:
            return [copy.deepcopy(obj) for _, obj in self._store.items(_kind(resource))]

    def _write(self, resource: str, obj: JSON, *, must_exist: bool | None) -> JSON:
        with self._cond:
            stored = self._store.write(_kind(resource), obj, must_exist=must_exist)
            self._cond.notify_all()
            return stored

    # --- watches and the request log

    def send_bookmark(self, resource: str | None = None) -> None:
        """Make every open watch (that allows bookmarks) send a BOOKMARK now."""
        with self._cond:
            for sub in self._store.watches:
                if resource in (None, sub.resource):
                    sub.bookmark_requested = True
            self._cond.notify_all()

    def open_watches(self, resource: str | None = None) -> int:
        with self._cond:
            return sum(resource in (None, sub.resource) for sub in self._store.watches)

    def requests_to(self, resource: str, *, watch: bool | None = None) -> list[Request]:
        return [
            r for r in list(self.requests) if r.resource == resource and watch in (None, r.is_watch)
        ]

    def wait_until(self, predicate: Callable[[], bool], *, what: str, timeout: float = 5.0) -> None:
        """Wait (bounded) until predicate() holds; re-checked on every write, request and watch."""
        with self._cond:
            # The server notifies on every change, so the wait may be as long as the timeout.
            wait_until(
                predicate, what=what, timeout=timeout, interval=timeout, pause=self._cond.wait
            )

    def wait_for_watches(self, resource: str, count: int = 1, timeout: float = 5.0) -> None:
        self.wait_until(
            lambda: self.open_watches(resource) >= count,
            what=f"{count} open watch(es) of {resource}",
            timeout=timeout,
        )

    # --- faults

    def fail_next(
        self, resource: str | None, status: int = 500, count: int = 1, *, verb: str | None = None
    ) -> None:
        """Answer the next `count` matching requests with HTTP `status` and a Status body."""
        self._add_faults([Fault("fail", resource, verb, status) for _ in range(count)])

    def gone_next_watch(self, resource: str | None, *, as_http: bool = False) -> None:
        """Answer the next watch with 410: an ERROR event on a 200 stream, or an HTTP 410."""
        self._add_faults([Fault("gone", resource, "watch", as_http)])

    def drop_watch(self, resource: str | None, after_events: int = 0) -> None:
        """Cut the current or next watch's TCP connection (no final chunk) after k more events.

        Only ADDED/MODIFIED/DELETED count; bookmarks do not.
        """
        self._add_faults([Fault("drop", resource, "watch", after_events)])

    def stall_watch(self, resource: str | None, after_events: int = 0) -> None:
        """Make the current or next watch go silent, without closing, after k more events."""
        self._add_faults([Fault("stall", resource, "watch", after_events)])

    def release_stalls(self) -> None:
        """End every stall: the stalled watches go on, sending what queued meanwhile (a network
        path that heals)."""
        with self._cond:
            self._faults.releases += 1
            self._cond.notify_all()

    def hold_creates(self, resource: str) -> None:
        """Leave POSTs of `resource` unanswered (logged, not yet stored) until release_creates()."""
        with self._cond:
            self._held.add(resource)

    def release_creates(self) -> None:
        with self._cond:
            self._held.clear()
            self._cond.notify_all()

    def faults_pending(self) -> int:
        """How many injected faults no request has met yet."""
        with self._cond:
            return len(self._faults.pending)

    def delay(self, resource: str | None, seconds: float) -> None:
        """Hold every later request of the resource this long before answering (0 to undo)."""
        with self._cond:
            self._faults.delays[resource] = seconds

    def compact(self) -> None:
        """Forget the event history and list snapshots, as an etcd compaction does."""
        with self._cond:
            self._store.compact()

    def _add_faults(self, faults: list[Fault]) -> None:
        with self._cond:
            self._faults.pending.extend(faults)
            self._cond.notify_all()


_CLONE_NEWNET = 0x40000000


def _enter_netns(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd` (setns(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class _HTTPServer(ThreadingHTTPServer):
    """Tracks its connections so that stop() can cut them; never joins threads unboundedly.

    Over TLS, each connection's handshake happens in its own thread (_Handler.setup), so a slow
    or silent client never holds up accepting the next one.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, api: FakeApiServer, tls: ssl.SSLContext | None, port: int = 0) -> None:
        self.api = api
        self.tls = tls
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve our name (getfqdn); a test must not touch DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="fake-apiserver-connection",
            daemon=True,
        )
        with self._lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A crash in the fake must fail the test, not scroll past on stderr.
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            self.api.errors.append(exc)

    def close_connections(self, timeout: float) -> None:
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            _cut(sock)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # A failed handshake (no client certificate, an unknown CA) raises SSLError here:
            # the connection is dropped and, being an OSError, not counted as a crash.
            self.request.settimeout(HANDSHAKE_SECONDS)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        # Watch events are small writes; Nagle's algorithm would hold them back.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read FakeApiServer.requests instead

    @property
    def api(self) -> FakeApiServer:
        return self.server.api

    def do_GET(self) -> None:
        with self._client_may_vanish():
            self._serve_get()

    def do_POST(self) -> None:
        with self._client_may_vanish():
            self._serve_post()

    def do_PUT(self) -> None:
        with self._client_may_vanish():
            self._refuse()

    do_PATCH = do_DELETE = do_PUT

    @contextmanager
    def _client_may_vanish(self) -> Iterator[None]:
        try:
            yield
        except OSError:
            self.close_connection = True

    def _log(self) -> tuple[str, dict[str, str]]:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        with self.api._cond:
            self.api.requests.append(Request(self.command, url.path, query))
            self.api._cond.notify_all()
        return url.path, query

    def _refuse(self) -> None:
        path, _ = self._log()
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        found = route(path)
        if self._refused(self.command.lower(), found.kind if found else None):
            return
        self.send_status(405, f"the fake API server does not implement {self.command}")

    def _serve_post(self) -> None:
        """Create an object of a CREATABLE kind in the namespace of the path, as the real
        server does: 201 and the stored object, 409 if the name is taken."""
        path, _ = self._log()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        found = route(path)
        if self._refused("create", found.kind if found else None):
            return None
        if found is None or found.name or found.kind.resource not in CREATABLE:
            return self.send_status(405, f"the fake API server does not implement POST {path}")
        api, resource = self.api, found.kind.resource
        with api._cond:
            api._cond.wait_for(lambda: resource not in api._held or api._stopping.is_set())
            failure = api._faults.take("fail", resource, "create")
        if failure is not None:
            return self.send_status(failure.arg, f"injected failure of create {path}")
        try:
            obj = json.loads(body)
        except ValueError as exc:
            return self.send_status(400, f"the body is not JSON: {exc}")
        problem = _creation_problem(found, obj)
        if problem:
            return self.send_status(422 if problem.startswith("metadata.") else 400, problem)
        obj["metadata"]["namespace"] = found.namespace
        try:
            stored = self.api.create(found.kind.resource, obj)
        except KeyError as exc:
            return self.send_status(409, str(exc.args[0]))
        self.send_json(201, stored)

    def _refused(self, verb: str, kind: Kind | None) -> bool:
        """Answer 401 or 403 if the client's user may not do this (authn, then RBAC)."""
        refusal = self.api._refusal(_peer_user(self.connection), verb, kind)
        if refusal is not None:
            self.send_status(*refusal)
        return refusal is not None

    def _serve_get(self) -> None:
        path, query = self._log()
        found = route(path)
        watching = query.get("watch", "") in TRUE_VALUES
        verb = "get" if found and found.name else "watch" if watching else "list"
        if self._refused(verb, found.kind if found else None):
            return None
        if found is None:
            return self.send_status(404, "the server could not find the requested resource")
        resource = found.kind.resource
        self._pause(resource)
        with self.api._cond:
            failure = self.api._faults.take("fail", resource, verb)
        if failure is not None:
            return self.send_status(failure.arg, f"injected failure of {verb} {resource}")
        try:
            flt = request_filter(found, query)
        except SelectorError as exc:
            return self.send_status(400, str(exc))
        if verb == "get":
            return self._get_one(found)
        if verb == "watch":
            return WatchStream(self, found.kind, flt).run(query)
        return self._list(found.kind, flt, query)

    def _pause(self, resource: str) -> None:
        with self.api._cond:
            seconds = self.api._faults.delay(resource)
        if seconds > 0:
            self.api._stopping.wait(seconds)

    def _get_one(self, found: Route) -> None:
        obj = self.api.get(found.kind.resource, found.namespace, found.name or "")
        if obj is None:
            return self.send_status(404, f'{found.kind.resource} "{found.name}" not found')
        self.send_json(200, obj)

    def _list(self, kind: Kind, flt: Filter, query: Mapping[str, str]) -> None:
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            return self.send_status(400, f"invalid limit: {query['limit']!r}")
        try:
            with self.api._cond:
                body = self.api._store.list_page(
                    kind, flt, limit=limit, token=query.get("continue", "")
                )
        except Expired as exc:
            return self.send_status(410, str(exc))
        self.send_json(200, body)

    # --- writing responses

    def send_json(self, code: int, body: JSON) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code == 429:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def send_status(self, code: int, message: str) -> None:
        self.send_json(code, status_body(code, message))

    def start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        # One write per chunk, so the client never sees half an event because of us.
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        # No terminating chunk (nor TLS close_notify): the client must see a broken stream, as
        # when a node dies.
        self.close_connection = True
        _cut(self.connection)

    def client_gone(self) -> bool:
        """Whether the client hung up. It sends nothing while it reads a watch, so anything
        readable is its end: EOF, or over TLS the close_notify alert before it."""
        connection = self.connection
        try:
            readable, _, _ = select.select([connection], [], [], 0)
            if not readable:
                return False
            if not isinstance(connection, ssl.SSLSocket):
                return connection.recv(1, socket.MSG_PEEK) == b""
            connection.setblocking(False)
            try:
                return connection.recv(1) == b""
            except ssl.SSLWantReadError:
                return False  # part of a TLS record: not the end yet
            finally:
                connection.setblocking(True)
        except OSError:
            return True


def _creation_problem(found: Route, obj: object) -> str:
    """Why the real server would refuse to create `obj` at `found` ("" if it would not)."""
    kind = found.kind
    if found.namespace is None:
        return f"{kind.resource} are created in a namespace: POST to .../namespaces/NS/"
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return "the body is not an object with metadata"
    if obj.get("kind", kind.kind) != kind.kind:
        return f"kind {obj.get('kind')!r} posted to {kind.resource}"
    if obj.get("apiVersion", kind.api_version) != kind.api_version:
        return f"apiVersion {obj.get('apiVersion')!r} posted to {kind.api_version}"
    if obj["metadata"].get("namespace", found.namespace) != found.namespace:
        return (
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    if not obj["metadata"].get("name"):
        return "metadata.name: Required value: name or generateName is required"
    return ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def status_body(code: int, message: str) -> JSON:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "Unknown"),
        "code": code,
    }


# --- watch streams -------------------------------------------------------------------------


class WatchStream:
    """One open watch: history after its resourceVersion, then live events, bookmarks, faults."""

    def __init__(self, handler: _Handler, kind: Kind, flt: Filter) -> None:
        self.http = handler
        self.api = handler.api
        self.kind = kind
        self.flt = flt
        self.bookmarks = False
        self.deadline = float("inf")
        self.next_bookmark = float("inf")
        self.fault: Fault | None = None  # a claimed drop/stall; arg counts the events left

    def run(self, query: Mapping[str, str]) -> None:
        resource_version = query.get("resourceVersion", "")
        try:
            if resource_version not in ("", "0"):
                int(resource_version)
            timeout = float(query.get("timeoutSeconds") or "inf")
        except ValueError:
            return self.http.send_status(400, "invalid resourceVersion or timeoutSeconds")
        self.bookmarks = query.get("allowWatchBookmarks", "") in TRUE_VALUES
        self.deadline = time.monotonic() + timeout
        self.next_bookmark = time.monotonic() + self.api.bookmark_interval
        with self.api._cond:
            gone = self.api._faults.take("gone", self.kind.resource, "watch")
        if gone is not None:
            return self._gone(f"too old resource version: {resource_version}", as_http=gone.arg)
        try:
            with self.api._cond:
                sub = self.api._store.subscribe(self.kind, resource_version)
                self.api._cond.notify_all()
        except Expired as exc:
            return self._gone(str(exc), as_http=False)
        try:
            self.http.start_chunked()
            self._follow(sub)
        finally:
            with self.api._cond:
                self.api._store.watches.remove(sub)
                self.api._cond.notify_all()

    def _gone(self, message: str, *, as_http: bool) -> None:
        if as_http:
            return self.http.send_status(410, message)
        # The real server answers 200 and puts the 410 in the stream, then ends it.
        self.http.start_chunked()
        self._send("ERROR", status_body(410, message))
        self.http.end_chunked()

    def _follow(self, sub: Subscription) -> None:
        # Ends at the deadline, at a fault, at stop() (which wakes _wait) or when the client leaves.
        while True:
            batch, head, bookmark_requested = self._wait(sub)
            if batch is None or self._fault_fired():
                return self.http.abort()
            for event in batch:
                if self._send_visible(event) and self._fault_fired():
                    return self.http.abort()
            if time.monotonic() >= self.deadline:
                return self.http.end_chunked()
            if self.bookmarks and (bookmark_requested or time.monotonic() >= self.next_bookmark):
                self._send_bookmark(head)
            if self.http.client_gone():
                return self.http.abort()

    def _wait(self, sub: Subscription) -> tuple[list[Event] | None, int, bool]:
        """Block until there is work; return the queued events, the head RV, a bookmark ask."""
        api = self.api
        with api._cond:
            api._cond.wait_for(
                lambda: (
                    sub.queue
                    or sub.bookmark_requested
                    or api._stopping.is_set()
                    or (self.fault is None and api._faults.waiting_for_watch(sub.resource))
                ),
                timeout=self._idle_time(),
            )
            if api._stopping.is_set():
                return None, 0, False
            self._claim_fault()
            batch, sub.queue = sub.queue, []
            requested, sub.bookmark_requested = sub.bookmark_requested, False
            # Every event up to `head` for this resource is in `batch` or was sent before.
            return batch, api._store.rv, requested

    def _idle_time(self) -> float:
        now = time.monotonic()
        until_bookmark = self.next_bookmark - now if self.bookmarks else POLL_SECONDS
        return max(0.0, min(POLL_SECONDS, self.deadline - now, until_bookmark))

    def _claim_fault(self) -> None:
        if self.fault is None:
            faults = self.api._faults
            self.fault = faults.take("drop", self.kind.resource, "watch") or faults.take(
                "stall", self.kind.resource, "watch"
            )

    def _fault_fired(self) -> bool:
        """Carry out a claimed drop or stall once its events are spent; True ends the stream."""
        if self.fault is None or self.fault.arg > 0:
            return False
        if self.fault.name == "stall" and self._stall():
            self.fault = None
            return False  # released: the stream goes on
        return True

    def _stall(self) -> bool:
        """Say nothing, like a peer behind a dead network path, until someone hangs up (False)
        or release_stalls() heals the path (True)."""
        released = self.api._faults.releases
        while not self.api._stopping.wait(POLL_SECONDS):
            if self.api._faults.releases != released:
                return True
            if self.http.client_gone():
                return False
        return False

    def _send_visible(self, event: Event) -> bool:
        seen = visible_event(event, self.flt)
        if seen is None:
            return False
        self._send(*seen)
        if self.fault is not None:
            self.fault.arg -= 1
        return True

    def _send_bookmark(self, head: int) -> None:
        self._send("BOOKMARK", {"metadata": {"resourceVersion": str(head)}})
        self.next_bookmark = time.monotonic() + self.api.bookmark_interval

    def _send(self, event_type: str, obj: JSON) -> None:
        if event_type != "ERROR":
            # Watch events, unlike list items, carry kind and apiVersion.
            obj = {"kind": self.kind.kind, "apiVersion": self.kind.api_version, **obj}
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))
        self.http.write_chunk(line.encode() + b"\n")
