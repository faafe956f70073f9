"""IPVS mode's kernel operations reach the metrics and the sync log, not only the IPVS log."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from pykubeproxy.backends.ipvs.backend import IpvsBackend
from pykubeproxy.config import Config
from pykubeproxy.health import ProxyHealth
from pykubeproxy.metrics import ProxyMetrics
from pykubeproxy.observe import Observer
from pykubeproxy.pipeline import NodeIdentity
from pykubeproxy.proxy import Proxy
from pykubeproxy.servers import RulesView
from pykubeproxy.store import Store
from tests.support.fakes import FakeIptables, FakeIpvs

WEB = {
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
}
WEB_SLICE = {
    "metadata": {
        "name": "web-1",
        "namespace": "shop",
        "labels": {"kubernetes.io/service-name": "web"},
    },
    "addressType": "IPv4",
    "endpoints": [{"addresses": ["10.244.1.11"]}, {"addresses": ["10.244.2.12"]}],
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
}
OPERATIONS = "pykubeproxy_kernel_operations_total"


def test_ipvs_operations_are_counted_and_logged_with_the_sync() -> None:
    registry, store, ipvs = CollectorRegistry(), Store(), FakeIpvs()
    proxy = Proxy(
        backend=IpvsBackend(Config(mode="ipvs"), ipvs, FakeIptables()),
        identity=NodeIdentity("node-1", True),
    )
    observer = Observer(
        store,
        metrics=ProxyMetrics(registry, started=0.0),
        health=ProxyHealth(timeout=60.0),
        rules=RulesView(),
    )
    proxy.observer = observer
    store.replace("Service", [WEB])
    store.replace("EndpointSlice", [WEB_SLICE])

    with capture_logs() as logs:
        first = proxy.sync(store, full=False)

    # the address, the virtual server and its two real servers
    assert len(first.operations) == 4
    assert registry.get_sample_value(OPERATIONS) == 4
    (synced,) = (line for line in logs if line["event"] == "synced")
    assert synced["operations"] == 4 and synced["mode"] == "ipvs"
    assert "10.96.0.10" in ipvs.addresses

    again = proxy.sync(store, full=False)

    assert again.operations == () and not again.wrote
    assert registry.get_sample_value(OPERATIONS) == 4
