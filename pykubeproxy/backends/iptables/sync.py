"""One iptables sync: render, read the kernel, write the difference; isolate Services it rejects."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pykubeproxy.backends import SyncError
from pykubeproxy.backends.iptables.diff import RestorePlan, plan_restore
from pykubeproxy.backends.iptables.kernel import Iptables, IptablesError
from pykubeproxy.backends.iptables.ruleset import Ruleset, format_restore
from pykubeproxy.log import get_logger
from pykubeproxy.model import ProxyState, ServicePort, Skipped

# Rules per iptables-nft-restore transaction. Measured here with 5 000 Services x 5 endpoints
# (86 520 rules): one transaction takes about a minute, chunks of 1 000-2 000
# rules about 4.5 s in all (chunks of 20 000: 19 s).
NFT_CHUNK_RULES = int(os.environ.get("PYKUBEPROXY_NFT_CHUNK_RULES", "2000"))


def chunk_rules(backend: str) -> int | None:
    """How to split large writes for a backend: legacy stays one atomic transaction."""
    return NFT_CHUNK_RULES if backend == "nft" else None


log = get_logger("pykubeproxy.iptables")

# state → ruleset, with the node's options bound (iptables mode's or IPVS mode's rules).
Renderer = Callable[[ProxyState], Ruleset]


@dataclass(frozen=True, slots=True)
class SyncResult:
    full: bool
    plan: RestorePlan
    ruleset: Ruleset
    rejected: tuple[Skipped, ...] = ()

    @property
    def wrote(self) -> bool:
        return bool(self.plan.payloads)


class IptablesSyncer:
    """Keeps one kernel's iptables in step with the desired state, one sync at a time."""

    def __init__(
        self,
        kernel: Iptables,
        *,
        render: Renderer,
        chunk_rules: int | None = None,
    ) -> None:
        self.kernel = kernel
        # iptables mode renders per-Service chains; IPVS mode a few fixed rules over ipsets.
        self.render = render
        # iptables-nft slows down super-linearly with the size of one transaction.
        self.chunk_rules = chunk_rules
        # The first sync rewrites everything; so does the one after any failure.
        self.needs_full = True
        # Restores the kernel refused, ever (the metrics count them).
        self.failed_restores = 0

    def _write(self, plan: RestorePlan) -> None:
        for payload in plan.payloads:
            self.kernel.restore(payload)

    def sync(self, state: ProxyState, *, full: bool = False) -> SyncResult:
        full = full or self.needs_full
        self.needs_full = True
        ruleset = self.render(state)
        try:
            actual = self.kernel.save()
            plan = plan_restore(ruleset, actual, full=full, chunk_rules=self.chunk_rules)
            self._write(plan)
        except IptablesError as exc:
            self.failed_restores += 1
            log.warning(
                "the kernel refused the restore; looking for the Services it refuses",
                error=str(exc),
                line=exc.line,
                text=exc.text,
            )
            return self._sync_without_rejected(state, ruleset, exc)
        self.needs_full = False
        return SyncResult(full, plan, ruleset)

    def _sync_without_rejected(
        self, state: ProxyState, desired: Ruleset, error: IptablesError
    ) -> SyncResult:
        """The kernel refused the payload: find the Services it refuses, apply all the others."""
        rejected = self._rejected_ports(state, error, desired)
        keep = tuple(p for p in state.services if p not in rejected)
        reduced = replace(state, services=keep)
        ruleset = self.render(reduced)
        try:
            plan = plan_restore(
                ruleset, self.kernel.save(), full=True, chunk_rules=self.chunk_rules
            )
            self._write(plan)
        except IptablesError as exc:
            self.failed_restores += 1
            raise SyncError(f"the kernel refused the ruleset: {exc}", desired=desired) from exc
        reason = f"rules rejected by the kernel ({error})"
        skipped = tuple(
            Skipped("Service", p.name.namespace, p.name.name, f"port {p.name}: {reason}", True)
            for p in rejected
        )
        # Rejected Services are retried by the next (full) sync: they may be fixed by then.
        return SyncResult(True, plan, ruleset, skipped)

    def _accepts(self, state: ProxyState, ports: Sequence[ServicePort]) -> bool:
        ruleset = self.render(replace(state, services=tuple(ports)))
        try:
            self.kernel.restore(format_restore(ruleset), test=True)
        except IptablesError:
            return False
        return True

    def _rejected_ports(
        self, state: ProxyState, error: IptablesError, desired: Ruleset
    ) -> list[ServicePort]:
        if not self._accepts(state, ()):
            raise SyncError(
                f"the kernel refuses even the rules shared by all Services: {error}",
                desired=desired,
            )
        return self._bisect(state, list(state.services))

    def _bisect(self, state: ProxyState, ports: list[ServicePort]) -> list[ServicePort]:
        if not ports or self._accepts(state, ports):
            return []
        if len(ports) == 1:
            return ports
        middle = len(ports) // 2
        return self._bisect(state, ports[:middle]) + self._bisect(state, ports[middle:])
