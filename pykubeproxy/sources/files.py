"""Services, EndpointSlices and Nodes from manifest files (YAML or JSON, multi-document, Lists)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pykubeproxy.api import KINDS
from pykubeproxy.model import Skipped

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


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
    index = 0
    try:
        for index, doc in enumerate(yaml.safe_load_all(text), start=1):  # noqa: B007
            yield doc
    except yaml.YAMLError as exc:
        raise ManifestError(path, f"is not valid YAML: {exc}", index + 1) from exc


def _flatten(doc: object) -> Iterator[object]:
    """Expand `kind: List` (and `ServiceList`, …) into their items."""
    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List"):
        items = doc.get("items") or []
        if isinstance(items, list):
            for item in items:
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
        manifests.objects[str(kind)].append(doc)
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
