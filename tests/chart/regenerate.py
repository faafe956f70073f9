"""Regenerate what is derived from other files: `uv run python -m tests.chart.regenerate`.

- charts/pykubeproxy/dashboards/pykubeproxy.json: a copy of deploy/grafana/pykubeproxy.json
  (Helm's `.Files.Get` reads only files inside the chart);
- deploy/pykubeproxy.yaml: the chart rendered with its default values.

tests/chart checks that both are current.
"""

from __future__ import annotations

import shutil
import sys

from tests.chart.rendering import (
    DASHBOARD_COPY,
    DASHBOARD_SOURCE,
    DEPLOY_MANIFEST,
    deploy_text,
    render,
)


def sync_dashboard() -> None:
    if DASHBOARD_SOURCE.exists():
        DASHBOARD_COPY.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DASHBOARD_SOURCE, DASHBOARD_COPY)
    else:
        DASHBOARD_COPY.unlink(missing_ok=True)


def main() -> int:
    sync_dashboard()
    DEPLOY_MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    DEPLOY_MANIFEST.write_text(deploy_text(render()), encoding="utf-8")
    for path in (DASHBOARD_COPY, DEPLOY_MANIFEST):
        print(f"{path}: {'written' if path.exists() else 'absent (no source)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
