"""The iptables edge: read the kernel with iptables-save, write it with one iptables-restore.

Commands can run under a prefix (`ip netns exec NS`) so that tests program a namespace of their
own; the daemon runs them as they are, in the namespace it lives in.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pykubeproxy.backends.iptables.diff import CANARY_CHAINS, is_owned_chain, plan_cleanup
from pykubeproxy.backends.iptables.ruleset import Ruleset, parse_save
from pykubeproxy.backends.iptables.tables import parse_save_tables

BACKENDS = ("legacy", "nft")
COMMAND_TIMEOUT = 120.0  # seconds; iptables-restore holds the xtables lock while it works
PIPE_BLOCK = 1 << 20  # bytes written to a streamed restore at a time


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

    def restore_stream(self) -> RestoreStream:
        """One restore whose input is written piece by piece (the kernel reads as it comes)."""
        ...

    def ensure_chain(self, table: str, chain: str) -> None:
        """Create an empty chain unless it exists (kube-proxy's EnsureChain)."""
        ...

    def chain_exists(self, table: str, chain: str) -> bool:
        """Whether `table` holds `chain`: a look at one chain, not a save of everything."""
        ...

    def chain_rules(self, table: str, chain: str) -> list[str] | None:
        """The rules of one chain as `iptables -S CHAIN` prints them; None: no such chain."""
        ...


@dataclass(frozen=True, slots=True)
class IptablesBinaries:
    """The `iptables-<backend>-save/-restore` pair, run under an optional command prefix."""

    backend: str
    prefix: tuple[str, ...] = ()

    @property
    def save_command(self) -> str:
        return f"iptables-{self.backend}-save"

    @property
    def command(self) -> str:
        return f"iptables-{self.backend}"

    @property
    def restore_command(self) -> str:
        return f"iptables-{self.backend}-restore"

    def available(self) -> bool:
        return (
            shutil.which(self.save_command) is not None
            and shutil.which(self.restore_command) is not None
        )


class RestoreStream(Protocol):
    """Input to one `iptables-restore --noflush`, written in pieces; `close` waits for it and
    raises IptablesError if it refused. Nothing is applied unless close succeeds."""

    def write(self, text: str) -> None: ...

    def close(self) -> None: ...


class BufferedRestore:
    """A RestoreStream that collects the pieces and restores them in one call at close."""

    def __init__(self, kernel: Iptables) -> None:
        self.kernel = kernel
        self.pieces: list[str] = []

    def write(self, text: str) -> None:
        self.pieces.append(text)

    def close(self) -> None:
        self.kernel.restore("".join(self.pieces))


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
        # One run for every table: iptables-nft-save reads the whole ruleset whatever `-t` says,
        # so a run per table would read it twice (3 s each at 10 000 Services).
        argv = [*self.binaries.prefix, self.binaries.save_command]
        result = _run(argv)
        if result.returncode != 0:
            raise IptablesError(f"{self.binaries.save_command}: {result.stderr}")
        return result.stdout

    def save(self) -> Ruleset:
        return parse_save(self.save_text())

    def _restore_argv(self, *, test: bool = False) -> list[str]:
        argv = [*self.binaries.prefix, self.binaries.restore_command, "--noflush", "-w", "5"]
        return [*argv, "--test"] if test else argv

    def restore(self, payload: str, *, test: bool = False) -> None:
        result = _run(self._restore_argv(test=test), payload)
        if result.returncode != 0:
            raise self.refused(result.stderr, result.returncode, payload)

    def refused(self, stderr: str, status: int, payload: str) -> IptablesError:
        """The error of a refused restore, naming the payload line the command named."""
        message = f"{self.binaries.restore_command}: {stderr.strip() or f'exit status {status}'}"
        match = _FAILED_LINE.search(message)
        if match:
            line = int(match.group(1) or match.group(2))
            lines = payload.splitlines()
            text = lines[line - 1] if 0 < line <= len(lines) else None
            return IptablesError(message, line=line, text=text)
        return IptablesError(message)

    def restore_stream(self) -> RestoreStream:
        return PipedRestore(self)

    def _chain_command(self, table: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([*self.binaries.prefix, self.binaries.command, "-w", "5", "-t", table, *args])

    def ensure_chain(self, table: str, chain: str) -> None:
        if self.chain_exists(table, chain):
            return
        result = self._chain_command(table, "-N", chain)
        # Someone else may have made it between the look and -N: that is fine too.
        if result.returncode != 0 and not self.chain_exists(table, chain):
            raise IptablesError(f"{self.binaries.command} -t {table} -N {chain}: {result.stderr}")

    def chain_exists(self, table: str, chain: str) -> bool:
        return self.chain_rules(table, chain) is not None

    def chain_rules(self, table: str, chain: str) -> list[str] | None:
        # -S of one chain: exit status 1 when it does not exist.
        result = self._chain_command(table, "-S", chain)
        if result.returncode == 0:
            return result.stdout.splitlines()
        if result.returncode == 1:
            return None
        raise IptablesError(f"{self.binaries.command} -t {table} -S {chain}: {result.stderr}")


class PipedRestore:
    """iptables-restore reading its input while it is produced: it parses on the other core
    while the sync renders. Pieces go down the pipe in blocks of PIPE_BLOCK bytes; when the
    pipe is full the writer waits, which only happens when rendering is ahead of the kernel."""

    def __init__(self, kernel: KernelIptables) -> None:
        self.kernel = kernel
        self.pieces: list[str] = []
        self._block: list[str] = []
        self._block_size = 0
        self._broken = False
        try:
            self._process = subprocess.Popen(
                kernel._restore_argv(),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            raise IptablesError(f"{kernel.binaries.restore_command} could not run: {exc}") from exc
        assert self._process.stdin is not None
        with contextlib.suppress(OSError):  # a bigger pipe: fewer wake-ups on both sides
            fcntl.fcntl(self._process.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BLOCK)

    def write(self, text: str) -> None:
        self.pieces.append(text)
        self._block.append(text)
        self._block_size += len(text)
        if self._block_size >= PIPE_BLOCK:
            self._flush()

    def _flush(self) -> None:
        stdin = self._process.stdin
        if self._block and not self._broken and stdin is not None:
            try:
                stdin.write("".join(self._block))
            except (BrokenPipeError, OSError):
                self._broken = True  # it stopped reading: it refused a line; close() says why
        self._block, self._block_size = [], 0

    def close(self) -> None:
        self._flush()
        try:
            _, stderr = self._process.communicate(timeout=COMMAND_TIMEOUT)
        except (BrokenPipeError, OSError):
            stderr = self._process.stderr.read() if self._process.stderr else ""
            self._process.wait(COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            self._process.kill()
            self._process.communicate()
            raise IptablesError(f"{self.kernel.binaries.restore_command} timed out") from exc
        if self._process.returncode != 0:
            payload = "".join(self.pieces)
            raise self.kernel.refused(stderr, self._process.returncode, payload)


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
            1
            for t in before
            for name in t.chains
            if is_owned_chain(t.name, name) or name in CANARY_CHAINS
        )
    return removed
