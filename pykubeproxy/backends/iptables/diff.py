"""What to write so the kernel holds the desired ruleset: the minimal `iptables-restore` payload.

Pure. The kernel's state comes in as a parsed `iptables-save`; the answer is restore text that
rewrites changed chains whole, deletes stale ones after nothing jumps to them any more, and makes
every jump from a built-in chain exist exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables.ruleset import Chain, Ruleset, Table, format_chain_rules

# Chains kube-proxy (or we) own wholesale, including those older kube-proxy versions created.
OWNED_FIXED_CHAINS = {
    "filter": frozenset(
        {
            c.KUBE_SERVICES,
            c.KUBE_EXTERNAL_SERVICES,
            c.KUBE_FORWARD,
            c.KUBE_NODEPORTS,
            c.KUBE_PROXY_FIREWALL,
        }
    ),
    "nat": frozenset({c.KUBE_SERVICES, c.KUBE_NODEPORTS, c.KUBE_POSTROUTING, c.KUBE_MARK_MASQ}),
}
STALE_PREFIXES = (*c.SERVICE_CHAIN_PREFIXES, "KUBE-XLB-")

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
    """The payload to write (None when the kernel already holds the desired ruleset)."""

    payload: str | None
    chains_written: int
    chains_deleted: int
    jumps_fixed: int


def _ensure_jumps(plan: TablePlan, want: Chain, have: Chain | None) -> int:
    """Insert missing jumps at the top of a built-in chain; delete duplicate copies."""
    existing = [normalize_rule(r) for r in (have.rules if have else ())]
    fixes = 0
    position = 1
    for rule in want.rules:
        count = existing.count(normalize_rule(rule))
        if count == 0:
            plan.rules.append(f"-I {want.name} {position} {rule}")
            position += 1
            fixes += 1
        plan.rules.extend(f"-D {want.name} {rule}" for _ in range(count - 1))
        fixes += max(count - 1, 0)
    return fixes


def _plan_table(want: Table, have: Table | None, *, full: bool) -> tuple[TablePlan, int, int, int]:
    plan = TablePlan(want.name)
    written = jumps = 0
    wanted_names = {chain.name for chain in want.chains}
    for chain in want.chains:
        current = have.chain(chain.name) if have else None
        if chain.builtin:
            jumps += _ensure_jumps(plan, chain, current)
            continue
        if full or current is None or not same_rules(chain.rules, current.rules):
            plan.declare.append(chain.name)
            plan.rules.extend(format_chain_rules(chain))
            written += 1
    stale = [
        chain.name
        for chain in (have.chains if have else ())
        if chain.name not in wanted_names and is_owned_chain(want.name, chain.name)
    ]
    # Declaring flushes them, so no stale chain still jumps to another when they are deleted.
    plan.declare.extend(stale)
    plan.delete.extend(stale)
    return plan, written, len(stale), jumps


def plan_restore(desired: Ruleset, actual: Ruleset, *, full: bool) -> RestorePlan:
    """The restore payload that turns `actual` into `desired` (both tables in one transaction)."""
    lines: list[str] = []
    written = deleted = jumps = 0
    for table in desired:
        try:
            have: Table | None = actual.table(table.name)
        except KeyError:
            have = None
        plan, w, d, j = _plan_table(table, have, full=full)
        written, deleted, jumps = written + w, deleted + d, jumps + j
        if not plan.empty:
            lines.extend(plan.lines())
    payload = "\n".join(lines) + "\n" if lines else None
    return RestorePlan(payload, written, deleted, jumps)


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
                    if _jump_target(rule) in targets
                )
        plan.declare.extend(owned)
        plan.delete.extend(owned)
        lines.extend(plan.lines())
    return "\n".join(lines) + "\n" if lines else None


def _jump_target(rule: str) -> str | None:
    words = rule.split()
    for flag in ("-j", "-g"):
        if flag in words:
            index = words.index(flag)
            if index + 1 < len(words):
                return words[index + 1]
    return None
