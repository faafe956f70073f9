"""The churn-and-outage soak, bounded for CI (about two and a half minutes).

What it promises and how it is measured: tests/support/soak.py. The figures are printed (run
with `-s` to see them); benchmarks/soak.py runs the same soak longer.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.needs import need_root_and
from tests.support.soak import DISTURBANCES, SoakSettings
from tests.support.soak_run import Soak, SoakReport

SETTINGS = SoakSettings(services=2000, duration=75.0, min_sync_period=1.0)


def broken_promises(report: SoakReport, settings: SoakSettings) -> list[str]:
    """Every promise the run broke, in words (empty: all kept)."""
    broken = []
    if report.first_sync is None:
        return ["the first sync never made the kernel match the API"]
    if not report.alive_throughout:
        broken.append("the daemon exited during the soak")
    broken += [f"a Service vanished while its object existed: {v}" for v in report.vanished]
    bound = 2 * settings.min_sync_period
    for d in report.disturbances:
        if d.converged_after is None or d.reconnected_after is None:
            broken.append(f"no convergence after {d.kind}")
        elif d.converged_after - d.reconnected_after > bound:
            late = d.converged_after - d.reconnected_after
            broken.append(f"{d.kind}: converged {late:.2f} s after reconnecting (> {bound} s)")
    missing = set(DISTURBANCES) - {d.kind for d in report.disturbances}
    if missing:
        broken.append(f"disturbances never tried: {sorted(missing)}")
    if report.rss_warm and report.rss_end and report.rss_end > 1.1 * report.rss_warm:
        broken.append(f"RSS grew from {report.rss_warm:.1f} to {report.rss_end:.1f} MiB")
    if report.exit_code != 0 or (report.stop_seconds or 99) > 2.0:
        broken.append(f"SIGTERM: exit {report.exit_code} after {report.stop_seconds} s")
    return broken


def test_daemon_keeps_its_promises_through_churn_and_api_outages(tmp_path: Path) -> None:
    need_root_and("ip", f"iptables-{SETTINGS.backend}-save")
    report = Soak(SETTINGS, tmp_path).run()
    figures = report.as_dict() | {"log_tail": None}
    print(json.dumps(figures, indent=1))
    broken = broken_promises(report, SETTINGS)
    assert not broken, "\n".join([*broken, "daemon log (tail):", report.log_tail])
    assert report.syncs and report.syncs > len(report.disturbances)
    assert report.lists.get("Service", 0) >= 2  # the 410s and 500s cost relists
