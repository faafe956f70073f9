"""client-go's rest_client_* metrics of the reflectors' requests, against the fake API server."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pykubeproxy.client_metrics import RequestMetrics, api_host
from pykubeproxy.metrics import ClientMetrics
from pykubeproxy.sources.clients import api_client, requesters
from pykubeproxy.sources.kube import KubeSource, Timing
from pykubeproxy.store import Store
from tests.observability.expected import CLIENT_BUCKETS, CLIENT_METRICS, same_bounds
from tests.support.builders import service
from tests.support.fake_apiserver import FakeApiServer
from tests.support.wait import wait_until

FAST = Timing(
    page_size=2,
    watch_timeout=30,
    read_timeout=1.0,
    connect_timeout=1.0,
    backoff_base=0.05,
    backoff_max=0.2,
)
REQUESTS = "rest_client_requests_total"
DURATION = "rest_client_request_duration_seconds"


@dataclass(frozen=True, slots=True)
class Seen:
    """What one reflector's requests left in a registry of their own."""

    registry: CollectorRegistry
    host: str

    def requests(self, code: str) -> float:
        labels = {"code": code, "method": "GET", "host": self.host}
        return self.registry.get_sample_value(REQUESTS, labels) or 0.0

    def codes(self) -> dict[str, float]:
        return {
            sample.labels["code"]: sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == REQUESTS
        }

    def timed(self) -> float:
        labels = {"verb": "GET", "host": self.host}
        return self.registry.get_sample_value(f"{DURATION}_count", labels) or 0.0

    def settle(self, codes: dict[str, float], *, timed: float) -> None:
        """Wait until exactly these counts show (a watch counts once its headers are in)."""
        wait_until(
            lambda: self.codes() == codes and self.timed() == timed,
            what=f"requests {codes} and {timed:g} timed pages (have {self.codes()})",
        )


@contextlib.contextmanager
def watching_services(kubeconfig: Path) -> Iterator[tuple[KubeSource, Seen]]:
    """A reflector of Services only (so the counts are its own), metrics in a fresh registry."""
    api = api_client(str(kubeconfig), "")
    registry = CollectorRegistry()
    host = api_host(api.configuration.host)
    kube = KubeSource(
        request_by_kind={"Service": requesters(api, "node-1")["Service"]},
        store=Store(),
        timing=FAST,
        observer=RequestMetrics(ClientMetrics(registry), host),
    )
    kube.start()
    try:
        yield kube, Seen(registry, host)
    finally:
        kube.stop(timeout=5.0)
        api.close()


@pytest.fixture
def five_services(apiserver: FakeApiServer) -> FakeApiServer:
    """Five Services: three LIST pages of two."""
    for i in range(5):
        apiserver.create(
            "services", service(f"svc-{i}", cluster_ip=f"10.96.0.{10 + i}", served=True)
        )
    return apiserver


def test_metrics_carry_client_gos_names_types_labels_and_buckets() -> None:
    registry = CollectorRegistry()
    observer = RequestMetrics(ClientMetrics(registry), "10.96.0.1:443")
    observer.answered(200)
    observer.listed(0.2)
    scrape = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(scrape)}
    for name, (kind, labels) in CLIENT_METRICS.items():
        family = families[name.removesuffix("_total")]
        assert family.type == kind, name
        assert f"# TYPE {name} {kind}" in scrape
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(labels), sample
    bounds = [float(s.labels["le"]) for s in families[DURATION].samples if "le" in s.labels]
    assert same_bounds(bounds, CLIENT_BUCKETS), bounds


def test_a_registry_without_requests_lists_no_series() -> None:
    registry = CollectorRegistry()
    ClientMetrics(registry)
    samples = [s for f in registry.collect() for s in f.samples]
    assert samples == []


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://10.96.0.1:443", "10.96.0.1:443"),
        ("https://api.example.com", "api.example.com"),
        ("https://admin@[fd00::1]:6443/prefix", "[fd00::1]:6443"),
        ("", "none"),
    ],
)
def test_the_host_label_is_the_servers_host_and_port_as_written(url: str, host: str) -> None:
    assert api_host(url) == host


def test_each_list_page_and_each_watch_is_counted_and_only_pages_are_timed(
    five_services: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver = five_services
    with watching_services(kubeconfig) as (kube, seen):
        wait_until(lambda: kube.synced, what="the source to sync")
        apiserver.wait_for_watches("services")
        assert seen.host == f"127.0.0.1:{apiserver.port}"
        assert len(apiserver.requests_to("services", watch=False)) == 3
        seen.settle({"200": 3.0 + 1.0}, timed=3.0)  # the pages; client-go times no watch
        assert len(apiserver.requests_to("services")) == 4


def test_an_http_410_on_watch_counts_as_410_and_the_relists_pages_are_timed(
    five_services: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver = five_services
    apiserver.gone_next_watch("services", as_http=True)
    with watching_services(kubeconfig) as (kube, seen):
        wait_until(lambda: kube.reflectors[0].lists >= 2, what="a second list")
        apiserver.wait_for_watches("services")
        seen.settle({"200": 3.0 + 3.0 + 1.0, "410": 1.0}, timed=6.0)


def test_a_410_inside_a_watch_stream_counts_as_the_200_that_carried_it(
    five_services: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver = five_services
    apiserver.gone_next_watch("services", as_http=False)
    with watching_services(kubeconfig) as (kube, seen):
        wait_until(lambda: kube.reflectors[0].lists >= 2, what="a second list")
        apiserver.wait_for_watches("services")
        seen.settle({"200": 3.0 + 1.0 + 3.0 + 1.0}, timed=6.0)


def test_a_500_is_counted_and_the_failed_page_is_timed_too(
    five_services: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver = five_services
    apiserver.fail_next("services", status=500, count=2, verb="list")
    with watching_services(kubeconfig) as (kube, seen):
        wait_until(lambda: kube.synced, what="the source to sync")
        apiserver.wait_for_watches("services")
        # As client-go's Request.request(), which times every attempt, answered or not.
        seen.settle({"500": 2.0, "200": 3.0 + 1.0}, timed=2.0 + 3.0)


def test_a_watch_answered_500_counts_as_500_and_the_watch_is_made_again(
    five_services: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver = five_services
    apiserver.fail_next("services", status=500, verb="watch")
    with watching_services(kubeconfig) as (_, seen):
        apiserver.wait_for_watches("services")
        seen.settle({"500": 1.0, "200": 3.0 + 1.0}, timed=3.0)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_counts_as_error_and_is_timed(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    port = unused_port()  # nothing listens there: every connection is refused
    config = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    config.write_text(config.read_text().replace(f":{apiserver.port}", f":{port}"))
    with watching_services(config) as (kube, seen):
        wait_until(lambda: seen.requests("<error>") >= 2, what="two refused requests")
        assert seen.host == f"127.0.0.1:{port}"
        assert set(seen.codes()) == {"<error>"}
        assert seen.timed() >= 2.0
        assert not kube.synced
