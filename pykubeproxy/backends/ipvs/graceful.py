"""Graceful termination of IPVS real servers: weight 0 first, delete once idle or overdue.

A real server that leaves the plan is not deleted at once: connections already open to it would
break. It is set to weight 0 (no new connections are scheduled to it) and *drains*. It is deleted
as soon as it is idle or when the grace period is over, whichever comes first:

- TCP and SCTP: idle when ActiveConn == 0 (connections in FIN/TIME_WAIT do not hold it back);
- UDP: idle when ActiveConn + InactConn == 0 (IPVS counts UDP flows as inactive connections).

If it comes back into the plan while draining, it gets its weight back (the sync does that) and
stops draining here.

The state machine (`DrainState` and the `*_draining` / `plan_removals` functions) is pure: time
comes in as `now`. `GracefulTermination` is the small driver that reads a clock and holds the
state between syncs; it never talks to the kernel (`apply.collect_drained` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pykubeproxy.backends.ipvs.model import ServiceKey, bracketed, service_text

DEFAULT_GRACE_PERIOD = 15 * 60.0  # seconds


@dataclass(frozen=True, slots=True, order=True)
class RealServerRef:
    """One real server of one virtual server: what draining is tracked by."""

    service: ServiceKey
    address: str
    port: int

    @property
    def protocol(self) -> str:
        return self.service[0]

    def __str__(self) -> str:
        return f"{service_text(self.service)} -> {bracketed(self.address)}:{self.port}"


@dataclass(frozen=True, slots=True)
class ConnectionCounts:
    """IPVS's per-real-server counters (ipvsadm's ActiveConn and InActConn)."""

    active: int
    inactive: int


@dataclass(frozen=True, slots=True)
class Removal:
    """A draining real server to delete now, and why."""

    ref: RealServerRef
    reason: str  # "idle" or "grace period over"
    draining_for: float  # seconds


@dataclass(frozen=True, slots=True)
class DrainState:
    """Real servers at weight 0 waiting to be deleted, each with the time it started draining."""

    since: Mapping[RealServerRef, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def draining(self) -> frozenset[RealServerRef]:
        return frozenset(self.since)


def is_idle(protocol: str, counts: ConnectionCounts) -> bool:
    """True when no connection that matters is left on a real server of this protocol."""
    if protocol.lower() == "udp":
        return counts.active + counts.inactive == 0
    return counts.active == 0


def start_draining(state: DrainState, refs: Iterable[RealServerRef], *, now: float) -> DrainState:
    """Start the clock for each real server not already draining (a repeat keeps its start)."""
    since = dict(state.since)
    for ref in refs:
        since.setdefault(ref, now)
    return DrainState(MappingProxyType(since))


def stop_draining(state: DrainState, refs: Iterable[RealServerRef]) -> DrainState:
    """Forget real servers that are back in the plan, deleted, or gone from the kernel."""
    gone = set(refs)
    if not gone & state.since.keys():
        return state
    since = {ref: t for ref, t in state.since.items() if ref not in gone}
    return DrainState(MappingProxyType(since))


def plan_removals(
    state: DrainState,
    connections: Mapping[RealServerRef, ConnectionCounts],
    *,
    now: float,
    grace_period: float = DEFAULT_GRACE_PERIOD,
) -> tuple[DrainState, tuple[Removal, ...]]:
    """Which draining real servers to delete now, and the state without those the kernel lost.

    `connections` holds the kernel's counters for the real servers that still exist; a draining
    one missing from it was deleted by someone else (or with its virtual server) and is dropped.
    The removals stay in the returned state until the caller confirms them with `stop_draining`,
    so that a failed deletion is retried with its original start time.
    """
    lost = [ref for ref in state.since if ref not in connections]
    state = stop_draining(state, lost)
    removals = []
    for ref in sorted(state.since):
        started = state.since[ref]
        waited = max(0.0, now - started)
        if is_idle(ref.protocol, connections[ref]):
            removals.append(Removal(ref, "idle", waited))
        elif waited >= grace_period:
            removals.append(Removal(ref, "grace period over", waited))
    return state, tuple(removals)


class GracefulTermination:
    """Holds the drain state between syncs and reads the clock; the kernel edge calls it."""

    def __init__(
        self,
        *,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if grace_period < 0:
            raise ValueError(f"grace period must not be negative, got {grace_period}")
        self.grace_period = grace_period
        self._clock = clock
        self._state = DrainState()

    @property
    def draining(self) -> frozenset[RealServerRef]:
        return self._state.draining

    def draining_since(self, ref: RealServerRef) -> float | None:
        return self._state.since.get(ref)

    def drain(self, refs: Iterable[RealServerRef]) -> None:
        """The kernel now has these at weight 0."""
        self._state = start_draining(self._state, refs, now=self._clock())

    def keep(self, refs: Iterable[RealServerRef]) -> None:
        """These are wanted again, or deleted: stop tracking them."""
        self._state = stop_draining(self._state, refs)

    def removals(
        self, connections: Mapping[RealServerRef, ConnectionCounts]
    ) -> tuple[Removal, ...]:
        """What to delete now; confirm each deletion with `keep([ref])`."""
        self._state, due = plan_removals(
            self._state, connections, now=self._clock(), grace_period=self.grace_period
        )
        return due
