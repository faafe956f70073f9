"""The incremental Translator against a translation from scratch, over random sequences of
changes to the store (well-formed, malformed, Services and slices coming, changing and going,
the node changing), with syncs in between: after every sync the two are equal."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pykubeproxy.pipeline import NodeIdentity, Translator, translate_snapshot
from pykubeproxy.store import Store

from .test_property import endpoint_slice, malformed, matching_slice, service

# A few names, so that changes hit objects already there as often as they add new ones.
NAMES = st.sampled_from(["web", "api", "db"])
NAMESPACES = st.sampled_from(["shop", "default", None])


@st.composite
def named(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A Service or EndpointSlice (maybe malformed) with a name from a small set."""
    if kind == "Service":
        obj = copy.deepcopy(draw(service))
        obj["metadata"]["name"] = draw(NAMES)
    else:
        base = draw(st.one_of(endpoint_slice, service.flatmap(matching_slice)))
        obj = copy.deepcopy(base)
        obj["metadata"]["name"] = draw(st.sampled_from(["s-1", "s-2", "s-3", "s-4"]))
        obj["metadata"]["labels"]["kubernetes.io/service-name"] = draw(NAMES)
    namespace = draw(NAMESPACES)
    if namespace is None:
        obj["metadata"].pop("namespace", None)
    else:
        obj["metadata"]["namespace"] = namespace
    if draw(st.integers(0, 4)) == 0:
        mangled = draw(malformed(st.just(obj)))
        if isinstance(mangled, dict):
            return mangled
    return obj


nodes = st.builds(
    lambda name, ip, zone: {
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    },
    st.sampled_from(["node-1", "node-2"]),
    st.sampled_from(["192.0.2.10", "192.0.2.11"]),
    st.sampled_from(["zone-a", "zone-b"]),
)

kinds = st.sampled_from(["Service", "EndpointSlice"])
operations = st.one_of(
    st.tuples(st.just("upsert"), kinds).flatmap(lambda t: st.tuples(*map(st.just, t), named(t[1]))),
    st.tuples(
        st.just("delete"),
        kinds,
        st.tuples(NAMESPACES, st.sampled_from(["web", "api", "db", "s-1", "s-2", "s-3", "s-4"])),
    ),
    st.tuples(st.just("replace"), kinds).flatmap(
        lambda t: st.tuples(*map(st.just, t), st.lists(named(t[1]), max_size=4))
    ),
    st.tuples(st.just("node"), st.just("Node"), st.lists(nodes, max_size=2)),
    st.tuples(st.just("sync"), st.just(""), st.none()),
)


def apply(store: Store, operation: tuple[str, str, Any]) -> None:
    action, kind, arg = operation
    if action == "upsert":
        store.upsert(kind, copy.deepcopy(arg))
    elif action == "delete":
        namespace, name = arg
        store.delete(kind, {"metadata": {"name": name, "namespace": namespace or ""}})
    elif action in ("replace", "node"):
        store.replace(kind, copy.deepcopy(arg))


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(operations, min_size=1, max_size=25),
    explicit=st.booleans(),
)
def test_the_translator_equals_a_translation_from_scratch_after_any_changes(
    steps: list[tuple[str, str, Any]], explicit: bool
) -> None:
    store, identity = Store(), NodeIdentity("node-1", explicit)
    translator = Translator(identity)
    for step in [*steps, ("sync", "", None)]:
        if step[0] != "sync":
            apply(store, step)
            continue
        snapshot = store.snapshot()
        result = translator.translate(snapshot)
        assert result.state == translate_snapshot(snapshot, identity).state
        assert result.state.skipped == translate_snapshot(snapshot, identity).state.skipped
