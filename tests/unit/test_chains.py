"""Chain names are kube-proxy's, so a node can switch between the two proxies without a gap."""

from __future__ import annotations

import pytest

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.model import Endpoint, Protocol, ServicePortName

KUBERNETES_HTTPS = ServicePortName("default", "kubernetes", "https", Protocol.TCP)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (KUBERNETES_HTTPS, "KUBE-SVC-NPX46M4PTMTKRN6Y"),
        (
            ServicePortName("kube-system", "kube-dns", "dns", Protocol.UDP),
            "KUBE-SVC-TCOU7JCQXEZGVUNU",
        ),
        (
            ServicePortName("kube-system", "kube-dns", "dns-tcp", Protocol.TCP),
            "KUBE-SVC-ERIFXISQEP7F7OF4",
        ),
        (
            ServicePortName("kube-system", "kube-dns", "metrics", Protocol.TCP),
            "KUBE-SVC-JD5MR3NA4I4DYORP",
        ),
    ],
    ids=str,
)
def test_service_chain_names_match_kube_proxys(name: ServicePortName, expected: str) -> None:
    assert c.service_chain(name) == expected


def test_local_external_and_firewall_chains_share_the_service_hash() -> None:
    suffix = "NPX46M4PTMTKRN6Y"
    assert c.local_service_chain(KUBERNETES_HTTPS) == f"KUBE-SVL-{suffix}"
    assert c.external_chain(KUBERNETES_HTTPS) == f"KUBE-EXT-{suffix}"
    assert c.firewall_chain(KUBERNETES_HTTPS) == f"KUBE-FW-{suffix}"


def test_endpoint_chains_differ_per_endpoint_and_from_the_service_chain() -> None:
    names = {
        c.endpoint_chain(KUBERNETES_HTTPS, Endpoint("192.0.2.2", 6443)),
        c.endpoint_chain(KUBERNETES_HTTPS, Endpoint("192.0.2.3", 6443)),
        c.endpoint_chain(KUBERNETES_HTTPS, Endpoint("192.0.2.2", 6444)),
    }
    assert len(names) == 3
    assert all(n.startswith("KUBE-SEP-") and len(n) == len("KUBE-SEP-") + 16 for n in names)
    assert "KUBE-SEP-NPX46M4PTMTKRN6Y" not in names


def test_endpoint_chain_hash_covers_service_protocol_and_endpoint() -> None:
    ep = Endpoint("10.244.1.5", 53)
    udp = ServicePortName("kube-system", "kube-dns", "dns", Protocol.UDP)
    tcp = ServicePortName("kube-system", "kube-dns", "dns", Protocol.TCP)
    assert c.endpoint_chain(udp, ep) != c.endpoint_chain(tcp, ep)
    # Endpoint conditions are not part of the name: a chain survives readiness flapping.
    assert c.endpoint_chain(udp, ep) == c.endpoint_chain(udp, Endpoint("10.244.1.5", 53, False))


@pytest.mark.parametrize(
    ("service", "endpoint", "svc_chain", "sep_chain"),
    [
        # Vectors from kube-proxy's pkg/proxy/iptables/proxier_test.go.
        ("svc1", "10.180.0.1", "KUBE-SVC-XPGD46QRK7WJZT7O", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
        ("svc2", "10.180.0.2", "KUBE-SVC-GNZBNJ2PO5MGZ6GT", "KUBE-SEP-RS4RBKLTHTF2IUXJ"),
    ],
)
def test_endpoint_chain_names_match_kube_proxys(
    service: str, endpoint: str, svc_chain: str, sep_chain: str
) -> None:
    namespace = "ns" + service[-1]
    name = ServicePortName(namespace, service, "p80", Protocol.TCP)
    assert c.service_chain(name) == svc_chain
    assert c.endpoint_chain(name, Endpoint(endpoint, 80)) == sep_chain


def test_service_port_without_a_name_hashes_without_a_colon() -> None:
    unnamed = ServicePortName("shop", "search", "", Protocol.TCP)
    assert str(unnamed) == "shop/search"
    assert c.port_proto_hash(unnamed) == c.port_proto_hash(unnamed, "")


@pytest.mark.parametrize(
    ("chain", "owned"),
    [
        ("KUBE-SVC-NPX46M4PTMTKRN6Y", True),
        ("KUBE-SEP-Z2MNHJ5OI4BMQIBS", True),
        ("KUBE-FW-NPX46M4PTMTKRN6Y", True),
        ("KUBE-SERVICES", False),
        ("KUBE-MARK-MASQ", False),
        ("INPUT", False),
    ],
)
def test_only_per_service_chains_count_as_service_chains(chain: str, owned: bool) -> None:
    assert c.is_service_chain(chain) is owned
