"""Where the repository's files are, for tests that read examples, golden files or the chart."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pykubeproxy"
EXAMPLES = REPO / "examples"
GOLDEN = REPO / "tests" / "golden"
GOLDEN_IPVS = REPO / "tests" / "golden_ipvs" / "examples.txt"
