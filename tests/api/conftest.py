"""Owns the fixtures of the API tests: a fake kube-apiserver and real clients pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from tests.support.fake_apiserver import FakeApiServer


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    """A running fake API server with fast bookmarks; it must not have crashed by the end."""
    with FakeApiServer(bookmark_interval=0.1) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def kubeconfig(apiserver: FakeApiServer, tmp_path: Path) -> Path:
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    """The real kubernetes ApiClient, loaded from the fake's kubeconfig, closed afterwards."""
    with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as client:
        yield client


@pytest.fixture
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)
