"""kube-proxy's iptables chain names, so that a node can move between the two without a gap."""

from __future__ import annotations

import base64
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


@functools.lru_cache(maxsize=1 << 17)
def port_proto_hash(name: ServicePortName, extra: str = "") -> str:
    """First 16 characters of base32(sha256(name + protocol + extra)), as kube-proxy computes.

    Memoized: every sync asks again for the same names, and hashing was a third of a render.
    """
    digest = hashlib.sha256(f"{name}{name.protocol.lower()}{extra}".encode()).digest()
    # 10 bytes are exactly 16 base32 characters: the prefix kube-proxy keeps.
    return base64.b32encode(digest[:10]).decode()


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
    return "KUBE-SEP-" + port_proto_hash(name, str(endpoint))


def is_service_chain(chain: str) -> bool:
    """True for chains that belong to one Service or endpoint (and may go stale)."""
    return chain.startswith(SERVICE_CHAIN_PREFIXES)
