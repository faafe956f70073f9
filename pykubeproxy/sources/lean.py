"""What the proxy keeps of each API object: the fields something in it reads, nothing else.

Both sources pass every object through `slim` before the store sees it (the reflector each item
of a LIST page as the page is decoded, and each WATCH event; the manifest reader each document),
so the cluster is held once, in this lean form: no managedFields, selectors, targetRefs, uids,
other labels and annotations, Node images or conditions. Nor kind and apiVersion: the store
knows the kind, and WATCH events carry them where LIST items do not, which would make an
object read both ways look changed. A field that is there but malformed (a string where a list
belongs) is kept as it is, so translate rejects it with the same reason.

Parts that many objects repeat are shared between them (short strings, endpoint conditions):
like every object in the store, a slim object is never changed once made.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import Literal

from pykubeproxy.api import (
    ANNOTATION_TRIGGER_TIME,
    LABEL_HEADLESS,
    LABEL_SERVICE_NAME,
    LABEL_SERVICE_PROXY_NAME,
)

# A shape says what to keep of a value: KEEP keeps it whole; SHARED too, and a string that
# thousands of objects repeat (a protocol, a policy, a node name, a zone, a namespace) is kept as
# one shared copy; a dict keeps those keys of a JSON object (each by its own shape), and leaves
# the object out if none is there (every reader takes a missing object for an empty one); a
# one-item list keeps a JSON array, each item by that shape; a function returns what to keep.
KEEP = None
SHARED: Literal["shared"] = "shared"
Shape = (
    Mapping[str, "Shape"] | list["Shape"] | Literal["shared"] | Callable[[object], object] | None
)


def _keep(*keys: str) -> dict[str, Shape]:
    return dict.fromkeys(keys, KEEP)


def _shared(*keys: str) -> dict[str, Shape]:
    return dict.fromkeys(keys, SHARED)


# One copy of each combination of endpoint conditions (true, false, null or absent: at most 64),
# instead of a dict per endpoint: almost all are {ready: true, serving: true, terminating: false}.
_CONDITION_KEYS = ("ready", "serving", "terminating")
_ABSENT = object()
_PLAIN = frozenset(map(id, (True, False, None, _ABSENT)))  # by identity: 1 == True
_CONDITIONS: dict[tuple[object, ...], dict[str, object]] = {}


def _shared_conditions(value: object) -> object:
    if type(value) is not dict:
        return value
    found = tuple([value.get(key, _ABSENT) for key in _CONDITION_KEYS])
    plain = _PLAIN.issuperset(map(id, found))
    shared = _CONDITIONS.get(found) if plain else None
    if shared is None:
        shared = {key: v for key, v in zip(_CONDITION_KEYS, found, strict=True) if v is not _ABSENT}
        if plain:
            _CONDITIONS[found] = shared
    return shared


_METADATA: dict[str, Shape] = {
    **_keep("name", "resourceVersion", "deletionTimestamp"),
    **_shared("namespace"),
    # kube-proxy's informers drop objects with these; translate skips them with the reason.
    "labels": _keep(LABEL_SERVICE_PROXY_NAME, LABEL_HEADLESS),
}

SHAPES: Mapping[str, Shape] = {
    "Service": {
        "metadata": _METADATA,
        "spec": {
            **_keep("clusterIP", "clusterIPs", "externalIPs", "loadBalancerSourceRanges"),
            **_keep("healthCheckNodePort", "sessionAffinityConfig"),
            **_shared("type", "externalTrafficPolicy", "internalTrafficPolicy", "sessionAffinity"),
            "ports": [{**_keep("port", "nodePort"), **_shared("name", "protocol")}],
        },
        "status": {"loadBalancer": {"ingress": [_keep("ip", "ipMode")]}},
    },
    "EndpointSlice": {
        **_shared("addressType"),
        "metadata": {
            **_METADATA,
            "labels": _keep(LABEL_SERVICE_PROXY_NAME, LABEL_HEADLESS, LABEL_SERVICE_NAME),
            "annotations": _keep(ANNOTATION_TRIGGER_TIME),  # network programming latency
        },
        "endpoints": [
            {
                **_keep("addresses"),
                **_shared("nodeName", "zone"),
                "conditions": _shared_conditions,
                "hints": {"forZones": [_keep("name")], "forNodes": [_keep("name")]},
            }
        ],
        "ports": [{**_keep("port"), **_shared("name", "protocol")}],
    },
    "Node": {
        # Every label: topology-aware routing reads the node's zone label, and more may come.
        "metadata": {**_METADATA, "labels": KEEP},
        "spec": {**_keep("podCIDR", "podCIDRs"), "taints": [_keep("key", "value", "effect")]},
        "status": {"addresses": [_keep("type", "address")]},
    },
}


# --- shapes compiled into functions, once -----------------------------------------------------

Prune = Callable[[object], object]


def _compile(shape: Shape) -> Prune | None:
    """The function keeping what `shape` says of a value; None: keep the value whole."""
    if shape is None:
        return None
    if isinstance(shape, str):  # SHARED
        return _share
    if callable(shape):
        return shape
    if isinstance(shape, list):
        return partial(_prune_array, _compile(shape[0]))
    plan = tuple(
        (key, _compile(sub), sub is SHARED, not isinstance(sub, list | str))
        for key, sub in shape.items()
    )
    return partial(_prune_object, plan)


def _share(value: object) -> object:
    # Interned strings are freed like any other once nothing holds them.
    return sys.intern(value) if type(value) is str else value


def _prune_array(item: Prune | None, value: object) -> object:
    if type(value) is not list or item is None:
        return value
    return [item(each) for each in value]


# Per key of an object shape: (key, its pruning, whether SHARED, whether its shape is an object).
_Plan = tuple[tuple[str, Prune | None, bool, bool], ...]


def _prune_object(plan: _Plan, value: object) -> object:
    if type(value) is not dict:
        return value
    kept = {}
    # The shape's own key strings: one copy of each key for the whole cluster.
    for key, prune, shared, is_object in plan:
        if key not in value:
            continue
        field = value[key]
        if prune is None:
            kept[key] = field
        elif shared:
            kept[key] = sys.intern(field) if type(field) is str else field
        else:
            pruned = prune(field)
            # An object that kept nothing is left out (a malformed value, say a {} where a list
            # belongs, never is). Metadata stays even when empty: the store keys objects
            # without it apart.
            if is_object and type(field) is dict and not pruned and key != "metadata":
                continue
            kept[key] = pruned
    return kept


_PRUNE: Mapping[str, Prune | None] = {kind: _compile(shape) for kind, shape in SHAPES.items()}


def slim(kind: str, obj: object) -> object:
    """The parts of an API object of `kind` the proxy reads (anything not an object: as it is)."""
    prune = _PRUNE.get(kind)
    return obj if prune is None else prune(obj)
