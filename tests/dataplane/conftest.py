"""Owns the pytest fixtures of the data-plane tests: one namespace topology per test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.dataplane.topology import Topology, missing_requirements, topology_context


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    """A fresh topology for the module; torn down (processes stopped, namespaces gone) after."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("PYKUBEPROXY_REQUIRE_KERNEL_TESTS") == "1":
            pytest.fail(f"{reason} (PYKUBEPROXY_REQUIRE_KERNEL_TESTS=1)")
        pytest.skip(reason)
    with topology_context() as topo:
        yield topo
