"""Counts and times our requests to the API server the way client-go's rest client does."""

from __future__ import annotations

from urllib.parse import urlsplit

from pykubeproxy.metrics import ClientMetrics

# client-go's code for a request that got no HTTP response: error texts are unbounded, so
# they are never label values.
NO_RESPONSE = "<error>"
# Every request a reflector makes is a GET: a LIST page, or a WATCH (a GET with ?watch=true),
# which client-go labels by the HTTP method too. The Starting event is the one POST.
VERB = "GET"
POST = "POST"


def api_host(url: str) -> str:
    """The `host` label: the server URL's host and port as written in it (Go's url.URL.Host).

    An in-cluster client names the Service address with its port (10.96.0.1:443); a kubeconfig
    server without a port gives the bare host name, as with client-go.
    """
    return urlsplit(url).netloc.rpartition("@")[2] or "none"


class RequestMetrics:
    """Feeds ClientMetrics with the requests to one API server: a reflector's RequestObserver,
    and the Starting event's PostObserver.

    As client-go: every attempt is counted once, by its status code, `<error>` when no response
    came; a watch counts when its response headers arrive, and its 410 or 500 counts as such.
    LIST pages are timed from before the client-side rate limiter to the end of the body, and
    the POST from its start to its answer, as client-go's Request.request() times Do(); its
    Watch() records the count alone.
    """

    def __init__(self, metrics: ClientMetrics, host: str) -> None:
        self.metrics = metrics
        self.host = host

    def answered(self, status: int | None) -> None:
        code = NO_RESPONSE if status is None else str(status)
        self.metrics.requests.labels(code, VERB, self.host).inc()

    def listed(self, seconds: float) -> None:
        self.metrics.duration.labels(VERB, self.host).observe(seconds)

    def expect_posts(self) -> None:
        """Start the POST latency series at zero. Prometheus sees no rate in a series whose
        first scrape already holds its only observation (the one POST, made at start)."""
        self.metrics.duration.labels(POST, self.host)

    def posted(self, status: int | None, seconds: float) -> None:
        """A POST is counted and timed, answered or not, as client-go's Do() is."""
        code = NO_RESPONSE if status is None else str(status)
        self.metrics.requests.labels(code, POST, self.host).inc()
        self.metrics.duration.labels(POST, self.host).observe(seconds)
