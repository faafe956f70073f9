"""Fixtures every layer may use: structlog reset after each test, and a throw-away namespace."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest
import structlog

from tests.support.needs import need_root_and


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
