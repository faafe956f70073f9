"""One iptables sync: write what changed; read the kernel on full syncs; isolate refused Services.

A partial sync compares the desired tables with what the last successful sync wrote and writes
the chains that differ, without reading the kernel (kube-proxy's partial syncs). A full sync (the
first, any after a failure, and the periodic one) reads the kernel with iptables-save and writes
only the drift: on an undisturbed node it writes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pykubeproxy.backends import SyncError
from pykubeproxy.backends.iptables.assemble import PortHook
from pykubeproxy.backends.iptables.diff import EDIT_MIN_RULES, RestorePlan, plan_restore
from pykubeproxy.backends.iptables.kernel import Iptables, IptablesError
from pykubeproxy.backends.iptables.ruleset import Ruleset
from pykubeproxy.backends.iptables.stream import StreamedWrite
from pykubeproxy.backends.iptables.tables import Tables, parse_save_tables
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

# state → the desired tables, with the node's options bound (iptables or IPVS mode's rules).
Renderer = Callable[[ProxyState], Tables | Ruleset]


def _tables(rendered: Tables | Ruleset) -> Tables:
    return rendered if isinstance(rendered, Tables) else Tables.from_ruleset(rendered)


class _Phases:
    """Seconds spent in each phase of a sync, for the sync's log line and the benchmarks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 4)
        self._last = now


@dataclass(frozen=True, slots=True)
class SyncResult:
    full: bool  # whether the kernel was read and compared
    plan: RestorePlan
    desired: Tables  # what the kernel holds now
    rejected: tuple[Skipped, ...] = ()
    phases: Mapping[str, float] = field(default_factory=dict)  # seconds: read, plan, write
    state: ProxyState | None = None  # what was programmed, when Services were left out

    @property
    def wrote(self) -> bool:
        return bool(self.plan.payloads)


class IptablesSyncer:
    """Keeps one kernel's iptables in step with the desired tables, one sync at a time."""

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
        # What the last successful sync left in the kernel (what partial syncs compare with).
        self.written: Tables | None = None
        # The first sync reads the kernel; so does the one after any failure.
        self.needs_full = True
        # Restores the kernel refused, ever (the metrics count them).
        self.failed_restores = 0

    def _write(self, plan: RestorePlan) -> None:
        for payload in plan.payloads:
            self.kernel.restore(payload)

    def _written(self, tables: Tables) -> None:
        """Remember what the kernel now holds, as digests but for chains edited rule by rule."""
        self.written, self.needs_full = tables.compact(keep_rules=EDIT_MIN_RULES), False

    def _read(self) -> Tables:
        return parse_save_tables(self.kernel.save_text())

    def sync(
        self, state: ProxyState, *, full: bool = False, desired: Tables | None = None
    ) -> SyncResult:
        """Make the kernel hold `desired` (rendered from `state` when not given)."""
        full = full or self.needs_full or self.written is None
        self.needs_full = True
        want = desired if desired is not None else _tables(self.render(state))
        if full:
            want = want.untouched()  # compared with the kernel, not with the last write
        clock = _Phases()
        try:
            have = self._read() if full or self.written is None else self.written
            clock.lap("read")
            plan = plan_restore(want, have, chunk_rules=self.chunk_rules)
            clock.lap("plan")
            self._write(plan)
            clock.lap("write")
        except IptablesError as exc:
            self._refused(exc)
            return self._sync_without_rejected(state, want, exc)
        self._written(want)
        return SyncResult(full, plan, want, phases=clock.seconds)

    def sync_streamed(
        self,
        state: ProxyState,
        *,
        render: Callable[[PortHook], Tables],
        early: Tables,
    ) -> SyncResult:
        """A full sync written while `render` renders (it calls back with each port's rules)."""
        self.needs_full = True
        clock = _Phases()
        try:
            have = self._read()
            clock.lap("read")
            writer = StreamedWrite(self.kernel, have, early=early, chunk_rules=self.chunk_rules)
            want = render(writer.port)
            clock.lap("render_and_write")
            plan = writer.finish(want)
            clock.lap("write")
        except IptablesError as exc:
            self._refused(exc)
            return self._sync_without_rejected(state, _tables(self.render(state)), exc)
        self._written(want)
        return SyncResult(True, plan, want, phases=clock.seconds)

    def _refused(self, exc: IptablesError) -> None:
        self.failed_restores += 1
        log.warning(
            "the kernel refused the restore; looking for the Services it refuses",
            error=str(exc),
            line=exc.line,
            text=exc.text,
        )

    def _sync_without_rejected(
        self, state: ProxyState, desired: Tables, error: IptablesError
    ) -> SyncResult:
        """The kernel refused the payload: find the Services it refuses, apply all the others.

        It ends with a full sync, so a refusal caused by rules changed behind our back (a
        partial sync deleting a rule that is gone) is repaired here too.
        """
        rejected = self._rejected_ports(state, error, desired)
        keep = tuple(p for p in state.services if p not in rejected)
        reduced = _tables(self.render(replace(state, services=keep))) if rejected else desired
        try:
            plan = plan_restore(reduced, self._read(), chunk_rules=self.chunk_rules)
            self._write(plan)
        except IptablesError as exc:
            self.failed_restores += 1
            raise SyncError(f"the kernel refused the ruleset: {exc}", desired=desired) from exc
        self.written = reduced.compact(keep_rules=EDIT_MIN_RULES)
        reason = f"rules rejected by the kernel ({error})"
        skipped = tuple(
            Skipped("Service", p.name.namespace, p.name.name, f"port {p.name}: {reason}", True)
            for p in rejected
        )
        # Rejected Services are retried by the next (full) sync: they may be fixed by then.
        self.needs_full = bool(rejected)
        programmed = replace(state, services=keep) if rejected else None
        return SyncResult(True, plan, reduced, skipped, state=programmed)

    def _accepts(self, state: ProxyState, ports: Sequence[ServicePort]) -> bool:
        tables = _tables(self.render(replace(state, services=tuple(ports))))
        try:
            self.kernel.restore(tables.text(), test=True)
        except IptablesError:
            return False
        return True

    def _rejected_ports(
        self, state: ProxyState, error: IptablesError, desired: Tables
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
