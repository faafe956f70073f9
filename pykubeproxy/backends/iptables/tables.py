"""iptables tables as a sync handles them: each chain's rules as one block of restore text.

A chain's body is exactly the lines `iptables-save` prints for it (`-A NAME rule\\n` each), so a
chain rendered and the same chain read back from the kernel compare as one string, and a body
goes into a restore payload as it is. At 10 000 Services that is 76 500 strings to compare and
join instead of 217 000 rules to parse, quote and normalize. `Ruleset` (ruleset.py) is the
rule-by-rule view of the same thing, built only where a person or a test looks at rules.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pykubeproxy.backends.iptables.chains import BUILTIN_CHAINS
from pykubeproxy.backends.iptables.ruleset import Chain, Ruleset, Table, ruleset_to_json

# A chain's rules as restore text; once written and kept only for comparison, its digest
# (hash() of that text: what this process compares, never stored or sent anywhere).
Body = str | int


def digest(body: Body) -> int:
    return body if isinstance(body, int) else hash(body)


def same_body(old: Body | None, new: Body) -> bool:
    """Whether two bodies hold the same rules, either or both being digests."""
    if old is new or old == new:
        return True
    return (
        old is not None
        and isinstance(old, int) != isinstance(new, int)
        and (digest(old) == digest(new))
    )


def _compacted(table: TableState, keep_rules: int) -> TableState:
    if table.touched is not None:
        return table.compact_touched(keep_rules)
    keep = {
        name
        for name, body in table.chains.items()
        if isinstance(body, str) and body.count("\n") >= keep_rules
    }
    return table.compact(keep)


def _text(body: Body) -> str:
    if isinstance(body, int):
        raise TypeError("a table kept as digests has no rule text")
    return body


def body_rules(name: str, body: str) -> tuple[str, ...]:
    """The rules of a body (the text after `-A NAME `)."""
    cut = len(name) + 4
    return tuple(line[cut:] for line in body.splitlines())


def make_body(name: str, rules: tuple[str, ...] | list[str]) -> str:
    return "".join(f"-A {name} {rule}\n" for rule in rules)


@dataclass(frozen=True, slots=True)
class TableState:
    """One table: our jumps in the built-in chains, and user chains with their bodies, in order.

    For a table read from the kernel, `builtins` holds every rule of the built-in chains (other
    tools' too) and `chains` every user chain.
    """

    name: str
    builtins: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    chains: Mapping[str, Body] = field(default_factory=dict)
    # Rules in user chains, when counted as they were rendered (a compact table keeps digests).
    rules: int | None = None
    # The only chains that may differ from the table this one was patched from (None: any).
    touched: frozenset[str] | None = None

    def touching(self, names: Collection[str]) -> TableState:
        return TableState(self.name, self.builtins, self.chains, self.rules, frozenset(names))

    @property
    def rule_count(self) -> int:
        """Rules in user chains (as iptables-save lists them), the jumps left out."""
        if self.rules is not None:
            return self.rules
        return sum(_text(body).count("\n") for body in self.chains.values())

    def texts(self) -> Iterator[tuple[str, str]]:
        """(chain, body) of every user chain; a table kept as digests has no text to give."""
        return ((name, _text(body)) for name, body in self.chains.items())

    def compact(self, keep: Collection[str]) -> TableState:
        """The same table with each body not in `keep` replaced by its digest."""
        chains = {
            n: b if isinstance(b, int) or n in keep else hash(b) for n, b in self.chains.items()
        }
        return TableState(self.name, self.builtins, chains, self.rule_count)

    def compact_touched(self, keep_rules: int) -> TableState:
        """Compact only the touched chains (with fewer than `keep_rules` rules); untouched."""
        small = [
            n
            for n in self.touched or ()
            if isinstance(b := self.chains.get(n), str) and b.count("\n") < keep_rules
        ]
        compacted = self.digested(small)
        return TableState(self.name, self.builtins, compacted.chains, self.rules)

    def digested(self, names: Collection[str]) -> TableState:
        """The same table (and touched chains) with these chains' bodies as digests."""
        chains = dict(self.chains)
        for name in names:
            if name in chains:
                chains[name] = digest(chains[name])
        return TableState(self.name, self.builtins, chains, self.rules, self.touched)

    def restore_text(self) -> str:
        """The whole table as `iptables-restore --noflush` input: declared, jumps, rules."""
        jumps = [
            f"-I {chain} {position} {rule}\n"
            for chain, rules in self.builtins.items()
            for position, rule in enumerate(rules, start=1)
        ]
        declared = [f":{name} - [0:0]\n" for name in self.chains]
        bodies = [body for _, body in self.texts()]
        return "".join([f"*{self.name}\n", *declared, *jumps, *bodies, "COMMIT\n"])

    def table(self) -> Table:
        builtin = (Chain(name, rules) for name, rules in self.builtins.items())
        own = (Chain(name, body_rules(name, body)) for name, body in self.texts())
        return Table(self.name, (*builtin, *own))


@dataclass(frozen=True, slots=True)
class Tables:
    """The tables of one ruleset (filter, then nat). As `Programmed`: what /rules shows."""

    tables: tuple[TableState, ...]

    def __iter__(self) -> Iterator[TableState]:
        return iter(self.tables)

    def get(self, name: str) -> TableState | None:
        return next((t for t in self.tables if t.name == name), None)

    def text(self) -> str:
        return "".join(table.restore_text() for table in self.tables)

    def ruleset(self) -> Ruleset:
        return Ruleset(tuple(table.table() for table in self.tables))

    def to_json(self) -> dict[str, Any]:
        return ruleset_to_json(self.ruleset())

    def rule_counts(self) -> dict[str, int]:
        return {table.name: table.rule_count for table in self.tables}

    def untouched(self) -> Tables:
        """The same tables, not marked as patched (to be compared with anything)."""
        return Tables(tuple(TableState(t.name, t.builtins, t.chains, t.rules) for t in self.tables))

    def digested(self, table: str, names: Collection[str]) -> Tables:
        return Tables(tuple(t.digested(names) if t.name == table else t for t in self.tables))

    def compact(self, *, keep_rules: int) -> Tables:
        """The same tables keeping the text only of chains with at least `keep_rules` rules
        (those a later sync may edit rule by rule); the others as digests. A patched table is
        compacted where it was touched only (the rest was compacted before)."""
        return Tables(tuple(_compacted(table, keep_rules) for table in self.tables))

    def normalized(self) -> Tables:
        """The same tables with probabilities as the kernel reports them written as ours."""
        return Tables(
            tuple(
                TableState(t.name, t.builtins, {n: _normalized(body) for n, body in t.texts()})
                for t in self.tables
            )
        )

    @staticmethod
    def from_ruleset(ruleset: Ruleset) -> Tables:
        return Tables(
            tuple(
                TableState(
                    table.name,
                    {ch.name: ch.rules for ch in table.chains if ch.builtin},
                    {
                        ch.name: make_body(ch.name, ch.rules)
                        for ch in table.chains
                        if not ch.builtin
                    },
                )
                for table in ruleset
            )
        )


# --- reading iptables-save ------------------------------------------------------------------

_PROBABILITY = re.compile(r"--probability (0\.\d+)")


def _ours(match: re.Match[str]) -> str:
    """The kernel keeps a probability as a 31-bit fraction and prints it with 11 decimals
    (0.3333333333 reads back as 0.33333333349): written back as we render it (1/n, 10
    decimals) when it is one of ours, so that a rendered body and a read one compare."""
    printed = match.group(1)
    value = float(printed)
    n = round(1 / value)
    if n > 1 and round(0x80000000 / n) == round(value * 0x80000000):
        return f"--probability {1.0 / n:0.10f}"
    return match.group(0)


def _normalized(body: str) -> str:
    return _PROBABILITY.sub(_ours, body) if "--probability" in body else body


def parse_save_tables(text: str) -> Tables:
    """`iptables-save` output → Tables, each chain's rules kept as one block of text."""
    tables: list[TableState] = []
    for block in text.split("\n*")[0:]:
        table = _parse_table(block.lstrip("*"))
        if table is not None:
            tables.append(table)
    return Tables(tuple(tables))


def _parse_table(block: str) -> TableState | None:
    lines = block.split("\n")
    name = lines[0].strip()
    if not name or name.startswith("#") or "COMMIT" not in block:
        return None
    builtins: dict[str, list[str]] = {}
    chains: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line.startswith(":"):
            chain = line[1 : line.index(" ")]
            (builtins if chain in BUILTIN_CHAINS else chains)[chain] = []
        elif line.startswith("-A "):
            chain = line[3 : line.index(" ", 3)]
            if chain in builtins:
                builtins[chain].append(line[len(chain) + 4 :])
            else:
                chains.setdefault(chain, []).append(line)
    return TableState(
        name,
        {chain: tuple(rules) for chain, rules in builtins.items()},
        {
            chain: _normalized("".join(f"{line}\n" for line in rules))
            for chain, rules in chains.items()
        },
    )
