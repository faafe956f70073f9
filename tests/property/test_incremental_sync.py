"""Partial syncs, patched from the last one, leave the kernel as a sync from scratch would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pykubeproxy.backends.iptables.backend import IptablesBackend
from pykubeproxy.config import Config
from pykubeproxy.model import Endpoint, ProxyState, ServiceName
from tests.support.builders import NODE, service_port
from tests.support.fakes import FakeIptables

CONFIG = Config(cluster_cidr="10.244.0.0/16")
NAMES = [f"svc{i}" for i in range(8)]

# One step: (Service index, endpoint count or None to delete it, whether it is a NodePort)
steps = st.lists(
    st.tuples(st.integers(0, 7), st.one_of(st.none(), st.integers(0, 4)), st.booleans()),
    min_size=1,
    max_size=12,
)


def state_of(services: dict[int, tuple[int, bool]]) -> ProxyState:
    ports, eps = [], {}
    for i, (count, node_port) in sorted(services.items()):
        port = service_port(NAMES[i], f"10.96.0.{10 + i}", node_port=30000 + i if node_port else 0)
        ports.append(port)
        eps[port.name] = tuple(Endpoint(f"10.244.{i}.{n}", 8080) for n in range(1, count + 1))
    return ProxyState(node=NODE, services=tuple(ports), endpoints=eps)


def owned(kernel: FakeIptables) -> dict[tuple[str, str], list[str]]:
    return {
        (table, chain): rules
        for table, chains in kernel.tables.items()
        for chain, rules in chains.items()
        if chain.startswith("KUBE-") or rules
    }


@settings(max_examples=60, deadline=None)
@given(steps)
def test_partial_syncs_after_any_changes_hold_what_a_fresh_sync_writes(
    changes: list[tuple[int, int | None, bool]],
) -> None:
    services = {i: (2, i % 3 == 0) for i in range(0, 8, 2)}
    kernel = FakeIptables()
    backend = IptablesBackend(CONFIG, kernel)
    backend.sync(state_of(services), full=True)
    for index, count, node_port in changes:
        if count is None:
            services.pop(index, None)
        else:
            services[index] = (count, node_port)
        backend.sync(state_of(services), changed=frozenset({ServiceName("default", NAMES[index])}))

    fresh = FakeIptables()
    state = state_of(services)
    IptablesBackend(CONFIG, fresh).sync(state, full=True)
    assert owned(kernel) == owned(fresh)
    # Nothing drifted: a full sync finds nothing to write.
    assert not backend.sync(state, full=True).wrote
