"""An iptables ruleset as data (tables → chains → rules) and its `iptables-restore` text.

Rules are kept in the canonical form `iptables-save` prints (`-d 10.0.0.1/32 -p tcp -m comment
--comment "…" -m tcp --dport 80 -j …`), so that what we render, what `--dry-run` shows and what
the kernel reports can be compared as plain strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pykubeproxy.backends.iptables.chains import BUILTIN_CHAINS

_UNQUOTED = re.compile(r"[A-Za-z0-9_-]+")


def quote(value: str) -> str:
    """Quote an argument the way iptables-save does (only when it holds other characters)."""
    if _UNQUOTED.fullmatch(value):
        return value
    return f'"{escape(value)}"'


def escape(value: str) -> str:
    """A value escaped to go between double quotes, as iptables-save writes it."""
    if "\\" not in value and '"' not in value and "'" not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")


def spec(*parts: str | None) -> str:
    """Join the non-empty parts of a rule specification."""
    return " ".join(part for part in parts if part)


@dataclass(frozen=True, slots=True)
class Chain:
    """One chain and its rules, each rule being the text after `-A NAME `."""

    name: str
    rules: tuple[str, ...] = ()

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_CHAINS


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    chains: tuple[Chain, ...]

    def chain(self, name: str) -> Chain | None:
        for chain in self.chains:
            if chain.name == name:
                return chain
        return None

    @property
    def rule_count(self) -> int:
        return sum(len(chain.rules) for chain in self.chains)


@dataclass(frozen=True, slots=True)
class Ruleset:
    tables: tuple[Table, ...]

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)

    def __iter__(self) -> Iterator[Table]:
        return iter(self.tables)

    # As `Programmed` (backends/__init__.py): what /rules, --dry-run and the metrics show.

    def text(self) -> str:
        return format_restore(self)

    def to_json(self) -> dict[str, Any]:
        return ruleset_to_json(self)

    def rule_counts(self) -> dict[str, int]:
        """Rules in our own chains per table, as iptables-save lists them (jumps left out)."""
        return {
            table.name: sum(len(c.rules) for c in table.chains if not c.builtin) for table in self
        }


def jump_target(rule: str) -> str | None:
    """The chain or target a rule jumps (-j) or goes (-g) to, if any."""
    words = rule.split()
    for flag in ("-j", "-g"):
        if flag in words:
            index = words.index(flag)
            if index + 1 < len(words):
                return words[index + 1]
    return None


def format_chain_rules(chain: Chain) -> Iterable[str]:
    """Restore lines for one chain's rules.

    User chains are declared (which flushes them under --noflush) and appended to. Built-in
    chains belong to the whole node, so our jumps are inserted at the top instead, in order.
    """
    if chain.builtin:
        for position, rule in enumerate(chain.rules, start=1):
            yield f"-I {chain.name} {position} {rule}"
    else:
        for rule in chain.rules:
            yield f"-A {chain.name} {rule}"


def format_restore(ruleset: Ruleset) -> str:
    """The complete `iptables-restore --noflush` input that writes this ruleset."""
    lines: list[str] = []
    for table in ruleset:
        lines.append(f"*{table.name}")
        lines.extend(f":{c.name} - [0:0]" for c in table.chains if not c.builtin)
        for chain in table.chains:
            lines.extend(format_chain_rules(chain))
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ruleset_to_json(ruleset: Ruleset) -> dict[str, Any]:
    """The same ruleset as structured data: tables → chains → rules."""
    return {
        "tables": {
            table.name: {"chains": {chain.name: list(chain.rules) for chain in table.chains}}
            for table in ruleset
        }
    }


def parse_save(text: str) -> Ruleset:
    """The tables, chains and rules in `iptables-save` output, chains in the order declared."""
    tables: list[Table] = []
    chains: dict[str, list[str]] = {}
    table_name: str | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table_name, chains = line[1:].strip(), {}
        elif line.startswith(":") and table_name:
            chains.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A ") and table_name:
            _, chain, *rest = line.split(" ", 2)
            chains.setdefault(chain, []).append(rest[0] if rest else "")
        elif line.strip() == "COMMIT" and table_name:
            tables.append(Table(table_name, tuple(Chain(n, tuple(r)) for n, r in chains.items())))
            table_name = None
    return Ruleset(tuple(tables))
