"""The chart never ships a config or flags that pykubeproxy itself would reject."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pykubeproxy.config import Config, read_config_document
from pykubeproxy.flags import build_parser, load_config
from tests.chart.rendering import Rendered, render

MOUNT_PATH = "/etc/pykubeproxy"


def config_document(rendered: Rendered) -> object:
    return yaml.safe_load(rendered.one("ConfigMap")["data"]["config.yaml"])


def expand(arg: str, env: dict[str, str]) -> str:
    """$(VAR) the way the kubelet expands it in a container's args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


def daemon_config(rendered: Rendered, tmp_path: Path) -> tuple[Config, tuple[str, ...]]:
    """The Config pykubeproxy would start with in the chart's pod on node `node-a`."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.one("ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    (proxy,) = rendered.one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    argv = []
    for arg in proxy["args"]:
        arg = expand(arg, {"NODE_NAME": "node-a"})
        if arg.startswith("--config="):
            assert arg == f"--config={MOUNT_PATH}/config.yaml"
            arg = f"--config={config_file}"
        argv.append(arg)
    return load_config(build_parser().parse_args(argv))


def test_default_config_is_accepted_with_no_ignored_setting() -> None:
    settings = read_config_document(config_document(render()))
    assert settings.ignored == ()


def test_default_pod_starts_with_kube_proxy_defaults_and_scrapable_metrics(tmp_path: Path) -> None:
    config, ignored = daemon_config(render(), tmp_path)
    assert ignored == ()
    assert config == Config(
        hostname_override="node-a",
        metrics_bind_address="0.0.0.0:10249",
        healthz_bind_address="0.0.0.0:10256",
    )


VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "pod-network-dual-stack",
        {"config": {"clusterCIDR": "10.244.0.0/16,fd00:10:244::/56"}},
        {"cluster_cidr": "10.244.0.0/16,fd00:10:244::/56"},
    ),
    (
        "nodeport-addresses",
        {"config": {"nodePortAddresses": ["primary", "192.168.0.0/16"]}},
        {"nodeport_addresses": ("primary", "192.168.0.0/16")},
    ),
    (
        "iptables-settings",
        {
            "config": {
                "iptables": {
                    "masqueradeAll": True,
                    "masqueradeBit": 0,
                    "localhostNodePorts": False,
                    "syncPeriod": "1m30s",
                    "minSyncPeriod": "500ms",
                }
            }
        },
        {
            "masquerade_all": True,
            "masquerade_bit": 0,
            "localhost_nodeports": False,
            "sync_period": 90.0,
            "min_sync_period": 0.5,
        },
    ),
    (
        "client-rate",
        {"config": {"clientConnection": {"qps": 20.5, "burst": 40}}},
        {"api_qps": 20.5, "api_burst": 40},
    ),
    ("ipvs-mode", {"config": {"mode": "ipvs"}}, {"mode": "ipvs"}),
    ("nftables-mode", {"config": {"mode": "nftables"}}, {"mode": "nftables"}),
    (
        "metrics-not-scraped",
        {"metrics": {"service": {"enabled": False}}},
        {"metrics_bind_address": "127.0.0.1:10249"},
    ),
    (
        "metrics-bind-ip-and-ports",
        {"metrics": {"bindIP": "10.1.2.3", "port": 9249}, "healthz": {"port": 9256}},
        {"metrics_bind_address": "10.1.2.3:9249", "healthz_bind_address": "0.0.0.0:9256"},
    ),
    (
        "extra-args-override-the-file",
        {"extraArgs": ["-v=2", "--iptables-backend=nft", "--cluster-cidr=10.0.0.0/8"]},
        {"iptables_backend": "nft", "cluster_cidr": "10.0.0.0/8"},
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS]
)
def test_values_reach_the_daemon_as_kube_proxy_settings(
    values: dict[str, Any], expected: dict[str, Any], tmp_path: Path
) -> None:
    config, ignored = daemon_config(render(values), tmp_path)
    assert ignored == ()
    for field, value in expected.items():
        assert getattr(config, field) == value, field
    assert config.hostname_override == "node-a"


def test_ipvs_settings_reach_the_daemon(tmp_path: Path) -> None:
    rendered = render({"config": {"mode": "ipvs", "ipvs": {"scheduler": "wlc"}}})
    document = config_document(rendered)
    assert isinstance(document, dict)
    assert document["ipvs"] == {"scheduler": "wlc"}
    config, ignored = daemon_config(rendered, tmp_path)
    assert ignored == ()
    assert config.mode == "ipvs"
    assert config.ipvs_scheduler == "wlc"


def test_probe_and_container_ports_match_the_configured_bind_addresses() -> None:
    rendered = render({"metrics": {"port": 9249}, "healthz": {"port": 9256}})
    document = config_document(rendered)
    assert isinstance(document, dict)
    (proxy,) = rendered.one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert document["metricsBindAddress"].endswith(f":{ports['metrics']}")
    assert document["healthzBindAddress"].endswith(f":{ports['healthz']}")
    assert proxy["livenessProbe"]["httpGet"]["port"] == ports["healthz"]
    assert proxy["readinessProbe"]["httpGet"]["port"] == ports["healthz"]
    assert rendered.one("Service")["spec"]["ports"][0]["port"] == ports["metrics"]
