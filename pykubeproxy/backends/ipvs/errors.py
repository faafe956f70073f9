"""The errors of IPVS mode, one tree; foreign errors (netlink, OSError) are mapped at the edge.

IpvsError
 ├── IpvsSetupError   the node cannot run IPVS mode (module, device type, sysctl, binary)
 ├── IpvsKernelError  one netlink request or ipset run failed (`errno` when the kernel said)
 ├── IpvsPlanError    an operation no kernel could take (refused as it is added to a Transaction)
 └── IpvsSyncError    a sync finished with failed operations (`failures` lists them)
"""

from __future__ import annotations

from collections.abc import Sequence


class IpvsError(Exception):
    """Base of IPVS mode's errors (the tree is drawn in this module's docstring)."""


class IpvsSetupError(IpvsError):
    pass


class IpvsKernelError(IpvsError):
    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


class IpvsPlanError(IpvsError):
    pass


class IpvsSyncError(IpvsError):
    def __init__(self, failures: Sequence[tuple[str, str]]) -> None:
        shown = "; ".join(f"{what}: {why}" for what, why in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} IPVS change(s) failed: {shown}{more}")
        self.failures = tuple(failures)
