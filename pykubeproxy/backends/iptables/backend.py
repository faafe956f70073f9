"""iptables mode as a `Backend`: options from the config and node, the kernel it writes, cleanup."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pykubeproxy.backends import BackendError, Mode, SetupError, SyncOutcome
from pykubeproxy.backends.iptables.assemble import Renderer, fixed_tables, render_tables
from pykubeproxy.backends.iptables.canary import CanaryMonitor
from pykubeproxy.backends.iptables.kernel import (
    Iptables,
    IptablesBinaries,
    IptablesError,
    KernelIptables,
    cleanup,
    detect_backend,
)
from pykubeproxy.backends.iptables.memory import MemoryIptables
from pykubeproxy.backends.iptables.render import RenderOptions
from pykubeproxy.backends.iptables.sync import IptablesSyncer, SyncResult, chunk_rules
from pykubeproxy.backends.iptables.tables import Tables
from pykubeproxy.config import Config
from pykubeproxy.log import get_logger
from pykubeproxy.model import FAMILY, Node, ProxyState, ServiceName
from pykubeproxy.selection import Place
from pykubeproxy.sysctl import ensure_sysctl

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

log = get_logger("pykubeproxy.iptables")


def nodeport_cidrs(config: Config, node: Node) -> tuple[str, ...]:
    """--nodeport-addresses of our family, with `primary` resolved to the node's first IP."""
    cidrs: list[str] = []
    for entry in config.nodeport_addresses:
        if entry == "primary":
            cidrs.extend(f"{ip}/32" for ip in node.ips[:1])
        elif ipaddress.ip_network(entry, strict=False).version == FAMILY:
            cidrs.append(entry)
    return tuple(cidrs)


def render_options(config: Config, node: Node) -> RenderOptions:
    return RenderOptions(
        masquerade_bit=config.masquerade_bit,
        masquerade_all=config.masquerade_all,
        cluster_cidr=config.cluster_cidr_of(FAMILY),
        nodeport_addresses=nodeport_cidrs(config, node),
        localhost_nodeports=config.localhost_nodeports,
        node_ips=node.ips,
        place=Place.of(node),
    )


def written_per_table(payloads: tuple[str, ...]) -> dict[str, int]:
    """Rules (-A and -I lines) written per table by restore payloads, read as one stream."""
    written: Counter[str] = Counter()
    table = ""
    for payload in payloads:
        for line in payload.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(("-A ", "-I ")):
                written[table] += 1
    return dict(written)


def outcome(result: SyncResult, *, operations: tuple[str, ...] = ()) -> SyncOutcome:
    """A mode-neutral outcome of one iptables sync (IPVS mode adds its own operations)."""
    return SyncOutcome(
        full=result.full,
        desired=result.desired,
        wrote=result.wrote or bool(operations),
        rules_written=written_per_table(result.plan.payloads),
        chains_written=result.plan.chains_written,
        chains_deleted=result.plan.chains_deleted,
        operations=operations,
        rejected=result.rejected,
        phases=result.phases,
    )


def _nodeports_on_loopback(config: Config) -> bool:
    nets = [n for n in config.nodeport_addresses if n != "primary"]
    if not config.nodeport_addresses:
        return True
    return any(ipaddress.ip_network(n, strict=False).overlaps(LOOPBACK) for n in nets)


def open_kernel(config: Config, *, dry_run: bool) -> Iptables:
    """The iptables binaries the node uses (as kube-proxy picks them), or memory for a dry run.

    On a real node, NodePorts on 127.0.0.1 need the kernel to route DNATed loopback traffic.
    """
    if dry_run:
        return MemoryIptables()
    try:
        choice = detect_backend(requested=config.iptables_backend)
    except IptablesError as exc:
        raise SetupError(f"cannot use iptables: {exc}") from exc
    log.info("iptables backend chosen", backend=choice.backend, reason=choice.reason)
    if config.localhost_nodeports and _nodeports_on_loopback(config):
        ensure_sysctl("net/ipv4/conf/all/route_localnet", 1)
    return KernelIptables(IptablesBinaries(choice.backend))


@dataclass(frozen=True, slots=True)
class RenderedRules:
    """What iptables mode programmed, as `Programmed`: rendered again only when someone looks
    (/rules, --dry-run), so that between syncs the proxy keeps digests, not 30 MB of text."""

    state: ProxyState
    options: RenderOptions
    counts: Mapping[str, int]

    def tables(self) -> Tables:
        return render_tables(self.state, self.options)

    def text(self) -> str:
        return self.tables().text()

    def to_json(self) -> dict[str, Any]:
        return self.tables().to_json()

    def rule_counts(self) -> Mapping[str, int]:
        return self.counts


class IptablesBackend:
    """kube-proxy's iptables mode: per-Service chains, one restore per sync."""

    mode = "iptables"

    def __init__(self, config: Config, kernel: Iptables) -> None:
        self.config = config
        self.kernel = kernel
        # The syncer renders subsets from scratch when it looks for refused Services; syncs
        # render through the cache, which keeps each port's rules between syncs.
        self.rules = IptablesSyncer(
            kernel, render=self.render, chunk_rules=chunk_rules(kernel.backend)
        )
        self.renderer = Renderer()
        self.canary = CanaryMonitor(kernel, interval=config.sync_period)

    @property
    def interface(self) -> str:
        return self.kernel.backend

    @property
    def periods(self) -> tuple[float, float]:
        return self.config.min_sync_period, self.config.sync_period

    @property
    def needs_full(self) -> bool:
        return self.rules.needs_full

    @property
    def failed_writes(self) -> int:
        return self.rules.failed_restores

    def rules_wiped(self, now: float) -> bool:
        return self.canary.check(now)

    def render(self, state: ProxyState) -> Tables:
        return render_tables(state, render_options(self.config, state.node))

    def sync(
        self,
        state: ProxyState,
        *,
        full: bool = False,
        changed: frozenset[ServiceName] | None = None,
    ) -> SyncOutcome:
        options = render_options(self.config, state.node)
        phases: dict[str, float] = {}
        if full or self.rules.needs_full:
            # Written while it renders: the kernel parses on the other core meanwhile.
            result = self.rules.sync_streamed(
                state,
                render=lambda on_port: self.renderer.render(state, options, on_port=on_port),
                early=fixed_tables(options),
            )
        else:
            started = time.perf_counter()
            desired = self.renderer.render(state, options, changed)
            phases["render"] = round(time.perf_counter() - started, 4)
            result = self.rules.sync(state, desired=desired)
        self.renderer.compact()
        self.canary.synced_once = True
        done = outcome(result)
        programmed = RenderedRules(result.state or state, options, result.desired.rule_counts())
        return replace(done, desired=programmed, phases={**phases, **done.phases})


def _open(config: Config, *, dry_run: bool = False) -> IptablesBackend:
    return IptablesBackend(config, open_kernel(config, dry_run=dry_run))


def _cleanup() -> Mapping[str, int]:
    try:
        return cleanup()
    except IptablesError as exc:
        raise BackendError(f"iptables cleanup failed: {exc}") from exc


MODE = Mode(name="iptables", open=_open, cleanup=_cleanup)
