"""The current API objects by kind and key, handed out as consistent snapshots.

Sources (the API reflectors, the manifest reader) write from their own threads; the sync loop
takes snapshots. The store also counts what changed since the last snapshot, for the metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pykubeproxy.api import ANNOTATION_TRIGGER_TIME, KINDS


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The objects of every kind at one moment, and what changed since the previous snapshot."""

    services: tuple[Mapping[str, object], ...]
    endpoint_slices: tuple[Mapping[str, object], ...]
    nodes: tuple[Mapping[str, object], ...]
    service_changes: int = 0
    endpoint_changes: int = 0
    # endpoints.kubernetes.io/last-change-trigger-time of the EndpointSlices changed since.
    trigger_times: tuple[str, ...] = field(default=())


class Store:
    """Current objects by kind and key. Sources write; the sync loop reads snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Mapping[str, object]]] = {kind: {} for kind in KINDS}
        self._changes = dict.fromkeys(KINDS, 0)
        self._trigger_times: list[str] = []
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from the writer's thread) after every change."""
        self._listeners.append(listener)

    def replace(self, kind: str, objects: Iterable[Mapping[str, object]]) -> None:
        """Set the whole contents of one kind (a LIST, or a re-read of the files)."""
        new = {object_key(obj): obj for obj in objects}
        with self._lock:
            old = self._objects[kind]
            changed = [obj for key, obj in new.items() if old.get(key) != obj]
            removed = [obj for key, obj in old.items() if key not in new]
            self._objects[kind] = new
            self._count(kind, [*changed, *removed])
        if changed or removed:
            self._notify()

    def upsert(self, kind: str, obj: Mapping[str, object]) -> None:
        with self._lock:
            key = object_key(obj)
            if self._objects[kind].get(key) == obj:
                return
            self._objects[kind][key] = obj
            self._count(kind, [obj])
        self._notify()

    def delete(self, kind: str, obj: Mapping[str, object]) -> None:
        with self._lock:
            if self._objects[kind].pop(object_key(obj), None) is None:
                return
            self._count(kind, [obj])
        self._notify()

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
            )
            self._changes = dict.fromkeys(KINDS, 0)
            self._trigger_times = []
        return snap

    def _ordered(self, kind: str) -> tuple[Mapping[str, object], ...]:
        objects = self._objects[kind]
        return tuple(objects[key] for key in sorted(objects))

    def _count(self, kind: str, objects: list[Mapping[str, object]]) -> None:
        self._changes[kind] += len(objects)
        if kind == "EndpointSlice":
            self._trigger_times.extend(t for obj in objects if (t := _trigger_time(obj)))

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()
