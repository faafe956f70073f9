"""Builders of what the tests feed the proxy: API objects (raw JSON) and the proxy's model.

API objects come as a manifest file or a list response holds them: plain dicts, `kind` and
`apiVersion` included. Keyword arguments cover the shapes the tests need; anything else goes
straight into the object (`**spec` for a Service, `**fields` for an EndpointSlice), replacing
what the builder put there, so a test can also build a broken object. `served=True` adds the
fields the API server (or the EndpointSlice controller) fills in, as a real server returns them.

Model objects are the frozen dataclasses of pykubeproxy.model, with this suite's usual node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pykubeproxy.model import (
    Endpoint,
    Node,
    Protocol,
    ProxyState,
    ServicePort,
    ServicePortName,
)

JSON = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
HOSTNAME_LABEL = "kubernetes.io/hostname"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"

# One unnamed TCP port 80, as `kubectl create service clusterip web --tcp=80` makes.
PORT_80: JSON = {"name": "", "protocol": "TCP", "port": 80, "targetPort": 80}
SLICE_PORT_80: JSON = {"name": "", "protocol": "TCP", "port": 80}


# --- API objects ---------------------------------------------------------------------------


def service(
    name: str,
    *,
    namespace: str = "default",
    cluster_ip: str = "10.96.0.10",
    ports: Sequence[Mapping[str, Any] | Any] | None = (PORT_80,),
    labels: Mapping[str, str] | None = None,
    status: Mapping[str, Any] | None = None,
    served: bool = False,
    **spec: Any,
) -> JSON:
    """A ClusterIP Service; `spec` fields are added last (and win over everything above).

    `ports=None` writes `ports: null`, as a broken manifest might.
    """
    metadata: JSON = {"name": name, "namespace": namespace}
    if labels:  # the server omits empty maps
        metadata["labels"] = dict(labels)
    defaults: JSON = {}
    if served:
        defaults = {
            "type": "ClusterIP",
            "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
        }
    body: JSON = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            **defaults,
            "clusterIP": cluster_ip,
            "ports": None if ports is None else [_copied(p) for p in ports],
            **spec,
        },
    }
    if status is not None:
        body["status"] = dict(status)
    elif served:
        body["status"] = {"loadBalancer": {}}
    return body


def endpoint(ip: str, node: str | None = "node-1", **conditions: bool) -> JSON:
    """One endpoint of an EndpointSlice; no `conditions` key unless some are given."""
    raw: JSON = {"addresses": [ip]}
    if node is not None:
        raw["nodeName"] = node
    if conditions:
        raw["conditions"] = dict(conditions)
    return raw


def endpoint_slice(
    service_name: str,
    *endpoints: str | Mapping[str, Any],
    namespace: str = "default",
    name: str | None = None,
    ports: Sequence[Mapping[str, Any] | Any] = (SLICE_PORT_80,),
    annotations: Mapping[str, str] | None = None,
    served: bool = False,
    **fields: Any,
) -> JSON:
    """An IPv4 EndpointSlice of `service_name` (named `<service>-abcde` unless `name` says).

    Endpoints are `endpoint(...)` dicts, or addresses for `endpoint(address)`. Served, every
    endpoint's conditions are complete (serving as ready, not terminating) and the slice
    carries the controller's managed-by label. `fields` replace top-level fields.
    """
    labels = {SERVICE_NAME_LABEL: service_name}
    if served:
        labels[MANAGED_BY_LABEL] = "endpointslice-controller.k8s.io"
    metadata: JSON = {
        "name": name or f"{service_name}-abcde",
        "namespace": namespace,
        "labels": labels,
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    raw = [endpoint(e) if isinstance(e, str) else _copied(e) for e in endpoints]
    if served:
        raw = [_served_endpoint(e) for e in raw]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": "IPv4",
        "endpoints": raw,
        "ports": [_copied(p) for p in ports],
        **fields,
    }


def _copied(item: Any) -> Any:
    # A fresh dict, so that a test editing one object never edits a shared constant; anything
    # else (a test's deliberately broken entry) as it is.
    return dict(item) if isinstance(item, Mapping) else item


def _served_endpoint(raw: JSON) -> JSON:
    conditions = {"ready": True, **raw.get("conditions", {})}
    conditions.setdefault("serving", conditions["ready"])
    conditions.setdefault("terminating", False)
    return {**raw, "conditions": conditions}


def node(
    name: str = "node-1",
    ip: str = "192.0.2.10",
    *,
    labels: Mapping[str, str] | None = None,
    served: bool = False,
    **metadata: Any,
) -> JSON:
    """A Node with one InternalIP; served, labelled and addressed by hostname as the kubelet does.

    `metadata` fields (a deletionTimestamp, say) are added to its metadata.
    """
    meta: JSON = {"name": name, **metadata}
    addresses = [{"type": "InternalIP", "address": ip}]
    body: JSON = {"apiVersion": "v1", "kind": "Node", "metadata": meta}
    if served:
        meta["labels"] = {HOSTNAME_LABEL: name, **(labels or {})}
        addresses.append({"type": "Hostname", "address": name})
        body["spec"] = {}
    elif labels:
        meta["labels"] = dict(labels)
    body["status"] = {"addresses": addresses}
    return body


# --- the proxy's model ---------------------------------------------------------------------

NODE = Node("node-1", ("192.0.2.10",))

Entry = tuple[ServicePort, Sequence[Endpoint]]


def port_name(
    service_name: str,
    port: str = "http",
    *,
    namespace: str = "default",
    protocol: Protocol = Protocol.TCP,
) -> ServicePortName:
    """kube-proxy's key of one Service port: `namespace/service:port` and its protocol."""
    return ServicePortName(namespace, service_name, port, protocol)


def service_port(
    name: ServicePortName | str, cluster_ip: str, *, port: int = 80, **fields: Any
) -> ServicePort:
    """One port of one Service (a name alone means `port_name(name)`, "default/name:http" TCP);
    `fields` are ServicePort's own: node_port=, external_ips=, affinity_timeout=..."""
    if isinstance(name, str):
        name = port_name(name)
    return ServicePort(name=name, cluster_ip=cluster_ip, port=port, **fields)


def endpoints(pattern: str, count: int, *, port: int = 8080, **fields: Any) -> tuple[Endpoint, ...]:
    """`count` endpoints whose addresses fill `{}` in `pattern` with 1, 2, ... (Endpoint's
    `fields`, is_local= say, apply to each)."""
    return tuple(Endpoint(pattern.format(i), port, **fields) for i in range(1, count + 1))


def proxy_state(*entries: Entry, node: Node = NODE, sort: bool = False) -> ProxyState:
    """What a node programs: Service ports in the order given (or by name, as translate orders
    them, with `sort`), each with its endpoints."""
    ports = [port for port, _ in entries]
    if sort:
        ports.sort(key=lambda port: port.name)
    return ProxyState(
        node=node,
        services=tuple(ports),
        endpoints={port.name: tuple(eps) for port, eps in entries},
    )
