"""kube-proxy's Starting event: its body, and the one POST of it once this node's first LIST is in.

Upstream (cmd/kube-proxy/app/server.go, birthCry) records it through client-go's
events.k8s.io/v1 recorder: reason `Starting`, action `StartKubeProxy`, an empty note, type
Normal, regarding the Node (its uid spelled as the node name), reportingController
`kube-proxy` and reportingInstance `kube-proxy-<hostname>`. A Node has no namespace, so the
recorder files the event in `default`. Failing to post it never stops the proxy: RBAC may
not grant `create events`, and the event is only for people reading `kubectl get events`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, TypedDict

from pykubeproxy.log import get_logger
from pykubeproxy.sources.kube import status_message
from pykubeproxy.sources.transport import Transport

log = get_logger("pykubeproxy.sources.events")

REPORTING_CONTROLLER = "kube-proxy"
REASON = "Starting"
ACTION = "StartKubeProxy"
# client-go's recorder files events about cluster-scoped objects in metav1.NamespaceDefault.
NAMESPACE = "default"
# (connect, read) seconds: one bounded attempt, never retried.
POST_TIMEOUT = (5.0, 10.0)


class ReferenceJSON(TypedDict):
    kind: str
    name: str
    uid: str


class EventMetaJSON(TypedDict):
    name: str
    namespace: str


class EventJSON(TypedDict):
    """An events.k8s.io/v1 Event as client-go's recorder fills it (`note` empty, so left out)."""

    apiVersion: str
    kind: str
    metadata: EventMetaJSON
    eventTime: str
    reportingController: str
    reportingInstance: str
    action: str
    reason: str
    regarding: ReferenceJSON
    type: str


def events_path(namespace: str = NAMESPACE) -> str:
    return f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"


def starting_event(node_name: str, *, now_ns: int, hostname: str) -> EventJSON:
    """The event kube-proxy posts when it starts; named `<node>.<now in hex nanoseconds>`."""
    seconds, nanoseconds = divmod(now_ns, 1_000_000_000)
    # Whole integers: a float loses the nanoseconds, and Go truncates to microseconds.
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanoseconds // 1000)
    return EventJSON(
        apiVersion="events.k8s.io/v1",
        kind="Event",
        metadata=EventMetaJSON(name=f"{node_name}.{now_ns:x}", namespace=NAMESPACE),
        # metav1.MicroTime: RFC 3339 with microseconds, in UTC.
        eventTime=moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        reportingController=REPORTING_CONTROLLER,
        reportingInstance=f"{REPORTING_CONTROLLER}-{hostname}",
        action=ACTION,
        reason=REASON,
        regarding=ReferenceJSON(kind="Node", name=node_name, uid=node_name),
        type="Normal",
    )


class PostObserver(Protocol):
    """Told of each POST (client-go counts and times every request of its rest client)."""

    def posted(self, status: int | None, seconds: float) -> None:
        """A POST got this status (None: no response) after this many seconds."""


class StartingEvent:
    """Posts the Starting event once, from a thread of its own, after `announce()`.

    `announce` is safe to call from a reflector after every LIST: only the first call posts.
    """

    def __init__(
        self,
        transport: Transport,
        node_name: str,
        *,
        observer: PostObserver | None = None,
        hostname: Callable[[], str] = socket.gethostname,
    ) -> None:
        self.transport = transport
        self.node_name = node_name
        self.observer = observer
        self.hostname = hostname
        self._announced = False
        self._lock = threading.Lock()
        self.done = threading.Event()

    def announce(self) -> None:
        """Start posting, unless that was done before; returns at once."""
        with self._lock:
            if self._announced:
                return
            self._announced = True
        threading.Thread(target=self._post_once, name="starting-event", daemon=True).start()

    def _post_once(self) -> None:
        try:
            self.post()
        finally:
            self.done.set()

    def post(self) -> int | None:
        """POST the event now; the HTTP status, None when no answer came. Never raises."""
        body = starting_event(self.node_name, now_ns=time.time_ns(), hostname=self.hostname())
        started = time.monotonic()
        status: int | None = None
        try:
            response = self.transport.post(
                events_path(), json.dumps(body).encode(), timeout=POST_TIMEOUT
            )
            status = response.status
        except Exception as exc:  # unreachable, reset, timed out: said once, not retried
            log.warning("cannot post the Starting event", error=f"{type(exc).__name__}: {exc}")
            return None
        finally:
            if self.observer is not None:
                self.observer.posted(status, time.monotonic() - started)
        if status >= 300:
            log.warning(
                "the API server refused the Starting event",
                status=status,
                error=status_message(response.data),
            )
        else:
            log.info(
                "posted the Starting event", node=self.node_name, name=body["metadata"]["name"]
            )
        return status
