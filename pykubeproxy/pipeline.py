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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from itertools import compress
from operator import is_not
from typing import Generic, NamedTuple, TypeVar

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
    # --service-proxy-name: this proxy handles only Services carrying that label value.
    proxy_name: str = ""


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
        proxy_name=identity.proxy_name,
    )
    return Translated(state, note)


# --- one kind's translations, kept by object -------------------------------------------------

# A Service as (namespace, name): ServiceName's fields, as a key that hashes in C.
_Key = tuple[str, str]
# A Service port as port_order() gives it: a key that hashes and sorts in C.
_PortKey = tuple[str, str, str, str]


class _Entry(NamedTuple, Generic[R]):
    obj: object  # held, so that no other object can take its id while it is cached
    service: _Key | None  # the Service its result feeds; None: it feeds none
    result: R
    skipped: tuple[Skipped, ...]


class _Cache(Generic[R]):
    """One kind's translations by object identity, and the objects feeding each Service."""

    def __init__(self, translate: Callable[[object], _Entry[R]]) -> None:
        self._translate = translate
        self._objects: tuple[object, ...] = ()
        self._entries: dict[int, _Entry[R]] = {}
        self._feeding: dict[_Key, tuple[int, ...]] = {}  # ids of the entries feeding a Service
        self._position: dict[int, int] | None = None
        self.skipped: tuple[Skipped, ...] = ()  # every object's skip reasons, in snapshot order
        self.translated = 0  # objects the last walk translated (not found here)

    def walk(self, objects: tuple[object, ...]) -> set[_Key]:
        """Take in this kind's objects now; the Services fed by objects that came or went."""
        self.translated = 0
        if objects is self._objects:
            return set()  # the store hands out the same tuple while nothing of a kind changed
        gone, came = self._difference(objects)
        entries = self._entries
        dirty: set[_Key] = set()
        recount = False  # whether the skip reasons changed
        for obj in gone:
            entry = entries.pop(id(obj))
            recount |= bool(entry.skipped)
            self._unfeed(entry, dirty)
        feeding, translate = self._feeding, self._translate
        for obj in came:  # at the first sync: every object, so kept tight
            entry = entries[id(obj)] = translate(obj)
            recount |= bool(entry.skipped)
            if (service := entry.service) is not None:
                dirty.add(service)
                feeding[service] = (*feeding.get(service, ()), id(obj))
        self.translated = len(came)
        if recount:
            self.skipped = tuple(s for obj in objects for s in entries[id(obj)].skipped)
        self._objects, self._position = objects, None
        return dirty

    def _difference(self, objects: tuple[object, ...]) -> tuple[list[object], list[object]]:
        """(objects that went, objects that came), in snapshot order for those that came."""
        old = self._objects
        if len(objects) == len(old):
            # An update keeps every key in place: compare position by position, in C. An object
            # that moved shows up at two differing positions, and cancels out below.
            moved = list(compress(range(len(old)), map(is_not, old, objects)))
            if len(moved) <= len(old) // 8:
                went = {id(old[i]): old[i] for i in moved}
                new = {id(objects[i]): objects[i] for i in moved}
                return [o for k, o in went.items() if k not in new], [
                    o for k, o in new.items() if k not in went
                ]
        by_id = dict(zip(map(id, objects), objects, strict=True))
        entries = self._entries
        # `gone` is found before `came`, whose test reads `entries` as it was.
        gone = [entries[key].obj for key in entries.keys() - by_id.keys()]
        return gone, [obj for key, obj in by_id.items() if key not in entries]

    def _unfeed(self, entry: _Entry[R], dirty: set[_Key]) -> None:
        if (service := entry.service) is None:
            return
        dirty.add(service)
        key = id(entry.obj)
        feeding = tuple(k for k in self._feeding[service] if k != key)
        if feeding:
            self._feeding[service] = feeding
        else:
            del self._feeding[service]

    def all_results(self) -> list[R]:
        """Every object's result, in snapshot order."""
        entries = self._entries
        return [entries[id(obj)].result for obj in self._objects]

    def results(self, service: _Key) -> list[R]:
        """The results feeding one Service, in snapshot order."""
        feeding = self._feeding.get(service, ())
        if len(feeding) > 1:
            if self._position is None:
                self._position = {id(obj): index for index, obj in enumerate(self._objects)}
            feeding = tuple(sorted(feeding, key=self._position.__getitem__))
        return [self._entries[key].result for key in feeding]


def _service_entry(obj: object, proxy_name: str) -> _Entry[tuple[ServicePort, ...]]:
    try:
        ports, notes = translate_service(obj, family=FAMILY, proxy_name=proxy_name)
    except InvalidObject as exc:
        return _Entry(obj, None, (), (describe("Service", obj).skipped(str(exc), invalid=True),))
    service = (ports[0].name.namespace, ports[0].name.name) if ports else None
    return _Entry(obj, service, tuple(ports), tuple(notes))


def _slice_entry(obj: object, node_name: str, proxy_name: str) -> _Entry[SliceEndpoints | None]:
    try:
        result, notes = translate_endpoint_slice(
            obj, node_name=node_name, family=FAMILY, proxy_name=proxy_name
        )
    except InvalidObject as exc:
        skipped = (describe("EndpointSlice", obj).skipped(str(exc), invalid=True),)
        return _Entry(obj, None, None, skipped)
    name = next(iter(result.by_port), None) if result else None
    return _Entry(obj, (name.namespace, name.name) if name else None, result, tuple(notes))


# --- the cluster's ports and endpoints, kept per Service --------------------------------------


class _Ports:
    """Every Service's ports, kept in ServicePortName order.

    Keyed by port_order(name), plain tuples of strings: they hash and compare in C, where the
    dataclass's own hash and order would run Python for every lookup and comparison. Sorted,
    a Service's ports sit together, after its (namespace, name).
    """

    def __init__(self) -> None:
        self.by_key: dict[_PortKey, ServicePort] = {}
        self.order: list[_PortKey] = []
        self.state: tuple[ServicePort, ...] = ()

    def update(self, services: set[_Key], cache: _Cache[tuple[ServicePort, ...]]) -> None:
        if len(services) > RESORT_AT:
            # Later objects win a port two objects name, as in translate_cluster.
            ports = (port for result in cache.all_results() for port in result)
            self.by_key = {port_order(port.name): port for port in ports}
            self.order = sorted(self.by_key)
        else:
            for service in services:
                self._replace(service, cache.results(service))
        self.state = tuple(map(self.by_key.__getitem__, self.order))

    def _replace(self, service: _Key, results: list[tuple[ServicePort, ...]]) -> None:
        by_key, order = self.by_key, self.order
        start = end = bisect_left(order, service)  # (namespace, name) sorts before its ports
        while end < len(order) and order[end][:2] == service:
            del by_key[order[end]]
            end += 1
        del order[start:end]
        for result in results:
            for port in result:
                key = port_order(port.name)
                if key not in by_key:
                    insort(order, key)
                by_key[key] = port


class _Endpoints:
    """Every Service's endpoints per port, merged over its slices."""

    def __init__(self) -> None:
        self.by_name: dict[ServicePortName, tuple[Endpoint, ...]] = {}
        self.of: dict[_Key, list[ServicePortName]] = {}
        self.state: Mapping[ServicePortName, tuple[Endpoint, ...]] = {}

    def update(self, services: set[_Key], cache: _Cache[SliceEndpoints | None]) -> None:
        if len(services) > RESORT_AT:
            self.by_name = merge_endpoints(r for r in cache.all_results() if r is not None)
            self.of = {}
            for name in self.by_name:
                self.of.setdefault((name.namespace, name.name), []).append(name)
        else:
            for service in services:
                self._replace(service, cache.results(service))
        # A new mapping each time: a state handed out earlier must not change under its holder.
        self.state = dict(self.by_name)

    def _replace(self, service: _Key, results: list[SliceEndpoints | None]) -> None:
        for name in self.of.pop(service, ()):
            del self.by_name[name]
        slices = [result for result in results if result is not None]
        merged = slices[0].by_port if len(slices) == 1 else merge_endpoints(slices)
        if merged:
            self.of[service] = list(merged)
            self.by_name.update(merged)


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
        proxy_name = self.identity.proxy_name
        self._services = _Cache(partial(_service_entry, proxy_name=proxy_name))
        self._slices = _Cache(partial(_slice_entry, node_name="", proxy_name=proxy_name))
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
            self._slices = _Cache(
                partial(_slice_entry, node_name=node.name, proxy_name=self.identity.proxy_name)
            )
            self._endpoints = _Endpoints()
        if dirty := self._services.walk(snapshot.services):
            self._ports.update(dirty, self._services)
        if dirty := self._slices.walk(snapshot.endpoint_slices):
            self._endpoints.update(dirty, self._slices)
        # This node's addresses and labels shape every Service's rules (node ports, topology).
        changed = snapshot.changed if node == self._node else None
        self._node = node
        self.translated = self._services.translated + self._slices.translated
        state = ProxyState(
            node=node,
            services=self._ports.state,
            endpoints=self._endpoints.state,
            skipped=(*self._services.skipped, *self._slices.skipped),
        )
        return Translated(state, note, changed)
