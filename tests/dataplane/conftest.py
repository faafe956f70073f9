"""Owns the pytest fixtures of the data-plane tests: one namespace topology per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dataplane.topology import REQUIREMENTS, Topology, topology_context
from tests.support.needs import need_root_and


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    """A fresh topology for the module; torn down (processes stopped, namespaces gone) after."""
    need_root_and(*REQUIREMENTS)
    with topology_context() as topo:
        yield topo
