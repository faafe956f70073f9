"""A full sync written while it renders: the kernel parses on the other core as ports render.

At 10 000 Services the first sync's restore takes ~5 s (legacy) and rendering ~1 s; written
one after the other they add up, written together the render hides behind the restore. Each
port's chains that differ from the kernel's go out as soon as the port is rendered (declared
first, then filled, so every jump within the port finds its target); the chains every Service
shares, our jumps, and the stale chains follow once all ports are known. With iptables-legacy
it is one transaction fed through a pipe; with chunks (iptables-nft), each chunk is restored by
a worker in order while the next one renders.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection

from pykubeproxy.backends.iptables.diff import (
    RestorePlan,
    TableChanges,
    chunked_payloads,
    single_payload,
    table_changes,
)
from pykubeproxy.backends.iptables.kernel import Iptables, IptablesError, RestoreStream
from pykubeproxy.backends.iptables.render import PortRules
from pykubeproxy.backends.iptables.tables import Body, Tables, TableState, same_body

NAT = "nat"


class ChunkQueue:
    """Restores whole payloads in order on a worker thread; after a refusal it applies no more."""

    def __init__(self, kernel: Iptables) -> None:
        self.kernel = kernel
        self.error: IptablesError | None = None
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="iptables-chunks", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self.kernel.restore(payload)
                except IptablesError as exc:
                    self.error = exc

    def submit(self, payload: str) -> None:
        self._queue.put(payload)

    def finish(self) -> None:
        self._queue.put(None)
        self._worker.join()
        if self.error is not None:
            raise self.error


class StreamedWrite:
    """The writes of one full sync against `have` (what iptables-save showed).

    `early` holds the shared nat chains as they are with no Service (KUBE-MARK-MASQ, ...):
    those the kernel lacks are created before the first port, since its chains jump to them.
    """

    def __init__(
        self, kernel: Iptables, have: Tables, *, early: Tables, chunk_rules: int | None
    ) -> None:
        self.kernel = kernel
        self.have = have
        self.chunk_rules = chunk_rules
        nat = have.get(NAT)
        self._have_nat = nat.chains if nat else {}
        missing = early.get(NAT)
        self._early = {
            name: body
            for name, body in (missing.texts() if missing else ())
            if name not in self._have_nat
        }
        self._stream: RestoreStream | None = None
        self._chunks = ChunkQueue(kernel) if chunk_rules else None
        self._chunk: list[str] = []
        self._chunk_rules = 0
        self.payloads: list[str] = []
        self.written: dict[str, Body] = {}  # nat chains written so far, name → body
        self._ports: set[str] = set()

    def _begin(self) -> None:
        """Open the nat section: the stream (or the chunk) and the shared chains it lacks."""
        header = "*nat\n"
        if self._early:
            header += "".join(f":{name} - [0:0]\n" for name in self._early)
            header += "".join(self._early.values())
            self.written.update(self._early)
            self._early = {}
        if self._chunks is None:
            self._stream = self.kernel.restore_stream()
        self._emit(header)

    def _emit(self, text: str) -> None:
        self.payloads.append(text)
        if self._chunks is not None:
            self._chunk.append(text)
        else:
            assert self._stream is not None
            self._stream.write(text)

    def port(self, rules: PortRules, again: Callable[[], PortRules]) -> None:
        """Write the port's own chains that differ from the kernel's (all of them, first).

        A cached port may hold only digests: `again` renders its text when one differs."""
        differ = []
        for name, body in rules.chains:
            self._ports.add(name)
            if not same_body(self._have_nat.get(name), body):
                differ.append(name)
        if not differ:
            return
        if any(isinstance(body, int) for _, body in rules.chains):
            rules = again()
        texts = dict(rules.chains)
        changed = [(name, str(texts[name])) for name in differ]
        if not self._chunk and self._stream is None:
            self._begin()
        declared = [f":{name} - [0:0]\n" for name, _ in changed]
        self._emit("".join([*declared, *(body for _, body in changed)]))
        self.written.update(changed)
        if self._chunks is not None:
            self._chunk_rules += sum(body.count("\n") for _, body in changed)
            if self.chunk_rules and self._chunk_rules >= self.chunk_rules:
                self._submit_chunk()

    def _submit_chunk(self) -> None:
        assert self._chunks is not None
        self._emit("COMMIT\n")
        self._chunks.submit("".join(self._chunk))
        self._chunk, self._chunk_rules = [], 0

    def finish(self, want: Tables) -> RestorePlan:
        """Write what remains (shared chains, jumps, stale chains), commit, wait for the kernel."""
        # nat first: a transaction in progress is nat's, and must end before filter's begins.
        tables = sorted(want, key=lambda table: table.name != NAT)
        changes = [
            table_changes(table, self._had(table.name), skip=self._skip(table)) for table in tables
        ]
        try:
            if self._chunks is not None:
                self._finish_chunks(changes)
            else:
                self._finish_stream(changes)
        finally:
            self._stream = None
        written = {(NAT, name) for name in self.written}
        written.update((c.table, w.chain) for c in changes for w in c.writes)
        return RestorePlan(
            tuple(self.payloads),
            chains_written=len(written),
            chains_deleted=sum(len(c.stale) for c in changes),
            jumps_fixed=sum(len(c.jumps) for c in changes),
        )

    def _skip(self, table: TableState) -> Collection[str]:
        return self._ports if table.name == NAT else ()

    def _had(self, name: str) -> TableState | None:
        """The kernel's table as this sync has left it so far."""
        table = self.have.get(name)
        if name != NAT or not self.written:
            return table
        chains = {**(table.chains if table else {}), **self.written}
        return TableState(name, table.builtins if table else {}, chains)

    def _finish_stream(self, changes: list[TableChanges]) -> None:
        for change in changes:
            plan = single_payload(change)
            if plan.empty and not (change.table == NAT and self._stream is not None):
                continue
            if change.table == NAT and self._stream is not None:
                self._emit(plan.text(header=False))
            else:
                if self._stream is None:
                    self._stream = self.kernel.restore_stream()
                self._emit(plan.text())
        if self._stream is not None:
            self._stream.close()

    def _finish_chunks(self, changes: list[TableChanges]) -> None:
        assert self._chunks is not None and self.chunk_rules
        if self._chunk:
            self._submit_chunk()
        for change in changes:
            for plan in chunked_payloads(change, self.chunk_rules):
                if not plan.empty:
                    text = plan.text()
                    self.payloads.append(text)
                    self._chunks.submit(text)
        self._chunks.finish()
