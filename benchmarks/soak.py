"""The churn-and-outage soak of issue 12, as long as you like, with its figures printed.

Root only (it makes a network namespace of its own, `pkp-soak-XXXXXXXX`, deleted afterwards):

    uv run python benchmarks/soak.py                     # 2 000 Services, 10 minutes
    uv run python benchmarks/soak.py --duration 75       # what CI runs (tests/api/test_soak.py)

A fake API server (TLS, client certificates) in the node's namespace serves the Services; the
daemon runs there as users run it (`pykubeproxy --kubeconfig`); a driver changes endpoints and
adds and deletes Services at a steady rate and, between stretches of churn, the server drops
every watch, answers 410, stalls a watch, fails LISTs with 500, or goes away for a while. What
is promised and how it is read: tests/support/soak.py. Writes the figures as JSON too
(`--json`, default benchmarks/results/soak-DATE.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.soak import SoakSettings  # noqa: E402
from tests.support.soak_run import Soak, SoakReport, broken_promises  # noqa: E402


def table(report: SoakReport) -> str:
    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    lines = [
        f"first sync (kernel = API): {secs(report.first_sync)}",
        "disturbance   lasted    reconnected  converged  (after its end; writes meanwhile)",
    ]
    for d in report.disturbances:
        lines.append(
            f"{d.kind:<12} {secs(d.lasted):>9} {secs(d.reconnected_after):>12} "
            f"{secs(d.converged_after):>10}   {d.writes}"
        )
    lines += [
        f"API writes: {report.writes}",
        f"kernel reads: {report.kernel_reads}; Services vanished: {len(report.vanished)}",
        f"RSS: {report.rss_warm} MiB after warm-up, {report.rss_end} MiB at the end, "
        f"peak {report.rss_peak} MiB",
        f"syncs: {report.syncs}; LISTs by kind: {report.lists}",
        f"rest_client_requests_total: {report.requests_by_code}",
        f"SIGTERM: exit {report.exit_code} after {secs(report.stop_seconds)}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of soak")
    parser.add_argument("--rate", type=float, default=10.0, help="API writes per second")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--backend", choices=["legacy", "nft"], default="legacy")
    parser.add_argument("--json", type=Path, help="where to write the figures")
    args = parser.parse_args()
    settings = SoakSettings(
        services=args.services,
        duration=args.duration,
        rate=args.rate,
        seed=args.seed,
        backend=args.backend,
    )
    with tempfile.TemporaryDirectory(prefix="pkp-soak-") as workdir:
        report = Soak(settings, Path(workdir)).run()
    print(table(report))
    broken = broken_promises(report, settings)
    print("promises kept" if not broken else "BROKEN:\n  " + "\n  ".join(broken))
    today = datetime.date.today().isoformat()
    out = args.json or HERE / "results" / f"soak-{today}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report.as_dict() | {"broken": broken}, indent=1) + "\n")
    print(f"figures: {out}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
