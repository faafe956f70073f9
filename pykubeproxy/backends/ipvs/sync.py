"""One IPVS-mode sync: ipsets and IPVS over netlink, the few iptables rules, then stale sets."""

from __future__ import annotations

from pykubeproxy.backends.iptables.kernel import Iptables
from pykubeproxy.backends.iptables.sync import IptablesSyncer, SyncError, SyncResult
from pykubeproxy.backends.ipvs.apply import destroy_stale_sets, sync_ipvs
from pykubeproxy.backends.ipvs.errors import IpvsError
from pykubeproxy.backends.ipvs.graceful import GracefulTermination
from pykubeproxy.backends.ipvs.kernel import IpvsKernel
from pykubeproxy.backends.ipvs.plan import IpvsOptions, plan_ipvs
from pykubeproxy.backends.ipvs.rules import render_ipvs_state
from pykubeproxy.model import ProxyState


class IpvsSyncer:
    """Keeps IPVS, kube-ipvs0, the ipsets and the IPVS-mode iptables rules in step.

    Order per sync, as kube-proxy: ipsets (the rules match them) and virtual servers first,
    then the iptables rules, and only then the sets nothing refers to any more are destroyed.
    It answers like IptablesSyncer, so the daemon, metrics and /rules treat both modes alike.
    """

    def __init__(
        self,
        handle: IpvsKernel,
        iptables: Iptables,
        *,
        chunk_rules: int | None = None,
        grace_period: float = 900.0,
        exclude_cidrs: tuple[str, ...] = (),
    ) -> None:
        self.handle = handle
        self.kernel = iptables
        self.rules = IptablesSyncer(iptables, chunk_rules=chunk_rules, render=render_ipvs_state)
        self.graceful = GracefulTermination(grace_period=grace_period)
        self.exclude_cidrs = exclude_cidrs

    @property
    def needs_full(self) -> bool:
        return self.rules.needs_full

    @property
    def failed_restores(self) -> int:
        return self.rules.failed_restores

    def sync(self, state: ProxyState, opts: IpvsOptions, *, full: bool = False) -> SyncResult:
        plan = plan_ipvs(state, opts)
        try:
            sync_ipvs(
                self.handle,
                plan,
                graceful=self.graceful,
                node_addresses=opts.node_ips,
                exclude_cidrs=self.exclude_cidrs,
            )
        except IpvsError as exc:
            self.rules.needs_full = True
            raise SyncError(f"IPVS sync failed: {exc}") from exc
        result = self.rules.sync(state, opts, full=full)
        try:
            destroy_stale_sets(self.handle, plan.ipsets)
        except IpvsError as exc:
            raise SyncError(f"cannot destroy stale ipsets: {exc}") from exc
        return result
