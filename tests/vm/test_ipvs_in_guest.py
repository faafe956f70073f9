"""IPVS mode against a real IPVS kernel: one qemu boot runs tests/vm/guest_checks.py.

This machine's kernel may have no IPVS, so ../shared/tools/run-in-kernel.sh boots Debian's stock
kernel under qemu with this filesystem visible read-only and runs every check in one guest;
this module reads the JSON report and turns each check into a test of its own.

Environment: RIK_MEM (default 1G here), RIK_TIMEOUT (default 600 s here), and the other RIK_*
variables of run-in-kernel.sh. Without the script or qemu the tests skip, or fail when
PYKUBEPROXY_REQUIRE_KERNEL_TESTS=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.needs import skip_or_fail
from tests.support.paths import REPO
from tests.vm.guest_checks import CHECK_NAMES

RUN_IN_KERNEL = REPO.parent / "shared" / "tools" / "run-in-kernel.sh"
GUEST_SCRIPT = Path(__file__).resolve().parent / "guest_checks.py"
DEFAULT_TIMEOUT = 600


def _missing() -> str | None:
    if not RUN_IN_KERNEL.is_file():
        return f"needs {RUN_IN_KERNEL} (run-in-kernel.sh) to boot an IPVS kernel"
    qemu = os.environ.get("RIK_QEMU", "qemu-system-x86_64")
    if shutil.which(qemu) is None:
        return f"needs {qemu} to boot an IPVS kernel (run-in-kernel.sh --setup installs it)"
    return None


@pytest.fixture(scope="module")
def guest_report() -> dict[str, Any]:
    """Boot once, run every check, return the parsed report."""
    reason = _missing()
    if reason:
        skip_or_fail(reason)
    env = dict(os.environ)
    env.setdefault("RIK_MEM", "1G")
    env.setdefault("RIK_TIMEOUT", str(DEFAULT_TIMEOUT))
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [str(RUN_IN_KERNEL), sys.executable, str(GUEST_SCRIPT)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=int(env["RIK_TIMEOUT"]) + 120,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"run-in-kernel.sh did not return within {exc.timeout} s")
    elapsed = time.monotonic() - started
    report = _last_json(proc.stdout)
    if report is None:
        tail = "\n".join(proc.stderr.splitlines()[-60:])
        pytest.fail(
            f"the guest gave no report (exit status {proc.returncode}, {elapsed:.0f} s); "
            f"stderr tail:\n{tail}"
        )
    report["host_seconds"] = round(elapsed, 1)
    report["stderr"] = proc.stderr
    return report


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                parsed: dict[str, Any] = json.loads(line)
            except ValueError:
                return None
            return parsed
    return None


def test_guest_ran_every_check(guest_report: dict[str, Any]) -> None:
    assert sorted(guest_report["checks"]) == sorted(CHECK_NAMES)
    print(  # shown with -s or -rA: how long the guest took
        f"guest kernel {guest_report['kernel']}: checks {guest_report['total_seconds']} s in the "
        f"guest, {guest_report['host_seconds']} s with boot"
    )


def _guest_log_of(name: str, stderr: str) -> str:
    """The guest's stderr lines that belong to one check."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line == f"guest: --- {name}"), None)
    if start is None:
        return "\n".join(lines[-40:])
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("guest: --- ")), len(lines)
    )
    return "\n".join(lines[start:end][-80:])


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_guest_check(guest_report: dict[str, Any], name: str) -> None:
    result = guest_report["checks"].get(name, "not run")
    if result != "ok":
        log = _guest_log_of(name, guest_report["stderr"])
        pytest.fail(f"{name}: {result}\n--- guest log ---\n{log}", pytrace=False)
