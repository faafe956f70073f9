"""Fixtures every layer may use: structlog reset after each test, and a throw-away namespace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from tests.support.needs import need_root_and
from tests.support.netns import Netns, namespace


@pytest.fixture(autouse=True)
def _plain_logging() -> Iterator[None]:
    """Every test starts and ends with structlog's defaults (a CLI test may configure it)."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh, empty network namespace, deleted afterwards. Tests write rules only in here."""
    need_root_and("ip", "iptables-legacy-restore", "iptables-nft-restore")
    with namespace("test") as ns:
        yield ns
