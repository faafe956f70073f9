"""Services, EndpointSlices and Nodes from manifest files (YAML or JSON, multi-document, Lists)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from pykubeproxy.api import KINDS
from pykubeproxy.log import get_logger
from pykubeproxy.model import Skipped
from pykubeproxy.sources.lean import slim
from pykubeproxy.store import Store

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

FILE_POLL_INTERVAL = 1.0  # seconds between looks at the manifests' modification times


class ManifestError(Exception):
    """A manifest that cannot be read at all; names the file and the document."""

    def __init__(self, path: Path, message: str, document: int | None = None) -> None:
        where = f"{path}" if document is None else f"{path} (document {document})"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.document = document


@dataclass
class Manifests:
    """The objects found, by kind, in the order they were read."""

    objects: dict[str, list[dict[str, object]]] = field(
        default_factory=lambda: {kind: [] for kind in KINDS}
    )
    skipped: list[Skipped] = field(default_factory=list)
    other_kinds: int = 0


def manifest_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, and the manifest files inside the directories named, in sorted order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
            )
        elif path.is_file():
            found.append(path)
        else:
            raise ManifestError(path, "no such file or directory")
    return found


def _documents(path: Path) -> Iterator[object]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(path, f"cannot be read: {exc}") from exc
    if path.suffix == ".json":
        try:
            yield json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(path, f"is not valid JSON: {exc}", 1) from exc
        return
    import yaml  # here, not above: a daemon reading the API (in a Pod) never parses YAML

    # libyaml's parser when PyYAML was built with it: the pure-Python one is about 7 times
    # slower, most of a small cluster's start-up (examples/: 44 ms instead of 6 ms).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    index = 0
    try:
        for index, doc in enumerate(yaml.load_all(text, Loader=loader), start=1):  # noqa: B007
            yield doc
    except yaml.YAMLError as exc:
        raise ManifestError(path, f"is not valid YAML: {exc}", index + 1) from exc


def _flatten(doc: object) -> Iterator[object]:
    """Expand `kind: List` (and `ServiceList`, …) into their items.

    Each item leaves the list as it is handed out: once slimmed, the full copy is freed, so a
    big List is never held twice (full and slim) at once.
    """
    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List"):
        items = doc.get("items") or []
        if isinstance(items, list):
            for index, item in enumerate(items):
                items[index] = None  # the document is ours, just decoded
                yield from _flatten(item)
            return
    yield doc


def _add(manifests: Manifests, doc: object, where: str) -> None:
    if doc is None:
        return  # an empty document, e.g. a trailing `---`
    if not isinstance(doc, dict):
        reason = f"is a {type(doc).__name__}, not a Kubernetes object"
        manifests.skipped.append(Skipped("document", "", where, reason, invalid=True))
        return
    kind = doc.get("kind")
    if kind in manifests.objects:
        manifests.objects[str(kind)].append(cast(dict[str, object], slim(str(kind), doc)))
    else:
        manifests.other_kinds += 1


def read_manifests(paths: Iterable[Path]) -> Manifests:
    """Every Service, EndpointSlice and Node in the given files and directories."""
    manifests = Manifests()
    for path in manifest_files(list(paths)):
        for number, doc in enumerate(_documents(path), start=1):
            for item in _flatten(doc):
                _add(manifests, item, f"{path}#{number}")
    return manifests


log = get_logger("pykubeproxy.sources.files")


def load_files(store: Store, paths: Sequence[Path]) -> Manifests:
    """Replace the store's contents with the manifests' (ManifestError if one is unreadable)."""
    manifests = read_manifests(paths)
    for kind, objects in manifests.objects.items():
        store.replace(kind, objects)
    return manifests


def files_signature(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """What changes when a manifest is edited, added or removed."""
    try:
        files = manifest_files(paths)
    except ManifestError:
        return ()
    signature = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        signature.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(signature)


class FileSource:
    """Manifests on disk, re-read whenever a file's size or modification time changes."""

    def __init__(self, store: Store, paths: Sequence[Path]) -> None:
        self.store = store
        self.paths = paths
        self.synced = False
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._next_look = 0.0

    def start(self) -> None:
        """Nothing to start: `poll` reads the files from the sync loop."""

    def stop(self, timeout: float = 2.0) -> None:
        """Nothing to stop."""

    def poll(self) -> None:
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + FILE_POLL_INTERVAL
        current = files_signature(self.paths)
        if current == self._signature:
            return
        self._signature = current
        try:
            manifests = load_files(self.store, self.paths)
        except ManifestError as exc:
            # Keep programming what we had: an edit in progress must not wipe the node.
            log.error("cannot read manifests; keeping the previous ones", error=str(exc))
            return
        for skipped in manifests.skipped:
            log.warning("skipped document", document=skipped.name, reason=skipped.reason)
        self.synced = True
