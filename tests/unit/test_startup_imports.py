"""Start-up stays quick: each command imports only what it uses (measured costs in the comments)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.paths import REPO

# Imported by the daemon only: prometheus_client and http.server (~45 ms together), the
# `kubernetes` client (1.5 s with bytecode, 3.5 s without), pyroute2 (~60 ms, IPVS mode).
HEAVY = ("prometheus_client", "http.server", "kubernetes", "pyroute2")


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (which must not print)."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_command_line_loads_no_heavy_module() -> None:
    loaded = modules_after("import pykubeproxy.cli")
    assert {m for m in HEAVY if m in loaded} == set()
    assert "yaml" not in loaded  # only --config and YAML manifests parse YAML


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
def test_a_dry_run_from_manifests_loads_no_heavy_module(mode: str) -> None:
    code = (
        "import contextlib, io\n"
        "from pykubeproxy.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['--dry-run', '--proxy-mode={mode}', '--from-file=examples/']) == 0\n"
    )
    loaded = modules_after(code)
    assert {m for m in HEAVY if m in loaded} == set()
