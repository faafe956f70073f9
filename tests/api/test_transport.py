"""The lean way to the API server: each kubeconfig shape and the in-cluster layout, and when the
kubernetes client takes over."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

from pykubeproxy.sources.clients import connect
from pykubeproxy.sources.transport import (
    TOKEN_REREAD_SECONDS,
    ConfigError,
    TokenFile,
    Transport,
    Unsupported,
    load_config,
    load_incluster,
    load_kubeconfig,
)
from tests.support.builders import service
from tests.support.fake_apiserver import FakeApiServer, client_credentials

CA = b"-----BEGIN CERTIFICATE-----\nfake CA\n-----END CERTIFICATE-----\n"


def kubeconfig(path: Path, *, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443", **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(document))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_token_and_an_inline_ca(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "config",
        cluster={"certificate-authority-data": b64(CA)},
        user={"token": "abc"},
    )
    config = load_kubeconfig(path)
    assert (config.server, config.ca, config.insecure) == ("https://10.0.0.1:6443", CA, False)
    assert config.headers()["Authorization"] == "Bearer abc"


def test_files_are_read_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(CA)
    (tmp_path / "pki" / "client.crt").write_bytes(b"CERT")
    (tmp_path / "pki" / "client.key").write_bytes(b"KEY")
    path = kubeconfig(
        tmp_path / "config",
        cluster={"certificate-authority": "pki/ca.crt"},
        user={"client-certificate": "pki/client.crt", "client-key": "pki/client.key"},
    )
    config = load_kubeconfig(path)
    assert (config.ca, config.client_cert, config.client_key) == (CA, b"CERT", b"KEY")
    assert "Authorization" not in config.headers()


def test_a_token_file_is_read_again_once_a_minute_old(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    now = [0.0]
    token = TokenFile(tmp_path / "token", clock=lambda: now[0])
    (tmp_path / "token").write_text("second\n")
    now[0] = TOKEN_REREAD_SECONDS - 1
    assert token.token() == "first"
    now[0] = TOKEN_REREAD_SECONDS
    assert token.token() == "second"
    (tmp_path / "token").unlink()  # mid-rotation: keep what we have
    now[0] = 3 * TOKEN_REREAD_SECONDS
    assert token.token() == "second"


def test_a_kubeconfig_token_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file")
    path = kubeconfig(tmp_path / "config", cluster={}, user={"tokenFile": "token"})
    assert load_kubeconfig(path).headers()["Authorization"] == "Bearer from-file"


def test_insecure_skip_tls_verify_and_master_override(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "config", cluster={"insecure-skip-tls-verify": True}, user={"token": "t"}
    )
    config = load_config(str(path), "https://api.example:443")
    assert config.server == "https://api.example:443"
    assert config.insecure
    assert config.ssl_context().verify_mode.name == "CERT_NONE"


def test_the_in_cluster_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(CA)
    environ = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    config = load_incluster(root=tmp_path, environ=environ)
    assert config.server == "https://[fd00::1]:443"
    assert config.ca == CA
    assert config.headers()["Authorization"] == "Bearer sa-token"


def test_outside_a_cluster_master_alone_is_used_without_credentials() -> None:
    config = load_config("", "http://127.0.0.1:8080", environ={})
    assert config.server == "http://127.0.0.1:8080"
    assert "Authorization" not in config.headers()
    with pytest.raises(ConfigError, match="not in a cluster"):
        load_config("", "", environ={})


@pytest.mark.parametrize(
    ("user", "named"),
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x"}}, "exec"),
        ({"auth-provider": {"name": "oidc"}}, "auth-provider"),
    ],
)
def test_exec_plugins_and_auth_providers_are_left_to_the_kubernetes_client(
    tmp_path: Path, user: dict[str, Any], named: str
) -> None:
    path = kubeconfig(tmp_path / "config", cluster={"insecure-skip-tls-verify": True}, user=user)
    with pytest.raises(Unsupported, match=named):
        load_kubeconfig(path)


def test_connect_falls_back_to_the_kubernetes_client_for_an_exec_plugin(tmp_path: Path) -> None:
    plugin = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "/bin/true",
        "interactiveMode": "Never",
    }
    path = kubeconfig(
        tmp_path / "config", cluster={"insecure-skip-tls-verify": True}, user={"exec": plugin}
    )
    connection = connect(str(path), "", "node-1")
    try:
        assert connection.client == "kubernetes"
        assert set(connection.request_by_kind) == {"Service", "EndpointSlice", "Node"}
    finally:
        connection.close()


def test_a_missing_context_or_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the kubeconfig"):
        load_kubeconfig(tmp_path / "nowhere")
    path = kubeconfig(tmp_path / "config", cluster={}, user={})
    with pytest.raises(ConfigError, match="no context named 'other'"):
        load_kubeconfig(path, context="other")


# --- against the fake API server ----------------------------------------------------------


def list_services(transport: Transport) -> list[str]:
    response = transport.get("/api/v1/services", {"limit": "10"}, timeout=(2, 5))
    try:
        assert response.status == 200, response.data
        return [item["metadata"]["name"] for item in json.loads(response.data)["items"]]
    finally:
        response.release_conn()


def test_the_fakes_tls_kubeconfig_authenticates_by_client_certificate(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.create("services", service("web", cluster_ip="10.96.0.1", served=True))
    config = load_kubeconfig(kubeconfig)
    assert config.server.startswith("https://") and config.client_cert and config.ca
    transport = Transport(config)
    try:
        assert list_services(transport) == ["web"]
    finally:
        transport.close()


def test_client_certificate_files_work_as_well_as_inline_data(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    credentials = client_credentials()
    for name, data in (
        ("ca.crt", credentials.ca_pem),
        ("client.crt", credentials.cert_pem),
        ("client.key", credentials.key_pem),
    ):
        (tmp_path / name).write_bytes(data)
    path = kubeconfig(
        tmp_path / "config",
        cluster={"server": apiserver.url, "certificate-authority": "ca.crt"},
        user={"client-certificate": "client.crt", "client-key": "client.key"},
    )
    transport = Transport(load_kubeconfig(path))
    try:
        assert list_services(transport) == []
    finally:
        transport.close()


def test_a_server_signed_by_an_unknown_ca_is_refused(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    path = kubeconfig(
        tmp_path / "config",
        cluster={"server": apiserver.url},  # no CA: the system's store, which lacks the tests'
        user={
            "client-certificate-data": b64(client_credentials().cert_pem),
            "client-key-data": b64(client_credentials().key_pem),
        },
    )
    transport = Transport(load_kubeconfig(path))
    try:
        with pytest.raises(urllib3.exceptions.SSLError):
            list_services(transport)
    finally:
        transport.close()


def test_insecure_skip_tls_verify_talks_to_a_server_it_cannot_verify(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    path = kubeconfig(
        tmp_path / "config",
        cluster={"server": apiserver.url, "insecure-skip-tls-verify": True},
        user={
            "client-certificate-data": b64(client_credentials().cert_pem),
            "client-key-data": b64(client_credentials().key_pem),
        },
    )
    transport = Transport(load_kubeconfig(path))
    try:
        assert list_services(transport) == []
    finally:
        transport.close()
