"""The seam between the proxy and a kernel: one `Backend` per proxy mode, registered once.

A backend owns everything that depends on its mode: its options (from `Config` and the node),
rendering a `ProxyState` into kernel state, one sync against its kernel, the description that
`--dry-run` and `/rules` print, node preparation and cleanup. The rest of the proxy knows only
this module's types; `MODES` below is the one place where a mode name becomes code.

Adding a mode means a package under `backends/` whose module defines `MODE` (a `Mode`), plus
one line in `MODES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pykubeproxy.config import Config
from pykubeproxy.model import ProxyState, ServiceName, Skipped

# mode name → the module defining its `MODE`; imported only when that mode is used.
MODES: Mapping[str, str] = {
    "iptables": "pykubeproxy.backends.iptables.backend",
    "ipvs": "pykubeproxy.backends.ipvs.backend",
}


class BackendError(Exception):
    """Base of the errors a backend raises.

    BackendError      also: a cleanup that could not remove everything
     ├── SetupError   the node cannot run this mode (binary, module, sysctl, unknown mode)
     └── SyncError    a sync left the kernel as it was; the next sync will be a full one
    """


class SetupError(BackendError):
    pass


class SyncError(BackendError):
    """`desired` is what the sync set out to program, when it got that far."""

    def __init__(self, message: str, *, desired: Programmed | None = None) -> None:
        super().__init__(message)
        self.desired = desired


class Programmed(Protocol):
    """What a backend programs, described for people and metrics (/rules, --dry-run)."""

    def text(self) -> str:
        """The kernel's own input format (iptables-restore, ipvsadm, nft), with comments."""
        ...

    def to_json(self) -> dict[str, Any]: ...

    def rule_counts(self) -> Mapping[str, int]:
        """Rules owned by the proxy, per table (kube-proxy's `iptables_total{table}`)."""
        ...


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What one successful sync did, in terms every mode shares."""

    full: bool  # whether everything was compared and rewritten where it differed
    desired: Programmed  # what the kernel holds now
    wrote: bool  # False when the kernel already held it all
    rules_written: Mapping[str, int] = field(default_factory=dict)  # per table
    chains_written: int = 0
    chains_deleted: int = 0
    operations: tuple[str, ...] = ()  # other kernel operations (IPVS), as they print
    rejected: tuple[Skipped, ...] = ()  # Service ports the kernel refused and that were left out
    phases: Mapping[str, float] = field(default_factory=dict)  # seconds per phase, for the log


class Backend(Protocol):
    """One proxy mode against its kernel (real, or in memory for --dry-run)."""

    @property
    def mode(self) -> str: ...

    @property
    def interface(self) -> str:
        """How it reaches the kernel, for logs and metrics: `legacy`, `nft`, `memory`."""
        ...

    @property
    def periods(self) -> tuple[float, float]:
        """(min sync period, sync period) from this mode's settings."""
        ...

    @property
    def needs_full(self) -> bool:
        """The next sync must be full (the first one, or any after a failure)."""
        ...

    @property
    def failed_writes(self) -> int:
        """Writes the kernel refused since the backend was opened (the metrics count them)."""
        ...

    def rules_wiped(self, now: float) -> bool:
        """Whether something outside wiped this mode's rules since the last look (kube-proxy's
        canary chains): the caller then syncs fully at once. `now`: monotonic seconds."""
        ...

    def sync(
        self,
        state: ProxyState,
        *,
        full: bool = False,
        changed: frozenset[ServiceName] | None = None,
    ) -> SyncOutcome:
        """Make the kernel hold `state`. `changed`: the Services changed since the last
        successful sync (None: not known, so any may have). Raises SyncError."""
        ...

    def render(self, state: ProxyState) -> Programmed:
        """What `sync` would program for `state`, without touching the kernel."""
        ...


class Opener(Protocol):
    def __call__(self, config: Config, *, dry_run: bool = False) -> Backend:
        """The backend on the real kernel (node prepared), or in memory; raises SetupError."""
        ...


@dataclass(frozen=True, slots=True)
class Mode:
    """A registered proxy mode: how to open its backend and how to clean up after it."""

    name: str
    open: Opener
    cleanup: Callable[[], Mapping[str, int]]  # remove this mode's kernel state; what went


def mode(name: str) -> Mode:
    """The registered mode of this name; SetupError for one this build does not have."""
    module = MODES.get(name)
    if module is None:
        known = ", ".join(MODES)
        raise SetupError(f"proxy mode {name} is not implemented yet; use one of {known}")
    found: Mode = importlib.import_module(module).MODE
    return found


def open_backend(config: Config, *, dry_run: bool = False) -> Backend:
    """The backend of the configured mode, on the real kernel or (dry run) in memory."""
    return mode(config.mode).open(config, dry_run=dry_run)


def cleanup_all() -> dict[str, Mapping[str, int]]:
    """Remove what every mode (ours or kube-proxy's) left, in registry order.

    iptables goes first: IPVS-mode rules reference ipsets, and a referenced set cannot go.
    """
    return {name: mode(name).cleanup() for name in MODES}
