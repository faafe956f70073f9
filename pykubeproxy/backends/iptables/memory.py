"""iptables kept in memory: restore payloads edit its tables, save reads them back.

It checks what the real `iptables-restore` checks and kube-proxy's own fake checks: a payload
whose rules jump to a chain that does not exist at commit, or that deletes a chain a rule still
jumps to, is refused and leaves the tables as they were. `--dry-run` syncs against one (empty)
so that it runs exactly the code a node runs; the tests use it as the stateful fake kernel.
"""

from __future__ import annotations

from pykubeproxy.backends.iptables.chains import BUILTIN_CHAINS
from pykubeproxy.backends.iptables.kernel import BufferedRestore, IptablesError, RestoreStream
from pykubeproxy.backends.iptables.ruleset import Ruleset, jump_target, parse_save

BUILTIN = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}
# Tables that appear when something is first written to them, as the kernel loads them.
LATER_BUILTIN = {"mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")}
# Targets that are extensions, not chains (those our rules and the tests use, and common ones).
TARGET_EXTENSIONS = frozenset(
    {
        "ACCEPT",
        "DROP",
        "REJECT",
        "RETURN",
        "DNAT",
        "SNAT",
        "MARK",
        "MASQUERADE",
        "LOG",
        "CONNMARK",
        "CT",
        "NOTRACK",
        "QUEUE",
    }
)

Tables = dict[str, dict[str, list[str]]]


class MemoryIptables:
    """`iptables-restore --noflush` and `iptables-save` over tables kept in memory."""

    backend = "memory"

    def __init__(self) -> None:
        self.tables: Tables = {t: {c: [] for c in chains} for t, chains in BUILTIN.items()}
        self.written: list[str] = []  # payloads applied (not test runs), in order

    def save_text(self) -> str:
        """The tables as `iptables-save` prints them (built-in chains with a policy)."""
        parts = []
        for name, chains in self.tables.items():
            parts.append(f"*{name}\n")
            parts.extend(
                f":{chain} {'ACCEPT' if chain in BUILTIN_CHAINS else '-'} [0:0]\n"
                for chain in chains
            )
            parts.extend(f"-A {c} {rule}\n" for c, rules in chains.items() for rule in rules)
            parts.append("COMMIT\n")
        return "".join(parts)

    def save(self) -> Ruleset:
        return parse_save(self.save_text())

    def restore(self, payload: str, *, test: bool = False) -> None:
        tables = {t: {c: list(r) for c, r in chains.items()} for t, chains in self.tables.items()}
        table = ""
        for number, line in enumerate(payload.splitlines(), start=1):
            if line.startswith("*"):
                table = line[1:]
                tables.setdefault(table, {})
            elif line == "COMMIT":
                _check_jumps(table, tables[table], number)
            elif line and not line.startswith("#"):
                try:
                    _apply(tables[table], line)
                except (KeyError, ValueError, IndexError) as exc:
                    message = f"memory iptables: line {number} failed: {exc!r}"
                    raise IptablesError(message, line=number, text=line) from exc
        if not test:
            self.tables = tables
            self.written.append(payload)

    def restore_stream(self) -> RestoreStream:
        return BufferedRestore(self)

    def ensure_chain(self, table: str, chain: str) -> None:
        if table not in self.tables:
            self.tables[table] = {c: [] for c in LATER_BUILTIN.get(table, ())}
        self.tables[table].setdefault(chain, [])

    def chain_exists(self, table: str, chain: str) -> bool:
        return chain in self.tables.get(table, {})

    def chain_rules(self, table: str, chain: str) -> list[str] | None:
        rules = self.tables.get(table, {}).get(chain)
        if rules is None:
            return None
        return [f"-N {chain}" if chain not in BUILTIN_CHAINS else f"-P {chain} ACCEPT"] + [
            f"-A {chain} {rule}" for rule in rules
        ]

    def kube_rules(self, table: str) -> int:
        """Rules in KUBE- chains, as `iptables-save | grep -c '^-A KUBE-'` would count them."""
        chains = self.tables[table]
        return sum(len(rules) for name, rules in chains.items() if name.startswith("KUBE-"))


def _check_jumps(table: str, chains: dict[str, list[str]], line: int) -> None:
    """At commit, every jump must name a chain that exists (a deleted one included)."""
    for name, rules in chains.items():
        for rule in rules:
            target = jump_target(rule)
            if target and target not in TARGET_EXTENSIONS and target not in chains:
                raise IptablesError(
                    f"memory iptables: {table} {name} jumps to missing chain {target} "
                    f"(COMMIT at line {line})",
                    line=line,
                    text="COMMIT",
                )


def _apply(chains: dict[str, list[str]], line: str) -> None:
    """One restore line within a table: declare (create or flush), -A, -I, -D or -X."""
    if line.startswith(":"):
        chains[line[1:].split()[0]] = []  # create, or flush an existing chain
        return
    op, chain, *rest = line.split(" ", 2)
    rule = rest[0] if rest else ""
    if op == "-A":
        chains[chain].append(rule)
    elif op == "-I":
        position, _, rule = rule.partition(" ")
        chains[chain].insert(int(position) - 1, rule)
    elif op == "-D":
        chains[chain].remove(rule)
    elif op == "-X":
        if chains[chain]:
            raise ValueError(f"chain {chain} is not empty")
        del chains[chain]
    else:
        raise ValueError(f"unknown command {op}")
