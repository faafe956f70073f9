"""What to write so the kernel holds the desired ruleset: the minimal `iptables-restore` payload.

Pure. The kernel's state comes in as a parsed `iptables-save`; the answer is restore text that
rewrites changed chains whole, deletes stale ones after nothing jumps to them any more, and makes
every jump from a built-in chain exist exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from graphlib import TopologicalSorter

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables.ruleset import (
    Chain,
    Ruleset,
    Table,
    format_chain_rules,
    jump_target,
)

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
STALE_PREFIXES = (*c.SERVICE_CHAIN_PREFIXES, *c.LEGACY_SERVICE_CHAIN_PREFIXES)

_PROBABILITY = re.compile(r"--probability (\d+(?:\.\d+)?)")


def _kernel_probability(match: re.Match[str]) -> str:
    # The kernel keeps a 31-bit fraction: 0.3333333333 written reads back as 0.33333333349.
    return f"--probability/{round(float(match.group(1)) * 0x80000000)}"


def normalize_rule(rule: str) -> str:
    """A rule's text with what the kernel rewrites on the way in made comparable."""
    return _PROBABILITY.sub(_kernel_probability, rule.strip())


def same_rules(left: Iterable[str], right: Iterable[str]) -> bool:
    return [normalize_rule(r) for r in left] == [normalize_rule(r) for r in right]


def is_owned_chain(table: str, chain: str) -> bool:
    return chain in OWNED_FIXED_CHAINS.get(table, frozenset()) or chain.startswith(STALE_PREFIXES)


@dataclass
class TablePlan:
    """One table's restore lines: chains declared (created or flushed), rules, chains deleted."""

    table: str
    declare: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.declare or self.rules or self.delete)

    def lines(self) -> list[str]:
        return [
            f"*{self.table}",
            *(f":{name} - [0:0]" for name in self.declare),
            *self.rules,
            *(f"-X {name}" for name in self.delete),
            "COMMIT",
        ]


@dataclass(frozen=True, slots=True)
class RestorePlan:
    """The payloads to write, in order (none when the kernel already holds the desired ruleset).

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


@dataclass
class _TableChanges:
    table: str
    write: list[Chain]  # chains rewritten whole, in the desired order
    jumps: list[str]  # -I / -D lines keeping our jumps in the built-in chains
    stale: list[str]  # owned chains nothing should jump to any more


def _ensure_jumps(want: Chain, have: Chain | None) -> list[str]:
    """Keep our jumps in a built-in chain exactly once each, in our order.

    Only our own rules are looked at: rules other tools put before or between them stay where
    they are. If one of ours is missing, doubled or out of order, all of ours are deleted and
    inserted again at the top, in one transaction.
    """
    wanted = [normalize_rule(r) for r in want.rules]
    present = [normalize_rule(r) for r in (have.rules if have else ())]
    ours = [rule for rule in present if rule in wanted]
    if ours == wanted:
        return []
    lines = [
        f"-D {want.name} {rule}"
        for rule in (have.rules if have else ())
        if normalize_rule(rule) in wanted
    ]
    lines.extend(f"-I {want.name} {n} {rule}" for n, rule in enumerate(want.rules, start=1))
    return lines


def _dependency_order(chains: list[Chain]) -> list[Chain]:
    """The chains ordered so that each comes after every chain (of the list) it jumps to."""
    by_name = {chain.name: chain for chain in chains}
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for chain in chains:
        targets = {jump_target(rule) for rule in chain.rules}
        sorter.add(chain.name, *(t for t in targets if t in by_name and t != chain.name))
    return [by_name[name] for name in sorter.static_order()]


def _table_changes(want: Table, have: Table | None, *, full: bool) -> _TableChanges:
    current = {chain.name: chain for chain in (have.chains if have else ())}
    changes = _TableChanges(want.name, [], [], [])
    write = []
    for chain in want.chains:
        if chain.builtin:
            changes.jumps.extend(_ensure_jumps(chain, current.get(chain.name)))
            continue
        existing = current.get(chain.name)
        if full or existing is None or not same_rules(chain.rules, existing.rules):
            write.append(chain)
    changes.write = write
    wanted = {chain.name for chain in want.chains}
    changes.stale = [
        name for name in current if name not in wanted and is_owned_chain(want.name, name)
    ]
    # A built-in chain may still jump to a stale chain (left by the other proxy mode).
    stale = set(changes.stale)
    for chain in current.values():
        if chain.builtin:
            changes.jumps.extend(
                f"-D {chain.name} {rule}" for rule in chain.rules if jump_target(rule) in stale
            )
    return changes


def _single_payload(changes: _TableChanges) -> TablePlan:
    """One transaction: chains in the desired order, our jumps from the built-in chains first.

    Order within one transaction does not matter to the kernel; this one is the order
    `format_restore` prints a whole ruleset in, so a write into an empty table reads the same.
    """
    plan = TablePlan(changes.table, rules=list(changes.jumps))
    for chain in changes.write:
        plan.declare.append(chain.name)
        plan.rules.extend(format_chain_rules(chain))
    # Declaring flushes them, so no stale chain still jumps to another when they are deleted.
    plan.declare.extend(changes.stale)
    plan.delete.extend(changes.stale)
    return plan


def _chunked_payloads(changes: _TableChanges, chunk_rules: int) -> list[TablePlan]:
    plans = [TablePlan(changes.table)]
    for chain in _dependency_order(changes.write):
        if plans[-1].rules and len(plans[-1].rules) + len(chain.rules) > chunk_rules:
            plans.append(TablePlan(changes.table))
        plans[-1].declare.append(chain.name)
        plans[-1].rules.extend(format_chain_rules(chain))
    last = TablePlan(changes.table, rules=list(changes.jumps))
    last.declare.extend(changes.stale)
    last.delete.extend(changes.stale)
    return [*plans, last]


def plan_restore(
    desired: Ruleset, actual: Ruleset, *, full: bool, chunk_rules: int | None = None
) -> RestorePlan:
    """What turns `actual` into `desired`: one transaction, or chunks of about `chunk_rules`."""
    tables = []
    for table in desired:
        try:
            have: Table | None = actual.table(table.name)
        except KeyError:
            have = None
        tables.append(_table_changes(table, have, full=full))
    if chunk_rules is None:
        plans = [_single_payload(changes) for changes in tables]
        lines = [line for plan in plans if not plan.empty for line in plan.lines()]
        payloads: tuple[str, ...] = ("\n".join(lines) + "\n",) if lines else ()
    else:
        chunks = [plan for t in tables for plan in _chunked_payloads(t, chunk_rules)]
        payloads = tuple("\n".join(p.lines()) + "\n" for p in chunks if not p.empty)
    return RestorePlan(
        payloads,
        chains_written=sum(len(t.write) for t in tables),
        chains_deleted=sum(len(t.stale) for t in tables),
        jumps_fixed=sum(len(t.jumps) for t in tables),
    )


def plan_cleanup(actual: Ruleset) -> str | None:
    """A payload removing every owned chain and every jump to one from the built-in chains."""
    lines: list[str] = []
    for table in actual:
        owned = [ch.name for ch in table.chains if is_owned_chain(table.name, ch.name)]
        if not owned:
            continue
        targets = set(owned)
        plan = TablePlan(table.name)
        for chain in table.chains:
            if chain.builtin:
                plan.rules.extend(
                    f"-D {chain.name} {rule}"
                    for rule in chain.rules
                    if jump_target(rule) in targets
                )
        plan.declare.extend(owned)
        plan.delete.extend(owned)
        lines.extend(plan.lines())
    return "\n".join(lines) + "\n" if lines else None
