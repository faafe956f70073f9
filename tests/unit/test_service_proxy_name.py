"""--service-proxy-name from manifests: only the Services (and slices) labelled with the name are
programmed, exactly as if they were the whole cluster; a bad name is a usage error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pykubeproxy.translate import translate_endpoint_slice, translate_service
from tests.support.cli import run_main as run
from tests.support.proxy_names import OURS, PROXY_NAME_LABEL, split_cluster


@pytest.fixture(autouse=True)
def _no_node_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)


def write(path: Path, objects: list[dict[str, Any]]) -> Path:
    path.write_text("\n---\n".join(json.dumps(obj) for obj in objects), encoding="utf-8")
    return path


def without_label(obj: dict[str, Any]) -> dict[str, Any]:
    labels = {k: v for k, v in obj["metadata"].get("labels", {}).items() if k != PROXY_NAME_LABEL}
    return {**obj, "metadata": {**obj["metadata"], "labels": labels}}


DRY_RUN = ("--dry-run", "--hostname-override", "node-1", "--cluster-cidr", "10.244.0.0/16")


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
def test_a_named_proxy_programs_its_services_exactly_as_if_they_were_the_whole_cluster(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: str
) -> None:
    cluster = split_cluster()
    split = write(tmp_path / "split.yaml", cluster)
    # What kube-proxy (no name) would program were "moved" the cluster's only Service.
    alone = [without_label(o) for o in cluster if o["kind"] == "Node" or "moved" in json.dumps(o)]
    only_moved = write(tmp_path / "alone.yaml", alone)

    code, named, err = run(capsys, *DRY_RUN, "--proxy-mode", mode, "--from-file", split,
                           "--service-proxy-name", OURS)  # fmt: skip
    assert code == 0, err
    code, expected, err = run(capsys, *DRY_RUN, "--proxy-mode", mode, "--from-file", only_moved)
    assert code == 0, err

    assert named == expected
    assert "10.96.50.1" in named
    assert "10.96.50.2" not in named and "10.96.50.3" not in named


def test_without_a_name_manifests_are_filtered_as_kube_proxys_informers_filter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    split = write(tmp_path / "split.yaml", split_cluster())

    code, out, err = run(capsys, *DRY_RUN, "--from-file", split)

    assert code == 0, err
    assert "10.96.50.2" in out
    assert "10.96.50.1" not in out and "10.96.50.3" not in out


def test_a_named_proxy_says_why_it_left_each_other_service_out() -> None:
    services = {o["metadata"]["name"]: o for o in split_cluster() if o["kind"] == "Service"}
    moved, stays, elsewhere = services["moved"], services["stays"], services["elsewhere"]

    ports, notes = translate_service(stays, proxy_name=OURS)
    assert ports == []
    assert [n.reason for n in notes] == [f"not labelled {PROXY_NAME_LABEL}={OURS}"]
    ports, notes = translate_service(elsewhere, proxy_name=OURS)
    assert ports == []
    assert [n.reason for n in notes] == [f"labelled {PROXY_NAME_LABEL}=other-proxy"]
    ports, notes = translate_service(moved, proxy_name=OURS)
    assert [p.name.name for p in ports] == ["moved"] and notes == []


def test_a_named_proxy_uses_only_the_slices_labelled_with_its_name() -> None:
    slices = {o["metadata"]["name"]: o for o in split_cluster() if o["kind"] == "EndpointSlice"}

    result, _ = translate_endpoint_slice(slices["moved-abcde"], node_name="n", proxy_name=OURS)
    assert result is not None
    for other in ("stays-abcde", "elsewhere-abcde"):
        result, notes = translate_endpoint_slice(slices[other], node_name="n", proxy_name=OURS)
        assert result is None and len(notes) == 1


def test_the_flag_is_in_the_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would break the label's name at a hyphen
    code, out, _ = run(capsys, "--help")

    assert code == 0
    assert "--service-proxy-name NAME" in out
    assert "service.kubernetes.io/service-proxy-name=NAME" in out


@pytest.mark.parametrize("name", ["-starts-with-dash", "has space", "a/b", "x" * 64, "ends."])
def test_a_name_that_is_not_a_label_value_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    split = write(tmp_path / "split.yaml", split_cluster())

    code, out, err = run(capsys, *DRY_RUN, "--from-file", split, f"--service-proxy-name={name}")

    assert code == 2
    assert out == ""
    assert f"service proxy name {name!r} is not a valid label value" in err


@pytest.mark.parametrize("name", ["pykubeproxy", "a", "v1.2_beta-3", "x" * 63])
def test_valid_label_values_are_accepted_as_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    split = write(tmp_path / "split.yaml", split_cluster())

    code, _, err = run(capsys, *DRY_RUN, "--from-file", split, "--service-proxy-name", name)

    assert code == 0, err


def test_the_config_file_has_no_such_setting_and_says_to_use_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        f"serviceProxyName: {OURS}\n",
        encoding="utf-8",
    )
    split = write(tmp_path / "split.yaml", split_cluster())

    code, _, err = run(capsys, *DRY_RUN, "--from-file", split, "--config", config)

    assert code == 2
    assert "unknown setting 'serviceProxyName'" in err
