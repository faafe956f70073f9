"""Shared test fixtures: throw-away network namespaces and the rule for root-only tests."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import structlog

# CI sets this so that a kernel test which cannot run fails instead of quietly skipping.
REQUIRE_KERNEL = os.environ.get("PYKUBEPROXY_REQUIRE_KERNEL_TESTS") == "1"


def need_root_and(*binaries: str) -> None:
    """Skip (or, in CI, fail) unless we are root and every binary is installed."""
    missing = [b for b in binaries if shutil.which(b) is None]
    reason = None
    if os.geteuid() != 0:
        reason = "needs root to create network namespaces"
    elif missing:
        reason = f"needs {', '.join(missing)} installed"
    if reason:
        if REQUIRE_KERNEL:
            pytest.fail(f"{reason} (PYKUBEPROXY_REQUIRE_KERNEL_TESTS=1)")
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _plain_logging() -> Iterator[None]:
    """Every test starts and ends with structlog's defaults (a CLI test may configure it)."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, empty network namespace, deleted afterwards. Tests write rules only in here."""
    need_root_and("ip", "iptables-legacy-restore", "iptables-nft-restore")
    name = f"pkp-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
