"""The DaemonSet, its RBAC and its Services: what the chart grants and how the pods run."""

from __future__ import annotations

from typing import Any

import pytest
from helm_python import Chart, HelmError

from tests.chart.rendering import CHART, NAMESPACE, Rendered, render


def pod_spec(rendered: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.one("DaemonSet")["spec"]["template"]["spec"]
    return spec


def container(rendered: Rendered) -> dict[str, Any]:
    (only,) = pod_spec(rendered)["containers"]
    return dict(only)


def walk(value: Any) -> list[Any]:
    """Every mapping and list nested in value, value included."""
    found = [value]
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        found.extend(walk(child))
    return found


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render()


def test_default_render_holds_exactly_the_proxy_objects(default: Rendered) -> None:
    kinds = sorted(obj["kind"] for obj in default.objects)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Service",
        "ServiceAccount",
    ]
    for obj in default.objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_pods_run_on_every_node_in_the_host_network(default: Rendered) -> None:
    spec = pod_spec(default)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    strategy = default.one("DaemonSet")["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}


def test_container_is_not_privileged_and_has_only_net_admin_and_net_raw(default: Rendered) -> None:
    context = container(default)["securityContext"]
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    everything = walk(default.objects)
    assert not any(isinstance(v, dict) and v.get("privileged") is True for v in everything)
    assert "hostPID" not in pod_spec(default)
    assert "hostIPC" not in pod_spec(default)


def test_ipvs_mode_adds_sys_module_and_nothing_else() -> None:
    context = container(render({"config": {"mode": "ipvs"}}))["securityContext"]
    assert context["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW", "SYS_MODULE"]
    assert context["privileged"] is False


def test_privileged_only_when_asked() -> None:
    context = container(render({"securityContext": {"privileged": True}}))["securityContext"]
    assert context["privileged"] is True
    # The API server rejects allowPrivilegeEscalation: false together with privileged: true.
    assert "allowPrivilegeEscalation" not in context
    assert "capabilities" not in context
    off = container(render({"securityContext": {"privileged": False}}))["securityContext"]
    assert off["privileged"] is False


def test_cluster_role_grants_only_reads_of_services_nodes_slices_and_event_writes(
    default: Rendered,
) -> None:
    granted = {
        (group, resource, verb)
        for rule in default.one("ClusterRole")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    reads = {
        (group, resource, verb)
        for group, resource in (
            ("", "services"),
            ("", "nodes"),
            ("discovery.k8s.io", "endpointslices"),
        )
        for verb in ("get", "list", "watch")
    }
    events = {
        (group, "events", verb) for group in ("", "events.k8s.io") for verb in ("create", "patch")
    }
    assert granted == reads | events
    for rule in default.one("ClusterRole")["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, no URLs


def test_cluster_role_is_bound_to_the_pods_service_account(default: Rendered) -> None:
    binding = default.one("ClusterRoleBinding")
    account = default.one("ServiceAccount")["metadata"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": default.one("ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    assert pod_spec(default)["serviceAccountName"] == account["name"]


def test_node_name_and_config_file_are_passed_as_flags(default: Rendered) -> None:
    proxy = container(default)
    assert proxy["args"] == [
        "--config=/etc/pykubeproxy/config.yaml",
        "--hostname-override=$(NODE_NAME)",
    ]
    assert proxy["env"] == [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    ]
    assert "command" not in proxy  # the image's ENTRYPOINT is pykubeproxy


def test_dns_policy_can_use_the_nodes_resolver() -> None:
    assert pod_spec(render({"dnsPolicy": "Default"}))["dnsPolicy"] == "Default"


def test_extra_args_follow_the_chart_flags() -> None:
    proxy = container(render({"extraArgs": ["-v=2", "--iptables-backend=nft"]}))
    assert proxy["args"][2:] == ["-v=2", "--iptables-backend=nft"]


def test_no_service_proxy_name_flag_by_default(default: Rendered) -> None:
    assert not [a for a in container(default)["args"] if "service-proxy-name" in a]


def test_service_proxy_name_becomes_the_flag_before_the_extra_args() -> None:
    proxy = container(render({"serviceProxyName": "pykubeproxy", "extraArgs": ["-v=2"]}))
    assert proxy["args"][2:] == ["--service-proxy-name=pykubeproxy", "-v=2"]


def test_api_server_address_overrides_the_in_cluster_service() -> None:
    proxy = container(render({"apiServer": {"host": "10.0.0.10", "port": 6443}}))
    env = {item["name"]: item.get("value") for item in proxy["env"]}
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.10"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"


def test_config_lib_modules_and_xtables_lock_are_mounted(default: Rendered) -> None:
    mounts = {m["name"]: m for m in container(default)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(default)["volumes"]}
    assert mounts["config"]["mountPath"] == "/etc/pykubeproxy"
    assert volumes["config"]["configMap"]["name"] == default.one("ConfigMap")["metadata"]["name"]
    assert mounts["lib-modules"] == {
        "name": "lib-modules",
        "mountPath": "/lib/modules",
        "readOnly": True,
    }
    assert volumes["lib-modules"]["hostPath"]["path"] == "/lib/modules"
    assert mounts["xtables-lock"]["mountPath"] == "/run/xtables.lock"
    assert mounts["xtables-lock"].get("readOnly") is not True  # iptables -w takes the lock
    assert volumes["xtables-lock"]["hostPath"] == {
        "path": "/run/xtables.lock",
        "type": "FileOrCreate",
    }


def test_probes_hit_livez_and_healthz_on_the_health_port(default: Rendered) -> None:
    proxy = container(default)
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 10256}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 10256}
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports == {"metrics": 10249, "healthz": 10256}


def test_resources_default_to_small_requests(default: Rendered) -> None:
    assert container(default)["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}}


def test_image_tag_defaults_to_app_version() -> None:
    with_tag = container(
        render(
            {"image": {"repository": "registry.example/pkp", "tag": "dev", "pullPolicy": "Always"}}
        )
    )
    assert with_tag["image"] == "registry.example/pkp:dev"
    assert with_tag["imagePullPolicy"] == "Always"
    with Chart.load(CHART) as chart:
        app_version = chart.metadata["appVersion"]
    assert container(render())["image"] == f"pykubeproxy:{app_version}"


def test_config_change_rolls_the_pods() -> None:
    def checksum(rendered: Rendered) -> str:
        annotations = rendered.one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum(render()) != checksum(render({"config": {"clusterCIDR": "10.244.0.0/16"}}))


def test_metrics_service_is_headless_and_selects_the_pods(default: Rendered) -> None:
    service = default.one("Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 10249, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = default.one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor_scrapes_the_metrics_service() -> None:
    rendered = render(
        {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}}
    )
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {
        "matchNames": [service["metadata"]["namespace"]]
    }
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_no_service_monitor_by_default(default: Rendered) -> None:
    assert default.all("ServiceMonitor") == []


def test_service_monitor_without_the_service_is_refused() -> None:
    values = {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    with pytest.raises(HelmError, match=r"needs metrics\.service\.enabled"):
        render(values)


def test_metrics_service_can_be_turned_off() -> None:
    assert render({"metrics": {"service": {"enabled": False}}}).all("Service") == []


def test_notes_tell_the_operator_to_remove_kube_proxy(default: Rendered) -> None:
    assert "kubectl -n kube-system delete ds kube-proxy" in default.notes
    assert "no gap" in default.notes
    assert "apiServer.host is empty" in default.notes
    notes = render({"apiServer": {"host": "cp.example"}, "config": {"mode": "ipvs"}}).notes
    assert "apiServer.host is empty" not in notes
    assert "implements only" in notes
