"""Fixtures of the observability tests: a namespace of our own, and a cluster to edit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.harness import Namespace, copy_examples
from tests.support.needs import need_root_and

IPTABLES = (
    "iptables-legacy-save",
    "iptables-legacy-restore",
    "iptables-nft-save",
    "iptables-nft-restore",
)


@pytest.fixture(scope="module")
def obs_netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    """A fresh namespace (pkp-obs-<hex>) with loopback up; its processes stopped, then deleted."""
    need_root_and("ip", *IPTABLES)
    with Namespace.created(tmp_path_factory.mktemp("netns")) as ns:
        yield ns


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/ that the tests of a module may edit while the daemon watches it."""
    return copy_examples(tmp_path_factory.mktemp("cluster"))
