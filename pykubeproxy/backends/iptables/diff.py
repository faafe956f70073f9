"""What to write so the kernel holds the desired tables: the minimal `iptables-restore` payload.

Pure. What the kernel holds comes in as Tables: read with iptables-save (a full sync) or
remembered from the last write (a partial one). The answer is restore text that rewrites
changed chains whole (or, for a large chain where a few rules changed, deletes and inserts just
those), deletes stale chains after nothing jumps to them any more, and makes every jump from a
built-in chain exist exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from graphlib import TopologicalSorter

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables.ruleset import Ruleset, jump_target
from pykubeproxy.backends.iptables.tables import Body, Tables, TableState, same_body

# Chains kube-proxy (or we) own wholesale, including those older kube-proxy versions created.
# IPVS mode's own chains are among them: stale (and removed) in iptables mode, and back.
OWNED_FIXED_CHAINS = {
    "filter": frozenset(
        {
            c.KUBE_SERVICES,
            c.KUBE_EXTERNAL_SERVICES,
            c.KUBE_FORWARD,
            c.KUBE_NODEPORTS,
            c.KUBE_PROXY_FIREWALL,
            c.KUBE_FIREWALL,
            *c.IPVS_FILTER_CHAINS,
        }
    ),
    "nat": frozenset(
        {
            c.KUBE_SERVICES,
            c.KUBE_NODEPORTS,
            c.KUBE_POSTROUTING,
            c.KUBE_MARK_MASQ,
            *c.IPVS_NAT_CHAINS,
        }
    ),
}
# Owned too, but made and checked by the canary monitor: syncs leave them alone, cleanup not.
CANARY_CHAINS = frozenset({c.KUBE_PROXY_CANARY})
STALE_PREFIXES = (*c.SERVICE_CHAIN_PREFIXES, *c.LEGACY_SERVICE_CHAIN_PREFIXES)

_PROBABILITY = re.compile(r"--probability (\d+(?:\.\d+)?)")


def _kernel_probability(match: re.Match[str]) -> str:
    # The kernel keeps a 31-bit fraction: 0.3333333333 written reads back as 0.33333333349.
    return f"--probability/{round(float(match.group(1)) * 0x80000000)}"


def normalize_rule(rule: str) -> str:
    """A rule's text with what the kernel rewrites on the way in made comparable."""
    return _PROBABILITY.sub(_kernel_probability, rule.strip())


def is_owned_chain(table: str, chain: str) -> bool:
    return chain in OWNED_FIXED_CHAINS.get(table, frozenset()) or chain.startswith(STALE_PREFIXES)


# A large chain where few rules changed is edited rule by rule instead of rewritten: on
# iptables-nft, rewriting KUBE-SERVICES at 10 000 Services costs about 9 times a one-chain write.
EDIT_MIN_RULES = 200
EDIT_MAX_SHARE = 0.1
_TARGETS = re.compile(r" -[jg] (KUBE-[\w-]+)")


@dataclass
class TablePlan:
    """One table's restore text: chains declared (created or flushed), lines, chains deleted."""

    table: str
    declare: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # each ends with a newline
    delete: list[str] = field(default_factory=list)
    rules: int = 0

    @property
    def empty(self) -> bool:
        return not (self.declare or self.lines or self.delete)

    def text(self, *, header: bool = True) -> str:
        """The table's restore text; without `header`, for a table a stream has begun."""
        return "".join(
            [
                f"*{self.table}\n" if header else "",
                *(f":{name} - [0:0]\n" for name in self.declare),
                *self.lines,
                *(f"-X {name}\n" for name in self.delete),
                "COMMIT\n",
            ]
        )


@dataclass(frozen=True, slots=True)
class RestorePlan:
    """The payloads to write, in order (none when the kernel already holds the desired tables).

    One payload is one atomic transaction. A plan is split into several only when asked to
    (iptables-nft with large rulesets); then every chain is still written whole, and after the
    chains it jumps to, so that whatever has been applied so far is consistent.
    """

    payloads: tuple[str, ...]
    chains_written: int
    chains_deleted: int
    jumps_fixed: int

    @property
    def payload(self) -> str | None:
        """Everything this plan writes, as one text (for logs and dry runs)."""
        return "".join(self.payloads) or None


@dataclass(frozen=True, slots=True)
class _Write:
    """One chain to change: declared and given `text` (its body), or edited by `text`'s lines."""

    chain: str
    text: str
    edit: bool = False

    @property
    def rules(self) -> int:
        return self.text.count("\n")


@dataclass
class TableChanges:
    table: str
    writes: list[_Write]  # in the desired order
    jumps: list[str]  # -I / -D lines keeping our jumps in the built-in chains
    stale: list[str]  # owned chains nothing should jump to any more


def _ensure_jumps(name: str, want: tuple[str, ...], have: tuple[str, ...]) -> list[str]:
    """Keep our jumps in a built-in chain exactly once each, in our order.

    Only our own rules are looked at: rules other tools put before or between them stay where
    they are. If one of ours is missing, doubled or out of order, all of ours are deleted and
    inserted again at the top, in one transaction.
    """
    wanted = [normalize_rule(r) for r in want]
    ours = [rule for rule in (normalize_rule(r) for r in have) if rule in wanted]
    if ours == wanted:
        return []
    lines = [f"-D {name} {rule}\n" for rule in have if normalize_rule(rule) in wanted]
    lines.extend(f"-I {name} {n} {rule}\n" for n, rule in enumerate(want, start=1))
    return lines


def _edits(name: str, old: str, new: str) -> str | None:
    """-D and -I lines turning a large chain's `old` body into `new`, when few rules differ and
    the rules both keep stay in the same order; None when a rewrite is the better write."""
    if new.count("\n") < EDIT_MIN_RULES:
        return None
    old_lines, new_lines = old.splitlines(), new.splitlines()
    old_set, new_set = set(old_lines), set(new_lines)
    if len(old_set) != len(old_lines) or len(new_set) != len(new_lines):
        return None  # a rule written twice: positions would be ambiguous
    removed = [line for line in old_lines if line not in new_set]
    added = [(n, line) for n, line in enumerate(new_lines, start=1) if line not in old_set]
    if len(removed) + len(added) > EDIT_MAX_SHARE * len(new_lines):
        return None
    if [x for x in old_lines if x in new_set] != [x for x in new_lines if x in old_set]:
        return None
    cut = len(name) + 4
    return "".join(
        [
            *(f"-D {name} {line[cut:]}\n" for line in removed),
            *(f"-I {name} {n} {line[cut:]}\n" for n, line in added),
        ]
    )


def table_changes(
    want: TableState, have: TableState | None, *, skip: Collection[str] = ()
) -> TableChanges:
    """What turns `have` into `want`; chains in `skip` were written already (wanted, not stale)."""
    current: Mapping[str, Body] = have.chains if have else {}
    changes = TableChanges(want.name, [], [], [])
    for name, rules in want.builtins.items():
        existing = have.builtins.get(name, ()) if have else ()
        changes.jumps.extend(_ensure_jumps(name, rules, existing))
    # A patched table says which chains can differ from the one it was patched from (`have`).
    names = want.chains if want.touched is None else want.touched
    for name in names:
        if name in skip or name not in want.chains:
            continue
        body = want.chains[name]
        old = current.get(name)
        if old is body or same_body(old, body):
            continue
        if isinstance(body, int):
            raise ValueError(f"chain {name} differs from the kernel's but has no text to write")
        edits = _edits(name, old, body) if isinstance(old, str) else None
        changes.writes.append(_Write(name, body) if edits is None else _Write(name, edits, True))
    candidates = current if want.touched is None else want.touched
    changes.stale = [
        name
        for name in candidates
        if name in current and name not in want.chains and is_owned_chain(want.name, name)
    ]
    if have is not None and changes.stale:
        # A built-in chain may still jump to a stale chain (left by the other proxy mode).
        stale = set(changes.stale)
        for name, rules in have.builtins.items():
            changes.jumps.extend(
                f"-D {name} {rule}\n" for rule in rules if jump_target(rule) in stale
            )
    return changes


def _dependency_order(writes: list[_Write]) -> list[_Write]:
    """The writes ordered so that each comes after every chain (of the list) it jumps to."""
    by_name = {write.chain: write for write in writes}
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for write in writes:
        targets = set(_TARGETS.findall(write.text))
        sorter.add(write.chain, *(t for t in targets if t in by_name and t != write.chain))
    return [by_name[name] for name in sorter.static_order()]


def _add(plan: TablePlan, write: _Write) -> None:
    if not write.edit:
        plan.declare.append(write.chain)
    plan.lines.append(write.text)
    plan.rules += write.rules


def single_payload(changes: TableChanges) -> TablePlan:
    """One transaction: chains in the desired order, our jumps from the built-in chains first.

    Order within one transaction does not matter to the kernel; this one is the order
    `Tables.text` prints a whole ruleset in, so a write into an empty table reads the same.
    """
    plan = TablePlan(changes.table, lines=list(changes.jumps))
    for write in changes.writes:
        _add(plan, write)
    # Declaring flushes them, so no stale chain still jumps to another when they are deleted.
    plan.declare.extend(changes.stale)
    plan.delete.extend(changes.stale)
    return plan


def chunked_payloads(changes: TableChanges, chunk_rules: int) -> list[TablePlan]:
    plans = [TablePlan(changes.table)]
    for write in _dependency_order(changes.writes):
        if plans[-1].rules and plans[-1].rules + write.rules > chunk_rules:
            plans.append(TablePlan(changes.table))
        _add(plans[-1], write)
    last = TablePlan(changes.table, lines=list(changes.jumps))
    last.declare.extend(changes.stale)
    last.delete.extend(changes.stale)
    return [*plans, last]


def _as_tables(tables: Tables | Ruleset) -> Tables:
    return tables if isinstance(tables, Tables) else Tables.from_ruleset(tables).normalized()


def plan_restore(
    desired: Tables | Ruleset, actual: Tables | Ruleset, *, chunk_rules: int | None = None
) -> RestorePlan:
    """What turns `actual` into `desired`: one transaction, or chunks of about `chunk_rules`."""
    want, have = _as_tables(desired), _as_tables(actual)
    tables = [table_changes(table, have.get(table.name)) for table in want]
    if chunk_rules is None:
        plans = [single_payload(changes) for changes in tables]
        text = "".join(plan.text() for plan in plans if not plan.empty)
        payloads: tuple[str, ...] = (text,) if text else ()
    else:
        chunks = [plan for changes in tables for plan in chunked_payloads(changes, chunk_rules)]
        payloads = tuple(p.text() for p in chunks if not p.empty)
    return RestorePlan(
        payloads,
        chains_written=sum(len(t.writes) for t in tables),
        chains_deleted=sum(len(t.stale) for t in tables),
        jumps_fixed=sum(len(t.jumps) for t in tables),
    )


def plan_cleanup(actual: Tables) -> str | None:
    """A payload removing every owned chain and every jump to one from the built-in chains."""
    texts: list[str] = []
    for table in actual:
        owned = [
            name
            for name in table.chains
            if is_owned_chain(table.name, name) or name in CANARY_CHAINS
        ]
        if not owned:
            continue
        targets = set(owned)
        plan = TablePlan(table.name)
        for name, rules in table.builtins.items():
            plan.lines.extend(
                f"-D {name} {rule}\n" for rule in rules if jump_target(rule) in targets
            )
        plan.declare.extend(owned)
        plan.delete.extend(owned)
        texts.append(plan.text())
    return "".join(texts) or None
