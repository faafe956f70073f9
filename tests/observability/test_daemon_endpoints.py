"""The running daemon's endpoints: /metrics, /healthz, /livez, /rules, SIGUSR1 and SIGTERM.

One daemon per module, in a namespace of its own, reading a copy of examples/. The tests run in
file order: the edit comes after the read-only checks, and SIGTERM comes last.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.expected import (
    HISTOGRAMS,
    KUBE_PROXY_METRICS,
    PROCESS_METRICS,
    PROGRAMMING_BUCKETS,
    SYNC_BUCKETS,
    same_bounds,
)
from tests.observability.harness import (
    HEALTHZ_URL,
    METRICS_URL,
    Namespace,
    ProxyProcess,
    Scrape,
    add_endpoint,
    rfc3339_now,
    sync_counts,
)
from tests.support.wait import wait_until


@pytest.fixture(scope="module")
def proxy(obs_netns: Namespace, cluster: Path) -> Iterator[ProxyProcess]:
    daemon = ProxyProcess(obs_netns, cluster)
    daemon.wait_for_syncs(total=1, timeout=15)
    yield daemon
    daemon.stop()  # the namespace fixture would too; stopping here keeps the order obvious


def iptables_save(proxy: ProxyProcess, table: str) -> str:
    """`iptables-save -t table` of the namespace, with the binaries the daemon chose."""
    chosen = proxy.logged("iptables backend chosen")
    assert chosen, "the daemon did not log which iptables backend it chose"
    backend = chosen[0]["backend"]
    assert backend in ("legacy", "nft")
    return proxy.ns.run(f"iptables-{backend}-save", "-t", table).stdout


def probed_scrape(proxy: ProxyProcess) -> Scrape:
    """A scrape taken after /healthz and /livez were asked once (their counters start empty)."""
    proxy.ns.fetch(f"{HEALTHZ_URL}/healthz", f"{HEALTHZ_URL}/livez")
    scrape = proxy.scrape()
    assert scrape is not None
    return scrape


def test_metrics_carry_every_kube_proxy_metric_with_its_type_and_labels(
    proxy: ProxyProcess,
) -> None:
    scrape = probed_scrape(proxy)
    for name, (kind, labels) in KUBE_PROXY_METRICS.items():
        assert scrape.types.get(name) == kind, name
        sample_name = f"{name}_count" if kind == "histogram" else name
        assert scrape.samples.get(sample_name), f"{name} has no samples"
        for have, _ in scrape.samples[sample_name]:
            want = {"ip_family", *labels} if kind == "histogram" else set(labels)
            assert set(have) == want, f"{name} labels {have}"
    assert scrape.value("kubeproxy_proxy_healthz_total", code="200") is not None
    assert scrape.value("kubeproxy_proxy_livez_total", code="200") is not None


def test_from_files_no_api_client_metrics_are_exported(proxy: ProxyProcess) -> None:
    # No API server, so no host to label a request by: like a Go binary whose rest_client_*
    # vectors never got a series, the page does not list them at all.
    scrape = probed_scrape(proxy)
    assert [name for name in scrape.types if name.startswith("rest_client_")] == []


def test_histograms_use_kube_proxys_buckets(proxy: ProxyProcess) -> None:
    scrape = probed_scrape(proxy)
    for name in HISTOGRAMS:
        want = PROGRAMMING_BUCKETS if "network_programming" in name else SYNC_BUCKETS
        assert same_bounds(scrape.buckets(name), want), (name, scrape.buckets(name))
        assert scrape.value(f"{name}_count", ip_family="IPv4") is not None


def test_process_and_python_collectors_are_exported_without_created_series(
    proxy: ProxyProcess,
) -> None:
    scrape = probed_scrape(proxy)
    for name in PROCESS_METRICS:
        assert (scrape.value(name) or 0) > 0, name
    assert any(name.startswith("python_gc_") for name in scrape.samples)
    assert "python_info" in scrape.samples
    # Go's client (kube-proxy's) exports no *_created series; neither must we.
    assert [name for name in scrape.samples if name.endswith("_created")] == []


def test_owned_rule_gauges_equal_the_kube_rules_iptables_save_shows(proxy: ProxyProcess) -> None:
    scrape = probed_scrape(proxy)
    for table in ("filter", "nat"):
        saved = iptables_save(proxy, table).splitlines()
        owned = sum(1 for line in saved if line.startswith("-A KUBE-"))
        assert owned > 0
        assert scrape.value("kubeproxy_sync_proxy_rules_iptables_total", table=table) == owned


def test_healthz_answers_200_with_last_update_current_time_and_node_eligibility(
    proxy: ProxyProcess,
) -> None:
    healthz, livez = proxy.ns.fetch(f"{HEALTHZ_URL}/healthz", f"{HEALTHZ_URL}/livez")
    assert healthz.status == 200, healthz
    assert healthz.content_type == "application/json"
    body = healthz.json()
    assert body["nodeEligible"] is True
    updated = dt.datetime.fromisoformat(body["lastUpdated"])
    current = dt.datetime.fromisoformat(body["currentTime"])
    assert updated <= current
    assert livez.status == 200, livez
    assert set(livez.json()) == {"lastUpdated", "currentTime"}


def test_rules_page_shows_what_dry_run_renders_for_the_same_manifests(
    proxy: ProxyProcess,
) -> None:
    text, as_json = proxy.ns.fetch(f"{METRICS_URL}/rules", f"{METRICS_URL}/rules?format=json")
    assert text.status == 200
    header, _, rules = text.body.partition("\n")
    assert header.startswith("# last sync ") and header.endswith(": ok"), header
    assert rules == proxy.dry_run()

    assert as_json.status == 200
    assert as_json.content_type == "application/json"
    body = as_json.json()
    assert body["lastSync"]["ok"] is True
    dt.datetime.fromisoformat(body["lastSync"]["finished"])
    assert body["tables"] == json.loads(proxy.dry_run("--output", "json"))["tables"]


def test_sigusr1_logs_the_rules_last_programmed(proxy: ProxyProcess) -> None:
    before = len(proxy.logged("rules"))
    proxy.proc.send_signal(signal.SIGUSR1)
    logged = wait_until(
        lambda: proxy.logged("rules")[before:], what="a 'rules' log line after SIGUSR1"
    )
    header, _, rules = logged[0]["rules"].partition("\n")
    assert header.startswith("# last sync ")
    assert rules == proxy.dry_run()
    proxy.assert_running()


def test_an_added_endpoint_is_programmed_by_a_partial_sync(proxy: ProxyProcess) -> None:
    before = proxy.wait_for_syncs()
    total, _, partial = sync_counts(before)
    changes = before.value("kubeproxy_sync_proxy_rules_endpoint_changes_total") or 0
    proxy.edit_after_the_full_sync(
        lambda: add_endpoint(
            proxy.manifests, "web-abcde", "10.244.1.99", trigger_time=rfc3339_now()
        )
    )

    # Periodic (partial) syncs run every SYNC_PERIOD too: wait for the one that took the edit.
    def programmed_the_edit() -> Scrape | None:
        scrape = proxy.wait_for_syncs(total=max(2, total + 1), partial=partial + 1)
        done = scrape.value("kubeproxy_sync_proxy_rules_endpoint_changes_total") or 0
        return scrape if done > changes else None

    after = wait_until(programmed_the_edit, what="a partial sync programming the new endpoint")

    assert sync_counts(after)[0] >= 2
    assert sync_counts(after)[2] >= 1
    assert (after.value("kubeproxy_sync_proxy_rules_endpoint_changes_total") or 0) > changes
    # The trigger time is newer than the daemon's start, so its latency is observed.
    programmed = after.value(
        "kubeproxy_network_programming_duration_seconds_count", ip_family="IPv4"
    )
    assert programmed is not None and programmed >= 1
    assert "10.244.1.99" in proxy.ns.get(f"{METRICS_URL}/rules").body
    assert "10.244.1.99" in iptables_save(proxy, "nat")


def test_sigterm_stops_the_daemon_with_exit_code_0(proxy: ProxyProcess) -> None:
    assert proxy.stop() == 0, proxy.ns.log(proxy.proc)
    assert proxy.logged("stopped; rules left in place")
