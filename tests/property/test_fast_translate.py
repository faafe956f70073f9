"""The fast path of translate gives exactly what translate gave before it (kept in
tests/support/reference_translate.py): the same ports, endpoints in the same order, and the same
skip reasons, word for word, on well-formed, malformed and garbage input."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pykubeproxy.model import Node
from pykubeproxy.translate import translate_cluster
from tests.support import reference_translate as reference

from .test_property import clusters

NODES = st.sampled_from([Node(name="node-1", ips=("192.0.2.10",)), Node(name="")])


@settings(max_examples=600, deadline=None)
@given(cluster=clusters(), node=NODES)
def test_translate_equals_the_reference_translate_on_any_input(
    cluster: dict[str, list[Any]], node: Node
) -> None:
    args = {
        "services": cluster["services"],
        "endpoint_slices": cluster["endpoint_slices"],
        "node": node,
    }
    assert translate_cluster(**args) == reference.translate_cluster(**args)


@settings(max_examples=300, deadline=None)
@given(cluster=clusters())
def test_endpoints_listed_twice_merge_as_the_reference_merges(
    cluster: dict[str, list[Any]],
) -> None:
    # Every slice twice, once in reverse order: duplicates across slices on every run.
    slices = [*cluster["endpoint_slices"], *reversed(cluster["endpoint_slices"])]
    node = Node(name="node-1")
    ours = translate_cluster(services=cluster["services"], endpoint_slices=slices, node=node)
    theirs = reference.translate_cluster(
        services=cluster["services"], endpoint_slices=slices, node=node
    )
    assert ours == theirs
