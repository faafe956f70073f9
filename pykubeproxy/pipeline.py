"""From a snapshot of API objects to what this node must program: the one path for every mode.

`Translator` keeps each object's translation, keyed by the object itself: the store replaces an
object when it changes and never edits one, so an object seen before needs no new translation.
A sync therefore translates only the objects it has not seen (all of them the first time),
re-merges the endpoints and re-orders the ports only of the Services those objects feed, and
releases what belonged to objects that left. Nothing depends on being told what changed, so a
lost change set (a failed sync) cannot leave a stale translation behind.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from pykubeproxy.fields import describe
from pykubeproxy.model import (
    FAMILY,
    Endpoint,
    Node,
    ProxyState,
    ServiceName,
    ServicePort,
    ServicePortName,
    Skipped,
)
from pykubeproxy.store import Snapshot
from pykubeproxy.translate import (
    InvalidObject,
    SliceEndpoints,
    merge_endpoints,
    port_order,
    translate_cluster,
    translate_endpoint_slice,
    translate_node,
    translate_service,
)

R = TypeVar("R")

# Above this many changed Services, sorting every port again beats inserting one at a time.
RESORT_AT = 64


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Who this node is: its name, how it was chosen, and addresses given on the command line."""

    name: str
    explicit: bool  # from --hostname-override or NODE_NAME, not just the machine's hostname
    ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Translated:
    """This node's ProxyState for one snapshot, how the node was found (for the log), and the
    Services that changed since the previous translation: None when any may have (the first
    one, or this node's name, addresses or labels changed)."""

    state: ProxyState
    note: str
    changed: frozenset[ServiceName] | None = None


def resolve_node(
    identity: NodeIdentity, nodes: tuple[Mapping[str, object], ...]
) -> tuple[Node, str]:
    """This node from the Node objects, and a note saying how it was found."""
    parsed = []
    for obj in nodes:
        try:
            parsed.append(translate_node(obj, family=FAMILY))
        except InvalidObject:
            continue
    match = next((n for n in parsed if n.name == identity.name), None)
    note = f"node {identity.name}"
    if match is None and not identity.explicit and len(parsed) == 1:
        # A manifest directory describing one node is that node: makes --dry-run on a laptop useful.
        match = parsed[0]
        note = f"node {match.name} (the only Node in the manifests; hostname is {identity.name})"
    node = match or Node(name=identity.name)
    if identity.ips:
        node = Node(name=node.name, ips=identity.ips, labels=node.labels)
    elif match is None:
        note = f"node {identity.name} (no Node object found: node IPs unknown)"
    return node, note


def translate_snapshot(snapshot: Snapshot, identity: NodeIdentity) -> Translated:
    """What this node must program for a snapshot, from scratch (no translation kept)."""
    node, note = resolve_node(identity, snapshot.nodes)
    state = translate_cluster(
        services=snapshot.services,
        endpoint_slices=snapshot.endpoint_slices,
        node=node,
        family=FAMILY,
    )
    return Translated(state, note)


# --- one kind's translations, kept by object -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry(Generic[R]):
    obj: object  # held, so that no other object can take its id while it is cached
    service: ServiceName | None  # the Service its result feeds; None: it feeds none
    result: R
    skipped: tuple[Skipped, ...]


@dataclass(slots=True)
class _Walk:
    """What one pass over a kind's objects found."""

    dirty: set[ServiceName]  # Services fed by an object that is new or gone
    skipped: list[Skipped]  # every object's skip reasons, in snapshot order
    translated: int  # objects translated (not found in the cache)


class _Cache(Generic[R]):
    """One kind's translations by object identity, and the objects feeding each Service."""

    def __init__(self, translate: Callable[[object], _Entry[R]]) -> None:
        self._translate = translate
        self._entries: dict[int, _Entry[R]] = {}
        self._feeding: dict[ServiceName, dict[int, _Entry[R]]] = {}
        self._position: dict[int, int] | None = None

    def walk(self, objects: Iterable[object]) -> _Walk:
        old, new = self._entries, {}
        found = _Walk(set(), [], 0)
        for obj in objects:
            key = id(obj)
            entry = old.get(key)
            if entry is None:
                entry = self._translate(obj)
                found.translated += 1
                if entry.service is not None:
                    found.dirty.add(entry.service)
                    self._feeding.setdefault(entry.service, {})[key] = entry
            new[key] = entry
            if entry.skipped:
                found.skipped.extend(entry.skipped)
        if found.translated or len(new) != len(old):
            for key in old.keys() - new.keys():
                self._forget(key, old[key], found.dirty)
        self._entries, self._position = new, None
        return found

    def _forget(self, key: int, entry: _Entry[R], dirty: set[ServiceName]) -> None:
        if entry.service is None:
            return
        dirty.add(entry.service)
        feeding = self._feeding[entry.service]
        del feeding[key]
        if not feeding:
            del self._feeding[entry.service]

    def results(self, service: ServiceName) -> list[R]:
        """The results feeding one Service, in snapshot order."""
        feeding = self._feeding.get(service)
        if not feeding:
            return []
        if len(feeding) == 1:
            return [entry.result for entry in feeding.values()]
        if self._position is None:
            self._position = {key: index for index, key in enumerate(self._entries)}
        position = self._position
        return [feeding[key].result for key in sorted(feeding, key=position.__getitem__)]


def _service_entry(obj: object) -> _Entry[tuple[ServicePort, ...]]:
    try:
        ports, notes = translate_service(obj, family=FAMILY)
    except InvalidObject as exc:
        return _Entry(obj, None, (), (describe("Service", obj).skipped(str(exc), invalid=True),))
    return _Entry(obj, ports[0].name.service if ports else None, tuple(ports), tuple(notes))


def _slice_entry(obj: object, node_name: str) -> _Entry[SliceEndpoints | None]:
    try:
        result, notes = translate_endpoint_slice(obj, node_name=node_name, family=FAMILY)
    except InvalidObject as exc:
        skipped = (describe("EndpointSlice", obj).skipped(str(exc), invalid=True),)
        return _Entry(obj, None, None, skipped)
    service = next(iter(result.by_port)).service if result and result.by_port else None
    return _Entry(obj, service, result, tuple(notes))


# --- the cluster's ports and endpoints, kept per Service --------------------------------------


class _Ports:
    """Every Service's ports, kept in ServicePortName order."""

    def __init__(self) -> None:
        self.by_name: dict[ServicePortName, ServicePort] = {}
        self.order: list[ServicePortName] = []
        self.of: dict[ServiceName, tuple[ServicePortName, ...]] = {}
        self.state: tuple[ServicePort, ...] = ()

    def update(self, services: set[ServiceName], cache: _Cache[tuple[ServicePort, ...]]) -> None:
        resort = len(services) > RESORT_AT
        for service in services:
            for name in self.of.pop(service, ()):
                del self.by_name[name]
                if not resort:
                    del self.order[bisect_left(self.order, port_order(name), key=port_order)]
            ports: dict[ServicePortName, ServicePort] = {}
            for result in cache.results(service):
                ports.update((port.name, port) for port in result)
            if ports:
                self.of[service] = tuple(ports)
                self.by_name.update(ports)
            if not resort:
                for name in ports:
                    insort(self.order, name, key=port_order)
        if resort:
            self.order = sorted(self.by_name, key=port_order)
        self.state = tuple(map(self.by_name.__getitem__, self.order))


class _Endpoints:
    """Every Service's endpoints per port, merged over its slices."""

    def __init__(self) -> None:
        self.by_name: dict[ServicePortName, tuple[Endpoint, ...]] = {}
        self.of: dict[ServiceName, tuple[ServicePortName, ...]] = {}
        self.state: Mapping[ServicePortName, tuple[Endpoint, ...]] = {}

    def update(self, services: set[ServiceName], cache: _Cache[SliceEndpoints | None]) -> None:
        for service in services:
            for name in self.of.pop(service, ()):
                del self.by_name[name]
            merged = merge_endpoints(r for r in cache.results(service) if r is not None)
            if merged:
                self.of[service] = tuple(merged)
                self.by_name.update(merged)
        # A new mapping each time: a state handed out earlier must not change under its holder.
        self.state = dict(self.by_name)


class Translator:
    """Snapshots → what this node must program, translating only objects it has not seen.

    Its results equal `translate_snapshot`'s for every snapshot; `translated` says how many
    objects the last call had to translate (the rest came from what it kept).
    """

    def __init__(self, identity: NodeIdentity) -> None:
        self.identity = identity
        self.translated = 0
        self._reset()

    def _reset(self) -> None:
        self._node: Node | None = None
        self._services = _Cache(_service_entry)
        self._slices = _Cache(lambda obj: _slice_entry(obj, ""))
        self._ports = _Ports()
        self._endpoints = _Endpoints()

    def translate(self, snapshot: Snapshot) -> Translated:
        try:
            return self._translate(snapshot)
        except BaseException:
            self._reset()  # what a half-done update left must not outlive it
            raise

    def _translate(self, snapshot: Snapshot) -> Translated:
        node, note = resolve_node(self.identity, snapshot.nodes)
        if self._node is None or node.name != self._node.name:
            # Which endpoints are local depends on the node's name: every slice again.
            self._slices = _Cache(lambda obj: _slice_entry(obj, node.name))
            self._endpoints = _Endpoints()
        services = self._services.walk(snapshot.services)
        slices = self._slices.walk(snapshot.endpoint_slices)
        if services.dirty:
            self._ports.update(services.dirty, self._services)
        if slices.dirty:
            self._endpoints.update(slices.dirty, self._slices)
        # This node's addresses and labels shape every Service's rules (node ports, topology).
        changed = snapshot.changed if node == self._node else None
        self._node = node
        self.translated = services.translated + slices.translated
        state = ProxyState(
            node=node,
            services=self._ports.state,
            endpoints=self._endpoints.state,
            skipped=(*services.skipped, *slices.skipped),
        )
        return Translated(state, note, changed)
