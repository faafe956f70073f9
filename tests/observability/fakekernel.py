"""A fake iptables that keeps state: restore payloads edit its tables, save reads them back."""

from __future__ import annotations

from pykubeproxy.backends.iptables.kernel import IptablesError
from pykubeproxy.backends.iptables.ruleset import Chain, Ruleset, Table

BUILTIN = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}

Tables = dict[str, dict[str, list[str]]]


class FakeKernel:
    """iptables-restore --noflush and iptables-save over tables kept in memory.

    `refuse_all` makes it refuse every payload; `refuse_containing` only payloads holding that
    text (say, one Service's cluster IP), as a kernel lacking one match extension would.
    """

    backend = "fake"

    def __init__(self) -> None:
        self.tables: Tables = {t: {c: [] for c in chains} for t, chains in BUILTIN.items()}
        self.refuse_all = False
        self.refuse_containing: str | None = None
        self.written: list[str] = []  # payloads applied (not test runs), in order

    def save(self) -> Ruleset:
        return Ruleset(
            tuple(
                Table(name, tuple(Chain(c, tuple(rules)) for c, rules in chains.items()))
                for name, chains in self.tables.items()
            )
        )

    def restore(self, payload: str, *, test: bool = False) -> None:
        if self.refuse_all or (self.refuse_containing and self.refuse_containing in payload):
            raise IptablesError("fake kernel: refused", line=1)
        tables = {t: {c: list(r) for c, r in chains.items()} for t, chains in self.tables.items()}
        table = ""
        for number, line in enumerate(payload.splitlines(), start=1):
            if line.startswith("*"):
                table = line[1:]
                continue
            try:
                _apply(tables[table], line)
            except (KeyError, ValueError, IndexError) as exc:
                message = f"fake kernel: line {number} failed: {exc!r}"
                raise IptablesError(message, line=number) from exc
        if not test:
            self.tables = tables
            self.written.append(payload)

    def kube_rules(self, table: str) -> int:
        """Rules in KUBE- chains, as `iptables-save | grep -c '^-A KUBE-'` would count them."""
        chains = self.tables[table]
        return sum(len(rules) for name, rules in chains.items() if name.startswith("KUBE-"))


def _apply(chains: dict[str, list[str]], line: str) -> None:
    """One restore line within a table: declare (create or flush), -A, -I, -D or -X."""
    if not line or line.startswith("#") or line == "COMMIT":
        return
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
        del chains[chain]
    else:
        raise ValueError(f"unknown command {op}")
