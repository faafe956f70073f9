"""iptables mode's syncs at the backend: partial ones write what changed and read nothing; full
ones read the kernel and repair only the drift, even for ports whose text the proxy let go."""

from __future__ import annotations

import re

from pykubeproxy.backends.iptables.backend import IptablesBackend
from pykubeproxy.config import Config
from pykubeproxy.model import ProxyState, ServiceName
from tests.support.builders import endpoints, proxy_state, service_port
from tests.support.fakes import FakeIptables

CONFIG = Config(cluster_cidr="10.244.0.0/16")


class CountingIptables(FakeIptables):
    """The fake kernel, counting how often the proxy read it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def save_text(self) -> str:
        self.reads += 1
        return super().save_text()


def cluster(web_endpoints: int = 3, *, extra: bool = False) -> ProxyState:
    entries = [
        (service_port("web", "10.96.0.20"), endpoints("10.244.1.{}", web_endpoints)),
        (service_port("api", "10.96.0.30"), endpoints("10.244.2.{}", 2)),
    ]
    if extra:
        entries.append((service_port("new", "10.96.0.40"), endpoints("10.244.3.{}", 1)))
    return proxy_state(*entries, sort=True)


def written_chains(payload: str) -> set[str]:
    return set(re.findall(r"^:(\S+) - \[0:0\]$", payload, re.MULTILINE))


def test_a_partial_sync_writes_only_the_changed_services_chains_without_reading_the_kernel() -> (
    None
):
    kernel = CountingIptables()
    backend = IptablesBackend(CONFIG, kernel)
    backend.sync(cluster(), full=True)
    reads = kernel.reads

    outcome = backend.sync(
        cluster(web_endpoints=4), changed=frozenset({ServiceName("default", "web")})
    )

    assert not outcome.full and kernel.reads == reads
    chains = written_chains(kernel.written[-1])
    assert chains and all(c.startswith(("KUBE-SVC-", "KUBE-SEP-")) for c in chains)
    # web's SVC chain and the one new endpoint's SEP chain; nothing of api, no shared chain
    assert len(chains) == 2
    api_chains = {
        c for c in kernel.tables["nat"] if "10.244.2." in "".join(kernel.tables["nat"][c])
    }
    assert not chains & api_chains


def test_a_partial_sync_with_nothing_changed_writes_and_reads_nothing() -> None:
    kernel = CountingIptables()
    backend = IptablesBackend(CONFIG, kernel)
    backend.sync(cluster(), full=True)
    reads, writes = kernel.reads, len(kernel.written)

    outcome = backend.sync(cluster(), changed=frozenset())

    assert not outcome.wrote and kernel.reads == reads and len(kernel.written) == writes


def test_an_added_service_edits_kube_services_or_writes_its_own_chains_only() -> None:
    kernel = CountingIptables()
    backend = IptablesBackend(CONFIG, kernel)
    backend.sync(cluster(), full=True)

    backend.sync(cluster(extra=True), changed=frozenset({ServiceName("default", "new")}))

    payload = kernel.written[-1]
    assert all("10.244.1." not in line and "10.244.2." not in line for line in payload.splitlines())
    assert "10.96.0.40/32" in payload


def test_a_full_sync_repairs_drift_it_did_not_cause_in_a_port_it_keeps_only_as_digests() -> None:
    kernel = CountingIptables()
    backend = IptablesBackend(CONFIG, kernel)
    backend.sync(cluster(), full=True)
    backend.sync(cluster(), changed=frozenset())  # every port now cached as digests
    want = kernel.save_text()
    sep = next(c for c in kernel.tables["nat"] if c.startswith("KUBE-SEP-"))
    kernel.flush_chain("nat", sep)
    kernel.delete_rule("nat", "PREROUTING", 1)

    repair = backend.sync(cluster(), full=True)

    assert repair.full and repair.chains_written == 1
    assert kernel.save_text() == want


def test_a_full_sync_on_an_undisturbed_kernel_writes_nothing() -> None:
    kernel = CountingIptables()
    backend = IptablesBackend(CONFIG, kernel)
    backend.sync(cluster(), full=True)
    writes = len(kernel.written)

    again = backend.sync(cluster(), full=True)

    assert again.full and not again.wrote and len(kernel.written) == writes


def test_the_rules_shown_after_a_sync_are_rendered_again_in_full() -> None:
    backend = IptablesBackend(CONFIG, FakeIptables())
    backend.sync(cluster(), full=True)
    outcome = backend.sync(cluster(), changed=frozenset())

    text = outcome.desired.text()

    assert "--to-destination 10.244.1.1:8080" in text
    nat = text[text.index("*nat") :]
    assert outcome.desired.rule_counts()["nat"] == nat.count("\n-A ")
