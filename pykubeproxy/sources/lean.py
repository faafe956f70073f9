"""What the proxy keeps of each API object: the fields something in it reads, nothing else.

Both sources pass every object through `slim` before the store sees it (the reflector each item
of a LIST page as the page is decoded, and each WATCH event; the manifest reader each document),
so the cluster is held once, in this lean form: no managedFields, selectors, targetRefs, uids,
other labels and annotations, Node images or conditions. A field that is there but malformed (a
string where a list belongs) is kept as it is, so translate rejects it with the same reason.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Literal

from pykubeproxy.api import (
    ANNOTATION_TRIGGER_TIME,
    LABEL_HEADLESS,
    LABEL_SERVICE_NAME,
    LABEL_SERVICE_PROXY_NAME,
)

# A shape says what to keep of a value: KEEP keeps it whole; SHARED too, and a string that
# thousands of objects repeat (a protocol, a policy, a node name, a zone, a namespace) is kept as
# one shared copy; a dict keeps those keys of a JSON object (each by its own shape); a one-item
# list keeps a JSON array, each item by that shape.
KEEP = None
SHARED: Literal["shared"] = "shared"
Shape = Mapping[str, "Shape"] | list["Shape"] | Literal["shared"] | None


def _keep(*keys: str) -> dict[str, Shape]:
    return dict.fromkeys(keys, KEEP)


def _shared(*keys: str) -> dict[str, Shape]:
    return dict.fromkeys(keys, SHARED)


_METADATA: dict[str, Shape] = {
    **_keep("name", "resourceVersion", "deletionTimestamp"),
    **_shared("namespace"),
    # kube-proxy's informers drop objects with these; translate skips them with the reason.
    "labels": _keep(LABEL_SERVICE_PROXY_NAME, LABEL_HEADLESS),
}

SHAPES: Mapping[str, Shape] = {
    "Service": {
        "kind": KEEP,
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
        **_keep("kind"),
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
                "conditions": _keep("ready", "serving", "terminating"),
                "hints": {"forZones": [_keep("name")]},
            }
        ],
        "ports": [{**_keep("port"), **_shared("name", "protocol")}],
    },
    "Node": {
        "kind": KEEP,
        # Every label: topology-aware routing reads the node's zone label, and more may come.
        "metadata": {**_METADATA, "labels": KEEP},
        "spec": {**_keep("podCIDR", "podCIDRs"), "taints": [_keep("key", "value", "effect")]},
        "status": {"addresses": [_keep("type", "address")]},
    },
}


def _prune(value: object, shape: Shape) -> object:
    if shape is None:
        return value
    if isinstance(shape, str):  # SHARED; interned strings are freed like any other
        return sys.intern(value) if type(value) is str else value
    if isinstance(shape, list):
        if type(value) is not list:
            return value
        item = shape[0]
        return [_prune(each, item) for each in value]
    if type(value) is not dict:
        return value
    kept = {}
    # The shape's own key strings: one copy of each key for the whole cluster.
    for key, sub in shape.items():
        if key in value:
            field = value[key]
            # Leaves inline (most of what is kept is whole values or shared strings).
            if sub is None:
                kept[key] = field
            elif sub is SHARED:
                kept[key] = sys.intern(field) if type(field) is str else field
            else:
                kept[key] = _prune(field, sub)
    return kept


def slim(kind: str, obj: object) -> object:
    """The parts of an API object of `kind` the proxy reads (anything not an object: as it is)."""
    return _prune(obj, SHAPES.get(kind, KEEP))
