"""The changes an IPVS sync makes, as typed operations, and the ordered `Transaction` of them.

Pure. Each operation says what it does twice: `str(op)` for logs and sync results (those texts
are relied on; keep them), and `op.command()` as one line a person could run: ipvsadm's restore
syntax for IPVS (`-A -t 10.96.0.1:443 -s rr`), an `ip address` command for kube-ipvs0.
A `Transaction` checks every operation as it is added and prints itself as those lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from pykubeproxy.backends.ipvs import ipvsadm
from pykubeproxy.backends.ipvs.errors import IpvsPlanError
from pykubeproxy.backends.ipvs.graceful import RealServerRef
from pykubeproxy.backends.ipvs.model import (
    DUMMY_INTERFACE,
    PROTOCOL_NUMBERS,
    RealServer,
    ServiceKey,
    VirtualServer,
    bracketed,
    service_text,
)


def _address_command(command: str, address: str) -> str:
    prefix = 128 if ":" in address else 32
    return f"ip address {command} {address}/{prefix} dev {DUMMY_INTERFACE}"


@dataclass(frozen=True, slots=True)
class AddAddress:
    address: str

    def __str__(self) -> str:
        return f"add address {self.address}"

    def command(self) -> str:
        return _address_command("add", self.address)


@dataclass(frozen=True, slots=True)
class AddVirtualServer:
    virtual_server: VirtualServer  # its real_servers are added by AddRealServer operations

    def __str__(self) -> str:
        vs = self.virtual_server
        return f"add virtual server {vs} scheduler {vs.scheduler} persistence {vs.persistence}"

    def command(self) -> str:
        return ipvsadm.virtual_server_line("-A", self.virtual_server)


@dataclass(frozen=True, slots=True)
class EditVirtualServer:
    virtual_server: VirtualServer

    def __str__(self) -> str:
        vs = self.virtual_server
        return f"edit virtual server {vs} scheduler {vs.scheduler} persistence {vs.persistence}"

    def command(self) -> str:
        return ipvsadm.virtual_server_line("-E", self.virtual_server)


@dataclass(frozen=True, slots=True)
class AddRealServer:
    service: ServiceKey
    real_server: RealServer

    def __str__(self) -> str:
        rs = self.real_server
        where = f"{bracketed(rs.address)}:{rs.port}"
        return f"add real server {service_text(self.service)} -> {where} weight {rs.weight}"

    def command(self) -> str:
        return ipvsadm.real_server_line("-a", self.service, self.real_server)


@dataclass(frozen=True, slots=True)
class EditRealServer:
    """Weight or forwarding method differs (or it was draining and is wanted again)."""

    service: ServiceKey
    real_server: RealServer

    def __str__(self) -> str:
        rs = self.real_server
        where = f"{bracketed(rs.address)}:{rs.port}"
        return f"edit real server {service_text(self.service)} -> {where} weight {rs.weight}"

    def command(self) -> str:
        return ipvsadm.real_server_line("-e", self.service, self.real_server)


@dataclass(frozen=True, slots=True)
class DrainRealServer:
    """Not wanted any more: weight 0 now, deleted by graceful termination later."""

    service: ServiceKey
    address: str
    port: int

    @property
    def ref(self) -> RealServerRef:
        return RealServerRef(self.service, self.address, self.port)

    def __str__(self) -> str:
        return f"drain real server {self.ref}"

    def command(self) -> str:
        drained = RealServer(self.address, self.port, weight=0)
        return ipvsadm.real_server_line("-e", self.service, drained)


@dataclass(frozen=True, slots=True)
class DeleteRealServer:
    service: ServiceKey
    address: str
    port: int

    def __str__(self) -> str:
        return f"delete real server {RealServerRef(self.service, self.address, self.port)}"

    def command(self) -> str:
        return ipvsadm.delete_real_server_line(self.service, self.address, self.port)


@dataclass(frozen=True, slots=True)
class DeleteVirtualServer:
    service: ServiceKey

    def __str__(self) -> str:
        return f"delete virtual server {service_text(self.service)}"

    def command(self) -> str:
        return ipvsadm.delete_virtual_server_line(self.service)


@dataclass(frozen=True, slots=True)
class DeleteAddress:
    address: str

    def __str__(self) -> str:
        return f"delete address {self.address}"

    def command(self) -> str:
        return _address_command("del", self.address)


Operation = (
    AddAddress
    | AddVirtualServer
    | EditVirtualServer
    | AddRealServer
    | EditRealServer
    | DrainRealServer
    | DeleteRealServer
    | DeleteVirtualServer
    | DeleteAddress
)


def service_of(op: Operation) -> ServiceKey | None:
    """The virtual server an operation is about (None for kube-ipvs0 addresses)."""
    if isinstance(op, AddVirtualServer | EditVirtualServer):
        return op.virtual_server.key
    if isinstance(op, AddAddress | DeleteAddress):
        return None
    return op.service


# --- the transaction ---------------------------------------------------------------------------


def _check_where(address: str, port: int) -> None:
    if not address:
        raise IpvsPlanError("an operation without an address")
    if not 0 <= port <= 0xFFFF:
        raise IpvsPlanError(f"port {port} of {address} is out of range")


def _check_service(service: ServiceKey) -> None:
    protocol, address, port = service
    if protocol not in PROTOCOL_NUMBERS:
        raise IpvsPlanError(f"IPVS has no protocol {protocol!r}")
    _check_where(address, port)


def check(op: Operation) -> None:
    """Refuse what no kernel could take: an unknown protocol, a port out of range, a negative
    weight, a missing address. Cheap on purpose: a first sync adds one per real server.

    Schedulers are not checked: which ones exist is the kernel's to say (its modules).
    """
    match op:
        case AddAddress(address) | DeleteAddress(address):
            _check_where(address, 0)
        case AddVirtualServer(vs) | EditVirtualServer(vs):
            _check_service(vs.key)
        case AddRealServer(service, rs) | EditRealServer(service, rs):
            _check_service(service)
            _check_where(rs.address, rs.port)
            if rs.weight < 0:
                raise IpvsPlanError(f"{op}: a weight cannot be negative")
        case DrainRealServer(service, address, port) | DeleteRealServer(service, address, port):
            _check_service(service)
            _check_where(address, port)
        case DeleteVirtualServer(service):
            _check_service(service)


class Transaction(Sequence[Operation]):
    """IPVS and kube-ipvs0 changes in the order they are to be applied.

    Operations are checked as they are added (`IpvsPlanError`), so what is applied is known to
    be well formed. `str()` prints one `op.command()` line per operation, for logs and dry
    runs. It compares equal to any sequence (list, tuple) of the same operations.
    """

    __slots__ = ("_operations",)

    def __init__(self, operations: Iterable[Operation] = ()) -> None:
        self._operations: list[Operation] = []
        self.extend(operations)

    def add(self, op: Operation) -> None:
        check(op)
        self._operations.append(op)

    def extend(self, operations: Iterable[Operation]) -> None:
        for op in operations:
            self.add(op)

    @overload
    def __getitem__(self, index: int) -> Operation: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Operation]: ...

    def __getitem__(self, index: int | slice) -> Operation | Sequence[Operation]:
        if isinstance(index, slice):
            return tuple(self._operations[index])
        return self._operations[index]

    def __len__(self) -> int:
        return len(self._operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self._operations)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Transaction | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Transaction({self._operations!r})"

    def __str__(self) -> str:
        return "".join(f"{op.command()}\n" for op in self._operations)
