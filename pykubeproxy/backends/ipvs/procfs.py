"""What the kernel tells through files: /proc/net/ip_vs, /proc/modules, modules.builtin.

Pure parsers; the callers read the files (`netlink.py`, `node.py`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

from pykubeproxy.backends.ipvs.model import PROTOCOL_NUMBERS, KernelRealServer, KernelVirtualServer

PROC_IP_VS = Path("/proc/net/ip_vs")
_PROC_IP_VS_HEADERS = 2  # "IP Virtual Server version …" and "Prot LocalAddress:Port …"


def _proc_address(text: str) -> tuple[str, int]:
    """`0A60000A:0050` or `[fd00:0000:...:0010]:0050` → ("10.96.0.10", 80)."""
    host, _, port = text.rpartition(":")
    if host.startswith("["):
        address = str(ipaddress.IPv6Address(host.strip("[]")))
    else:
        address = str(ipaddress.IPv4Address(int(host, 16)))
    return address, int(port, 16)


def parse_proc_ip_vs(text: str) -> list[KernelVirtualServer]:
    """The kernel's /proc/net/ip_vs table → virtual servers (fwmark services are skipped).

    Service lines: `TCP  0A60000A:0050 rr [ops] [persistent <jiffies> <netmask>]`;
    real server lines: `  -> 0AF4010B:1F90      Masq    1      0          0`.
    The persistence timeout is left in jiffies (the table prints the kernel's HZ units).
    """
    found: list[tuple[KernelVirtualServer, list[KernelRealServer]]] = []
    servers: list[KernelRealServer] | None = None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] in ("IP", "Prot"):
            continue
        if words[0] == "->":
            if servers is not None and words[1] != "RemoteAddress:Port":
                address, port = _proc_address(words[1])
                weight, active, inactive = map(int, words[3:6])
                servers.append(
                    KernelRealServer(address, port, weight, words[2].lower(), active, inactive)
                )
            continue
        protocol = words[0].lower()
        if protocol not in PROTOCOL_NUMBERS:
            servers = None  # an FWM service and its real servers: not ours to list
            continue
        address, port = _proc_address(words[1])
        persistence = int(words[words.index("persistent") + 1]) if "persistent" in words else None
        servers = []
        found.append((KernelVirtualServer(protocol, address, port, words[2], persistence), servers))
    return [replace(vs, real_servers=tuple(sorted(rs))) for vs, rs in found]


def count_proc_ip_vs_services(text: str) -> int:
    """How many IPVS services the table lists, fwmark ones included."""
    return sum(1 for line in text.splitlines() if line[:1].isalpha()) - _PROC_IP_VS_HEADERS


def loaded_modules(proc_modules_text: str) -> set[str]:
    """Names in /proc/modules."""
    return {line.split()[0] for line in proc_modules_text.splitlines() if line.strip()}


def builtin_modules(modules_builtin_text: str) -> set[str]:
    """Names in modules.builtin (paths like kernel/net/netfilter/ipvs/ip_vs.ko)."""
    names = set()
    for line in modules_builtin_text.splitlines():
        base = line.strip().rsplit("/", 1)[-1]
        if base.endswith(".ko"):
            names.add(base[: -len(".ko")].replace("-", "_"))
    return names
