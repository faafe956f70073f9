"""Every Kubernetes semantic kube-proxy applies: API JSON and this node → a ProxyState.

The input is untrusted decoded JSON (from files or the API). Each object is checked on its own;
an invalid one is skipped with a reason and never stops the others from being programmed. The
fields read are those pykubeproxy.api's TypedDicts describe; each is checked (pykubeproxy.fields),
never trusted. Each object translates on its own (`translate_service`,
`translate_endpoint_slice`), so a caller may keep the results and redo only what changed;
`translate_cluster` is the whole cluster from scratch.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pykubeproxy.api import LABEL_HEADLESS, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME
from pykubeproxy.fields import (
    FAMILY_NAMES,
    InvalidObject,
    ObjectRef,
    address,
    describe,
    dns_label,
    field,
    items,
    mapping,
    object_ref,
    port,
    protocol,
    str_map,
    traffic_policy,
)
from pykubeproxy.model import (
    Endpoint,
    Node,
    ProxyState,
    ServiceName,
    ServicePort,
    ServicePortName,
    Skipped,
    TrafficPolicy,
)

__all__ = [
    "InvalidObject",
    "SliceEndpoints",
    "merge_endpoints",
    "port_order",
    "service_of",
    "translate_cluster",
    "translate_endpoint_slice",
    "translate_node",
    "translate_service",
]

DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, the API default for ClientIP affinity
MAX_AFFINITY_TIMEOUT = 86400

SERVICE_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"})


def _not_proxied_reason(labels: Mapping[str, str], proxy_name: str) -> str | None:
    """Why kube-proxy's label selector (or ours, with --service-proxy-name) leaves an object out.

    The API server already applies the selector; manifests from files get the same test here.
    """
    owner = labels.get(LABEL_SERVICE_PROXY_NAME)
    if owner != (proxy_name or None):
        if owner is None:
            return f"not labelled {LABEL_SERVICE_PROXY_NAME}={proxy_name}"
        return f"labelled {LABEL_SERVICE_PROXY_NAME}={owner}"
    if LABEL_HEADLESS in labels:
        return f"labelled {LABEL_HEADLESS}"
    return None


def service_of(kind: str, obj: object) -> ServiceName | None:
    """The Service whose translation an object feeds (a Service itself; an EndpointSlice's by its
    label), named as translation names it; None when the object names none."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return None
    namespace = meta.get("namespace")
    namespace = "default" if namespace is None else namespace
    if not isinstance(namespace, str):
        return None
    if kind == "Service":
        name = meta.get("name")
        return ServiceName(namespace, name) if isinstance(name, str) and name else None
    labels = meta.get("labels")
    if not isinstance(labels, dict) or LABEL_SERVICE_NAME not in labels:
        return None
    service = str(labels[LABEL_SERVICE_NAME])
    return ServiceName(namespace, service) if service else None


def port_order(name: ServicePortName) -> tuple[str, str, str, str]:
    """ServicePortName's own order as a sort key (sorting by it is several times faster)."""
    return (name.namespace, name.name, name.port, name.protocol)


# --- Services ------------------------------------------------------------------------------


def _pick_family(values: Iterable[str], what: str, family: int, notes: list[str]) -> list[str]:
    picked = []
    for value in values:
        version, text = address(value, what)
        if version == family:
            picked.append(text)
        else:
            notes.append(f"{what} {value} is {FAMILY_NAMES[version]}; ignored in this cluster")
    return picked


def _cluster_ip(spec: Mapping[str, object], family: int) -> str | None:
    """The Service's cluster IP of our family; None when the Service is headless."""
    ips = [str(v) for v in items(spec, "clusterIPs")] or [field(spec, "clusterIP", str, "")]
    if ips[0] == "None":
        return None
    if not ips[0]:
        raise InvalidObject("has no cluster IP")
    for value in ips:
        version, text = address(value, "clusterIP")
        if version == family:
            return text
    raise InvalidObject(
        f"has no {FAMILY_NAMES[family]} cluster IP ({', '.join(ips)}); "
        f"this proxy programs {FAMILY_NAMES[family]} only"
    )


def _load_balancer_ips(obj: Mapping[str, object], family: int, notes: list[str]) -> list[str]:
    ingress = items(mapping(mapping(obj, "status"), "loadBalancer"), "ingress")
    values = []
    for entry in ingress:
        if not isinstance(entry, dict):
            raise InvalidObject("status.loadBalancer.ingress entries must be objects")
        ip = field(entry, "ip", str, "")
        # ipMode Proxy: the load balancer delivers to the node itself, so we must not capture it.
        if ip and field(entry, "ipMode", str, "VIP") != "Proxy":
            values.append(ip)
    return _pick_family(values, "load balancer IP", family, notes)


def _source_ranges(spec: Mapping[str, object], family: int, notes: list[str]) -> list[str]:
    ranges = []
    for value in items(spec, "loadBalancerSourceRanges"):
        try:
            net = ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            raise InvalidObject(f"loadBalancerSourceRanges entry {value!r} is not a CIDR") from None
        if net.version == family:
            ranges.append(str(net))
        else:
            notes.append(f"loadBalancerSourceRanges entry {value} is another IP family; ignored")
    return ranges


def _affinity_timeout(spec: Mapping[str, object]) -> int | None:
    affinity = field(spec, "sessionAffinity", str, "None")
    if affinity == "None":
        return None
    if affinity != "ClientIP":
        raise InvalidObject(f"sessionAffinity {affinity!r} is neither None nor ClientIP")
    client_ip = mapping(mapping(spec, "sessionAffinityConfig"), "clientIP")
    timeout = field(client_ip, "timeoutSeconds", int, DEFAULT_AFFINITY_TIMEOUT)
    if not 1 <= timeout <= MAX_AFFINITY_TIMEOUT:
        raise InvalidObject(f"session affinity timeout {timeout} is out of range (1-86400)")
    return timeout


def _service_port_specs(
    ref: ObjectRef, spec: Mapping[str, object], service_type: str
) -> list[tuple[ServicePortName, int, int]]:
    ports = items(spec, "ports")
    if not ports:
        raise InvalidObject("has no ports")
    result = []
    seen: set[str] = set()
    for index, raw in enumerate(ports):
        if not isinstance(raw, dict):
            raise InvalidObject(f"ports[{index}] is not an object")
        port_name = field(raw, "name", str, "")
        if port_name:
            dns_label(port_name, f"ports[{index}].name")
        if port_name in seen:
            raise InvalidObject(f"duplicate port name {port_name!r}")
        seen.add(port_name)
        proto = protocol(field(raw, "protocol", str, "TCP"))
        number = port(field(raw, "port", int, 0), f"ports[{index}].port")
        node_port = port(field(raw, "nodePort", int, 0), "nodePort", allow_zero=True)
        if service_type not in ("NodePort", "LoadBalancer"):
            node_port = 0
        name = ServicePortName(ref.namespace, ref.name, port_name, proto)
        result.append((name, number, node_port))
    return result


def translate_service(
    obj: object, *, family: int = 4, proxy_name: str = ""
) -> tuple[list[ServicePort], list[Skipped]]:
    """The ServicePorts of one Service, and notes on what was left out.

    `proxy_name` (--service-proxy-name): handle only Services labelled with it.
    Raises InvalidObject when the Service as a whole cannot be programmed.
    """
    ref = object_ref("Service", obj)
    assert isinstance(obj, dict)
    labels = str_map(mapping(obj, "metadata"), "labels")
    if reason := _not_proxied_reason(labels, proxy_name):
        return [], [ref.skipped(reason)]
    dns_label(ref.namespace, "namespace")
    dns_label(ref.name, "name")
    spec = mapping(obj, "spec")
    service_type = field(spec, "type", str, "ClusterIP")
    if service_type not in SERVICE_TYPES:
        raise InvalidObject(f"unknown type {service_type!r}")
    if service_type == "ExternalName":
        return [], [ref.skipped("type ExternalName is answered by DNS, not proxied")]
    cluster_ip = _cluster_ip(spec, family)
    if cluster_ip is None:
        return [], [ref.skipped("headless (clusterIP None) is answered by DNS, not proxied")]

    notes: list[str] = []
    is_lb = service_type == "LoadBalancer"
    listed = items(spec, "externalIPs")
    external_ips = tuple(
        _pick_family((str(v) for v in listed), "externalIP", family, notes) if listed else ()
    )
    load_balancer_ips = tuple(_load_balancer_ips(obj, family, notes) if is_lb else ())
    source_ranges = tuple(_source_ranges(spec, family, notes) if is_lb else ())
    external_policy = traffic_policy(spec, "externalTrafficPolicy")
    health_check_node_port = 0
    if is_lb and external_policy is TrafficPolicy.LOCAL:
        health_check_node_port = port(
            field(spec, "healthCheckNodePort", int, 0), "healthCheckNodePort", allow_zero=True
        )
    internal_policy = traffic_policy(spec, "internalTrafficPolicy")
    affinity_timeout = _affinity_timeout(spec)
    ports = [
        ServicePort(
            name=name,
            cluster_ip=cluster_ip,
            port=number,
            node_port=node_port,
            external_ips=external_ips,
            load_balancer_ips=load_balancer_ips,
            load_balancer_source_ranges=source_ranges,
            external_traffic_policy=external_policy,
            internal_traffic_policy=internal_policy,
            health_check_node_port=health_check_node_port,
            affinity_timeout=affinity_timeout,
        )
        for name, number, node_port in _service_port_specs(ref, spec, service_type)
    ]
    return ports, [ref.skipped(note, invalid=True) for note in notes]


# --- EndpointSlices ------------------------------------------------------------------------

# An endpoint as read from its slice, without the port: (address, the rest of Endpoint's fields
# in their order). Read once per endpoint, then made into one Endpoint per port of the slice.
_EndpointFields = tuple[
    str, tuple[bool, bool, bool, bool, str | None, str | None, tuple[str, ...], tuple[str, ...]]
]


def _condition(conditions: Mapping[str, object], key: str, default: bool) -> bool:
    value = conditions.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidObject(f"conditions.{key} must be a boolean")
    return value


def _conditions(conditions: Mapping[str, object]) -> tuple[bool, bool, bool]:
    """(ready, serving, terminating); unset means ready and serving, not terminating."""
    return (
        _condition(conditions, "ready", True),
        _condition(conditions, "serving", True),
        _condition(conditions, "terminating", False),
    )


def _hints(raw: Mapping[str, object], kind: str) -> tuple[str, ...]:
    """The names in hints.forZones or hints.forNodes, each once, as kube-proxy's set of them."""
    hints = items(mapping(raw, "hints"), kind)
    return tuple(sorted({str(h.get("name", "")) for h in hints if isinstance(h, dict)}))


def _endpoint_fields(raw: object, family: int, node_name: str) -> _EndpointFields | None:
    if not isinstance(raw, dict):
        raise InvalidObject("endpoints entries must be objects")
    # Each check takes the exact type first (a dict, a list, three booleans): the common case,
    # without a call; anything else goes to the helper that words the reason.
    addresses = raw.get("addresses")
    if type(addresses) is not list:
        addresses = items(raw, "addresses")
    if not addresses:
        return None  # kube-proxy ignores endpoints without addresses
    version, ip = address(addresses[0], "endpoint address")
    if version != family:
        raise InvalidObject(f"endpoint address {ip} is not {FAMILY_NAMES[family]}")
    conditions = raw.get("conditions")
    if type(conditions) is not dict:
        conditions = mapping(raw, "conditions")
    endpoint_node = raw.get("nodeName")
    zone_hints: tuple[str, ...] = ()
    node_hints: tuple[str, ...] = ()
    if raw.get("hints") is not None:
        zone_hints, node_hints = _hints(raw, "forZones"), _hints(raw, "forNodes")
    ready, serving = conditions.get("ready"), conditions.get("serving")
    terminating = conditions.get("terminating")
    if type(ready) is not bool or type(serving) is not bool or type(terminating) is not bool:
        ready, serving, terminating = _conditions(conditions)
    zone = raw.get("zone")
    return ip, (
        ready,
        serving,
        terminating,
        bool(node_name) and endpoint_node == node_name,
        endpoint_node if isinstance(endpoint_node, str) else None,
        (zone if type(zone) is str else field(raw, "zone", str, "")) or None,
        zone_hints,
        node_hints,
    )


def _read_endpoints(raw: list[object], family: int, node_name: str) -> list[_EndpointFields]:
    """The slice's endpoints, each address once and in kube-proxy's order (see merge_endpoints)."""
    known: dict[str, _EndpointFields] = {}
    for entry in raw:
        fields = _endpoint_fields(entry, family, node_name)
        if fields is None:
            continue
        # With one port number, "ip:port" orders and repeats as "ip:" does, whatever the port.
        key = fields[0] + ":"
        if fields[1][3] or key not in known:  # is_local: the copy on this node wins
            known[key] = fields
    return [known[key] for key in sorted(known)]


@dataclass(frozen=True, slots=True)
class SliceEndpoints:
    """What one EndpointSlice contributes: endpoints per Service port, each endpoint once and in
    kube-proxy's order (so a port that only one slice serves needs no merging)."""

    by_port: Mapping[ServicePortName, tuple[Endpoint, ...]]


def translate_endpoint_slice(
    obj: object, *, node_name: str, family: int = 4, proxy_name: str = ""
) -> tuple[SliceEndpoints | None, list[Skipped]]:
    """The endpoints of one EndpointSlice by Service port; None when it is not ours to use.

    Raises InvalidObject when the slice is malformed.
    """
    ref = object_ref("EndpointSlice", obj)
    assert isinstance(obj, dict)
    labels = str_map(mapping(obj, "metadata"), "labels")
    if reason := _not_proxied_reason(labels, proxy_name):
        return None, [ref.skipped(reason)]
    service = labels.get(LABEL_SERVICE_NAME)
    if not service:
        return None, [ref.skipped(f"has no {LABEL_SERVICE_NAME} label")]
    address_type = field(obj, "addressType", str, "")
    if address_type != FAMILY_NAMES[family]:
        reason = f"addressType {address_type or '(none)'} is not used in this cluster"
        return None, [ref.skipped(reason)]
    raw_endpoints = items(obj, "endpoints")
    read: list[_EndpointFields] | None = None
    by_port: dict[ServicePortName, tuple[Endpoint, ...]] = {}
    for index, raw in enumerate(items(obj, "ports")):
        if not isinstance(raw, dict):
            raise InvalidObject(f"ports[{index}] is not an object")
        port_number = field(raw, "port", int, 0)
        if not port_number:
            continue  # a port without a number cannot be forwarded to; kube-proxy skips it
        name = ServicePortName(
            ref.namespace,
            service,
            field(raw, "name", str, ""),
            protocol(field(raw, "protocol", str, "TCP")),
        )
        number = port(port_number, f"ports[{index}].port")
        if read is None:
            # Read at the first port that uses them, so a bad endpoint is reported where it
            # always was (after that port's own checks, never when no port uses it).
            read = _read_endpoints(raw_endpoints, family, node_name)
        by_port[name] = tuple([Endpoint(ip, number, *rest) for ip, rest in read])
    return SliceEndpoints(by_port), []


def merge_endpoints(
    slices: Iterable[SliceEndpoints],
) -> dict[ServicePortName, tuple[Endpoint, ...]]:
    """Join the slices of each Service: de-duplicated by IP:port, ordered as kube-proxy orders
    (by the "IP:port" string). A port that one slice serves keeps that slice's tuple."""
    merged: dict[ServicePortName, tuple[Endpoint, ...]] = {}
    shared: dict[ServicePortName, list[tuple[Endpoint, ...]]] = {}  # ports of several slices
    for slice_endpoints in slices:
        for name, endpoints in slice_endpoints.by_port.items():
            first = merged.setdefault(name, endpoints)
            if first is not endpoints:
                shared.setdefault(name, [first]).append(endpoints)
    for name, parts in shared.items():
        merged[name] = _merge_parts(parts)
    return merged


def _merge_parts(parts: list[tuple[Endpoint, ...]]) -> tuple[Endpoint, ...]:
    known: dict[str, Endpoint] = {}
    for endpoints in parts:
        for endpoint in endpoints:
            key = f"{endpoint.ip}:{endpoint.port}"  # str(endpoint), without the call
            # The same endpoint may appear in two slices while they are being updated;
            # prefer the copy that says it is on this node, as kube-proxy does.
            if endpoint.is_local or key not in known:
                known[key] = endpoint
    return tuple(known[key] for key in sorted(known))


# --- Nodes ---------------------------------------------------------------------------------


def translate_node(obj: object, *, family: int = 4) -> Node:
    """This node's name, addresses of our family (InternalIP first) and labels."""
    ref = object_ref("Node", obj)
    assert isinstance(obj, dict)
    ips: list[str] = []
    for wanted in ("InternalIP", "ExternalIP"):
        for raw in items(mapping(obj, "status"), "addresses"):
            if not isinstance(raw, dict) or raw.get("type") != wanted:
                continue
            try:
                ip = ipaddress.ip_address(str(raw.get("address", "")))
            except ValueError:
                continue
            if ip.version == family and str(ip) not in ips:
                ips.append(str(ip))
    labels = str_map(mapping(obj, "metadata"), "labels")
    return Node(name=ref.name, ips=tuple(ips), labels=labels)


# --- the whole cluster ---------------------------------------------------------------------


def translate_cluster(
    *,
    services: Iterable[object],
    endpoint_slices: Iterable[object],
    node: Node,
    family: int = 4,
    proxy_name: str = "",
) -> ProxyState:
    """The whole ProxyState for this node. Invalid objects are skipped with their reason."""
    skipped: list[Skipped] = []
    ports: dict[ServicePortName, ServicePort] = {}
    for obj in services:
        try:
            service_ports, notes = translate_service(obj, family=family, proxy_name=proxy_name)
        except InvalidObject as exc:
            skipped.append(describe("Service", obj).skipped(str(exc), invalid=True))
            continue
        skipped.extend(notes)
        ports.update((p.name, p) for p in service_ports)
    slices = []
    for obj in endpoint_slices:
        try:
            result, notes = translate_endpoint_slice(
                obj, node_name=node.name, family=family, proxy_name=proxy_name
            )
        except InvalidObject as exc:
            skipped.append(describe("EndpointSlice", obj).skipped(str(exc), invalid=True))
            continue
        skipped.extend(notes)
        if result is not None:
            slices.append(result)
    return ProxyState(
        node=node,
        services=tuple(ports[name] for name in sorted(ports, key=port_order)),
        endpoints=merge_endpoints(slices),
        skipped=tuple(skipped),
    )
