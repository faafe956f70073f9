"""The command line: kube-proxy's flags and config file, --dry-run output, and clear errors.

Every call goes through --dry-run, so nothing here can reach the kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pykubeproxy.config import ConfigError, parse_duration
from tests.support.cli import run_main
from tests.support.paths import EXAMPLES, GOLDEN, REPO

NODE = """\
apiVersion: v1
kind: Node
metadata: {name: node-1}
status:
  addresses:
    - {type: InternalIP, address: 192.0.2.10}
"""

WEB = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.10.20
  ports:
    - {name: http, port: 80}
"""

WEB_SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
  - addresses: [10.244.1.11]
ports:
  - {name: http, port: 8080, protocol: TCP}
"""


@pytest.fixture(autouse=True)
def _no_node_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)


def dry_run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """main(["--dry-run", *args]) → (exit code, stdout, stderr)."""
    return run_main(capsys, "--dry-run", *args)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_restore_text(text: str) -> None:
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("*")] == ["*filter", "*nat"]
    assert lines.count("COMMIT") == 2
    assert all(
        line.split(" ")[0] in ("*filter", "*nat", "COMMIT", "-A", "-I") or line.startswith(":")
        for line in lines
    )


# --- --dry-run output ---------------------------------------------------------------------


def test_dry_run_of_the_examples_prints_the_golden_restore_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = dry_run(capsys, "--from-file", EXAMPLES, "--cluster-cidr", "10.244.0.0/16")
    assert code == 0
    assert_restore_text(out)
    assert out == (GOLDEN / "examples" / "expected.rules").read_text(encoding="utf-8")
    assert "node-1 (the only Node in the manifests" in err


def test_dry_run_logs_go_to_stderr_and_only_rules_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = dry_run(capsys, "--from-file", EXAMPLES)
    assert code == 0
    assert "skipped" not in out
    assert "shop/payments-gateway" in err  # an ExternalName, skipped and said so


def test_json_output_holds_tables_chains_and_rules(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dry_run(capsys, "--from-file", EXAMPLES, "--output", "json")
    assert code == 0
    body = json.loads(out)
    assert set(body["tables"]) == {"filter", "nat"}
    nat = body["tables"]["nat"]["chains"]
    assert "KUBE-SVC-NPX46M4PTMTKRN6Y" in nat
    assert all(isinstance(rule, str) for rules in nat.values() for rule in rules)
    assert any("has no endpoints" in r for r in body["tables"]["filter"]["chains"]["KUBE-SERVICES"])
    assert (
        "Service shop/db: headless (clusterIP None) is answered by DNS, not proxied"
        in (body["skipped"])
    )


def test_dry_run_as_a_module_in_a_subprocess(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pykubeproxy", "--dry-run", "--from-file", "examples/"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert_restore_text(result.stdout)
    assert "KUBE-SVC-TCOU7JCQXEZGVUNU" in result.stdout
    for line in result.stderr.splitlines():
        json.loads(line)  # not a terminal: one JSON object per log line


def test_dry_run_without_manifests_or_a_cluster_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, out, err = dry_run(capsys)
    assert code == 2
    assert out == ""
    assert "in-cluster configuration" in err
    assert "--kubeconfig, or --from-file" in err


def test_hostname_override_picks_the_node_and_its_endpoints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = dry_run(capsys, "--from-file", EXAMPLES, "--hostname-override", "node-2")
    assert code == 0
    # checkout's only endpoint on node-2 is 10.244.2.22: that is now the local one.
    assert 'shop/checkout:http -> 10.244.2.22:8080" -j KUBE-SEP' in out
    assert "has no local endpoints" not in out


# --- reading manifests -------------------------------------------------------------------------


def test_a_yaml_syntax_error_names_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = write(tmp_path / "broken.yaml", WEB + "---\nkind: Service\nspec: [unclosed\n")
    code, out, err = dry_run(capsys, "--from-file", broken)
    assert code == 2
    assert out == ""
    assert str(broken) in err
    assert "document 2" in err


def test_invalid_json_names_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.json", '{"kind": "Service",')
    code, _, err = dry_run(capsys, "--from-file", broken)
    assert code == 2
    assert str(broken) in err


def test_a_missing_path_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    code, out, err = dry_run(capsys, "--from-file", missing)
    assert code == 2
    assert out == ""
    assert str(missing) in err


def test_lists_multi_document_yaml_and_json_files_are_all_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    services = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "kind": "Service",
                "metadata": {"name": "api", "namespace": "shop"},
                "spec": {"clusterIP": "10.96.10.21", "ports": [{"name": "http", "port": 80}]},
            }
        ],
    }
    write(tmp_path / "services.json", json.dumps(services))
    write(tmp_path / "more.yml", f"---\n{WEB}---\n{WEB_SLICE}---\n{NODE}---\n")
    write(tmp_path / "notes.txt", "not a manifest: ignored by extension")
    code, out, _ = dry_run(capsys, "--from-file", tmp_path)
    assert code == 0
    assert '"shop/api:http has no endpoints"' in out  # from the List in the .json file
    assert "--to-destination 10.244.1.11:8080" in out  # from the multi-document .yml file


def test_repeated_from_file_reads_every_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    service = write(tmp_path / "service.yaml", WEB)
    endpoints = write(tmp_path / "slice.yaml", WEB_SLICE)
    code, out, _ = dry_run(capsys, "--from-file", service, "--from-file", endpoints)
    assert code == 0
    assert "--to-destination 10.244.1.11:8080" in out


def test_a_document_that_is_not_an_object_is_skipped_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifests = write(tmp_path / "m.yaml", f"{WEB}---\njust a string\n---\n{WEB_SLICE}")
    code, out, err = dry_run(capsys, "--from-file", manifests)
    assert code == 0
    assert "--to-destination 10.244.1.11:8080" in out
    (warning,) = (json.loads(line) for line in err.splitlines() if "not a Kubernetes" in line)
    assert warning["level"] == "warning"
    assert f"{manifests}#2" in warning["object"]
    assert warning["reason"] == "is a str, not a Kubernetes object"


def test_a_malformed_service_is_skipped_with_its_name_and_reason_while_others_render(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = WEB.replace("name: web,", "name: broken,").replace("port: 80", "port: 70000")
    manifests = write(tmp_path / "m.yaml", f"{WEB}---\n{bad}---\n{WEB_SLICE}")
    code, out, err = dry_run(capsys, "--from-file", manifests)
    assert code == 0
    assert "--to-destination 10.244.1.11:8080" in out
    assert "broken" not in out
    (warning,) = (json.loads(line) for line in err.splitlines() if "shop/broken" in line)
    assert warning["level"] == "warning"
    assert warning["object"] == "Service shop/broken"
    assert "70000 is out of range" in warning["reason"]


# --- flags -----------------------------------------------------------------------------------


def test_an_unknown_flag_is_a_usage_error_with_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = dry_run(capsys, "--from-file", EXAMPLES, "--cluster-cdir", "10.244.0.0/16")
    assert code == 2
    assert out == ""
    assert "--cluster-cdir" in err
    assert "did you mean --cluster-cidr?" in err


def test_an_unknown_flag_with_a_value_after_equals_gets_a_suggestion_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = dry_run(capsys, "--from-file", EXAMPLES, "--masquerade-al=true")
    assert code == 2
    assert "did you mean --masquerade-all?" in err


def test_an_ignored_kube_proxy_flag_is_accepted_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = dry_run(capsys, "--from-file", EXAMPLES, "--oom-score-adj=-999")
    assert code == 0
    assert_restore_text(out)
    (warning,) = (json.loads(line) for line in err.splitlines() if "--oom-score-adj" in line)
    assert warning["level"] == "warning"
    assert "ignored" in warning["event"]


@pytest.mark.parametrize("flag", ["--iptables-sync-period", "--iptables-min-sync-period"])
@pytest.mark.parametrize("value", ["soon", "30", "1m30", "-"])
def test_a_bad_duration_flag_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    code, out, err = dry_run(capsys, "--from-file", EXAMPLES, f"{flag}={value}")
    assert code == 2
    assert out == ""
    assert "duration" in err


def test_go_durations_in_flags_are_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = dry_run(
        capsys,
        "--from-file",
        EXAMPLES,
        "--iptables-sync-period",
        "1m30s",
        "--iptables-min-sync-period",
        "0",
    )
    assert code == 0


def test_a_bad_masquerade_bit_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = dry_run(capsys, "--from-file", EXAMPLES, "--iptables-masquerade-bit", "32")
    assert code == 2
    assert "masquerade bit 32 is out of range (0-31)" in err


def test_a_bad_cluster_cidr_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = dry_run(capsys, "--from-file", EXAMPLES, "--cluster-cidr", "10.244.0.0/33")
    assert code == 2
    assert "cluster CIDR '10.244.0.0/33' is not a CIDR" in err


def test_nodeport_addresses_flag_takes_comma_separated_cidrs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = dry_run(
        capsys, "--from-file", EXAMPLES, "--nodeport-addresses", "192.0.2.0/24,127.0.0.0/8"
    )
    assert code == 0
    assert '-A KUBE-SERVICES -d 192.0.2.10/32 -m comment --comment "kubernetes service' in out
    assert '-A KUBE-SERVICES -d 127.0.0.1/32 -m comment --comment "kubernetes service' in out


# --- the config file ---------------------------------------------------------------------------

CONFIG = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clusterCIDR: 10.244.0.0/16
iptables:
  masqueradeBit: 10
  syncPeriod: 1m
oomScoreAdj: -999
"""


def test_flags_override_the_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write(tmp_path / "config.yaml", CONFIG)
    code, out, _ = dry_run(
        capsys, "--config", config, "--from-file", EXAMPLES, "--iptables-masquerade-bit", "12"
    )
    assert code == 0
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x1000/0x1000" in out
    assert "0x400/" not in out and "0x4000/" not in out
    assert "! -s 10.244.0.0/16" in out  # clusterCIDR still comes from the file


def test_the_config_file_applies_when_no_flag_overrides_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write(tmp_path / "config.yaml", CONFIG)
    code, out, err = dry_run(capsys, "--config", config, "--from-file", EXAMPLES)
    assert code == 0
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x400/0x400" in out
    (warning,) = (json.loads(line) for line in err.splitlines() if "oomScoreAdj" in line)
    assert warning["level"] == "warning"


@pytest.mark.parametrize(
    ("body", "key", "suggestion"),
    [
        ("clusterCIRD: 10.244.0.0/16\n", "'clusterCIRD'", "did you mean 'clusterCIDR'?"),
        ("iptables:\n  masqueradeBitt: 12\n", "iptables.'masqueradeBitt'", "'masqueradeBit'"),
    ],
)
def test_a_typo_in_the_config_file_names_the_key_and_suggests_the_right_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str, key: str, suggestion: str
) -> None:
    config = write(
        tmp_path / "config.yaml",
        f"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}",
    )
    code, out, err = dry_run(capsys, "--config", config, "--from-file", EXAMPLES)
    assert code == 2
    assert out == ""
    assert key in err
    assert suggestion in err
    assert str(config) in err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("iptables:\n  syncPeriod: soon\n", "duration 'soon'"),
        ("iptables:\n  syncPeriod: 30\n", "must be a duration string"),
        ("iptables:\n  masqueradeBit: ten\n", "must be an integer"),
        ("iptables:\n  masqueradeAll: yes-please\n", "must be true or false"),
        ("iptables: 12\n", "must be a mapping"),
        ("kind: KubeletConfiguration\n", "not KubeProxyConfiguration"),
    ],
)
def test_a_wrong_value_in_the_config_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str, message: str
) -> None:
    config = write(tmp_path / "config.yaml", body)
    code, _, err = dry_run(capsys, "--config", config, "--from-file", EXAMPLES)
    assert code == 2
    assert message in err


def test_an_unreadable_config_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = dry_run(capsys, "--config", tmp_path / "none.yaml", "--from-file", EXAMPLES)
    assert code == 2
    assert "cannot read config file" in err


# --- Go durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h2m3.5s", 3723.5),
        ("0", 0.0),
        ("0s", 0.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        (" 30s ", 30.0),
    ],
)
def test_go_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "30", "1m30", "s", "30S", "1d", "1.5.s", "30 s", "abc", "1h-2m"]
)
def test_garbage_durations_are_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)
