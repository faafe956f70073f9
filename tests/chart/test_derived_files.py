"""Files that copy or render others stay current: deploy/, the chart's dashboard, versions."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from tests.chart.rendering import (
    CHART,
    DASHBOARD_COPY,
    DASHBOARD_SOURCE,
    DEPLOY,
    DEPLOY_MANIFEST,
    REGENERATE,
    ROOT,
    deploy_text,
    render,
)


def test_deploy_manifest_is_the_chart_rendered_with_default_values() -> None:
    assert DEPLOY_MANIFEST.exists(), f"deploy/pykubeproxy.yaml is missing: run {REGENERATE}"
    expected = deploy_text(render())
    assert DEPLOY_MANIFEST.read_text(encoding="utf-8") == expected, (
        f"deploy/pykubeproxy.yaml differs from the chart's rendering: run {REGENERATE}"
    )


def test_deploy_holds_no_other_manifest_for_kubectl_apply() -> None:
    applied = sorted(
        p.name for p in DEPLOY.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml", ".json")
    )
    assert applied == ["pykubeproxy.yaml"]
    kinds = [doc["kind"] for doc in yaml.safe_load_all(DEPLOY_MANIFEST.read_text()) if doc]
    assert kinds == [
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "DaemonSet",
    ]


def test_chart_dashboard_is_a_copy_of_the_grafana_dashboard() -> None:
    if not DASHBOARD_SOURCE.exists():
        assert not DASHBOARD_COPY.exists(), (
            f"the chart holds a dashboard whose source {DASHBOARD_SOURCE} is gone: run {REGENERATE}"
        )
        pytest.skip(f"{DASHBOARD_SOURCE.relative_to(ROOT)} does not exist yet")
    assert DASHBOARD_COPY.exists(), f"the chart has no copy of the dashboard: run {REGENERATE}"
    assert DASHBOARD_COPY.read_bytes() == DASHBOARD_SOURCE.read_bytes(), (
        f"{DASHBOARD_COPY.relative_to(ROOT)} differs from {DASHBOARD_SOURCE.relative_to(ROOT)}: "
        f"run {REGENERATE}"
    )
    json.loads(DASHBOARD_SOURCE.read_text(encoding="utf-8"))


def test_shipped_dashboard_renders_byte_for_byte() -> None:
    if not DASHBOARD_COPY.exists():
        pytest.skip("the chart holds no dashboard yet")
    configmaps = render({"dashboard": {"enabled": True}}).all("ConfigMap")
    (configmap,) = [c for c in configmaps if "pykubeproxy.json" in c.get("data", {})]
    assert configmap["data"]["pykubeproxy.json"] == DASHBOARD_COPY.read_text(encoding="utf-8")


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "pykubeproxy"
    shutil.copytree(CHART, copy)
    shutil.rmtree(copy / "dashboards", ignore_errors=True)
    return copy


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(chart_copy: Path) -> None:
    dashboard = '{\n  "title": "pykubeproxy",\n  "panels": [{"expr": "a<b && \\"c\\""}]\n}\n'
    (chart_copy / "dashboards").mkdir()
    (chart_copy / "dashboards" / "pykubeproxy.json").write_text(dashboard, encoding="utf-8")
    values = {"dashboard": {"enabled": True, "namespace": "monitoring", "labels": {"x": "y"}}}
    configmaps = render(values, chart=chart_copy).all("ConfigMap")
    (configmap,) = [c for c in configmaps if "pykubeproxy.json" in c.get("data", {})]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["labels"]["x"] == "y"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["data"]["pykubeproxy.json"] == dashboard
    assert len(render(chart=chart_copy).all("ConfigMap")) == 1  # off by default


def test_dashboard_enabled_without_the_file_says_how_to_fix_it(chart_copy: Path) -> None:
    with pytest.raises(helm.HelmError, match=r"tests\.chart\.regenerate"):
        render({"dashboard": {"enabled": True}}, chart=chart_copy)


def test_chart_app_version_is_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    with helm.Chart.load(CHART) as chart:
        assert chart.metadata["appVersion"] == project["version"]
