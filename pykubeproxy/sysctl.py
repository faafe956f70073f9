"""The kernel settings the proxy needs, set the way kube-proxy sets them (and logged)."""

from __future__ import annotations

from pathlib import Path

from pykubeproxy.log import get_logger

PROC_SYS = Path("/proc/sys")
log = get_logger("pykubeproxy.sysctl")


def ensure_sysctl(name: str, value: int, *, root: Path = PROC_SYS) -> bool:
    """Set `name` (like net/ipv4/conf/all/route_localnet) to `value`; True if it had to change."""
    path = root / name
    try:
        current = int(path.read_text().strip())
    except (OSError, ValueError) as exc:
        log.warning("cannot read sysctl", name=name, error=str(exc))
        return False
    if current == value:
        return False
    try:
        path.write_text(f"{value}\n")
    except OSError as exc:
        log.warning("cannot set sysctl", name=name, value=value, error=str(exc))
        return False
    log.info("sysctl set", name=name, value=value, was=current)
    return True
