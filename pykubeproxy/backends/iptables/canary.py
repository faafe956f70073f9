"""The canary chains: empty KUBE-PROXY-CANARY chains whose loss says the rules were wiped.

kube-proxy keeps one in mangle, nat and filter and looks for it every sync period; when it is
gone (a firewalld reload, an `iptables -X`), everything it wrote is presumed gone too, and it
resyncs fully at once. The monitor here is driven by the sync loop's wake-ups with the time
passed in, so that tests step it with a fake clock.
"""

from __future__ import annotations

from pykubeproxy.backends.iptables.chains import CANARY_TABLES, KUBE_PROXY_CANARY
from pykubeproxy.backends.iptables.kernel import Iptables, IptablesError
from pykubeproxy.log import get_logger

log = get_logger("pykubeproxy.canary")


class CanaryMonitor:
    """Places the canaries, then looks for them at most once per `interval` seconds.

    `check` answers True when a canary vanished since the last look: the caller then runs a
    full sync. The canaries are put back first, so the next look sees them again.
    """

    def __init__(self, kernel: Iptables, *, interval: float) -> None:
        self.kernel = kernel
        self.interval = interval
        self.placed = False
        self.next_look: float | None = None
        self.vanished = 0  # times a look found a canary gone

    def check(self, now: float) -> bool:
        if self.next_look is not None and now < self.next_look:
            return False
        self.next_look = now + self.interval
        if not self.placed:
            self.placed = self._place()
            return False
        try:
            gone = [t for t in CANARY_TABLES if not self.kernel.chain_exists(t, KUBE_PROXY_CANARY)]
        except IptablesError as exc:
            log.warning("could not look for the iptables canary", error=str(exc))
            return False
        if not gone:
            return False
        self.vanished += 1
        log.warning(
            "iptables canary gone: the rules were flushed from outside; resyncing fully",
            tables=gone,
            chain=KUBE_PROXY_CANARY,
        )
        self.placed = self._place()
        return True

    def _place(self) -> bool:
        try:
            for table in CANARY_TABLES:
                self.kernel.ensure_chain(table, KUBE_PROXY_CANARY)
        except IptablesError as exc:
            log.warning("could not set up the iptables canary", error=str(exc))
            return False
        return True
