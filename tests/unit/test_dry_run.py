"""--dry-run is the node's own sync against a kernel kept in memory, in every mode."""

from __future__ import annotations

import pytest

from pykubeproxy.backends import SetupError, mode, open_backend
from pykubeproxy.backends.iptables.backend import RenderedRules
from pykubeproxy.backends.iptables.memory import MemoryIptables
from pykubeproxy.config import Config
from pykubeproxy.pipeline import NodeIdentity
from pykubeproxy.proxy import Proxy
from pykubeproxy.sources.files import load_files
from pykubeproxy.store import Store
from tests.support.paths import EXAMPLES


def dry_run_proxy(config: Config) -> tuple[Proxy, Store]:
    store = Store()
    load_files(store, [EXAMPLES])
    proxy = Proxy(backend=open_backend(config, dry_run=True), identity=NodeIdentity("node-1", True))
    return proxy, store


def test_what_the_dry_run_wrote_holds_exactly_the_printed_rules() -> None:
    proxy, store = dry_run_proxy(Config(cluster_cidr="10.244.0.0/16"))

    outcome = proxy.sync(store, full=True)

    kernel = proxy.backend.kernel  # type: ignore[attr-defined]
    assert isinstance(kernel, MemoryIptables)
    assert len(kernel.written) == 1  # one transaction, written while it rendered
    printed = MemoryIptables()
    printed.restore(outcome.desired.text())
    assert kernel.save_text() == printed.save_text()
    assert outcome.full and outcome.wrote
    assert outcome.chains_written == sum(
        1 for table in kernel.save() for chain in table.chains if chain.name.startswith("KUBE-")
    )


def test_what_the_memory_kernel_holds_after_the_dry_run_is_the_printed_ruleset() -> None:
    proxy, store = dry_run_proxy(Config(cluster_cidr="10.244.0.0/16"))

    outcome = proxy.sync(store, full=True)

    assert isinstance(outcome.desired, RenderedRules)
    held = proxy.backend.kernel.save()  # type: ignore[attr-defined]
    for table in outcome.desired.tables().ruleset():
        in_kernel = {
            c.name: c.rules for c in held.table(table.name).chains if c.rules or not c.builtin
        }
        assert in_kernel == {c.name: c.rules for c in table.chains}


def test_a_second_dry_run_sync_finds_nothing_to_write() -> None:
    proxy, store = dry_run_proxy(Config(cluster_cidr="10.244.0.0/16"))
    proxy.sync(store, full=True)

    again = proxy.sync(store, full=False)

    assert not again.wrote and not again.full


def test_ipvs_mode_dry_run_programs_virtual_servers_in_memory() -> None:
    proxy, store = dry_run_proxy(Config(cluster_cidr="10.244.0.0/16", mode="ipvs"))

    outcome = proxy.sync(store, full=True)

    assert outcome.operations  # every virtual server, real server and address was added
    assert outcome.desired.text().startswith("# IPVS virtual servers (ipvsadm -Sn)\n")
    again = proxy.sync(store, full=False)
    assert again.operations == () and not again.wrote


def test_a_mode_this_build_lacks_is_named_with_the_ones_it_has() -> None:
    with pytest.raises(SetupError, match="nftables is not implemented yet; use one of iptables"):
        mode("nftables")
    assert mode("ipvs").name == "ipvs"
