"""The current API objects by kind and key, handed out as consistent snapshots with what changed.

Sources (the API reflectors, the manifest reader) write from their own threads; the sync loop
takes snapshots. Like kube-proxy's change trackers, the store folds the writes to each object
since the last snapshot into one `previous → current` pair and drops the pair when the two end
equal (an update reverted before the sync is no change); a snapshot names the Services the
remaining pairs touch. It also counts every write and keeps trigger times, for the metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pykubeproxy.api import ANNOTATION_TRIGGER_TIME, KINDS
from pykubeproxy.model import ServiceName
from pykubeproxy.translate import service_of

# Bookkeeping the API server changes on every write; an object differing only there is unchanged.
_BOOKKEEPING = frozenset({"resourceVersion", "annotations"})

Object = Mapping[str, object]


def object_key(obj: Mapping[str, object]) -> str:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return f"?/{id(obj)}"
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _trigger_time(obj: Mapping[str, object]) -> str | None:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    value = annotations.get(ANNOTATION_TRIGGER_TIME) if isinstance(annotations, dict) else None
    return value if isinstance(value, str) else None


def same_object(a: Object | None, b: Object | None) -> bool:
    """Whether two versions of an object are the same to the proxy: equal but for the
    bookkeeping in their metadata (resourceVersion, annotations)."""
    if a is b or a == b:
        return True
    if a is None or b is None or a.keys() != b.keys():
        return False
    if any(a[key] != b[key] for key in a if key != "metadata"):
        return False
    meta_a, meta_b = a.get("metadata"), b.get("metadata")
    if not isinstance(meta_a, dict) or not isinstance(meta_b, dict):
        return False
    return {k: v for k, v in meta_a.items() if k not in _BOOKKEEPING} == {
        k: v for k, v in meta_b.items() if k not in _BOOKKEEPING
    }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The objects of every kind at one moment, and what changed since the previous snapshot."""

    services: tuple[Mapping[str, object], ...]
    endpoint_slices: tuple[Mapping[str, object], ...]
    nodes: tuple[Mapping[str, object], ...]
    service_changes: int = 0  # writes of Services (every one, folded or not)
    endpoint_changes: int = 0  # writes of EndpointSlices
    # endpoints.kubernetes.io/last-change-trigger-time of the EndpointSlices changed since.
    trigger_times: tuple[str, ...] = field(default=())
    # The Services whose Service or EndpointSlices changed (folded: a reverted edit is none).
    changed: frozenset[ServiceName] = frozenset()
    nodes_changed: bool = False  # whether any Node changed (folded likewise)


class Store:
    """Current objects by kind and key. Sources write; the sync loop reads snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Object]] = {kind: {} for kind in KINDS}
        # Each kind's keys in order, and its objects in that order: kept between snapshots, the
        # keys until one comes or goes, the objects until one changes.
        self._keys: dict[str, list[str] | None] = dict.fromkeys(KINDS)
        self._ordered_cache: dict[str, tuple[Object, ...] | None] = dict.fromkeys(KINDS)
        # Per kind and key: (the object at the last snapshot, the object now); None: absent.
        self._pending: dict[str, dict[str, tuple[Object | None, Object | None]]] = {
            kind: {} for kind in KINDS
        }
        self._changes = dict.fromkeys(KINDS, 0)
        self._trigger_times: list[str] = []
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from the writer's thread) after every change."""
        self._listeners.append(listener)

    def replace(self, kind: str, objects: Iterable[Object]) -> None:
        """Set the whole contents of one kind (a LIST, or a re-read of the files)."""
        incoming = {object_key(obj): obj for obj in objects}
        with self._lock:
            old = self._objects[kind]
            new: dict[str, Object] = {}
            changed: list[Object] = []
            for key, obj in incoming.items():
                before = old.get(key)
                if before is not None and (before is obj or before == obj):
                    new[key] = before  # keep the one already held: its translation is kept too
                    continue
                new[key] = obj
                changed.append(obj)
                self._track(kind, key, before, obj)
            removed = [obj for key, obj in old.items() if key not in new]
            for obj in removed:
                self._track(kind, object_key(obj), obj, None)
            self._objects[kind] = new
            self._count(kind, [*changed, *removed])
        if changed or removed:
            self._notify()

    def upsert(self, kind: str, obj: Object) -> None:
        with self._lock:
            key = object_key(obj)
            before = self._objects[kind].get(key)
            if before == obj:
                return
            self._objects[kind][key] = obj
            self._track(kind, key, before, obj)
            self._count(kind, [obj])
        self._notify()

    def delete(self, kind: str, obj: Object) -> None:
        with self._lock:
            key = object_key(obj)
            before = self._objects[kind].pop(key, None)
            if before is None:
                return
            self._track(kind, key, before, None)
            self._count(kind, [obj])
        self._notify()

    def known(self, kind: str, obj: Object) -> Object:
        """The object already held if it equals `obj`, else `obj`: lets a re-LIST keep one copy."""
        with self._lock:
            before = self._objects[kind].get(object_key(obj))
        return before if before is not None and before == obj else obj

    def pending(self, kind: str) -> int:
        """Changes of one kind not yet handed out in a snapshot."""
        with self._lock:
            return self._changes[kind]

    def snapshot(self) -> Snapshot:
        with self._lock:
            # Objects are replaced, never mutated, so sharing them keeps the snapshot stable.
            snap = Snapshot(
                services=self._ordered("Service"),
                endpoint_slices=self._ordered("EndpointSlice"),
                nodes=self._ordered("Node"),
                service_changes=self._changes["Service"],
                endpoint_changes=self._changes["EndpointSlice"],
                trigger_times=tuple(self._trigger_times),
                changed=self._changed_services(),
                nodes_changed=bool(self._pending["Node"]),
            )
            self._changes = dict.fromkeys(KINDS, 0)
            self._trigger_times = []
            self._pending = {kind: {} for kind in KINDS}
        return snap

    def _track(self, kind: str, key: str, before: Object | None, after: Object | None) -> None:
        """Fold one write into the object's pending pair; drop the pair once it ends equal."""
        self._ordered_cache[kind] = None
        if before is None or after is None:
            self._keys[kind] = None
        pending = self._pending[kind]
        first = pending[key][0] if key in pending else before
        if same_object(first, after):
            pending.pop(key, None)
        else:
            pending[key] = (first, after)

    def _changed_services(self) -> frozenset[ServiceName]:
        changed: set[ServiceName] = set()
        for kind in ("Service", "EndpointSlice"):
            for pair in self._pending[kind].values():
                changed.update(name for obj in pair if (name := service_of(kind, obj)))
        return frozenset(changed)

    def _ordered(self, kind: str) -> tuple[Object, ...]:
        ordered = self._ordered_cache[kind]
        if ordered is None:
            keys = self._keys[kind]
            if keys is None:
                keys = self._keys[kind] = sorted(self._objects[kind])
            ordered = tuple(map(self._objects[kind].__getitem__, keys))
            self._ordered_cache[kind] = ordered
        return ordered

    def _count(self, kind: str, objects: list[Object]) -> None:
        self._changes[kind] += len(objects)
        if kind == "EndpointSlice":
            self._trigger_times.extend(t for obj in objects if (t := _trigger_time(obj)))

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()
