"""The Grafana dashboard: well-formed, kube-proxy-compatible, and every query answered with data.

The last part runs a real Prometheus next to pykubeproxy in a namespace and evaluates each
panel's expression through its HTTP API, as Grafana would: ours, and those of kube-prometheus'
"Kubernetes / Proxy" dashboard (kubernetes-mixin). The daemon reads a fake API server there,
so that the API client's metrics have requests to count, failed ones included.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.expected import (
    CLIENT_BUCKETS,
    CLIENT_METRICS,
    KUBE_PROXY_METRICS,
    PROCESS_METRICS,
    same_bounds,
)
from tests.observability.harness import (
    HEALTHZ_URL,
    METRICS_ADDRESS,
    REPO,
    Namespace,
    ProxyProcess,
    add_endpoint_through_api,
    api_server_in,
    finite,
    publish,
    rfc3339_now,
    sync_counts,
)
from tests.support.fake_apiserver import FakeApiServer
from tests.support.needs import skip_or_fail
from tests.support.wait import poll, wait_until

DASHBOARD = REPO / "deploy" / "grafana" / "pykubeproxy.json"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMETHEUS_URL = "http://127.0.0.1:9090"
INSTANCE_QUERY = "label_values(kubeproxy_sync_proxy_rules_last_timestamp_seconds, instance)"
RATE_INTERVAL = "1m"  # covers every sync the test causes
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")

# Not ours to program, so the skipped-objects panel has something to show.
INVALID_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: shop}
spec:
  type: Sideways
  clusterIP: 10.96.10.99
  ports: [{port: 80}]
"""


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel."""
    return [(p["title"], t["expr"]) for p in graph_panels(dashboard) for t in p["targets"]]


def allowed_metric(name: str) -> bool:
    """kube-proxy's own names (client-go's rest_client_* too), its process collector's, or our
    extras (pykubeproxy_*)."""
    exported = {**KUBE_PROXY_METRICS, **CLIENT_METRICS}
    histograms = [name for name, (kind, _) in exported.items() if kind == "histogram"]
    histogram_series = {f"{h}{end}" for h in histograms for end in ("_bucket", "_count", "_sum")}
    other = {name for name, (kind, _) in exported.items() if kind != "histogram"}
    return (
        name in histogram_series
        or name in other
        or name in PROCESS_METRICS
        or name.startswith("pykubeproxy_")
    )


# -- the JSON itself ------------------------------------------------------------------------------


def test_dashboard_is_grafana_json_with_datasource_and_instance_variables() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert instance["definition"] == INSTANCE_QUERY
    assert instance["query"]["query"] == INSTANCE_QUERY

    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in graph_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_uses_kube_proxy_metric_names_per_instance() -> None:
    for title, expr in expressions(load_dashboard()):
        selectors = SELECTOR.findall(expr)
        assert selectors, (title, expr)
        for metric, labels in selectors:
            assert allowed_metric(metric), f"{title}: {metric} is not a kube-proxy metric"
            assert 'instance=~"$instance"' in labels, (title, expr)
        assert "by (instance" in expr, (title, expr)
        assert "[$__rate_interval]" in expr or "rate(" not in expr, (title, expr)


def test_dashboard_covers_syncs_latency_failures_changes_rules_health_and_process() -> None:
    text = "\n".join(expr for _, expr in expressions(load_dashboard()))
    for histogram in (
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds",
        "kubeproxy_network_programming_duration_seconds",
    ):
        rate = f"sum by (instance, le) (rate({histogram}_bucket{{"
        for quantile in ("0.5", "0.9", "0.99"):
            assert f"histogram_quantile({quantile}, {rate}" in text, (histogram, quantile)
    # Full syncs come once an hour: their quantiles are over all of them, not a rate window.
    full = "sum by (instance, le) (kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{"
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}, {full}" in text, quantile
    for needle in (
        "rate(kubeproxy_sync_full_proxy_rules_duration_seconds_count{",
        "rate(kubeproxy_sync_partial_proxy_rules_duration_seconds_count{",
        "rate(kubeproxy_sync_proxy_rules_iptables_restore_failures_total{",
        "kubeproxy_sync_proxy_rules_service_changes_pending{",
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending{",
        "sum by (instance, table) (kubeproxy_sync_proxy_rules_iptables_total{",
        "sum by (instance, code) (rate(kubeproxy_proxy_healthz_total{",
        "time() - max by (instance) (kubeproxy_sync_proxy_rules_last_timestamp_seconds{",
        "rate(process_cpu_seconds_total{",
        "process_resident_memory_bytes{",
        "sum by (instance, code) (rate(rest_client_requests_total{",
    ):
        assert needle in text, needle
    latency = "sum by (instance, verb, le) (rate(rest_client_request_duration_seconds_bucket{"
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}, {latency}" in text, quantile


# -- against a real Prometheus --------------------------------------------------------------------


def need_prometheus() -> None:
    if PROMETHEUS.is_file():
        return
    skip_or_fail(f"needs {PROMETHEUS} (the prometheus Debian package)")


def prometheus_config(workdir: Path) -> Path:
    path = workdir / "prometheus.yml"
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "kube-proxy", "static_configs": [{"targets": [METRICS_ADDRESS]}]}
        ],
    }
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


class Prometheus:
    """/usr/bin/prometheus inside the namespace, scraping the daemon every second."""

    def __init__(self, ns: Namespace, workdir: Path) -> None:
        self.ns = ns
        self.proc = ns.start(
            [
                str(PROMETHEUS),
                f"--config.file={prometheus_config(workdir)}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={PROMETHEUS_URL.removeprefix('http://')}",
            ],
            log_name="prometheus",
        )

    def url(self, path: str, **params: str) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"{PROMETHEUS_URL}{path}{query}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.ns.log(self.proc)}")
        return self.ns.get(self.url("/-/ready")).status == 200

    def query(self, *exprs: str) -> list[dict[str, Any]]:
        """Instant queries through the HTTP API, all in one trip into the namespace."""
        answers = self.ns.fetch(*(self.url("/api/v1/query", query=e) for e in exprs))
        results: list[dict[str, Any]] = []
        for expr, answer in zip(exprs, answers, strict=True):
            try:
                results.append(answer.json())
            except ValueError:
                results.append({"status": "error", "error": f"{answer.status}: {answer.body}"})
            results[-1]["expr"] = expr
        return results

    def instances(self) -> list[str]:
        """What the dashboard's instance variable offers (its label_values query)."""
        match = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
        answer = self.ns.get(self.url("/api/v1/label/instance/values", **{"match[]": match}))
        values: list[str] = answer.json()["data"] if answer.status == 200 else []
        return values


@pytest.fixture(scope="module")
def apiserver(obs_netns: Namespace, cluster: Path) -> Iterator[FakeApiServer]:
    """The example cluster, and an invalid Service, in a fake API server inside the namespace."""
    with api_server_in(obs_netns) as server:
        publish(server, cluster)
        server.create("services", yaml.safe_load(INVALID_SERVICE))
        yield server


def disturb_services_watch(apiserver: FakeApiServer) -> None:
    """Cut the Services watch; the next is answered 410, and the relist's first LIST a 500.

    So the API client metrics see 4xx and 5xx codes and timed LIST pages between scrapes.
    """
    apiserver.gone_next_watch("services", as_http=True)
    apiserver.fail_next("services", status=500, verb="list")
    apiserver.drop_watch("services")


@pytest.fixture(scope="module")
def scraped(
    obs_netns: Namespace,
    cluster: Path,
    apiserver: FakeApiServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProxyProcess, Prometheus]]:
    """pykubeproxy on the API and Prometheus scraping it, once several syncs (some partial)
    and a relist after a 410 and a 500 were scraped."""
    need_prometheus()
    kubeconfig = apiserver.write_kubeconfig(tmp_path_factory.mktemp("api") / "kubeconfig")
    # The Starting event's POST is answered only once Prometheus has scraped: a counter that
    # is already 1 at the first scrape never shows a rate.
    apiserver.hold_creates("events")
    proxy = ProxyProcess(obs_netns, cluster, kubeconfig=kubeconfig)
    prometheus = Prometheus(obs_netns, tmp_path_factory.mktemp("prometheus"))
    proxy.wait_for_syncs(timeout=15)
    wait_until(prometheus.ready, what="Prometheus to be ready", timeout=15)
    scrapes = "count_over_time(kubeproxy_sync_proxy_rules_last_timestamp_seconds[1m])"
    wait_until(
        lambda: max(sample_values(prometheus.query(scrapes)[0]), default=0) >= 2,
        what="Prometheus to scrape pykubeproxy twice",
        timeout=15,
    )
    apiserver.wait_until(
        lambda: any(r.method == "POST" for r in apiserver.requests), what="the Starting event"
    )
    apiserver.release_creates()
    # Partial syncs with fresh trigger times between scrapes, so that every histogram, and the
    # probe and request counters, grow within the rate window.
    for round_ in range(1, 3):

        def edit(address: str = f"10.244.1.{100 + round_}") -> None:
            add_endpoint_through_api(apiserver, "web-abcde", address, trigger_time=rfc3339_now())
            disturb_services_watch(apiserver)

        proxy.edit_after_the_full_sync(edit)
        obs_netns.fetch(f"{HEALTHZ_URL}/healthz", f"{HEALTHZ_URL}/livez")
        proxy.wait_for_syncs(partial=round_)
        apiserver.wait_until(
            lambda round_=round_: (
                len(apiserver.requests_to("services", watch=False)) >= 1 + 2 * round_
            ),
            what=f"{round_} relist(s) of Services, each a 500 then a page",
            timeout=15,
        )
    yield proxy, prometheus
    obs_netns.stop(prometheus.proc)
    proxy.stop()


def sample_values(result: dict[str, Any]) -> list[float]:
    if result.get("status") != "success":
        return []
    data = result["data"]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(series["value"][1]) for series in data["result"]]


def substitute(expr: str, instance_regex: str) -> str:
    """What Grafana sends: its variables replaced (the datasource one is not in the query)."""
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("${instance}", instance_regex)
        .replace("$instance", instance_regex)
    )


def test_instance_variable_offers_the_scraped_daemon(
    scraped: tuple[ProxyProcess, Prometheus],
) -> None:
    _, prometheus = scraped
    assert prometheus.instances() == [METRICS_ADDRESS]


def test_every_panel_query_returns_data_from_prometheus(
    scraped: tuple[ProxyProcess, Prometheus],
) -> None:
    proxy, prometheus = scraped
    assert sync_counts(proxy.wait_for_syncs())[2] >= 2
    instance = re.escape(METRICS_ADDRESS).replace("\\", "\\\\")  # a regex, in a PromQL string
    queries = {substitute(expr, instance): title for title, expr in expressions(load_dashboard())}
    assert all("$" not in q for q in queries), [q for q in queries if "$" in q]

    def failing() -> list[str]:
        problems = []
        for result in prometheus.query(*queries):
            values = sample_values(result)
            if result.get("status") != "success":
                problems.append(f"{result['expr']}: {result.get('error')}")
            elif not values or not all(finite(v) for v in values):
                problems.append(f"{queries[result['expr']]}: {result['expr']} → {values}")
        return problems

    # Rates need two scrapes around each change; give Prometheus a few more seconds for that.
    problems = poll(
        failing,
        until=lambda found: not found,
        what="every panel query to return finite data",
        timeout=20.0,
        interval=0.5,
        describe="\n".join,
    )
    assert problems == [], "\n".join(problems)


# -- kube-prometheus' "Kubernetes / Proxy" dashboard -----------------------------------------------

# Every target of kubernetes-mixin's dashboards/proxy.libsonnet (the grafonnet-lib version with
# %(grafanaIntervalVar)s and a cluster variable), as (panel title, legend, PromQL), written out
# with the mixin's defaults: clusterLabel `cluster`, kubeProxySelector `job="kube-proxy"` (our
# Prometheus' job name), grafanaIntervalVar `$__rate_interval`. Grafana's variables stay in.
_BUCKETS_BY = "[$__rate_interval])) by (verb, url, le))"
MIXIN_PROXY_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("Up", "", 'sum(up{cluster="$cluster", job="kube-proxy"})'),
    (
        "Rules Sync Rate",
        "rate",
        "sum(rate(kubeproxy_sync_proxy_rules_duration_seconds_count"
        '{cluster="$cluster", job="kube-proxy", instance=~"$instance"}[$__rate_interval]))',
    ),
    (
        "Rule Sync Latency 99th Quantile",
        "{{instance}}",
        "histogram_quantile(0.99,rate(kubeproxy_sync_proxy_rules_duration_seconds_bucket"
        '{cluster="$cluster", job="kube-proxy", instance=~"$instance"}[$__rate_interval]))',
    ),
    (
        "Network Programming Rate",
        "rate",
        "sum(rate(kubeproxy_network_programming_duration_seconds_count"
        '{cluster="$cluster", job="kube-proxy", instance=~"$instance"}[$__rate_interval]))',
    ),
    (
        "Network Programming Latency 99th Quantile",
        "{{instance}}",
        "histogram_quantile(0.99, sum(rate(kubeproxy_network_programming_duration_seconds_bucket"
        '{cluster="$cluster", job="kube-proxy", instance=~"$instance"}[$__rate_interval]))'
        " by (instance, le))",
    ),
    *(
        (
            "Kube API Request Rate",
            f"{klass}xx",
            'sum(rate(rest_client_requests_total{cluster="$cluster", job="kube-proxy", '
            f'instance=~"$instance",code=~"{klass}.."}}[$__rate_interval]))',
        )
        for klass in "2345"
    ),
    (
        "Post Request Latency 99th Quantile",
        "{{verb}} {{url}}",
        "histogram_quantile(0.99, sum(rate(rest_client_request_duration_seconds_bucket"
        '{cluster="$cluster", job="kube-proxy",instance=~"$instance",verb="POST"}' + _BUCKETS_BY,
    ),
    (
        "Get Request Latency 99th Quantile",
        "{{verb}} {{url}}",
        "histogram_quantile(0.99, sum(rate(rest_client_request_duration_seconds_bucket"
        '{cluster="$cluster", job="kube-proxy", instance=~"$instance", verb="GET"}' + _BUCKETS_BY,
    ),
    (
        "Memory",
        "{{instance}}",
        'process_resident_memory_bytes{cluster="$cluster", job="kube-proxy",instance=~"$instance"}',
    ),
    (
        "CPU usage",
        "{{instance}}",
        'rate(process_cpu_seconds_total{cluster="$cluster", job="kube-proxy",'
        'instance=~"$instance"}[$__rate_interval])',
    ),
    (
        "Goroutines",
        "{{instance}}",
        'go_goroutines{cluster="$cluster", job="kube-proxy",instance=~"$instance"}',
    ),
)
# The mixin's instance variable, label_values(up{job="kube-proxy", cluster="$cluster"}, instance),
# with the cluster variable empty.
MIXIN_INSTANCE_QUERY = 'up{job="kube-proxy", cluster=""}'
# Targets that stay empty on pykubeproxy, and why. Every other one must return data.
MIXIN_EMPTY = {
    ("Kube API Request Rate", "3xx"): "the API server sends no redirects (and client-go, like "
    "urllib3, follows one and counts only the final answer)",
    ("Goroutines", "{{instance}}"): "a Python process has no goroutines",
}


def mixin_substitute(expr: str, instance_regex: str) -> str:
    """What Grafana sends for the mixin's targets: its hidden cluster variable has no value here
    (no series carries a cluster label), so `cluster=""`, which matches series without one."""
    return substitute(expr, instance_regex).replace("$cluster", "")


def test_mixin_targets_are_listed_once_and_the_empty_ones_are_among_them() -> None:
    keys = [(title, legend) for title, legend, _ in MIXIN_PROXY_TARGETS]
    assert len(keys) == len(set(keys)) == 14
    assert set(MIXIN_EMPTY) <= set(keys)


def test_mixin_instance_variable_offers_the_scraped_daemon(
    scraped: tuple[ProxyProcess, Prometheus],
) -> None:
    _, prometheus = scraped
    answer = prometheus.ns.get(
        prometheus.url("/api/v1/label/instance/values", **{"match[]": MIXIN_INSTANCE_QUERY})
    )
    assert answer.status == 200, answer
    assert answer.json()["data"] == [METRICS_ADDRESS]


def test_every_kubernetes_mixin_proxy_query_returns_data_but_the_documented_few(
    scraped: tuple[ProxyProcess, Prometheus],
) -> None:
    _, prometheus = scraped
    instance = re.escape(METRICS_ADDRESS).replace("\\", "\\\\")
    queries = {
        mixin_substitute(expr, instance): (title, legend)
        for title, legend, expr in MIXIN_PROXY_TARGETS
    }
    assert all("$" not in q for q in queries), [q for q in queries if "$" in q]

    def failing() -> list[str]:
        problems = []
        for result in prometheus.query(*queries):
            key = queries[result["expr"]]
            values = sample_values(result)
            if result.get("status") != "success":
                problems.append(f"{key}: {result['expr']}: {result.get('error')}")
            elif key in MIXIN_EMPTY:
                if values:
                    problems.append(f"{key} has data now, {values}: drop it from MIXIN_EMPTY")
            elif not values or not all(finite(v) for v in values):
                problems.append(f"{key}: {result['expr']} → {values}")
        return problems

    problems = poll(
        failing,
        until=lambda found: not found,
        what="every kubernetes-mixin proxy query to return finite data",
        timeout=20.0,
        interval=0.5,
        describe="\n".join,
    )
    assert problems == [], "\n".join(problems)


def test_the_daemon_on_the_api_exports_client_gos_request_metrics(
    scraped: tuple[ProxyProcess, Prometheus], apiserver: FakeApiServer
) -> None:
    proxy, _ = scraped
    scrape = proxy.scrape()
    assert scrape is not None
    host = f"127.0.0.1:{apiserver.port}"
    for name, (kind, labels) in CLIENT_METRICS.items():
        assert scrape.types.get(name) == kind, name
        sample_name = f"{name}_count" if kind == "histogram" else name
        assert scrape.samples.get(sample_name), f"{name} has no samples"
        for have, _ in scrape.samples[sample_name]:
            assert set(have) == set(labels), (name, have)
            assert have["host"] == host
            # The reflectors' GETs, and the Starting event's POST.
            assert have.get("method", have.get("verb")) in ("GET", "POST")
    codes = {labels["code"] for labels, _ in scrape.samples["rest_client_requests_total"]}
    assert {"200", "410", "500"} <= codes, codes
    starting_event = {"code": "201", "method": "POST", "host": host}
    assert scrape.value("rest_client_requests_total", **starting_event) == 1
    for verb in ("GET", "POST"):
        bounds = [
            float(labels["le"])
            for labels, _ in scrape.samples["rest_client_request_duration_seconds_bucket"]
            if labels["verb"] == verb
        ]
        assert same_bounds(bounds, CLIENT_BUCKETS), (verb, bounds)
