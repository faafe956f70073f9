"""kube-proxy's ipsets as text: parse `ipset save`, compare entries, render `ipset restore` input.

Pure. Entries are compared in the spelling `ipset save` prints (`tcp:80` for `80`, no `/32`,
lowercase protocols), so that what we write and what the kernel reports match as strings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from pykubeproxy.backends.ipvs.model import PROTOCOL_NUMBERS, IPSet

OWNED_SET_PREFIX = "KUBE-"
NODE_PORT_SET_PREFIX = "KUBE-NODE-PORT-"
_IP_PROTOCOLS = ("tcp", "udp", "sctp", "udplite", "icmp", "icmpv6", "tcpudp")


def _normalize_part(part: str, index: int) -> str:
    part = part.strip()
    if "/" in part:
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            return part
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return str(net)
    try:
        return str(ipaddress.ip_address(part))
    except ValueError:
        pass
    protocol, sep, port = part.partition(":")
    if sep and protocol.lower() in _IP_PROTOCOLS:
        return f"{protocol.lower()}:{int(port) if port.isdigit() else port}"
    if part.isdigit():
        # hash:ip,port without a protocol means TCP; a lone port (bitmap:port) stays a number.
        return f"tcp:{int(part)}" if index == 1 else str(int(part))
    return part


def normalize_ipset_entry(entry: str) -> str:
    """An entry in the form `ipset save` prints it (tcp:80 for 80, no /32, lowercase protocol)."""
    return ",".join(_normalize_part(p, i) for i, p in enumerate(entry.split(",")))


def parse_ipset_save(text: str, *, prefix: str = OWNED_SET_PREFIX) -> list[IPSet]:
    """`ipset save` (or `ipset list -o save`) output → the sets whose name starts with prefix."""
    types: dict[str, str] = {}
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or not words[1].startswith(prefix):
            continue
        if words[0] == "create":
            types[words[1]] = words[2]
            entries.setdefault(words[1], [])
        elif words[0] == "add":
            entries.setdefault(words[1], []).append(words[2])
    return [
        IPSet(name, types.get(name, ""), "", tuple(sorted(entries[name]))) for name in sorted(types)
    ]


def node_ports_in_ipsets(ipsets: Iterable[IPSet]) -> frozenset[tuple[str, int]]:
    """(protocol, port) of every NodePort recorded in the KUBE-NODE-PORT-* sets."""
    ports = set()
    for ipset in ipsets:
        if not ipset.name.startswith(NODE_PORT_SET_PREFIX):
            continue
        protocol = next((p for p in PROTOCOL_NUMBERS if p.upper() in ipset.name), None)
        if protocol is None:
            continue
        for entry in ipset.entries:
            last = entry.split(",")[-1] if "," in entry else entry
            number = last.rpartition(":")[2]
            if number.isdigit():
                ports.add((protocol, int(number)))
    return frozenset(ports)


def _create_line(ipset: IPSet) -> str:
    return f"create {ipset.name} {ipset.type} {ipset.create_options}"


def render_ipset_restore(desired: Iterable[IPSet], actual: Iterable[IPSet]) -> str:
    """One `ipset restore -exist` payload: create missing sets, add and delete entries.

    Sets are compared by type and normalized entries only (not hashsize or maxelem). A set whose
    type changed is destroyed and created again at the end of the payload; that fails (and is
    reported) if iptables still references it.
    """
    have_sets = {s.name: s for s in actual}
    lines: list[str] = []
    late: list[str] = []
    for want in sorted(desired, key=lambda s: s.name):
        wanted = {normalize_ipset_entry(e): e for e in want.entries}
        have = have_sets.get(want.name)
        if have is None or have.type != want.type:
            target = lines if have is None else late
            if have is not None:
                target.append(f"destroy {want.name}")
            target.append(_create_line(want))
            target.extend(f"add {want.name} {wanted[e]}" for e in sorted(wanted))
            continue
        present = {normalize_ipset_entry(e): e for e in have.entries}
        lines.extend(f"add {want.name} {wanted[e]}" for e in sorted(wanted.keys() - present))
        lines.extend(f"del {want.name} {present[e]}" for e in sorted(present.keys() - wanted))
    payload = lines + late
    return "\n".join(payload) + "\n" if payload else ""


def render_ipset_destroy(desired: Iterable[IPSet], actual: Iterable[IPSet]) -> str:
    """`ipset restore` payload destroying KUBE- sets that are not planned any more."""
    keep = {s.name for s in desired}
    stale = sorted(
        s.name for s in actual if s.name.startswith(OWNED_SET_PREFIX) and s.name not in keep
    )
    return "".join(f"flush {name}\ndestroy {name}\n" for name in stale)


def format_ipsets(sets: Sequence[IPSet]) -> str:
    """The ipsets as `ipset restore` input (--dry-run shows them so)."""
    lines = []
    for ipset in sets:
        lines.append(_create_line(ipset))
        lines.extend(f"add {ipset.name} {entry}" for entry in ipset.entries)
    return "\n".join(lines) + "\n"
