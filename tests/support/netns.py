"""Network namespaces of our own: create one, run commands in it, and always delete it afterwards.

Nothing here acts in the host's own namespace beyond `ip netns add|delete|list|pids`: every
other command runs under `ip netns exec <ours>` or `ip -n <ours>`. Every name starts with
`pkp-`, and deleting refuses any other name, so a helper can never remove what is not ours.

`namespace("role")` is the usual way in: a fresh `pkp-<role>-<hex>` with loopback up, deleted
(after stopping whatever still runs inside) when the block ends. `Processes` starts long-running
commands inside namespaces, each logging to a file, and stops them by PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.wait import WaitTimeout, wait_until

OURS = re.compile(r"^pkp-[0-9a-z][0-9a-z-]*$")
COMMAND_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


class CommandFailed(subprocess.CalledProcessError):
    """A command run for a test failed; unlike its parent, it says what the command printed."""

    def __str__(self) -> str:
        return f"{super().__str__()}: {(self.stderr or '').strip()}"


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded by `timeout`), capturing its output as text."""
    result = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise CommandFailed(result.returncode, list(argv), result.stdout, result.stderr)
    return result


@dataclass(frozen=True, slots=True)
class Netns:
    """One network namespace of ours, by name, and how to act inside it."""

    name: str

    def __post_init__(self) -> None:
        if not OURS.match(self.name):
            raise ValueError(f"{self.name!r} is not a namespace of ours (pkp-...)")

    @property
    def prefix(self) -> tuple[str, ...]:
        """The command prefix that runs a command inside (for the package's `prefix=` options)."""
        return ("ip", "netns", "exec", self.name)

    def exec(
        self,
        *argv: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
        cwd: str | Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside; raise `CommandFailed` if it fails (unless `check` is False)."""
        return run([*self.prefix, *argv], input=input, check=check, timeout=timeout, cwd=cwd)

    def ip(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """`ip -n <ours> ...`: configure links, addresses and routes inside."""
        return run(["ip", "-n", self.name, *argv])

    def pids(self) -> list[int]:
        """The processes running inside (`ip netns pids`)."""
        return [int(pid) for pid in run(["ip", "netns", "pids", self.name]).stdout.split()]

    def stop_processes(self) -> None:
        """SIGTERM everything inside by PID, then SIGKILL what outlives STOP_TIMEOUT.

        A namespace with a live process never really goes away after `ip netns delete`, so
        this runs before every delete. Whatever runs inside one of ours was started by a test.
        """
        pids = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            try:
                wait_until(
                    lambda pids=pids: not any(process_running(pid) for pid in pids),
                    what=f"processes {pids} in {self.name} to exit after {sig.name}",
                    timeout=STOP_TIMEOUT,
                )
                return
            except WaitTimeout:
                if sig is signal.SIGKILL:
                    raise
                pids = [pid for pid in pids if process_running(pid)]


def create(name: str) -> Netns:
    """Add the namespace and bring its loopback up; on failure, nothing is left behind."""
    ns = Netns(name)
    run(["ip", "netns", "add", name])
    try:
        ns.ip("link", "set", "lo", "up")
    except BaseException:
        delete(ns)
        raise
    return ns


def delete(ns: Netns) -> None:
    """Stop whatever runs inside, then delete the namespace; raise if it could not be deleted."""
    if not OURS.match(ns.name):  # Netns checks too; this guards a hand-made instance
        raise ValueError(f"refusing to delete {ns.name!r}: not a namespace of ours")
    ns.stop_processes()
    run(["ip", "netns", "delete", ns.name])


def new_name(role: str) -> str:
    """A fresh name for a namespace of ours: `pkp-<role>-<8 hex>`."""
    return f"pkp-{role}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def namespace(role: str = "test") -> Iterator[Netns]:
    """A fresh namespace `pkp-<role>-<hex>`, loopback up; deleted when the block ends, always."""
    ns = create(new_name(role))
    try:
        yield ns
    finally:
        delete(ns)


def names_with_prefix(prefix: str) -> list[str]:
    """Namespaces whose name starts with `prefix` (`ip netns list`), sorted."""
    if not prefix.startswith("pkp-"):
        raise ValueError(f"{prefix!r} would match namespaces that are not ours")
    # Lines look like "name (id: 3)" or just "name".
    lines = run(["ip", "netns", "list"]).stdout.splitlines()
    names = (line.split()[0] for line in lines if line.strip())
    return sorted(name for name in names if name.startswith(prefix))


def process_running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie.

    An orphan's zombie lingers until the container's init gets round to reaping it, which can
    take seconds here; it is dead for our purposes.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # Field 3, after the parenthesised command name (which may itself contain spaces).
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class Processes:
    """Long-running commands started inside namespaces, each writing to its own log file.

    Output goes to a file rather than a pipe, so a chatty process can never block on a pipe
    nobody drains. `ip netns exec` execs in place, so the PID kept is the process itself.
    """

    def __init__(self) -> None:
        self._logs: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(
        self,
        ns: Netns,
        argv: Sequence[str],
        *,
        log: Path,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*ns.prefix, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
            )
        self._logs[proc.pid] = (proc, log)
        return proc

    def __iter__(self) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
        return iter(list(self._logs.values()))

    def __len__(self) -> int:
        return len(self._logs)

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """Everything `proc` has written so far."""
        return self._logs[proc.pid][1].read_text(errors="replace")

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM by PID, SIGKILL if it lingers, reap it; its exit code (negative: a signal)."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        return proc.returncode

    def stop_all(self) -> list[str]:
        """Stop every process started here; what went wrong, if anything (for teardown reports)."""
        errors = []
        for proc, _ in self:
            try:
                self.stop(proc)
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"stopping pid {proc.pid}: {exc}")
        self._logs.clear()
        return errors
