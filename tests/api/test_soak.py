"""The churn-and-outage soak, bounded for CI (about two and a half minutes).

What it promises and how it is measured: tests/support/soak.py. The figures are printed (run
with `-s` to see them); benchmarks/soak.py runs the same soak longer.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.needs import need_root_and
from tests.support.soak import SoakSettings
from tests.support.soak_run import Soak, broken_promises

SETTINGS = SoakSettings(services=2000, duration=75.0, min_sync_period=1.0)


def test_daemon_keeps_its_promises_through_churn_and_api_outages(tmp_path: Path) -> None:
    need_root_and("ip", f"iptables-{SETTINGS.backend}-save")
    report = Soak(SETTINGS, tmp_path).run()
    figures = report.as_dict() | {"log_tail": None}
    print(json.dumps(figures, indent=1))
    broken = broken_promises(report, SETTINGS)
    assert not broken, "\n".join([*broken, "daemon log (tail):", report.log_tail])
    assert report.syncs and report.syncs > len(report.disturbances)
    assert report.lists.get("Service", 0) >= 2  # the 410s and 500s cost relists
