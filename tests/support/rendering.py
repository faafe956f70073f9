"""Test helpers: render manifests the way the CLI does, and check a ruleset's jump graph."""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.backend import render_options
from pykubeproxy.backends.iptables.chains import BUILTIN_CHAINS
from pykubeproxy.backends.iptables.ruleset import Ruleset, Table, parse_save
from pykubeproxy.config import CONFIG_KIND, Config, build_config, read_config_document
from pykubeproxy.model import ProxyState
from pykubeproxy.pipeline import NodeIdentity, translate_snapshot
from pykubeproxy.sources.files import load_files
from pykubeproxy.store import Store
from tests.support.netns import Netns
from tests.support.paths import EXAMPLES, GOLDEN

NODE_NAME = "node-1"
# Golden cases that render more than their own input.yaml.
EXTRA_MANIFESTS = {"examples": (EXAMPLES,)}

RESTORE_BINARIES = ("iptables-legacy-restore", "iptables-nft-restore")

STANDARD_TARGETS = frozenset(
    {"ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "MARK", "MASQUERADE", "SNAT"}
)


def config_settings(path: Path) -> dict[str, Any]:
    """The settings of the KubeProxyConfiguration documents in a manifest file."""
    values: dict[str, Any] = {}
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if isinstance(doc, dict) and doc.get("kind") == CONFIG_KIND:
            values.update(read_config_document(doc).values)
    return values


@dataclass(frozen=True)
class Rendered:
    """A translated state and the config it is rendered with (iptables mode)."""

    state: ProxyState
    config: Config

    def ruleset(self) -> Ruleset:
        return render_ruleset(self.state, render_options(self.config, self.state.node))


def render_manifests(paths: Iterable[Path], settings: dict[str, Any]) -> Rendered:
    """Files → store → snapshot → state for the node, as `--dry-run --from-file` does."""
    store = Store()
    load_files(store, list(paths))
    identity = NodeIdentity(NODE_NAME, explicit=True)
    return Rendered(translate_snapshot(store.snapshot(), identity).state, build_config(settings))


def examples_state() -> ProxyState:
    """What node-1 programs for the cluster in examples/, as `--from-file examples/` reads it."""
    return render_manifests([EXAMPLES], {}).state


def render_golden_case(case: str) -> Rendered:
    """The desired state of tests/golden/<case>/input.yaml (plus its extra manifests)."""
    input_file = GOLDEN / case / "input.yaml"
    paths = [*EXTRA_MANIFESTS.get(case, ()), input_file]
    return render_manifests(paths, config_settings(input_file))


def jumps(table: Table) -> Iterator[tuple[str, str]]:
    """(chain, target) for every rule with a -j or -g."""
    for chain in table.chains:
        for rule in chain.rules:
            tokens = shlex.split(rule)
            for verb, target in itertools.pairwise(tokens):
                if verb in ("-j", "-g"):
                    yield chain.name, target


def unknown_targets(ruleset: Ruleset) -> list[str]:
    """Jump targets that are neither a chain of the same table, a built-in nor standard."""
    problems = []
    for table in ruleset:
        declared = {chain.name for chain in table.chains}
        for chain, target in jumps(table):
            if target not in declared | BUILTIN_CHAINS | STANDARD_TARGETS:
                problems.append(f"{table.name}/{chain} jumps to unknown {target}")
    return problems


def orphan_chains(ruleset: Ruleset) -> list[str]:
    """Declared non-built-in chains that no rule jumps to."""
    orphans = []
    for table in ruleset:
        targets = {target for _, target in jumps(table)}
        orphans.extend(
            f"{table.name}/{chain.name}"
            for chain in table.chains
            if not chain.builtin and chain.name not in targets
        )
    return orphans


def restore_errors(netns: Netns, text: str) -> list[str]:
    """What each iptables backend says about restore text (`--noflush --test`, in netns)."""
    errors = []
    for binary in RESTORE_BINARIES:
        result = netns.exec(binary, "--noflush", "--test", input=text, check=False, timeout=60)
        if result.returncode != 0:
            errors.append(f"{binary}: {result.stderr.strip()}")
    return errors


def saved_rules(netns: Netns, backend: str, text: str) -> dict[tuple[str, str], list[str]]:
    """Load restore text into the namespace (replacing its tables), then read it back with
    iptables-save: (table, chain) → rules, in the kernel's own words."""
    netns.exec(f"iptables-{backend}-restore", input=text, timeout=60)
    saved = netns.exec(f"iptables-{backend}-save").stdout
    return rendered_rules(parse_save(saved))


def rendered_rules(ruleset: Ruleset) -> dict[tuple[str, str], list[str]]:
    return {
        (table.name, chain.name): list(chain.rules) for table in ruleset for chain in table.chains
    }
