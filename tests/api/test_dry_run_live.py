"""`--dry-run` against a live API server: one paginated LIST per kind, the manifests' output, and
one clear line (exit 2) for each way reaching the cluster can fail."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import pytest
import yaml

from pykubeproxy.sources import listing
from pykubeproxy.sources.kube import PROXY_LABEL_SELECTOR, SourceError, Timing
from tests.support.cli import run_main as run
from tests.support.fake_apiserver import FakeApiServer
from tests.support.paths import EXAMPLES

RESOURCES = {"Service": "services", "EndpointSlice": "endpointslices", "Node": "nodes"}


@pytest.fixture(autouse=True)
def _no_node_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def serve_examples(apiserver: FakeApiServer) -> None:
    """Every object of examples/ created on the fake API server, as `kubectl apply` would."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                apiserver.create(RESOURCES[doc["kind"]], doc)


def error_lines(err: str) -> list[dict[str, str]]:
    lines = [json.loads(line) for line in err.splitlines()]
    return [line for line in lines if line["level"] == "error"]


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
@pytest.mark.parametrize("output", ["text", "json"])
def test_a_live_dry_run_prints_byte_for_byte_what_the_manifests_dry_run_prints(
    apiserver: FakeApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    output: str,
) -> None:
    serve_examples(apiserver)
    common = ("--dry-run", "--hostname-override", "node-1", "--proxy-mode", mode)
    common += ("--output", output, "--cluster-cidr", "10.244.0.0/16")

    code, from_files, _ = run(capsys, *common, "--from-file", EXAMPLES)
    assert code == 0
    code, live, err = run(capsys, *common, "--kubeconfig", kubeconfig)

    assert code == 0, err
    assert live == from_files
    assert "kube-system/kube-dns" in live  # the cluster really was listed


def test_a_live_dry_run_lists_each_kind_in_pages_with_the_daemons_selectors_and_never_watches(
    apiserver: FakeApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serve_examples(apiserver)
    monkeypatch.setattr(listing, "DRY_RUN_TIMING", Timing(page_size=3, connect_timeout=2.0))

    code, out, err = run(capsys, "--dry-run", "--kubeconfig", kubeconfig, "--hostname-override",
                         "node-1")  # fmt: skip

    assert code == 0, err
    assert out.startswith("*filter\n")
    assert [r for r in apiserver.requests if r.is_watch] == []
    services = apiserver.requests_to("services")
    assert len(services) == 3  # 9 Services, 3 a page
    assert [r.query.get("limit") for r in services] == ["3", "3", "3"]
    assert all(r.query["labelSelector"] == PROXY_LABEL_SELECTOR for r in services)
    assert "continue" in services[1].query
    slices = apiserver.requests_to("endpointslices")
    assert all(r.query["labelSelector"] == PROXY_LABEL_SELECTOR for r in slices)
    (nodes,) = apiserver.requests_to("nodes")
    assert nodes.query["fieldSelector"] == "metadata.name=node-1"


def test_the_default_page_size_is_the_daemons(
    apiserver: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--dry-run", "--kubeconfig", kubeconfig, "--hostname-override", "n")

    assert code == 0, err
    limits = {r.query.get("limit") for r in apiserver.requests}
    assert limits == {str(Timing().page_size)}


def test_refused_credentials_are_one_line_and_exit_2(
    apiserver: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apiserver.fail_next(None, 401)

    code, out, err = run(capsys, "--dry-run", "--kubeconfig", kubeconfig)

    assert (code, out) == (2, "")
    (line,) = error_lines(err)
    assert "refused the credentials (401 Unauthorized)" in line["error"]
    assert apiserver.url in line["error"]


def test_an_rbac_refusal_names_the_resource_the_user_may_not_list(
    apiserver: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apiserver.fail_next("endpointslices", 403, verb="list")

    code, out, err = run(capsys, "--dry-run", "--kubeconfig", kubeconfig)

    assert (code, out) == (2, "")
    (line,) = error_lines(err)
    assert "not allow this user to list endpointslices.discovery.k8s.io" in line["error"]
    assert "(403 Forbidden): injected failure of list endpointslices" in line["error"]


def test_another_server_error_is_one_line_with_its_status_and_message(
    apiserver: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apiserver.fail_next("nodes", 500)

    code, _, err = run(capsys, "--dry-run", "--kubeconfig", kubeconfig)

    assert code == 2
    (line,) = error_lines(err)
    assert "listing nodes at" in line["error"] and "HTTP 500" in line["error"]
    assert len(apiserver.requests_to("nodes")) == 1  # a dry run does not retry


def test_a_server_that_refuses_connections_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeApiServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    # The port the server had is closed now: nothing listens there.

    code, out, err = run(capsys, "--dry-run", "--kubeconfig", kubeconfig)

    assert (code, out) == (2, "")
    (line,) = error_lines(err)
    assert "cannot reach the API server at" in line["error"]
    assert "connection refused" in line["error"]
    assert "does not retry" in line["error"]


def test_a_server_that_does_not_answer_fails_at_the_dry_runs_timeout(
    apiserver: FakeApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apiserver.delay("services", 5.0)
    monkeypatch.setattr(listing, "DRY_RUN_TIMING", Timing(connect_timeout=1.0, read_timeout=0.3))

    code, _, err = run(capsys, "--dry-run", "--kubeconfig", kubeconfig)

    assert code == 2
    (line,) = error_lines(err)
    assert "no answer within" in line["error"] and "0.3 s per response" in line["error"]
    apiserver.delay("services", 0.0)


def test_a_missing_kubeconfig_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--dry-run", "--kubeconfig", tmp_path / "nope")

    assert (code, out) == (2, "")
    (line,) = error_lines(err)
    assert line["error"] == f"kubeconfig {tmp_path / 'nope'} does not exist or is not a file"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("clusters: [\n  - x: {\n", "line 2, column 3"),  # not YAML
        ("apiVersion: v1\nkind: Config\n", "context"),  # YAML, but no context to use
    ],
)
def test_a_kubeconfig_that_does_not_parse_is_named_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text, encoding="utf-8")

    code, out, err = run(capsys, "--dry-run", "--kubeconfig", path)

    assert (code, out) == (2, "")
    (line,) = error_lines(err)
    assert line["error"].startswith(f"cannot use the kubeconfig {path}: ")
    assert says in line["error"]
    assert "\n" not in line["error"]


def test_without_a_kubeconfig_outside_a_pod_the_in_cluster_config_is_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "--dry-run")

    assert code == 2
    (line,) = error_lines(err)
    assert line["error"].startswith("cannot use the in-cluster configuration")
    assert "--kubeconfig" in line["error"]


def test_master_overrides_the_kubeconfigs_server(
    apiserver: FakeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nobody listens on, for the kubeconfig's server
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    kubeconfig.write_text(kubeconfig.read_text().replace(str(apiserver.port), str(dead)))

    code, out, err = run(capsys, "--dry-run", "--kubeconfig", kubeconfig, "--master",
                         apiserver.url)  # fmt: skip

    assert code == 0, err
    assert out.startswith("*filter\n")


def test_an_untrusted_server_certificate_is_named_as_such() -> None:
    # As the transport reports it: its own error, caused by the ssl module's.
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "self-signed certificate"
    try:
        try:
            raise refused
        except ssl.SSLError as exc:
            raise SourceError("SSLError: certificate verify failed") from exc
    except SourceError as exc:
        line = listing.describe(exc, kind="Service", server="https://x:6443", timing=Timing())

    assert line.startswith("cannot reach the API server at https://x:6443: its certificate is ")
    assert "not trusted (self-signed certificate)" in line
