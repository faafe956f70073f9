"""ipvsadm's restore syntax: what `ipvsadm -Sn` prints and `ipvsadm -R` reads, for dry runs
and logs. Pure; nothing here runs ipvsadm."""

from __future__ import annotations

from pykubeproxy.backends.ipvs.model import (
    IpvsPlan,
    RealServer,
    ServiceKey,
    VirtualServer,
    bracketed,
)

PROTOCOL_FLAGS = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}


def _where(address: str, port: int, *, ipv6_brackets: bool) -> str:
    return f"{bracketed(address) if ipv6_brackets else address}:{port}"


def service_option(service: ServiceKey, *, ipv6_brackets: bool = True) -> str:
    """`-t 10.96.0.1:443`: the virtual server a line is about."""
    protocol, address, port = service
    return f"{PROTOCOL_FLAGS[protocol]} {_where(address, port, ipv6_brackets=ipv6_brackets)}"


def scheduling_options(virtual_server: VirtualServer) -> str:
    """`-s rr`, with `-p 10800` when the virtual server is persistent (ClientIP affinity)."""
    vs = virtual_server
    persistent = f" -p {vs.persistence}" if vs.persistence is not None else ""
    return f"-s {vs.scheduler}{persistent}"


def real_server_options(real_server: RealServer, *, ipv6_brackets: bool = True) -> str:
    """`-r 10.244.1.5:8443 -m -w 1`: always masquerade (NAT), as kube-proxy."""
    rs = real_server
    where = _where(rs.address, rs.port, ipv6_brackets=ipv6_brackets)
    return f"-r {where} -m -w {rs.weight}"


def virtual_server_line(command: str, virtual_server: VirtualServer) -> str:
    """`-A` (add) or `-E` (edit) a virtual server: `-A -t 10.96.0.1:443 -s rr`."""
    return f"{command} {service_option(virtual_server.key)} {scheduling_options(virtual_server)}"


def real_server_line(command: str, service: ServiceKey, real_server: RealServer) -> str:
    """`-a` (add) or `-e` (edit) a real server: `-a -t 10.96.0.1:443 -r 10.244.1.5:8443 -m -w 1`."""
    return f"{command} {service_option(service)} {real_server_options(real_server)}"


def delete_virtual_server_line(service: ServiceKey) -> str:
    return f"-D {service_option(service)}"


def delete_real_server_line(service: ServiceKey, address: str, port: int) -> str:
    return f"-d {service_option(service)} -r {bracketed(address)}:{port}"


def format_ipvs(plan: IpvsPlan) -> str:
    """The virtual servers as `ipvsadm -Sn` would list them (with the Service as a comment).

    IPv6 addresses go without brackets here, unlike in ipvsadm's own output and in the
    operations' lines: --dry-run has always printed them so, and its output is kept as it was.
    """
    lines = []
    for server in plan.virtual_servers:
        target = service_option(server.key, ipv6_brackets=False)
        lines.append(f"# {server.comment}")
        lines.append(f"-A {target} {scheduling_options(server)}")
        for real in server.real_servers:
            lines.append(f"-a {target} {real_server_options(real, ipv6_brackets=False)}")
    return "\n".join(lines) + ("\n" if lines else "")
