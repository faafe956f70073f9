"""Properties over arbitrary well-formed and malformed Services and EndpointSlices: translating
never raises, rendering never raises and is deterministic, and what is rendered is accepted by
both iptables-legacy-restore and iptables-nft-restore and read back by iptables-save as written
(in a throw-away network namespace).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pykubeproxy.backends.iptables.assemble import render_ruleset
from pykubeproxy.backends.iptables.diff import normalize_rule
from pykubeproxy.backends.iptables.render import RenderOptions
from pykubeproxy.backends.iptables.ruleset import format_restore
from pykubeproxy.model import (
    Endpoint,
    Protocol,
    ProxyState,
    ServicePort,
    ServicePortName,
    TrafficPolicy,
)
from pykubeproxy.translate import translate_cluster
from tests.support.builders import NODE
from tests.support.netns import Netns
from tests.support.rendering import (
    rendered_rules,
    restore_errors,
    saved_rules,
    unknown_targets,
)

# --- building blocks ---------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
garbage = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def optional_fields(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict holding any subset of the fields (missing keys are part of the input space)."""
    return st.fixed_dictionaries({}, optional=fields)


dns_label = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
weird_text = st.text(min_size=1, max_size=80)  # quotes, spaces, newlines, non-ASCII, long
name = st.one_of(st.sampled_from(["web", "api", "db", "kubernetes"]), dns_label, weird_text)
namespace = st.one_of(st.sampled_from(["default", "shop"]), dns_label, weird_text)
port_name = st.one_of(st.sampled_from(["", "http", "dns", "metrics"]), dns_label, weird_text)

ipv4 = st.one_of(
    st.sampled_from(["10.96.0.1", "10.96.0.10", "192.0.2.10", "127.0.0.1", "0.0.0.0"]),
    st.ip_addresses(v=4).map(str),
)
ipv6 = st.ip_addresses(v=6).map(str)
bad_ip = st.sampled_from(["", "10.96.0.300", "a.b.c.d", "10.96.0.1/32", " 10.96.0.1", "None"])
pod_ip = st.one_of(st.builds("10.244.{}.{}".format, st.integers(1, 3), st.integers(1, 6)), ipv4)

# --- well-formed objects ------------------------------------------------------------------------

labels = st.sampled_from(
    [
        {},
        {"app": "web"},
        {"app": "web", "tier": "front"},
        {"service.kubernetes.io/service-proxy-name": "other-proxy"},
        {"service.kubernetes.io/headless": ""},
    ]
)

service_port = st.fixed_dictionaries(
    {"name": port_name, "port": st.integers(1, 65535)},
    optional={
        "protocol": st.sampled_from(["TCP", "UDP", "SCTP"]),
        "nodePort": st.integers(30000, 32767),
        "targetPort": st.one_of(st.integers(1, 65535), st.text(max_size=6)),
    },
)

service_spec = st.fixed_dictionaries(
    {
        "clusterIP": st.one_of(ipv4, st.sampled_from(["10.96.0.1", "10.96.0.10"])),
        "ports": st.lists(service_port, min_size=1, max_size=3, unique_by=lambda p: p["name"]),
    },
    optional={
        "type": st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]),
        "clusterIPs": st.lists(st.one_of(ipv4, ipv6), min_size=1, max_size=2),
        "externalIPs": st.lists(st.one_of(ipv4, ipv6), max_size=3),
        "loadBalancerSourceRanges": st.lists(
            st.one_of(
                st.builds("{}/{}".format, ipv4, st.integers(0, 32)),
                st.builds("{}/{}".format, ipv6, st.integers(0, 128)),
                st.sampled_from([" 203.0.113.0/24 ", "192.0.2.0/24", "0.0.0.0/0"]),
            ),
            max_size=3,
        ),
        "externalTrafficPolicy": st.sampled_from(["Cluster", "Local", "Global"]),
        "internalTrafficPolicy": st.sampled_from(["Cluster", "Local"]),
        "healthCheckNodePort": st.integers(30000, 32767),
        "sessionAffinity": st.sampled_from(["None", "ClientIP"]),
        "sessionAffinityConfig": st.fixed_dictionaries(
            {"clientIP": optional_fields(timeoutSeconds=st.integers(1, 86400))}
        ),
    },
)

ingress = optional_fields(
    ip=st.one_of(ipv4, ipv6),
    ipMode=st.sampled_from(["VIP", "Proxy"]),
    hostname=st.sampled_from(["lb.example.com"]),
)

service = st.fixed_dictionaries(
    {
        "kind": st.just("Service"),
        "metadata": st.fixed_dictionaries(
            {"name": name}, optional={"namespace": namespace, "labels": labels}
        ),
        "spec": service_spec,
    },
    optional={
        "status": st.fixed_dictionaries(
            {"loadBalancer": st.fixed_dictionaries({"ingress": st.lists(ingress, max_size=3)})}
        )
    },
)

slice_endpoint = st.fixed_dictionaries(
    {"addresses": st.lists(pod_ip, min_size=1, max_size=2)},
    optional={
        "nodeName": st.sampled_from(["node-1", "node-2"]),
        "zone": st.sampled_from(["zone-a", "zone-b"]),
        "conditions": optional_fields(
            ready=st.booleans(), serving=st.booleans(), terminating=st.booleans()
        ),
        "hints": st.fixed_dictionaries(
            {"forZones": st.lists(st.fixed_dictionaries({"name": st.just("zone-a")}), max_size=1)}
        ),
    },
)

endpoint_slice = st.fixed_dictionaries(
    {
        "kind": st.just("EndpointSlice"),
        "metadata": st.fixed_dictionaries(
            {
                "name": st.builds("{}-{}".format, name, dns_label),
                "namespace": namespace,
                "labels": st.fixed_dictionaries({"kubernetes.io/service-name": name}),
            }
        ),
        "addressType": st.sampled_from(["IPv4", "IPv4", "IPv4", "IPv6", "FQDN"]),
        "endpoints": st.lists(slice_endpoint, max_size=4),
        "ports": st.lists(
            st.fixed_dictionaries(
                {"name": port_name, "port": st.integers(1, 65535)},
                optional={"protocol": st.sampled_from(["TCP", "UDP", "SCTP"])},
            ),
            max_size=3,
        ),
    }
)

# --- malformed objects: a well-formed one with a few fields deleted or replaced ------------------

bad_value = st.one_of(
    garbage,
    bad_ip,
    st.sampled_from([0, -1, 65536, 70000, 2**40, True, False, "80", "tcp", "ICMP", "Bogus"]),
    weird_text,
)


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every key path inside nested dicts and lists."""
    found: list[tuple[object, ...]] = []
    items: list[tuple[object, object]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


@st.composite
def malformed(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> object:
    obj = copy.deepcopy(draw(valid))  # drawn values may be shared: never mutate them
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(obj)
        if not paths:
            break
        *parents, last = draw(st.sampled_from(paths))
        container: Any = obj
        for key in parents:
            container = container[key]
        if isinstance(container, dict) and draw(st.booleans()):
            del container[last]
        else:
            container[last] = draw(bad_value)
    return obj


def documents(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[object]:
    """Mostly well-formed objects, many malformed ones, and some that are not objects at all."""
    return st.one_of(valid, valid, malformed(valid), malformed(valid), garbage)


@st.composite
def matching_slice(draw: st.DrawFn, svc: dict[str, Any]) -> dict[str, Any]:
    """A well-formed EndpointSlice for a well-formed Service, for its ports."""
    meta, spec = svc["metadata"], svc["spec"]
    ports = [
        {
            "name": p["name"],
            "port": draw(st.integers(1, 65535)),
            "protocol": p.get("protocol", "TCP"),
        }
        for p in spec["ports"]
    ]
    return {
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{meta['name']}-{draw(dns_label)}",
            "namespace": meta.get("namespace", "default"),
            "labels": {"kubernetes.io/service-name": meta["name"]},
        },
        "addressType": "IPv4",
        "endpoints": draw(st.lists(slice_endpoint, max_size=4)),
        "ports": ports,
    }


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, list[Any]]:
    """Services, slices for some of them (maybe several, maybe malformed), and stray slices."""
    services = draw(st.lists(documents(service), max_size=6))
    slices = draw(st.lists(documents(endpoint_slice), max_size=3))
    for svc in draw(st.lists(service, max_size=3)):
        services.append(svc)
        for _ in range(draw(st.integers(0, 2))):
            slices.append(draw(st.one_of(matching_slice(svc), malformed(matching_slice(svc)))))
    return {"services": services, "endpoint_slices": draw(st.permutations(slices))}


render_options = st.builds(
    RenderOptions,
    masquerade_bit=st.integers(0, 31),
    masquerade_all=st.booleans(),
    cluster_cidr=st.sampled_from([None, "10.244.0.0/16"]),
    nodeport_addresses=st.sampled_from([(), ("192.0.2.0/24", "127.0.0.0/8"), ("0.0.0.0/0",)]),
    localhost_nodeports=st.booleans(),
    node_ips=st.just(NODE.ips),
)


def translate(cluster: dict[str, list[Any]]) -> ProxyState:
    return translate_cluster(
        services=cluster["services"], endpoint_slices=cluster["endpoint_slices"], node=NODE
    )


# --- pure properties --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(cluster=clusters())
def test_translating_any_input_never_raises_and_leaves_it_untouched(
    cluster: dict[str, list[Any]],
) -> None:
    before = copy.deepcopy(cluster)
    state = translate(cluster)
    assert cluster == before
    assert len(state.services) == len({p.name for p in state.services})


@settings(max_examples=300, deadline=None)
@given(cluster=clusters(), options=render_options)
def test_rendering_never_raises_is_deterministic_and_jumps_only_to_known_targets(
    cluster: dict[str, list[Any]], options: RenderOptions
) -> None:
    first = render_ruleset(translate(cluster), options)
    second = render_ruleset(translate(copy.deepcopy(cluster)), options)
    assert format_restore(first) == format_restore(second)
    assert unknown_targets(first) == []


# --- the kernel accepts what we render --------------------------------------------------------


# Every feature at once, so that each kind of rule is read back on every run.
RICH_CLUSTER: dict[str, list[Any]] = {
    "services": [
        {
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.10.20",
                "externalIPs": ["198.51.100.20"],
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32100,
                "loadBalancerSourceRanges": ["0.0.0.0/0", "192.0.2.0/24"],
                "sessionAffinity": "ClientIP",
                "ports": [
                    {"name": "http", "port": 80, "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                    {"name": "sig", "port": 3868, "protocol": "SCTP", "nodePort": 30868},
                ],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.10"}]}},
        }
    ],
    "endpoint_slices": [
        {
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-1",
                "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [f"10.244.{n % 3}.{n}"], "nodeName": f"node-{n % 3}"}
                for n in range(1, 8)
            ],
            "ports": [
                {"name": "http", "port": 8080},
                {"name": "dns", "port": 5353, "protocol": "UDP"},
                {"name": "sig", "port": 3868, "protocol": "SCTP"},
            ],
        }
    ],
}


def test_rendered_rules_are_accepted_and_read_back_unchanged_by_legacy_and_nft(
    netns: Netns,
) -> None:
    # One namespace for every example: hypothesis runs inside the test, not around it.
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(cluster=clusters(), options=render_options)
    @example(cluster=RICH_CLUSTER, options=RenderOptions(cluster_cidr="10.244.0.0/16"))
    def accepted(cluster: dict[str, list[Any]], options: RenderOptions) -> None:
        ruleset = render_ruleset(translate(cluster), options)
        text = format_restore(ruleset)
        assert restore_errors(netns, text) == [], text
        for backend in ("legacy", "nft"):
            saved = saved_rules(netns, backend, text)
            for key, rules in rendered_rules(ruleset).items():
                kernel = [normalize_rule(r) for r in saved.get(key, ["(no such chain)"])]
                assert kernel == [normalize_rule(r) for r in rules], (backend, key)

    accepted()


def test_longest_valid_names_still_fit_in_iptables_comments(netns: Netns) -> None:
    long = ServicePortName("s" * 63, "n" * 63, "p" * 63, Protocol.SCTP)
    port = ServicePort(
        name=long,
        cluster_ip="10.96.0.1",
        port=80,
        node_port=30080,
        external_ips=("198.51.100.20",),
        load_balancer_ips=("198.51.100.10",),
        load_balancer_source_ranges=("203.0.113.0/24",),
        external_traffic_policy=TrafficPolicy.LOCAL,
        health_check_node_port=32100,
        affinity_timeout=86400,
    )
    endpoints = {long: (Endpoint("10.244.1.1", 65535, is_local=True), Endpoint("10.244.2.1", 1))}
    state = ProxyState(node=NODE, services=(port,), endpoints=endpoints)
    text = format_restore(render_ruleset(state, RenderOptions(cluster_cidr="10.244.0.0/16")))
    assert restore_errors(netns, text) == []
