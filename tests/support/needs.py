"""What a test needs from this machine (root, binaries), and skipping, or failing in CI, without."""

from __future__ import annotations

import os
import shutil

import pytest

# CI sets this so that a kernel test which cannot run fails instead of quietly skipping.
REQUIRE_KERNEL = os.environ.get("PYKUBEPROXY_REQUIRE_KERNEL_TESTS") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip the test for `reason`, or fail it when CI requires the kernel tests to run."""
    if REQUIRE_KERNEL:
        pytest.fail(f"{reason} (PYKUBEPROXY_REQUIRE_KERNEL_TESTS=1)")
    pytest.skip(reason)


def missing_root_or(*binaries: str) -> str | None:
    """Why this process cannot run a namespace test needing `binaries`, or None if it can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        return f"needs {', '.join(missing)} installed"
    return None


def need_root_and(*binaries: str) -> None:
    """Skip (or, in CI, fail) unless we are root and every binary is installed."""
    reason = missing_root_or(*binaries)
    if reason:
        skip_or_fail(reason)
