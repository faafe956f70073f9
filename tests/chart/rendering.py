"""The chart rendered with real Helm (helm-python-sdk), and the files derived from it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from tests.support.paths import REPO

ROOT = REPO
CHART = ROOT / "charts" / "pykubeproxy"
DEPLOY = ROOT / "deploy"
DEPLOY_MANIFEST = DEPLOY / "pykubeproxy.yaml"
DASHBOARD_SOURCE = DEPLOY / "grafana" / "pykubeproxy.json"
DASHBOARD_COPY = CHART / "dashboards" / "pykubeproxy.json"

RELEASE = "pykubeproxy"
NAMESPACE = "kube-system"
REGENERATE = "uv run python -m tests.chart.regenerate"

# The order `helm install` creates these kinds in (Helm's InstallOrder); unknown kinds go last.
KIND_ORDER = (
    "ServiceAccount",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Service",
    "DaemonSet",
)

DEPLOY_HEADER = f"""\
# pykubeproxy, rendered from charts/pykubeproxy with its default values
# (release "{RELEASE}", namespace {NAMESPACE}). Do not edit: change the chart, then run
#   {REGENERATE}
# Apply with: kubectl apply -f deploy/
"""


@dataclass(frozen=True, slots=True)
class Rendered:
    """What `helm template` would print: template path → rendered text."""

    manifests: Mapping[str, str]

    @property
    def notes(self) -> str:
        return self.manifests[f"{RELEASE}/templates/NOTES.txt"]

    def documents(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(template path, its text, the object) for every object, in install order."""
        found = []
        for path, text in self.manifests.items():
            if path.endswith("NOTES.txt"):
                continue
            for obj in yaml.safe_load_all(text):
                if obj:
                    found.append((_kind_rank(obj["kind"]), path, text, obj))
        for _, path, text, obj in sorted(found, key=lambda item: (item[0], item[1])):
            yield path, text, obj

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [obj for _, _, obj in self.documents()]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        matches = self.all(kind)
        assert len(matches) == 1, f"expected one {kind}, rendered {len(matches)}"
        return matches[0]


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def render(values: dict[str, Any] | None = None, *, chart: Path = CHART) -> Rendered:
    """Render like `helm install --dry-run`: values are checked against values.schema.json."""
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return Rendered(manifests)


def deploy_text(rendered: Rendered) -> str:
    """The plain manifest for deploy/: every object, in install order, as Helm rendered it."""
    parts = [DEPLOY_HEADER]
    seen: set[str] = set()
    for path, text, _ in rendered.documents():
        if path in seen:
            continue
        seen.add(path)
        parts.append(f"---\n# Source: {path}\n{text.strip()}\n")
    return "".join(parts)
