"""IPVS mode as a `Backend`: virtual servers over netlink, ipsets, and the few iptables rules.

Order per sync, as kube-proxy: ipsets (the rules match them) and virtual servers first, then the
iptables rules, and only then the sets nothing refers to any more are destroyed. The IPVS plan
is made once per sync and the iptables rules are rendered from it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pykubeproxy.backends import BackendError, Mode, SetupError, SyncError, SyncOutcome
from pykubeproxy.backends.iptables.backend import nodeport_cidrs, open_kernel, outcome
from pykubeproxy.backends.iptables.kernel import Iptables
from pykubeproxy.backends.iptables.ruleset import Ruleset
from pykubeproxy.backends.iptables.sync import IptablesSyncer, chunk_rules
from pykubeproxy.backends.iptables.tables import Tables
from pykubeproxy.backends.ipvs.apply import cleanup as cleanup_ipvs
from pykubeproxy.backends.ipvs.apply import destroy_stale_sets, sync_ipvs
from pykubeproxy.backends.ipvs.errors import IpvsError
from pykubeproxy.backends.ipvs.graceful import GracefulTermination
from pykubeproxy.backends.ipvs.ipsets import format_ipsets
from pykubeproxy.backends.ipvs.ipvsadm import format_ipvs
from pykubeproxy.backends.ipvs.kernel import IpvsKernel, PyrouteIpvs
from pykubeproxy.backends.ipvs.memory import MemoryIpvs
from pykubeproxy.backends.ipvs.model import DEFAULT_SCHEDULER, IpvsPlan
from pykubeproxy.backends.ipvs.node import check_kernel_modules, ensure_ipvs_sysctls
from pykubeproxy.backends.ipvs.plan import IpvsOptions, plan_ipvs
from pykubeproxy.backends.ipvs.rules import render_ipvs_ruleset
from pykubeproxy.config import Config
from pykubeproxy.log import get_logger
from pykubeproxy.model import FAMILY, Node, ProxyState, ServiceName

log = get_logger("pykubeproxy.ipvs")


def ipvs_options(config: Config, node: Node) -> IpvsOptions:
    """IPVS mode's options: NodePort virtual servers go on the node addresses selected."""
    nets = [ipaddress.ip_network(cidr, strict=False) for cidr in nodeport_cidrs(config, node)]
    node_ips = tuple(
        ip for ip in node.ips if not nets or any(ipaddress.ip_address(ip) in n for n in nets)
    )
    return IpvsOptions(
        scheduler=config.ipvs_scheduler or DEFAULT_SCHEDULER,
        masquerade_bit=config.masquerade_bit,
        masquerade_all=config.masquerade_all,
        cluster_cidr=config.cluster_cidr_of(FAMILY),
        node_ips=node_ips,
    )


@dataclass(frozen=True, slots=True)
class IpvsProgram:
    """IPVS mode's desired kernel state: virtual servers, kube-ipvs0, ipsets, iptables rules."""

    plan: IpvsPlan
    rules: Tables

    def text(self) -> str:
        addresses = " ".join(self.plan.addresses) or "(none)"
        return (
            "# IPVS virtual servers (ipvsadm -Sn)\n"
            + format_ipvs(self.plan)
            + f"# addresses on kube-ipvs0: {addresses}\n"
            + "# ipsets (ipset restore)\n"
            + format_ipsets(self.plan.ipsets)
            + "# iptables (iptables-restore --noflush)\n"
            + self.rules.text()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "virtualServers": [
                {
                    "service": v.comment,
                    "protocol": v.protocol,
                    "address": v.address,
                    "port": v.port,
                    "scheduler": v.scheduler,
                    "persistence": v.persistence,
                    "realServers": [f"{r.address}:{r.port}" for r in v.real_servers],
                }
                for v in self.plan.virtual_servers
            ],
            "addresses": list(self.plan.addresses),
            "ipsets": {s.name: list(s.entries) for s in self.plan.ipsets},
            **self.rules.to_json(),
        }

    def rule_counts(self) -> dict[str, int]:
        return self.rules.rule_counts()


class IpvsBackend:
    """kube-proxy's IPVS mode over one IPVS handle and the node's iptables."""

    mode = "ipvs"

    def __init__(
        self,
        config: Config,
        handle: IpvsKernel,
        iptables: Iptables,
    ) -> None:
        self.config = config
        self.handle = handle
        self.kernel = iptables
        self.rules = IptablesSyncer(
            iptables, render=self._render_rules, chunk_rules=chunk_rules(iptables.backend)
        )
        self.graceful = GracefulTermination(grace_period=config.ipvs_graceful_period)
        self._planned: tuple[ProxyState, IpvsPlan] | None = None

    @property
    def interface(self) -> str:
        return self.kernel.backend

    @property
    def periods(self) -> tuple[float, float]:
        return self.config.ipvs_min_sync_period, self.config.ipvs_sync_period

    @property
    def needs_full(self) -> bool:
        return self.rules.needs_full

    @property
    def failed_writes(self) -> int:
        return self.rules.failed_restores

    def rules_wiped(self, now: float) -> bool:
        # kube-proxy's IPVS proxier keeps no canary chains; its periodic syncs repair instead.
        return False

    def _plan(self, state: ProxyState) -> IpvsPlan:
        """The plan of `state`, made once per state (the rules and the IPVS sync share it)."""
        if self._planned is None or self._planned[0] is not state:
            self._planned = (state, plan_ipvs(state, ipvs_options(self.config, state.node)))
        return self._planned[1]

    def _render_rules(self, state: ProxyState) -> Ruleset:
        return render_ipvs_ruleset(self._plan(state), ipvs_options(self.config, state.node))

    def render(self, state: ProxyState) -> IpvsProgram:
        return IpvsProgram(self._plan(state), Tables.from_ruleset(self._render_rules(state)))

    def sync(
        self,
        state: ProxyState,
        *,
        full: bool = False,
        changed: frozenset[ServiceName] | None = None,
    ) -> SyncOutcome:
        desired = self.render(state)
        options = ipvs_options(self.config, state.node)
        try:
            ipvs = sync_ipvs(
                self.handle,
                desired.plan,
                graceful=self.graceful,
                node_addresses=options.node_ips,
                exclude_cidrs=self.config.ipvs_exclude_cidrs,
            )
        except IpvsError as exc:
            self.rules.needs_full = True
            raise SyncError(f"IPVS sync failed: {exc}", desired=desired) from exc
        result = self.rules.sync(state, full=full, desired=desired.rules)
        try:
            destroyed = destroy_stale_sets(self.handle, desired.plan.ipsets)
        except IpvsError as exc:
            raise SyncError(f"cannot destroy stale ipsets: {exc}", desired=desired) from exc
        operations = (
            *(str(op) for op in ipvs.operations),
            *(f"delete drained real server {r.ref}" for r in ipvs.removals),
            *(f"destroy ipset {name}" for name in destroyed),
        )
        done = outcome(result, operations=operations)
        return replace(
            done,
            desired=IpvsProgram(desired.plan, result.desired),
            wrote=done.wrote or bool(ipvs.ipset_lines),
        )


def _open(config: Config, *, dry_run: bool = False) -> IpvsBackend:
    """Check and prepare the node for IPVS mode (modules, sysctls, timeouts), as kube-proxy."""
    iptables = open_kernel(config, dry_run=dry_run)
    if dry_run:
        return IpvsBackend(config, MemoryIpvs(), iptables)
    try:
        check_kernel_modules(config.ipvs_scheduler or DEFAULT_SCHEDULER)
        ensure_ipvs_sysctls(strict_arp=config.ipvs_strict_arp)
        handle = PyrouteIpvs()
        handle.set_timeouts(
            tcp=int(config.ipvs_tcp_timeout),
            tcpfin=int(config.ipvs_tcpfin_timeout),
            udp=int(config.ipvs_udp_timeout),
        )
    except IpvsError as exc:
        raise SetupError(f"cannot run in IPVS mode: {exc}") from exc
    return IpvsBackend(config, handle, iptables)


def _cleanup() -> Mapping[str, int]:
    """kube-proxy's IPVS cleanup: all of IPVS, kube-ipvs0, the KUBE- ipsets (rules go first)."""
    try:
        with PyrouteIpvs() as handle:
            if Path("/proc/net/ip_vs").exists():
                done = cleanup_ipvs(handle)
                return {"virtual servers": done.virtual_servers, "ipsets": len(done.ipsets)}
            # No IPVS in this kernel: only our sets and interface can be left.
            destroyed = destroy_stale_sets(handle, ())
            handle.delete_dummy_interface()
            return {"ipsets": len(destroyed)}
    except (IpvsError, OSError) as exc:
        raise BackendError(f"IPVS cleanup failed: {exc}") from exc


MODE = Mode(name="ipvs", open=_open, cleanup=_cleanup)
