"""The iptables edge: read the kernel with iptables-save, write it with one iptables-restore.

Commands can run under a prefix (`ip netns exec NS`) so that tests program a namespace of their
own; the daemon runs them as they are, in the namespace it lives in.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pykubeproxy.backends.iptables.diff import is_owned_chain, plan_cleanup
from pykubeproxy.backends.iptables.ruleset import Ruleset, parse_save
from pykubeproxy.backends.iptables.tables import parse_save_tables

TABLES = ("filter", "nat")
BACKENDS = ("legacy", "nft")
COMMAND_TIMEOUT = 120.0  # seconds; iptables-restore holds the xtables lock while it works


class IptablesError(Exception):
    """iptables refused or failed; `line` is the payload line it named, when it named one."""

    def __init__(self, message: str, *, line: int | None = None, text: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.text = text


class Iptables(Protocol):
    """What a sync needs from the kernel. One real implementation; tests add a fake."""

    backend: str

    def save_text(self) -> str:
        """What `iptables-save` prints for the filter and nat tables."""
        ...

    def save(self) -> Ruleset:
        """The same, parsed rule by rule (for people and tests; syncs read `save_text`)."""
        ...

    def restore(self, payload: str, *, test: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class IptablesBinaries:
    """The `iptables-<backend>-save/-restore` pair, run under an optional command prefix."""

    backend: str
    prefix: tuple[str, ...] = ()

    @property
    def save_command(self) -> str:
        return f"iptables-{self.backend}-save"

    @property
    def restore_command(self) -> str:
        return f"iptables-{self.backend}-restore"

    def available(self) -> bool:
        return (
            shutil.which(self.save_command) is not None
            and shutil.which(self.restore_command) is not None
        )


_FAILED_LINE = re.compile(r"line:? (\d+) failed|Error occurred at line: (\d+)")


def _run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IptablesError(f"{argv[0]} could not run: {exc}") from exc


class KernelIptables:
    """The real thing: iptables-save and iptables-restore --noflush, holding the xtables lock."""

    def __init__(self, binaries: IptablesBinaries) -> None:
        self.binaries = binaries
        self.backend = binaries.backend

    def save_text(self) -> str:
        parts = []
        for table in TABLES:
            argv = [*self.binaries.prefix, self.binaries.save_command, "-t", table]
            result = _run(argv)
            if result.returncode != 0:
                raise IptablesError(f"{self.binaries.save_command} -t {table}: {result.stderr}")
            parts.append(result.stdout)
        return "\n".join(parts)

    def save(self) -> Ruleset:
        return parse_save(self.save_text())

    def restore(self, payload: str, *, test: bool = False) -> None:
        argv = [*self.binaries.prefix, self.binaries.restore_command, "--noflush", "-w", "5"]
        if test:
            argv.append("--test")
        result = _run(argv, payload)
        if result.returncode == 0:
            return
        message = result.stderr.strip() or f"exit status {result.returncode}"
        match = _FAILED_LINE.search(message)
        if match:
            line = int(match.group(1) or match.group(2))
            lines = payload.splitlines()
            text = lines[line - 1] if 0 < line <= len(lines) else None
            raise IptablesError(f"{self.binaries.restore_command}: {message}", line=line, text=text)
        raise IptablesError(f"{self.binaries.restore_command}: {message}")


def count_rules(ruleset: Ruleset) -> int:
    return sum(table.rule_count for table in ruleset)


@dataclass(frozen=True, slots=True)
class BackendChoice:
    backend: str
    reason: str


def detect_backend(prefix: tuple[str, ...] = (), requested: str = "auto") -> BackendChoice:
    """Which iptables binaries the node uses, the way kube-proxy's iptables wrapper decides.

    The backend already holding KUBE- chains (kubelet's or kube-proxy's) wins; otherwise the one
    holding more rules; with nothing anywhere, nft (today's default) when it is installed.
    """
    if requested != "auto":
        if not IptablesBinaries(requested, prefix).available():
            raise IptablesError(f"iptables-{requested}-save/-restore are not installed")
        return BackendChoice(requested, "requested with --iptables-backend")
    seen: dict[str, tuple[int, int]] = {}
    for backend in BACKENDS:
        binaries = IptablesBinaries(backend, prefix)
        if binaries.available():
            text = "\n" + KernelIptables(binaries).save_text()
            seen[backend] = (text.count("\n:KUBE-"), text.count("\n-A "))
    if not seen:
        raise IptablesError("neither iptables-legacy nor iptables-nft is installed")
    if len(seen) == 1:
        only = next(iter(seen))
        return BackendChoice(only, f"only iptables-{only} is installed")
    legacy, nft = seen["legacy"], seen["nft"]
    if legacy[0] != nft[0] and 0 in (legacy[0], nft[0]):
        winner = "legacy" if legacy[0] else "nft"
        return BackendChoice(winner, f"iptables-{winner} holds the node's KUBE- chains")
    if legacy[1] != nft[1]:
        winner = "legacy" if legacy[1] > nft[1] else "nft"
        return BackendChoice(winner, f"iptables-{winner} holds more rules")
    return BackendChoice("nft", "no rules in either backend; nft is the default")


def cleanup(prefix: tuple[str, ...] = ()) -> dict[str, int]:
    """Remove every owned chain and jump in every installed backend; chains removed per backend."""
    removed = {}
    for backend in BACKENDS:
        binaries = IptablesBinaries(backend, prefix)
        if not binaries.available():
            continue
        kernel = KernelIptables(binaries)
        before = parse_save_tables(kernel.save_text())
        payload = plan_cleanup(before)
        if payload:
            kernel.restore(payload)
        removed[backend] = sum(
            1 for t in before for name in t.chains if is_owned_chain(t.name, name)
        )
    return removed
