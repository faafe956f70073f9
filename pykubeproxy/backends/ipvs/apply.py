"""One IPVS sync against the kernel: read, plan, apply in order, delete drained real servers;
and the stale-set and --cleanup passes. The pure decisions are `reconcile` and `graceful`'s."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from pykubeproxy.backends.ipvs.errors import IpvsError, IpvsSyncError
from pykubeproxy.backends.ipvs.graceful import (
    ConnectionCounts,
    GracefulTermination,
    RealServerRef,
    Removal,
)
from pykubeproxy.backends.ipvs.ipsets import render_ipset_destroy, render_ipset_restore
from pykubeproxy.backends.ipvs.kernel import DummyLink, Ipsets, IpvsKernel, IpvsTable
from pykubeproxy.backends.ipvs.model import (
    DUMMY_INTERFACE,
    IPSet,
    IpvsPlan,
    IpvsState,
    RealServer,
    ServiceKey,
)
from pykubeproxy.backends.ipvs.operations import (
    AddAddress,
    AddRealServer,
    AddVirtualServer,
    DeleteAddress,
    DeleteRealServer,
    DeleteVirtualServer,
    DrainRealServer,
    EditRealServer,
    EditVirtualServer,
    Operation,
    service_of,
)
from pykubeproxy.backends.ipvs.reconcile import canonical_address, plan_changes
from pykubeproxy.log import get_logger

log = get_logger("pykubeproxy.ipvs")


def read_state(kernel: IpvsKernel) -> IpvsState:
    return IpvsState(
        virtual_servers=tuple(sorted(kernel.list_virtual_servers())),
        addresses=tuple(kernel.list_addresses()),
        ipsets=tuple(kernel.read_ipsets()),
    )


def _apply_one(
    op: Operation, *, table: IpvsTable, link: DummyLink, graceful: GracefulTermination
) -> None:
    match op:
        case AddAddress(address):
            link.add_address(address)
        case AddVirtualServer(vs):
            table.add_virtual_server(vs)
        case EditVirtualServer(vs):
            table.edit_virtual_server(vs)
        case AddRealServer(service, rs) | EditRealServer(service, rs):
            if isinstance(op, AddRealServer):
                table.add_real_server(service, rs)
            else:
                table.edit_real_server(service, rs)
            graceful.keep([RealServerRef(service, rs.address, rs.port)])
        case DrainRealServer(service, address, port):
            table.edit_real_server(service, RealServer(address, port, weight=0))
            graceful.drain([op.ref])
        case DeleteRealServer(service, address, port):
            table.delete_real_server(service, address, port)
            graceful.keep([RealServerRef(service, address, port)])
        case DeleteVirtualServer(service):
            table.delete_virtual_server(service)
            graceful.keep(ref for ref in graceful.draining if ref.service == service)
        case DeleteAddress(address):
            link.delete_address(address)


def apply_changes(
    operations: Iterable[Operation],
    *,
    table: IpvsTable,
    link: DummyLink,
    graceful: GracefulTermination,
) -> list[tuple[str, str]]:
    """Apply in order; a failure skips the rest of that virtual server, not the others.

    Returns the failures as (operation, error) pairs; `sync_ipvs` raises them as IpvsSyncError.
    """
    failures: list[tuple[str, str]] = []
    broken: set[ServiceKey] = set()
    for op in operations:
        service = service_of(op)
        if service in broken:
            continue
        try:
            _apply_one(op, table=table, link=link, graceful=graceful)
        except IpvsError as exc:
            failures.append((str(op), str(exc)))
            if isinstance(op, AddVirtualServer) and service is not None:
                broken.add(service)
    return failures


def collect_drained(table: IpvsTable, graceful: GracefulTermination) -> tuple[Removal, ...]:
    """Delete the draining real servers that are idle or overdue; what was deleted."""
    draining = graceful.draining
    if not draining:
        return ()
    counts: dict[RealServerRef, ConnectionCounts] = {}
    for service in sorted({ref.service for ref in draining}):
        for rs in table.list_real_servers(service):
            ref = RealServerRef(service, rs.address, rs.port)
            if ref in draining:
                counts[ref] = ConnectionCounts(rs.active_connections, rs.inactive_connections)
    removals = graceful.removals(counts)
    for removal in removals:
        ref = removal.ref
        table.delete_real_server(ref.service, ref.address, ref.port)
        graceful.keep([ref])
        log.info(
            "deleted drained real server",
            real_server=str(ref),
            reason=removal.reason,
            drained_seconds=round(removal.draining_for, 1),
        )
    return removals


@dataclass(frozen=True, slots=True)
class IpvsSyncResult:
    operations: tuple[Operation, ...]  # print them with `str(Transaction(operations))`
    ipset_lines: int
    removals: tuple[Removal, ...]
    seconds: float

    @property
    def changed(self) -> bool:
        return bool(self.operations or self.ipset_lines or self.removals)


def _keep_wanted(plan: IpvsPlan, graceful: GracefulTermination) -> None:
    """Real servers back in the plan stop draining (their weight is restored by the sync)."""
    draining = graceful.draining
    if not draining:
        return
    services = {ref.service for ref in draining}
    graceful.keep(
        RealServerRef(vs.key, canonical_address(rs.address), rs.port)
        for vs in plan.virtual_servers
        if vs.key in services
        for rs in vs.real_servers
    )


def _restore_ipsets(ipsets: Ipsets, plan: IpvsPlan, actual: IpvsState) -> tuple[str, str | None]:
    """(payload written, error) for the one `ipset restore` that brings the sets in step."""
    payload = render_ipset_restore(plan.ipsets, actual.ipsets)
    if not payload:
        return payload, None
    try:
        ipsets.restore_ipsets(payload)
    except IpvsError as exc:
        return payload, str(exc)
    return payload, None


def sync_ipvs(
    kernel: IpvsKernel,
    plan: IpvsPlan,
    *,
    graceful: GracefulTermination,
    node_addresses: Collection[str] = (),
    exclude_cidrs: Collection[str] = (),
) -> IpvsSyncResult:
    """One IPVS sync against the kernel: ipsets (one restore), then IPVS, then drained ones.

    Call it before the iptables sync (the rules match these ipsets) and `destroy_stale_sets`
    after it. Raises IpvsSyncError after doing everything it could when some change failed.
    """
    started = time.monotonic()
    kernel.ensure_dummy_interface()
    actual = read_state(kernel)
    failures: list[tuple[str, str]] = []
    payload, ipset_error = _restore_ipsets(kernel, plan, actual)
    if ipset_error is not None:
        failures.append(("ipset restore", ipset_error))
    _keep_wanted(plan, graceful)
    operations = plan_changes(
        plan,
        actual,
        draining=graceful.draining,
        node_addresses=node_addresses,
        exclude_cidrs=exclude_cidrs,
    )
    failures += apply_changes(operations, table=kernel, link=kernel, graceful=graceful)
    removals: tuple[Removal, ...] = ()
    try:
        removals = collect_drained(kernel, graceful)
    except IpvsError as exc:
        failures.append(("delete drained real servers", str(exc)))
    result = IpvsSyncResult(
        tuple(operations), payload.count("\n"), removals, time.monotonic() - started
    )
    log.info(
        "ipvs sync",
        virtual_servers=len(plan.virtual_servers),
        operations=len(operations),
        ipset_lines=result.ipset_lines,
        draining=len(graceful.draining),
        removed_after_drain=len(removals),
        failures=len(failures),
        seconds=round(result.seconds, 3),
    )
    if failures:
        raise IpvsSyncError(failures)
    return result


def destroy_stale_sets(ipsets: Ipsets, desired: Iterable[IPSet]) -> tuple[str, ...]:
    """Destroy the KUBE- sets the plan does not have; call it after the iptables sync."""
    actual = ipsets.read_ipsets()
    payload = render_ipset_destroy(desired, actual)
    if not payload:
        return ()
    ipsets.restore_ipsets(payload)
    names = tuple(line.split()[1] for line in payload.splitlines() if line.startswith("destroy"))
    log.info("destroyed stale ipsets", ipsets=list(names))
    return names


@dataclass(frozen=True, slots=True)
class CleanupResult:
    virtual_servers: int
    dummy_deleted: bool
    ipsets: tuple[str, ...]


def cleanup(kernel: IpvsKernel) -> CleanupResult:
    """kube-proxy's --cleanup for IPVS mode: flush ALL IPVS services, delete kube-ipvs0,
    destroy the KUBE- ipsets. Remove the iptables rules first: a referenced set cannot go.
    Running it again is harmless.
    """
    failures: list[tuple[str, str]] = []
    flushed, deleted = 0, False
    sets: tuple[str, ...] = ()
    try:
        flushed = kernel.flush_virtual_servers()
    except IpvsError as exc:
        failures.append(("flush IPVS services", str(exc)))
    try:
        deleted = kernel.delete_dummy_interface()
    except IpvsError as exc:
        failures.append((f"delete {DUMMY_INTERFACE}", str(exc)))
    try:
        sets = destroy_stale_sets(kernel, ())
    except IpvsError as exc:
        failures.append(("destroy KUBE- ipsets", str(exc)))
    log.info("ipvs cleanup", virtual_servers=flushed, dummy_deleted=deleted, ipsets=len(sets))
    if failures:
        raise IpvsSyncError(failures)
    return CleanupResult(flushed, deleted, sets)
