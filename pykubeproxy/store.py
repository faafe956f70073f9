"""The current API objects by kind and key, handed out as consistent snapshots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

KINDS = ("Service", "EndpointSlice", "Node")


def object_key(obj: Mapping[str, object]) -> str:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return f"?/{id(obj)}"
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The objects of every kind at one moment; never changes after it is taken."""

    services: tuple[Mapping[str, object], ...]
    endpoint_slices: tuple[Mapping[str, object], ...]
    nodes: tuple[Mapping[str, object], ...]


class Store:
    """Current objects by kind and key. Sources write; the sync loop reads snapshots."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, Mapping[str, object]]] = {kind: {} for kind in KINDS}

    def replace(self, kind: str, objects: Iterable[Mapping[str, object]]) -> None:
        """Set the whole contents of one kind (a LIST, or a re-read of the files)."""
        self._objects[kind] = {object_key(obj): obj for obj in objects}

    def upsert(self, kind: str, obj: Mapping[str, object]) -> None:
        self._objects[kind][object_key(obj)] = obj

    def delete(self, kind: str, obj: Mapping[str, object]) -> None:
        self._objects[kind].pop(object_key(obj), None)

    def snapshot(self) -> Snapshot:
        def ordered(kind: str) -> tuple[Mapping[str, object], ...]:
            objects = self._objects[kind]
            # Objects are replaced, never mutated, so sharing them keeps the snapshot stable.
            return tuple(objects[key] for key in sorted(objects))

        return Snapshot(ordered("Service"), ordered("EndpointSlice"), ordered("Node"))
