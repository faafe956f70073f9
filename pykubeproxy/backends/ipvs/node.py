"""Getting a node ready for IPVS mode: the kernel modules it needs and the sysctls it sets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pykubeproxy.backends.ipvs.commands import COMMAND_TIMEOUT
from pykubeproxy.backends.ipvs.errors import IpvsSetupError
from pykubeproxy.backends.ipvs.procfs import builtin_modules, loaded_modules
from pykubeproxy.log import get_logger
from pykubeproxy.sysctl import PROC_SYS, ensure_sysctl

log = get_logger("pykubeproxy.ipvs")

# The sysctls kube-proxy sets in IPVS mode (and, with --ipvs-strict-arp, the ARP pair).
IPVS_SYSCTLS = (
    ("net/ipv4/vs/conntrack", 1),  # let iptables NAT (masquerade) see IPVS connections
    ("net/ipv4/vs/expire_nodest_conn", 1),  # drop a deleted real server's connections at once
    ("net/ipv4/vs/expire_quiescent_template", 1),  # weight 0 ends its affinity templates
    ("net/ipv4/ip_forward", 1),
)
STRICT_ARP_SYSCTLS = (
    ("net/ipv4/conf/all/arp_ignore", 1),  # do not answer ARP for kube-ipvs0 addresses
    ("net/ipv4/conf/all/arp_announce", 2),
)


def required_modules(scheduler: str) -> tuple[str, ...]:
    return ("ip_vs", f"ip_vs_{scheduler}", "nf_conntrack")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _modprobe(modprobe: str, name: str) -> str | None:
    """Why `modprobe name` failed, or None when it ran fine."""
    try:
        result = subprocess.run(
            [modprobe, name], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if result.returncode != 0:
        return result.stderr.strip() or f"modprobe exit status {result.returncode}"
    return None


def check_kernel_modules(
    scheduler: str,
    *,
    proc_modules: Path = Path("/proc/modules"),
    modules_dir: Path | None = None,
    modprobe: str | None = "modprobe",
) -> tuple[str, ...]:
    """Make sure ip_vs, ip_vs_<scheduler> and nf_conntrack are there; which had to be loaded.

    A module counts when /proc/modules lists it or modules.builtin names it; otherwise
    `modprobe` is tried. Raises IpvsSetupError naming every module still missing.
    """
    if modules_dir is None:
        modules_dir = Path("/lib/modules") / os.uname().release
    builtin = builtin_modules(_read(modules_dir / "modules.builtin"))
    before = loaded_modules(_read(proc_modules)) | builtin
    wanted = required_modules(scheduler)
    errors: dict[str, str] = {}
    for name in (m for m in wanted if m not in before):
        error = "not loaded" if modprobe is None else _modprobe(modprobe, name)
        if error is not None:
            errors[name] = error
    present = loaded_modules(_read(proc_modules)) | builtin
    missing = [m for m in wanted if m not in present]
    if missing:
        details = "; ".join(f"{m}: {errors.get(m, 'not loaded after modprobe')}" for m in missing)
        raise IpvsSetupError(
            f"IPVS mode needs kernel modules that are not loaded, not built in, and could not "
            f"be loaded: {', '.join(missing)} ({details})"
        )
    loaded_now = tuple(m for m in wanted if m not in before)
    log.info("kernel modules for ipvs", modules=list(wanted), loaded_now=list(loaded_now))
    return loaded_now


def ensure_ipvs_sysctls(*, strict_arp: bool, root: Path = PROC_SYS) -> tuple[str, ...]:
    """Set the sysctls kube-proxy sets in IPVS mode; which ones changed. Each is read back."""
    wanted = IPVS_SYSCTLS + (STRICT_ARP_SYSCTLS if strict_arp else ())
    changed = []
    wrong = []
    for name, value in wanted:
        if ensure_sysctl(name, value, root=root):
            changed.append(name)
        now = _read(root / name).strip()
        if now != str(value):
            wrong.append(f"{name}={now or 'missing'} (want {value})")
    if wrong:
        raise IpvsSetupError(f"cannot set the sysctls IPVS mode needs: {', '.join(wrong)}")
    return tuple(changed)
