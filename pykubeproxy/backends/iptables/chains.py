"""kube-proxy's iptables chain names, so that a node can move between the two without a gap."""

from __future__ import annotations

import functools
import hashlib

from pykubeproxy.model import Endpoint, ServicePortName

# Chains shared by every Service.
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
# Once kubelet's, written by kube-proxy since 1.27 when NodePorts answer on 127.0.0.1.
KUBE_FIREWALL = "KUBE-FIREWALL"
# An empty chain kube-proxy keeps in these tables: when it vanishes, something outside (a
# firewalld reload, an `iptables -X`) removed chains, and a full sync puts everything back.
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"
CANARY_TABLES = ("mangle", "nat", "filter")

# IPVS mode's own chains (kube-proxy's IPVS proxier), besides the ones both modes share.
KUBE_NODE_PORT = "KUBE-NODE-PORT"
KUBE_LOAD_BALANCER = "KUBE-LOAD-BALANCER"
KUBE_IPVS_FILTER = "KUBE-IPVS-FILTER"
KUBE_SOURCE_RANGES_FIREWALL = "KUBE-SOURCE-RANGES-FIREWALL"
IPVS_NAT_CHAINS = (KUBE_NODE_PORT, KUBE_LOAD_BALANCER)
IPVS_FILTER_CHAINS = (KUBE_NODE_PORT, KUBE_IPVS_FILTER, KUBE_SOURCE_RANGES_FIREWALL)

# Prefixes of the per-Service and per-endpoint chains (all in the nat table).
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")
# Per-Service chains only older kube-proxy versions wrote (local policy, before KUBE-SVL-).
LEGACY_SERVICE_CHAIN_PREFIXES = ("KUBE-XLB-",)

BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_PAIRS = tuple(_BASE32[i >> 5] + _BASE32[i & 31] for i in range(1024))


def chain_hash(text: str) -> str:
    """First 16 characters of base32(sha256(text)): kube-proxy's chain name suffix.

    10 bytes are exactly 16 base32 characters, looked up ten bits at a time (base64.b32encode
    costs twice as much, and every endpoint of a first sync needs one).
    """
    v = int.from_bytes(hashlib.sha256(text.encode()).digest()[:10], "big")
    p = _PAIRS
    return (
        p[v >> 70]
        + p[(v >> 60) & 1023]
        + p[(v >> 50) & 1023]
        + p[(v >> 40) & 1023]
        + p[(v >> 30) & 1023]
        + p[(v >> 20) & 1023]
        + p[(v >> 10) & 1023]
        + p[v & 1023]
    )


@functools.lru_cache(maxsize=1 << 17)
def port_proto_hash(name: ServicePortName, extra: str = "") -> str:
    """The chain name suffix of a Service port (and, with `extra`, of one of its endpoints):
    the hash of name + protocol + extra, as kube-proxy computes it. Memoized per port."""
    return chain_hash(f"{name}{name.protocol.lower()}{extra}")


def service_chain(name: ServicePortName) -> str:
    """The cluster-policy chain: load-balances over all usable endpoints."""
    return "KUBE-SVC-" + port_proto_hash(name)


def local_service_chain(name: ServicePortName) -> str:
    """The local-policy chain: load-balances over this node's endpoints only."""
    return "KUBE-SVL-" + port_proto_hash(name)


def external_chain(name: ServicePortName) -> str:
    """Entry point for NodePort, LoadBalancer and externalIP traffic."""
    return "KUBE-EXT-" + port_proto_hash(name)


def firewall_chain(name: ServicePortName) -> str:
    """loadBalancerSourceRanges filtering in front of the external chain."""
    return "KUBE-FW-" + port_proto_hash(name)


def endpoint_chain(name: ServicePortName, endpoint: Endpoint) -> str:
    """The per-endpoint DNAT chain."""
    return "KUBE-SEP-" + chain_hash(f"{name}{name.protocol.lower()}{endpoint.ip}:{endpoint.port}")


def is_service_chain(chain: str) -> bool:
    """True for chains that belong to one Service or endpoint (and may go stale)."""
    return chain.startswith(SERVICE_CHAIN_PREFIXES)
