"""Rendered objects against Kubernetes' OpenAPI schemas; values against values.schema.json."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from tests.chart.rendering import CHART, render

# The oldest Kubernetes release the chart is checked against, and the newest that
# kubernetes-validate ships schemas for (as locked in uv.lock).
KUBERNETES_VERSIONS = ("1.31", "1.37")

# Values that switch every optional object and branch of the templates on.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "ipvs": {"config": {"mode": "ipvs", "ipvs": {"scheduler": "rr"}}},
    "privileged": {"securityContext": {"privileged": True}},
    "service-monitor": {
        "metrics": {
            "serviceMonitor": {
                "enabled": True,
                "scrapeTimeout": "10s",
                "relabelings": [{"action": "labeldrop", "regex": "pod"}],
                "metricRelabelings": [{"sourceLabels": ["__name__"], "action": "keep"}],
            }
        }
    },
    "everything-set": {
        "image": {"repository": "registry.example/pykubeproxy", "tag": "0.1.0-dev"},
        "imagePullSecrets": [{"name": "registry"}],
        "serviceAccount": {"annotations": {"team": "net"}},
        "apiServer": {"host": "cp.example", "port": 443},
        "dnsPolicy": "Default",
        "config": {"clusterCIDR": "10.244.0.0/16", "nodePortAddresses": ["primary"]},
        "metrics": {"service": {"annotations": {"a": "b"}, "labels": {"c": "d"}}},
        "extraArgs": ["-v=4"],
        "serviceProxyName": "pykubeproxy",
        "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "512Mi"}},
        "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "pkp", "operator": "NotIn", "values": ["off"]}
                            ]
                        }
                    ]
                }
            }
        },
        "updateStrategy": {"maxUnavailable": "10%"},
        "podAnnotations": {"x": "y"},
        "podLabels": {"tier": "node"},
    },
    "no-rbac-no-service-account": {
        "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "existing"},
        "metrics": {"service": {"enabled": False}},
    },
}


def check_service_monitor(monitor: dict[str, Any]) -> None:
    """kubernetes-validate has no schema for the Prometheus Operator's CRD: check its shape."""
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}
    for endpoint in monitor["spec"]["endpoints"]:
        allowed = {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}
        assert set(endpoint) <= allowed


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_is_valid_kubernetes(variant: str, version: str) -> None:
    objects = render(VARIANTS[variant]).objects
    assert objects
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            check_service_monitor(obj)
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {where}: {exc.message}")


def test_strict_validation_catches_an_unknown_field() -> None:
    daemonset = render().one("DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostNetwrok"):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize(
    ("values", "offender"),
    [
        ({"imgae": {"tag": "x"}}, "imgae"),
        ({"image": {"tga": "x"}}, "tga"),
        ({"metrics": {"serviceMonitor": {"enabeld": True}}}, "enabeld"),
        ({"config": {"iptables": {"masqueradeBits": 14}}}, "masqueradeBits"),
        ({"securityContext": {"privileged": True, "runAsUser": 0}}, "runAsUser"),
        ({"config": {"mode": "userspace"}}, "mode"),
        ({"config": {"iptables": {"masqueradeBit": 32}}}, "masqueradeBit"),
        ({"config": {"iptables": {"syncPeriod": "30"}}}, "syncPeriod"),
        ({"metrics": {"bindIP": "::"}}, "bindIP"),
        ({"extraArgs": ["v=2"]}, "extraArgs"),
        ({"serviceProxyName": "not a label"}, "serviceProxyName"),
        ({"serviceProxyName": "x" * 64}, "serviceProxyName"),
    ],
)
def test_a_values_mistake_fails_the_render(values: dict[str, Any], offender: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=offender):
        render(values)


def test_schema_forbids_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    loose = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                loose.append(where)
            for key, child in node.items():
                visit(child, f"{where}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                visit(child, f"{where}/{index}")

    visit(schema, "")
    assert loose == []


def test_every_default_value_is_described_by_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    with helm.Chart.load(CHART) as chart:
        defaults = chart.values

    def missing(values: dict[str, Any], node: dict[str, Any], where: str) -> list[str]:
        found = []
        for key, value in values.items():
            child = node.get("properties", {}).get(key)
            if child is None:
                found.append(f"{where}{key}")
            elif isinstance(value, dict) and "properties" in child:
                found.extend(missing(value, child, f"{where}{key}."))
        return found

    assert missing(defaults, schema, "") == []


@pytest.mark.parametrize("variant", ["default", "service-monitor", "ipvs"])
def test_helm_lint_finds_nothing_worse_than_advice(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, kube_version="v1.31.0")
    assert report["errors"] == []
    # Severity 1 is INFO ("icon is recommended"); 2 and above are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
