"""The package stays readable in one sitting: small modules, short functions, layered imports."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import PACKAGE

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

# Lowest first. A module may import from its own layer and the layers below, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    # vocabulary: no Kubernetes semantics, no kernel
    ("log", "sysctl", "model", "config"),
    # Kubernetes objects and their meaning
    ("api", "fields", "timestamps", "translate", "selection", "store"),
    # the pure core and the edges: sources, backends, conntrack, when-to-sync
    ("sources", "backends", "pipeline", "conntrack", "runner"),
    # one proxy and its loop
    ("proxy", "loop"),
    # what the proxy tells operators
    ("metrics", "client_metrics", "health", "servers", "observe"),
    # wiring and the command line
    ("app", "flags", "cli", "__main__"),
)


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def layer_of(module: str) -> int:
    """The layer of a module name relative to the package (the longest matching prefix)."""
    best, best_length = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best_length:
                best, best_length = index, len(name)
    if best < 0:
        raise AssertionError(f"pykubeproxy.{module} is in no layer: add it to LAYERS")
    return best


def imported(tree: ast.AST) -> Iterator[str]:
    """Package-relative names of the pykubeproxy modules a module imports (anywhere in it)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("pykubeproxy."):
                yield node.module.removeprefix("pykubeproxy.")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pykubeproxy."):
                    yield alias.name.removeprefix("pykubeproxy.")


def test_every_module_is_at_most_500_lines() -> None:
    long = {name: n for name, path in modules() if (n := len(path.read_text().splitlines())) > 500}
    assert long == {}


def test_every_function_is_at_most_60_lines() -> None:
    long = {}
    for name, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = length
    assert long == {}


@pytest.mark.parametrize("name,path", list(modules()), ids=lambda v: str(v))
def test_no_module_imports_from_a_layer_above_its_own(name: str, path: Path) -> None:
    if not name:
        return  # the package's own __init__
    own = layer_of(name)
    above = sorted(
        target for target in imported(ast.parse(path.read_text())) if layer_of(target) > own
    )
    assert above == [], f"pykubeproxy.{name} (layer {own}) imports from higher layers"


def test_a_layer_violation_would_be_caught() -> None:
    tree = ast.parse("from pykubeproxy.app import run_proxy\nimport pykubeproxy.cli\n")
    assert sorted(imported(tree)) == ["app", "cli"]
    assert layer_of("backends.iptables.render") < layer_of("app")
