"""Reading untrusted API JSON: every field checked, anything wrong → InvalidObject with a reason.

translate.py reads each object through these. They run for every field of every object at start
(20 000 objects at 10 000 Services), so the well-formed case takes a short path (an exact type
check, a canonical IPv4 address matched by pattern, enums by table lookup) and anything else
falls through to the general check, which words the reason. The result is the same either way.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple, TypeVar

from pykubeproxy.model import Protocol, Skipped, TrafficPolicy

FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}

T = TypeVar("T")

_EMPTY: Mapping[str, object] = MappingProxyType({})
_PROTOCOLS = {protocol.value: protocol for protocol in Protocol}
_POLICIES = {
    "Cluster": TrafficPolicy.CLUSTER,
    "Local": TrafficPolicy.LOCAL,
    "Global": TrafficPolicy.CLUSTER,  # the pre-1.21 spelling of Cluster
}


class InvalidObject(ValueError):
    """An API object that cannot be programmed; the message says why."""


class ObjectRef(NamedTuple):
    """An object as skip reasons name it (a NamedTuple: one is made for every object)."""

    kind: str
    namespace: str
    name: str

    def skipped(self, reason: str, *, invalid: bool = False) -> Skipped:
        return Skipped(self.kind, self.namespace, self.name, reason, invalid)


def field(obj: Mapping[str, object], key: str, kind: type[T], default: T) -> T:
    value = obj.get(key)
    if value is None:
        return default
    # bool is an int in Python, never in JSON schemas.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidObject(f"{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def mapping(obj: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = obj.get(key)
    if type(value) is dict:
        return value
    return field(obj, key, dict, _EMPTY)


def items(obj: Mapping[str, object], key: str) -> list[object]:
    value = obj.get(key)
    if type(value) is list:
        return value
    return field(obj, key, list, [])


def str_map(obj: Mapping[str, object], key: str) -> dict[str, str]:
    raw = mapping(obj, key)
    return {str(k): str(v) for k, v in raw.items()} if raw else {}


def port(value: int, what: str, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise InvalidObject(f"{what} {value} is out of range ({low}-65535)")
    return value


def protocol(value: str) -> Protocol:
    found = _PROTOCOLS.get(value)
    if found is None:
        raise InvalidObject(f"unknown protocol {value!r} (want TCP, UDP or SCTP)")
    return found


def traffic_policy(spec: Mapping[str, object], key: str) -> TrafficPolicy:
    value = field(spec, key, str, "Cluster")
    found = _POLICIES.get(value)
    if found is None:
        raise InvalidObject(f"{key} {value!r} is neither Cluster nor Local")
    return found


# A canonical dotted quad (no leading zeros, ASCII digits): exactly the IPv4 text that
# ipaddress accepts and prints back unchanged, so it needs no parsing.
_CANONICAL_IPV4 = re.compile(
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    r"(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"
)


@functools.lru_cache(maxsize=4096)
def _parse_address(value: str) -> tuple[int, str] | None:
    # Only what the pattern above does not take (IPv6, odd spellings) comes here; the same
    # few strings recur (a dual-stack Service's IPv6 cluster IP at every re-translation).
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    return ip.version, str(ip)


def address(value: object, what: str) -> tuple[int, str]:
    """The IP version of an address and its canonical text."""
    if type(value) is str and _CANONICAL_IPV4.fullmatch(value):
        return 4, value
    if not isinstance(value, str):
        raise InvalidObject(f"{what} must be a string")
    parsed = _parse_address(value)
    if parsed is None:
        raise InvalidObject(f"{what} {value!r} is not an IP address")
    return parsed


def object_ref(kind: str, obj: object) -> ObjectRef:
    if not isinstance(obj, dict):
        raise InvalidObject(f"{kind} document is a {type(obj).__name__}, not an object")
    meta = mapping(obj, "metadata")
    name = field(meta, "name", str, "")
    if not name:
        raise InvalidObject(f"{kind} has no metadata.name")
    return ObjectRef(kind, field(meta, "namespace", str, "default"), name)


def describe(kind: str, obj: object) -> ObjectRef:
    """What to call an object in a skip reason, even one too broken to have a name."""
    try:
        return object_ref(kind, obj)
    except InvalidObject:
        return ObjectRef(kind, "", "(unnamed)")


# The API only accepts DNS labels for namespaces, Service names and port names; anything else
# (from a file) would end up in rule comments and make iptables-restore refuse the whole ruleset.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def dns_label(value: str, what: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise InvalidObject(f"{what} {value!r} is not a DNS label (a-z, 0-9, '-'; at most 63)")
    return value
