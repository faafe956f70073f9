"""The canary chains: empty KUBE-PROXY-CANARY chains whose loss says the rules were wiped.

kube-proxy keeps one in mangle, nat and filter and looks for it every sync period; when it is
gone (a firewalld reload, an `iptables -X`), everything it wrote is presumed gone too, and it
resyncs fully at once. kube-proxy looks only at mangle's and waits for the others to go too;
we look at mangle's and filter's, and in nat at the jump to KUBE-SERVICES (so a flush of nat
alone is seen too), and resync as soon as one is gone. The monitor is driven by the sync loop's
wake-ups with the time passed in, so that tests step it with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pykubeproxy.backends.iptables.chains import CANARY_TABLES, KUBE_PROXY_CANARY, KUBE_SERVICES
from pykubeproxy.backends.iptables.kernel import Iptables, IptablesError
from pykubeproxy.log import get_logger

log = get_logger("pykubeproxy.canary")
NAT_ENTRY = f"-j {KUBE_SERVICES}"
# Looking into nat may cost at most this share of wall time: on iptables-legacy a look copies
# the whole table (0.3-0.9 s at 10 000 Services), which every sync period would cost a large
# node about 1-2 s of CPU a minute; it then looks at nat every 60-180 s instead.
NAT_LOOK_BUDGET = 0.005


class CanaryMonitor:
    """Places the canaries, then looks for them at most once per `interval` seconds.

    `check` answers True when a canary (or nat's entry jump, once a sync wrote it) vanished
    since the last look: the caller then runs a full sync. The canaries are put back first, so
    the next look sees them again.
    """

    def __init__(
        self,
        kernel: Iptables,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kernel = kernel
        self.interval = interval
        self.clock = clock
        self.next_nat_look = 0.0
        self.placed = False
        self.next_look: float | None = None
        self.vanished = 0  # times a look found a canary gone
        self.synced_once = False  # set by the backend: from then on nat holds our entry jump

    def check(self, now: float) -> bool:
        if self.next_look is not None and now < self.next_look:
            return False
        self.next_look = now + self.interval
        if not self.placed:
            self.placed = self._place()
            return False
        try:
            gone = self._first_gone(now)
        except IptablesError as exc:
            log.warning("could not look for the iptables canary", error=str(exc))
            return False
        if gone is None:
            return False
        self.vanished += 1
        log.warning(
            "iptables canary gone: the rules were flushed from outside; resyncing fully",
            table=gone,
            chain=KUBE_PROXY_CANARY,
        )
        self.placed = self._place()
        return True

    def _first_gone(self, now: float) -> str | None:
        # The small tables first: on iptables-legacy a look reads the whole table from the
        # kernel, 5 ms for mangle or filter but 330 ms for nat at 10 000 Services, so nat gets
        # one look: the jump from PREROUTING to KUBE-SERVICES, which a flush of the table
        # (`-F`, with or without `-X`) removes while it leaves an empty canary in place.
        for table in ("mangle", "filter"):
            if not self.kernel.chain_exists(table, KUBE_PROXY_CANARY):
                return table
        if not self.synced_once or now < self.next_nat_look:
            return None
        started = self.clock()
        prerouting = self.kernel.chain_rules("nat", "PREROUTING") or []
        cost = self.clock() - started
        # Looks come every `interval`: the next look into nat is the first one past the budget.
        self.next_nat_look = now + max(0.0, cost / NAT_LOOK_BUDGET - self.interval)
        if not any(NAT_ENTRY in rule for rule in prerouting):
            return "nat"
        return None

    def _place(self) -> bool:
        try:
            for table in CANARY_TABLES:
                self.kernel.ensure_chain(table, KUBE_PROXY_CANARY)
        except IptablesError as exc:
            log.warning("could not set up the iptables canary", error=str(exc))
            return False
        return True
