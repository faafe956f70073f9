"""RFC 3339 timestamps as the Kubernetes API writes them (UTC, `Z`), both ways."""

from __future__ import annotations

import datetime as dt


def rfc3339(timestamp: float) -> str:
    """Seconds since the epoch in UTC: `2024-05-01T12:00:00Z`, microseconds when there are any."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str) -> dt.datetime | None:
    """An RFC 3339 time (UTC when it names no zone); None when it is not one."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
