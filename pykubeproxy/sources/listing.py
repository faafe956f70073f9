"""One LIST of each kind the proxy follows, for the dry run: no watch, no retries, clear errors.

The pages, selectors and slimming are the daemon's own (a `Reflector`'s LIST), so a dry run
sees exactly the objects the daemon would start from. What differs is failure: the daemon backs
off and retries for ever, a dry run gives up at the first failure and says in one line what is
wrong (no server, credentials refused, RBAC), with short timeouts.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Mapping

from pykubeproxy.sources.kube import Reflector, Requester, SourceError, Timing, WatchExpired
from pykubeproxy.store import Store

# A dry run waits this long for a connection and for each page, then gives up.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
DRY_RUN_TIMING = Timing(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)

# What RBAC calls each kind (kubectl's resource.group spelling).
RESOURCES = {
    "Service": "services",
    "EndpointSlice": "endpointslices.discovery.k8s.io",
    "Node": "nodes",
}


class ListingError(Exception):
    """A LIST failed; the message says in one line what is wrong and where."""


def list_once(
    request_by_kind: Mapping[str, Requester],
    store: Store,
    *,
    server: str,
    timing: Timing | None = None,
) -> None:
    """LIST every kind into `store`, paginated as the daemon does; stop at the first failure."""
    timing = timing or DRY_RUN_TIMING
    stop = threading.Event()
    for kind, request in request_by_kind.items():
        reflector = Reflector(kind=kind, request=request, store=store, stop=stop, timing=timing)
        try:
            # The reflector's own LIST: the same page size, selectors and slimming.
            reflector._list()
        except (SourceError, WatchExpired) as exc:
            raise ListingError(describe(exc, kind=kind, server=server, timing=timing)) from exc


def describe(exc: Exception, *, kind: str, server: str, timing: Timing) -> str:
    """One line for a failed LIST: who refused what, or why the server could not be reached."""
    resource = RESOURCES.get(kind, kind)
    status = getattr(exc, "status", 0)
    message = getattr(exc, "message", "") or str(exc)
    if isinstance(exc, WatchExpired):
        return f"listing {resource} at {server} failed: the list expired while paging ({exc})"
    if status == 401:
        return f"the API server at {server} refused the credentials (401 Unauthorized): {message}"
    if status == 403:
        return (
            f"the API server at {server} does not allow this user to list {resource} "
            f"(403 Forbidden): {message}"
        )
    if status:
        return f"listing {resource} at {server} failed with HTTP {status}: {message}"
    return (
        f"cannot reach the API server at {server}: {_why_unreachable(exc, timing)} "
        "(a dry run does not retry)"
    )


def _why_unreachable(exc: BaseException, timing: Timing) -> str:
    """The root cause of a failed connection, in words (the transport's errors wrap it)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"its certificate is not trusted ({cause.verify_message}): is the kubeconfig's "
                "certificate-authority the one that signed it?"
            )
        if isinstance(cause, ssl.SSLError):
            return f"the TLS handshake failed ({cause.reason or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is the server running, and is that its address?)"
        if isinstance(cause, TimeoutError) or "timed out" in str(cause).lower():
            return (
                f"no answer within the dry run's timeouts ({timing.connect_timeout:g} s to "
                f"connect, {timing.read_timeout:g} s per response)"
            )
        reason = getattr(cause, "reason", None)
        cause = (
            reason if isinstance(reason, BaseException) else cause.__cause__ or cause.__context__
        )
    return str(exc)
