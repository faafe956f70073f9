# The translate module as it was before the fast path and the incremental translator
# (commit 7022d8d, pykubeproxy/translate.py), kept unchanged as an oracle: the property tests
# check that today's translate gives the same ProxyState and the same reasons on any input.
# ruff: noqa
# mypy: ignore-errors
"""Every Kubernetes semantic kube-proxy applies: API JSON and this node → a ProxyState.

The input is untrusted decoded JSON (from files or the API). Each object is checked on its own;
an invalid one is skipped with a reason and never stops the others from being programmed. The
fields read are those pykubeproxy.api's TypedDicts describe; each is checked, never trusted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pykubeproxy.api import LABEL_HEADLESS, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME
from pykubeproxy.model import (
    Endpoint,
    Node,
    Protocol,
    ProxyState,
    ServicePort,
    ServicePortName,
    Skipped,
    TrafficPolicy,
)

DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, the API default for ClientIP affinity
MAX_AFFINITY_TIMEOUT = 86400

SERVICE_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"})
FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}

T = TypeVar("T")


class InvalidObject(ValueError):
    """An API object that cannot be programmed; the message says why."""


@dataclass(frozen=True, slots=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str

    def skipped(self, reason: str, *, invalid: bool = False) -> Skipped:
        return Skipped(self.kind, self.namespace, self.name, reason, invalid)


# --- field access for untrusted JSON -------------------------------------------------------


def _field(obj: Mapping[str, object], key: str, kind: type[T], default: T) -> T:
    value = obj.get(key)
    if value is None:
        return default
    # bool is an int in Python, never in JSON schemas.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidObject(f"{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _mapping(obj: Mapping[str, object], key: str) -> Mapping[str, object]:
    return _field(obj, key, dict, {})


def _list(obj: Mapping[str, object], key: str) -> list[object]:
    return _field(obj, key, list, [])


def _str_map(obj: Mapping[str, object], key: str) -> dict[str, str]:
    raw = _mapping(obj, key)
    return {str(k): str(v) for k, v in raw.items()}


def _port(value: int, what: str, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise InvalidObject(f"{what} {value} is out of range ({low}-65535)")
    return value


def _protocol(value: str) -> Protocol:
    try:
        return Protocol(value)
    except ValueError:
        raise InvalidObject(f"unknown protocol {value!r} (want TCP, UDP or SCTP)") from None


def _ip(value: object, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str):
        raise InvalidObject(f"{what} must be a string")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise InvalidObject(f"{what} {value!r} is not an IP address") from None


def _object_ref(kind: str, obj: object) -> ObjectRef:
    if not isinstance(obj, dict):
        raise InvalidObject(f"{kind} document is a {type(obj).__name__}, not an object")
    meta = _mapping(obj, "metadata")
    name = _field(meta, "name", str, "")
    if not name:
        raise InvalidObject(f"{kind} has no metadata.name")
    return ObjectRef(kind, _field(meta, "namespace", str, "default"), name)


# The API only accepts DNS labels for namespaces, Service names and port names; anything else
# (from a file) would end up in rule comments and make iptables-restore refuse the whole ruleset.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _dns_label(value: str, what: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise InvalidObject(f"{what} {value!r} is not a DNS label (a-z, 0-9, '-'; at most 63)")
    return value


def _not_proxied_reason(labels: Mapping[str, str]) -> str | None:
    if LABEL_SERVICE_PROXY_NAME in labels:
        return f"labelled {LABEL_SERVICE_PROXY_NAME}={labels[LABEL_SERVICE_PROXY_NAME]}"
    if LABEL_HEADLESS in labels:
        return f"labelled {LABEL_HEADLESS}"
    return None


# --- Services ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ServiceAddresses:
    cluster_ip: str
    external_ips: tuple[str, ...]
    load_balancer_ips: tuple[str, ...]
    source_ranges: tuple[str, ...]


def _pick_family(values: Iterable[str], what: str, family: int, notes: list[str]) -> list[str]:
    picked = []
    for value in values:
        ip = _ip(value, what)
        if ip.version == family:
            picked.append(str(ip))
        else:
            notes.append(f"{what} {value} is {FAMILY_NAMES[ip.version]}; ignored in this cluster")
    return picked


def _cluster_ip(spec: Mapping[str, object], family: int) -> str | None:
    """The Service's cluster IP of our family; None when the Service is headless."""
    ips = [str(v) for v in _list(spec, "clusterIPs")] or [_field(spec, "clusterIP", str, "")]
    if ips[0] == "None":
        return None
    if not ips[0]:
        raise InvalidObject("has no cluster IP")
    for value in ips:
        if _ip(value, "clusterIP").version == family:
            return str(ipaddress.ip_address(value))
    raise InvalidObject(
        f"has no {FAMILY_NAMES[family]} cluster IP ({', '.join(ips)}); "
        f"this proxy programs {FAMILY_NAMES[family]} only"
    )


def _load_balancer_ips(obj: Mapping[str, object], family: int, notes: list[str]) -> list[str]:
    ingress = _list(_mapping(_mapping(obj, "status"), "loadBalancer"), "ingress")
    values = []
    for entry in ingress:
        if not isinstance(entry, dict):
            raise InvalidObject("status.loadBalancer.ingress entries must be objects")
        ip = _field(entry, "ip", str, "")
        # ipMode Proxy: the load balancer delivers to the node itself, so we must not capture it.
        if ip and _field(entry, "ipMode", str, "VIP") != "Proxy":
            values.append(ip)
    return _pick_family(values, "load balancer IP", family, notes)


def _source_ranges(spec: Mapping[str, object], family: int, notes: list[str]) -> list[str]:
    ranges = []
    for value in _list(spec, "loadBalancerSourceRanges"):
        try:
            net = ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            raise InvalidObject(f"loadBalancerSourceRanges entry {value!r} is not a CIDR") from None
        if net.version == family:
            ranges.append(str(net))
        else:
            notes.append(f"loadBalancerSourceRanges entry {value} is another IP family; ignored")
    return ranges


def _traffic_policy(spec: Mapping[str, object], key: str) -> TrafficPolicy:
    value = _field(spec, key, str, "Cluster")
    if value == "Global":  # the pre-1.21 spelling of Cluster
        return TrafficPolicy.CLUSTER
    try:
        return TrafficPolicy(value)
    except ValueError:
        raise InvalidObject(f"{key} {value!r} is neither Cluster nor Local") from None


def _affinity_timeout(spec: Mapping[str, object]) -> int | None:
    affinity = _field(spec, "sessionAffinity", str, "None")
    if affinity == "None":
        return None
    if affinity != "ClientIP":
        raise InvalidObject(f"sessionAffinity {affinity!r} is neither None nor ClientIP")
    client_ip = _mapping(_mapping(spec, "sessionAffinityConfig"), "clientIP")
    timeout = _field(client_ip, "timeoutSeconds", int, DEFAULT_AFFINITY_TIMEOUT)
    if not 1 <= timeout <= MAX_AFFINITY_TIMEOUT:
        raise InvalidObject(f"session affinity timeout {timeout} is out of range (1-86400)")
    return timeout


def _service_port_specs(
    ref: ObjectRef, spec: Mapping[str, object], service_type: str
) -> list[tuple[ServicePortName, int, int]]:
    ports = _list(spec, "ports")
    if not ports:
        raise InvalidObject("has no ports")
    result = []
    seen: set[str] = set()
    for index, raw in enumerate(ports):
        if not isinstance(raw, dict):
            raise InvalidObject(f"ports[{index}] is not an object")
        port_name = _field(raw, "name", str, "")
        if port_name:
            _dns_label(port_name, f"ports[{index}].name")
        if port_name in seen:
            raise InvalidObject(f"duplicate port name {port_name!r}")
        seen.add(port_name)
        protocol = _protocol(_field(raw, "protocol", str, "TCP"))
        port = _port(_field(raw, "port", int, 0), f"ports[{index}].port")
        node_port = _port(_field(raw, "nodePort", int, 0), "nodePort", allow_zero=True)
        if service_type not in ("NodePort", "LoadBalancer"):
            node_port = 0
        name = ServicePortName(ref.namespace, ref.name, port_name, protocol)
        result.append((name, port, node_port))
    return result


def translate_service(obj: object, *, family: int = 4) -> tuple[list[ServicePort], list[Skipped]]:
    """The ServicePorts of one Service, and notes on what was left out.

    Raises InvalidObject when the Service as a whole cannot be programmed.
    """
    ref = _object_ref("Service", obj)
    assert isinstance(obj, dict)
    labels = _str_map(_mapping(obj, "metadata"), "labels")
    if reason := _not_proxied_reason(labels):
        return [], [ref.skipped(reason)]
    _dns_label(ref.namespace, "namespace")
    _dns_label(ref.name, "name")
    spec = _mapping(obj, "spec")
    service_type = _field(spec, "type", str, "ClusterIP")
    if service_type not in SERVICE_TYPES:
        raise InvalidObject(f"unknown type {service_type!r}")
    if service_type == "ExternalName":
        return [], [ref.skipped("type ExternalName is answered by DNS, not proxied")]
    cluster_ip = _cluster_ip(spec, family)
    if cluster_ip is None:
        return [], [ref.skipped("headless (clusterIP None) is answered by DNS, not proxied")]

    notes: list[str] = []
    is_lb = service_type == "LoadBalancer"
    addresses = _ServiceAddresses(
        cluster_ip=cluster_ip,
        external_ips=tuple(
            _pick_family((str(v) for v in _list(spec, "externalIPs")), "externalIP", family, notes)
        ),
        load_balancer_ips=tuple(_load_balancer_ips(obj, family, notes) if is_lb else ()),
        source_ranges=tuple(_source_ranges(spec, family, notes) if is_lb else ()),
    )
    external_policy = _traffic_policy(spec, "externalTrafficPolicy")
    health_check_node_port = 0
    if is_lb and external_policy is TrafficPolicy.LOCAL:
        health_check_node_port = _port(
            _field(spec, "healthCheckNodePort", int, 0), "healthCheckNodePort", allow_zero=True
        )
    internal_policy = _traffic_policy(spec, "internalTrafficPolicy")
    affinity_timeout = _affinity_timeout(spec)
    ports = [
        ServicePort(
            name=name,
            cluster_ip=addresses.cluster_ip,
            port=port,
            node_port=node_port,
            external_ips=addresses.external_ips,
            load_balancer_ips=addresses.load_balancer_ips,
            load_balancer_source_ranges=addresses.source_ranges,
            external_traffic_policy=external_policy,
            internal_traffic_policy=internal_policy,
            health_check_node_port=health_check_node_port,
            affinity_timeout=affinity_timeout,
        )
        for name, port, node_port in _service_port_specs(ref, spec, service_type)
    ]
    return ports, [ref.skipped(note, invalid=True) for note in notes]


# --- EndpointSlices ------------------------------------------------------------------------


def _condition(conditions: Mapping[str, object], key: str, default: bool) -> bool:
    value = conditions.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidObject(f"conditions.{key} must be a boolean")
    return value


def _hint_names(hints: Mapping[str, object], kind: str) -> tuple[str, ...]:
    return tuple(
        sorted({str(h.get("name", "")) for h in _list(hints, kind) if isinstance(h, dict)})
    )


def _slice_endpoint(raw: object, *, family: int, node_name: str, port: int) -> Endpoint | None:
    if not isinstance(raw, dict):
        raise InvalidObject("endpoints entries must be objects")
    addresses = _list(raw, "addresses")
    if not addresses:
        return None  # kube-proxy ignores endpoints without addresses
    ip = _ip(addresses[0], "endpoint address")
    if ip.version != family:
        raise InvalidObject(f"endpoint address {ip} is not {FAMILY_NAMES[family]}")
    conditions = _mapping(raw, "conditions")
    endpoint_node = raw.get("nodeName")
    hints = _mapping(raw, "hints")
    return Endpoint(
        ip=str(ip),
        port=port,
        ready=_condition(conditions, "ready", True),
        serving=_condition(conditions, "serving", True),
        terminating=_condition(conditions, "terminating", False),
        is_local=bool(node_name) and endpoint_node == node_name,
        node_name=endpoint_node if isinstance(endpoint_node, str) else None,
        zone=_field(raw, "zone", str, "") or None,
        zone_hints=_hint_names(hints, "forZones"),
        node_hints=_hint_names(hints, "forNodes"),
    )


@dataclass(frozen=True, slots=True)
class SliceEndpoints:
    """What one EndpointSlice contributes: endpoints per Service port."""

    by_port: Mapping[ServicePortName, tuple[Endpoint, ...]]


def translate_endpoint_slice(
    obj: object, *, node_name: str, family: int = 4
) -> tuple[SliceEndpoints | None, list[Skipped]]:
    """The endpoints of one EndpointSlice by Service port; None when it is not ours to use.

    Raises InvalidObject when the slice is malformed.
    """
    ref = _object_ref("EndpointSlice", obj)
    assert isinstance(obj, dict)
    labels = _str_map(_mapping(obj, "metadata"), "labels")
    if reason := _not_proxied_reason(labels):
        return None, [ref.skipped(reason)]
    service = labels.get(LABEL_SERVICE_NAME)
    if not service:
        return None, [ref.skipped(f"has no {LABEL_SERVICE_NAME} label")]
    address_type = _field(obj, "addressType", str, "")
    if address_type != FAMILY_NAMES[family]:
        reason = f"addressType {address_type or '(none)'} is not used in this cluster"
        return None, [ref.skipped(reason)]
    raw_endpoints = _list(obj, "endpoints")
    by_port: dict[ServicePortName, tuple[Endpoint, ...]] = {}
    for index, raw in enumerate(_list(obj, "ports")):
        if not isinstance(raw, dict):
            raise InvalidObject(f"ports[{index}] is not an object")
        port_number = _field(raw, "port", int, 0)
        if not port_number:
            continue  # a port without a number cannot be forwarded to; kube-proxy skips it
        name = ServicePortName(
            ref.namespace,
            service,
            _field(raw, "name", str, ""),
            _protocol(_field(raw, "protocol", str, "TCP")),
        )
        port = _port(port_number, f"ports[{index}].port")
        endpoints = (
            _slice_endpoint(ep, family=family, node_name=node_name, port=port)
            for ep in raw_endpoints
        )
        by_port[name] = tuple(ep for ep in endpoints if ep is not None)
    return SliceEndpoints(by_port), []


def merge_endpoints(
    slices: Iterable[SliceEndpoints],
) -> dict[ServicePortName, tuple[Endpoint, ...]]:
    """Join the slices of each Service: de-duplicated by IP:port, ordered as kube-proxy orders."""
    merged: dict[ServicePortName, dict[str, Endpoint]] = {}
    for slice_endpoints in slices:
        for name, endpoints in slice_endpoints.by_port.items():
            known = merged.setdefault(name, {})
            for endpoint in endpoints:
                key = str(endpoint)
                # The same endpoint may appear in two slices while they are being updated;
                # prefer the copy that says it is on this node, as kube-proxy does.
                if key not in known or endpoint.is_local:
                    known[key] = endpoint
    return {name: tuple(eps[k] for k in sorted(eps)) for name, eps in merged.items()}


# --- Nodes ---------------------------------------------------------------------------------


def translate_node(obj: object, *, family: int = 4) -> Node:
    """This node's name, addresses of our family (InternalIP first) and labels."""
    ref = _object_ref("Node", obj)
    assert isinstance(obj, dict)
    ips: list[str] = []
    for wanted in ("InternalIP", "ExternalIP"):
        for raw in _list(_mapping(obj, "status"), "addresses"):
            if not isinstance(raw, dict) or raw.get("type") != wanted:
                continue
            try:
                ip = ipaddress.ip_address(str(raw.get("address", "")))
            except ValueError:
                continue
            if ip.version == family and str(ip) not in ips:
                ips.append(str(ip))
    labels = _str_map(_mapping(obj, "metadata"), "labels")
    return Node(name=ref.name, ips=tuple(ips), labels=labels)


# --- the whole cluster ---------------------------------------------------------------------


def _describe(kind: str, obj: object) -> ObjectRef:
    try:
        return _object_ref(kind, obj)
    except InvalidObject:
        return ObjectRef(kind, "", "(unnamed)")


def translate_cluster(
    *,
    services: Iterable[object],
    endpoint_slices: Iterable[object],
    node: Node,
    family: int = 4,
) -> ProxyState:
    """The whole ProxyState for this node. Invalid objects are skipped with their reason."""
    skipped: list[Skipped] = []
    ports: dict[ServicePortName, ServicePort] = {}
    for obj in services:
        try:
            service_ports, notes = translate_service(obj, family=family)
        except InvalidObject as exc:
            skipped.append(_describe("Service", obj).skipped(str(exc), invalid=True))
            continue
        skipped.extend(notes)
        ports.update((p.name, p) for p in service_ports)
    slices = []
    for obj in endpoint_slices:
        try:
            result, notes = translate_endpoint_slice(obj, node_name=node.name, family=family)
        except InvalidObject as exc:
            skipped.append(_describe("EndpointSlice", obj).skipped(str(exc), invalid=True))
            continue
        skipped.extend(notes)
        if result is not None:
            slices.append(result)
    return ProxyState(
        node=node,
        services=tuple(ports[name] for name in sorted(ports)),
        endpoints=merge_endpoints(slices),
        skipped=tuple(skipped),
    )
