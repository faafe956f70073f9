"""Owns running the CLI in-process for a test: its exit code and what it printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykubeproxy.cli import main


def run_main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """main([*args]) → (exit code, stdout, stderr); argparse's exits count too."""
    try:
        code = main([*map(str, args)])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
